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

/// How wide a `table` may be; longer cells are cut, ending with `…`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MaxWidth {
    /// No cut (`--wide`).
    #[default]
    Full,
    /// At most this many characters a line (`--max-width N`).
    Columns(usize),
    /// The terminal's width when standard output is one, looked up for each result (the
    /// window may have been resized); no cut when the output goes to a pipe or a file, so
    /// what scripts read does not depend on who ran them.
    Terminal,
}

impl MaxWidth {
    fn resolve(self) -> Option<usize> {
        match self {
            MaxWidth::Full => None,
            MaxWidth::Columns(n) => Some(n),
            MaxWidth::Terminal => terminal_width(),
        }
    }
}

/// The width of the terminal standard output is, if it is one. The line editor already
/// asks the terminal for it (and falls back to 80 columns for a terminal of unknown size).
fn terminal_width() -> Option<usize> {
    use std::io::IsTerminal;
    if !std::io::stdout().is_terminal() {
        return None;
    }
    let (columns, _) = rustyline::DefaultEditor::new().ok()?.dimensions()?;
    Some(usize::from(columns))
}

#[derive(Debug, Clone, Default)]
pub struct Printer {
    pub format: OutputFormat,
    pub max_rows: Option<usize>,
    /// How `table` and `markdown` show a NULL (csv leaves the field empty, the JSON
    /// formats write null): something else than an empty string, which looks the same.
    pub null: String,
    /// How wide a `table` may be.
    pub max_width: MaxWidth,
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
                let kept = with_schema(&schema, kept);
                let text = table_text(&kept, &self.null, self.max_width.resolve())?;
                writeln!(out, "{text}").map_err(io)?;
            }
            OutputFormat::Markdown => write_markdown(&schema, &kept, &self.null, out)?,
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

fn write_markdown(
    schema: &SchemaRef,
    batches: &[RecordBatch],
    null: &str,
    out: &mut dyn Write,
) -> Result<()> {
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
                .map(|c| esc(c[r].as_deref().unwrap_or(null)))
                .collect();
            writeln!(out, "| {} |", cells.join(" | ")).map_err(io)?;
        }
    }
    Ok(())
}

/// The bordered grid of `batches` (at least one, for the header), no wider than
/// `max_width` characters a line when that is given and the columns leave room for it.
fn table_text(batches: &[RecordBatch], null: &str, max_width: Option<usize>) -> Result<String> {
    use datafusion::arrow::util::pretty::pretty_format_batches_with_options;
    // Arrow's own options for its grid, with the NULL text.
    let opts = FormatOptions::default()
        .with_display_error(true)
        .with_null(null);
    let Some(max_width) = max_width else {
        return Ok(pretty_format_batches_with_options(batches, &opts)?.to_string());
    };
    let schema = batches[0].schema();
    let mut columns: Vec<Vec<String>> = vec![Vec::new(); schema.fields().len()];
    for b in batches {
        for (cells, col) in columns.iter_mut().zip(b.columns()) {
            let f = ArrayFormatter::try_new(col.as_ref(), &opts)?;
            for i in 0..col.len() {
                cells.push(f.value(i).try_to_string()?);
            }
        }
    }
    let natural: Vec<usize> = schema
        .fields()
        .iter()
        .zip(&columns)
        .map(|(f, cells)| {
            cells
                .iter()
                .map(|c| text_width(c))
                .fold(text_width(f.name()), usize::max)
        })
        .collect();
    let widths = fit_widths(&natural, max_width);
    if widths == natural {
        return Ok(pretty_format_batches_with_options(batches, &opts)?.to_string());
    }
    // The cut cells as a batch of text (NULLs are their text already), printed as usual.
    let fields: Vec<Field> = schema
        .fields()
        .iter()
        .zip(&widths)
        .map(|(f, w)| Field::new(cut(f.name(), *w), DataType::Utf8, false))
        .collect();
    let arrays: Vec<ArrayRef> = columns
        .iter()
        .zip(&widths)
        .map(|(cells, w)| {
            let cut: StringArray = cells.iter().map(|c| Some(cut(c, *w))).collect();
            std::sync::Arc::new(cut) as ArrayRef
        })
        .collect();
    let batch = RecordBatch::try_new(std::sync::Arc::new(Schema::new(fields)), arrays)?;
    Ok(pretty_format_batches_with_options(&[batch], &opts)?.to_string())
}

/// The width of a cell: its longest line, in characters (a cell with a line break spans
/// several lines of the grid).
fn text_width(s: &str) -> usize {
    s.split('\n').map(|l| l.chars().count()).max().unwrap_or(0)
}

/// Column widths for a grid of at most `max_width` characters a line (`| a | b |`: three
/// characters a column and one more): the widest columns give up characters first, so
/// narrow ones (ids, counts) stay whole. A column keeps at least one character; with too
/// many columns for the width, the lines are longer than asked.
fn fit_widths(natural: &[usize], max_width: usize) -> Vec<usize> {
    let budget = max_width.saturating_sub(3 * natural.len() + 1);
    let total = |cap: usize| natural.iter().map(|w| (*w).min(cap)).sum::<usize>();
    if total(usize::MAX) <= budget {
        return natural.to_vec();
    }
    // The largest cap whose total fits (total grows with the cap).
    let (mut lo, mut hi) = (1, natural.iter().copied().max().unwrap_or(1));
    while lo < hi {
        let mid = lo + (hi - lo).div_ceil(2);
        if total(mid) <= budget {
            lo = mid;
        } else {
            hi = mid - 1;
        }
    }
    let mut widths: Vec<usize> = natural.iter().map(|w| (*w).min(lo)).collect();
    // What the cap leaves over goes to the cut columns, one character each, left first.
    let mut spare = budget.saturating_sub(widths.iter().sum());
    for (w, n) in widths.iter_mut().zip(natural) {
        if spare == 0 {
            break;
        }
        if *w < *n {
            *w += 1;
            spare -= 1;
        }
    }
    widths
}

/// `s` in at most `width` characters a line, a cut line ending with `…`. Lines are cut at
/// character boundaries, never inside a UTF-8 sequence.
fn cut(s: &str, width: usize) -> String {
    if text_width(s) <= width {
        return s.to_owned();
    }
    let line = |l: &str| -> String {
        if l.chars().count() <= width {
            return l.to_owned();
        }
        let mut kept: String = l.chars().take(width.saturating_sub(1)).collect();
        kept.push('…');
        kept
    };
    s.split('\n').map(line).collect::<Vec<_>>().join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn widths_fit_and_spare_narrow_columns() {
        // 2 + 40 + 10 characters and 10 of borders: 62; 40 leaves 30 for the cells.
        let w = fit_widths(&[2, 40, 10], 40);
        assert_eq!(w.iter().sum::<usize>() + 10, 40, "{w:?}");
        assert_eq!(w[0], 2);
        assert_eq!(fit_widths(&[2, 3], 40), [2, 3]);
        // Too many columns for the width: one character each.
        assert_eq!(fit_widths(&[5, 5, 5], 6), [1, 1, 1]);
    }

    #[test]
    fn cuts_at_character_boundaries() {
        assert_eq!(cut("abcdef", 4), "abc…");
        assert_eq!(cut("abcd", 4), "abcd");
        assert_eq!(cut("ééééé", 3), "éé…");
        assert_eq!(cut("ab\nabcdef", 3), "ab\nab…");
        assert_eq!(cut("abc", 1), "…");
    }
}
