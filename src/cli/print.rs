//! Printing query results: table, csv, json (one array), ndjson, markdown.

use std::io::Write;

use datafusion::arrow::array::{ArrayRef, RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use datafusion::physical_plan::SendableRecordBatchStream;
use futures::StreamExt;

use ckpt::jsonl::JsonlEncoder;
use ckpt::{Error, Result};

/// `--format` (a closed set, parsed by clap) and `\format` in the shell (parsed by
/// `FromStr`, with the same names and aliases).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum OutputFormat {
    /// A bordered grid.
    #[default]
    Table,
    /// A header line, then one line per row; nested values as JSON.
    Csv,
    /// One JSON array of row objects.
    Json,
    /// One JSON object per line.
    #[value(alias = "jsonl")]
    Ndjson,
    /// A pipe table.
    #[value(alias = "md")]
    Markdown,
}

impl std::str::FromStr for OutputFormat {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Ok(match s.to_ascii_lowercase().as_str() {
            "table" => OutputFormat::Table,
            "csv" => OutputFormat::Csv,
            "json" => OutputFormat::Json,
            "ndjson" | "jsonl" => OutputFormat::Ndjson,
            "markdown" | "md" => OutputFormat::Markdown,
            _ => {
                return Err(Error::config(format!(
                    "unknown output format {s:?}: expected table, csv, json, ndjson or markdown"
                )));
            }
        })
    }
}

impl std::fmt::Display for OutputFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            OutputFormat::Table => "table",
            OutputFormat::Csv => "csv",
            OutputFormat::Json => "json",
            OutputFormat::Ndjson => "ndjson",
            OutputFormat::Markdown => "markdown",
        })
    }
}

/// What was printed.
#[derive(Debug, Clone, Copy, Default)]
pub struct Printed {
    /// Rows the query produced.
    pub rows: usize,
    /// Rows shown (fewer when `max_rows` cut the output).
    pub shown: usize,
}

#[derive(Debug, Clone, Copy, Default)]
pub struct Printer {
    pub format: OutputFormat,
    pub max_rows: Option<usize>,
}

impl Printer {
    /// Prints a result stream. Rows beyond `max_rows` are counted, not kept.
    pub async fn print(
        &self,
        mut stream: SendableRecordBatchStream,
        out: &mut dyn Write,
    ) -> Result<Printed> {
        let schema = display_schema(&stream.schema());
        if schema.fields().is_empty() && self.format != OutputFormat::Json {
            // DDL (CREATE VIEW, DROP VIEW) answers with no columns: nothing to show.
            let mut rows = 0;
            while let Some(batch) = stream.next().await {
                rows += batch?.num_rows();
            }
            return Ok(Printed { rows, shown: rows });
        }
        let limit = self.max_rows.unwrap_or(usize::MAX);
        let mut kept: Vec<RecordBatch> = Vec::new();
        let mut total = 0usize;
        let mut shown = 0usize;
        let mut json_first = true;
        if self.format == OutputFormat::Json {
            out.write_all(b"[").map_err(io)?;
        }
        if self.format == OutputFormat::Csv {
            write_csv_header(&schema, out)?;
        }
        while let Some(batch) = stream.next().await {
            let batch = batch?;
            total += batch.num_rows();
            if shown >= limit {
                continue;
            }
            let take = batch.num_rows().min(limit - shown);
            let batch = json_unions_as_text(&schema, batch.slice(0, take))?;
            shown += take;
            match self.format {
                // Streaming formats print as they go.
                OutputFormat::Ndjson => {
                    let mut buf = Vec::new();
                    JsonlEncoder.encode(&batch, &mut buf)?;
                    out.write_all(&buf).map_err(io)?;
                }
                OutputFormat::Json => {
                    let mut buf = Vec::new();
                    JsonlEncoder.encode(&batch, &mut buf)?;
                    for line in buf.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
                        if !json_first {
                            out.write_all(b",").map_err(io)?;
                        }
                        json_first = false;
                        out.write_all(b"\n").map_err(io)?;
                        out.write_all(line).map_err(io)?;
                    }
                }
                OutputFormat::Csv => write_csv_rows(&batch, out)?,
                OutputFormat::Table | OutputFormat::Markdown => kept.push(batch),
            }
        }
        match self.format {
            OutputFormat::Json => out
                .write_all(if json_first { b"]\n" } else { b"\n]\n" })
                .map_err(io)?,
            OutputFormat::Table => {
                let text = datafusion::arrow::util::pretty::pretty_format_batches(&with_schema(
                    &schema, kept,
                ))?;
                writeln!(out, "{text}").map_err(io)?;
            }
            OutputFormat::Markdown => write_markdown(&schema, &kept, out)?,
            _ => {}
        }
        Ok(Printed { rows: total, shown })
    }
}

fn is_json_union(dt: &DataType) -> bool {
    *dt == *datafusion_functions_json::JSON_UNION_DATA_TYPE
}

/// The schema as printed: the JSON values of datafusion-functions-json (`metadata->'tags'`,
/// a union of JSON types) become their JSON text, marked as JSON so that the JSON formats
/// embed the value itself rather than a string.
fn display_schema(schema: &SchemaRef) -> SchemaRef {
    if !schema.fields().iter().any(|f| is_json_union(f.data_type())) {
        return schema.clone();
    }
    let fields: Vec<Field> = schema
        .fields()
        .iter()
        .map(|f| match is_json_union(f.data_type()) {
            true => Field::new(f.name(), DataType::Utf8, true)
                .with_metadata([(ckpt::kind::JSON_TEXT.to_owned(), "value".to_owned())].into()),
            false => f.as_ref().clone(),
        })
        .collect();
    std::sync::Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone()))
}

/// A batch in its [`display_schema`]: JSON unions as JSON text (a JSON null is a null).
fn json_unions_as_text(schema: &SchemaRef, batch: RecordBatch) -> Result<RecordBatch> {
    if !batch
        .schema()
        .fields()
        .iter()
        .any(|f| is_json_union(f.data_type()))
    {
        return Ok(batch);
    }
    use datafusion::arrow::array::UnionArray;
    use datafusion_functions_json::{JsonUnionEncoder, JsonUnionValue};
    let columns = batch
        .columns()
        .iter()
        .map(|col| {
            let Some(union) = col.as_any().downcast_ref::<UnionArray>() else {
                return col.clone();
            };
            let Some(values) = JsonUnionEncoder::from_union(union.clone()) else {
                return col.clone();
            };
            let text: StringArray = (0..values.len())
                .map(|i| match values.get_value(i) {
                    JsonUnionValue::JsonNull => None,
                    JsonUnionValue::Bool(b) => Some(b.to_string()),
                    JsonUnionValue::Int(n) => Some(n.to_string()),
                    JsonUnionValue::Float(x) => Some(
                        serde_json::Number::from_f64(x)
                            .map_or_else(|| "null".to_owned(), |n| n.to_string()),
                    ),
                    JsonUnionValue::Str(s) => Some(serde_json::Value::from(s).to_string()),
                    JsonUnionValue::Array(t) | JsonUnionValue::Object(t) => Some(t.to_owned()),
                })
                .collect();
            std::sync::Arc::new(text) as ArrayRef
        })
        .collect();
    Ok(RecordBatch::try_new(schema.clone(), columns)?)
}

fn with_schema(schema: &SchemaRef, batches: Vec<RecordBatch>) -> Vec<RecordBatch> {
    if batches.is_empty() {
        vec![RecordBatch::new_empty(schema.clone())]
    } else {
        batches
    }
}

fn io(e: std::io::Error) -> Error {
    Error::io("cannot write the output", e)
}

fn cell_strings(col: &ArrayRef) -> Result<Vec<Option<String>>> {
    let opts = FormatOptions::default().with_null("");
    let f = ArrayFormatter::try_new(col.as_ref(), &opts)?;
    Ok((0..col.len())
        .map(|i| {
            if col.is_null(i) {
                None
            } else {
                Some(f.value(i).to_string())
            }
        })
        .collect())
}

use datafusion::arrow::array::Array;

fn write_csv_header(schema: &SchemaRef, out: &mut dyn Write) -> Result<()> {
    let fields: Vec<Field> = schema
        .fields()
        .iter()
        .map(|f| Field::new(f.name(), DataType::Utf8, true))
        .collect();
    let empty = RecordBatch::new_empty(std::sync::Arc::new(Schema::new(fields)));
    let mut w = datafusion::arrow::csv::WriterBuilder::new()
        .with_header(true)
        .build(&mut *out);
    w.write(&empty)?;
    Ok(())
}

fn json_cells(col: &ArrayRef, field: &Field) -> Result<Vec<Option<String>>> {
    (0..col.len())
        .map(|i| {
            if col.is_null(i) {
                return Ok(None);
            }
            let mut buf = Vec::new();
            ckpt::jsonl::encode::write_value(&mut buf, col, i, field)?;
            Ok(Some(String::from_utf8_lossy(&buf).into_owned()))
        })
        .collect()
}

fn write_csv_rows(batch: &RecordBatch, out: &mut dyn Write) -> Result<()> {
    // Nested values (lists, structs, maps) are written as JSON, which reads back.
    let cols: Vec<ArrayRef> = batch
        .columns()
        .iter()
        .zip(batch.schema().fields())
        .map(|(c, f)| {
            let cells = if c.data_type().is_nested() {
                json_cells(c, f)?
            } else {
                cell_strings(c)?
            };
            Ok(std::sync::Arc::new(StringArray::from(cells)) as ArrayRef)
        })
        .collect::<Result<_>>()?;
    let fields: Vec<Field> = batch
        .schema()
        .fields()
        .iter()
        .map(|f| Field::new(f.name(), DataType::Utf8, true))
        .collect();
    let b = RecordBatch::try_new(std::sync::Arc::new(Schema::new(fields)), cols)?;
    let mut w = datafusion::arrow::csv::WriterBuilder::new()
        .with_header(false)
        .build(&mut *out);
    w.write(&b)?;
    Ok(())
}

fn write_markdown(schema: &SchemaRef, batches: &[RecordBatch], out: &mut dyn Write) -> Result<()> {
    let esc = |s: &str| s.replace('|', "\\|").replace('\n', " ");
    let names: Vec<String> = schema.fields().iter().map(|f| esc(f.name())).collect();
    writeln!(out, "| {} |", names.join(" | ")).map_err(io)?;
    writeln!(
        out,
        "|{}|",
        names.iter().map(|_| "---").collect::<Vec<_>>().join("|")
    )
    .map_err(io)?;
    for b in batches {
        let cols: Vec<Vec<Option<String>>> = b
            .columns()
            .iter()
            .map(cell_strings)
            .collect::<Result<_>>()?;
        for r in 0..b.num_rows() {
            let cells: Vec<String> = cols
                .iter()
                .map(|c| esc(c[r].as_deref().unwrap_or("")))
                .collect();
            writeln!(out, "| {} |", cells.join(" | ")).map_err(io)?;
        }
    }
    Ok(())
}
