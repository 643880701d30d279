//! Rows a caller holds in memory, given to a save: JSON lines (Kura's `model_dump_json`),
//! values (the Python package's models, through [`save_decoder`]) or Arrow. Each becomes a
//! stream of the kind's batches through the kind's codec, so a row is validated the same
//! way whatever form it came in.

use std::sync::Arc;

use datafusion::arrow::array::RecordBatch;
use futures::stream::StreamExt;

use super::SAVE_BATCH_ROWS;
use crate::kind::CheckpointKind;
use crate::sink::BatchStream;
use crate::{Error, Result};

/// Rows given as JSON lines in memory (one value per line, as Kura's `model_dump_json`
/// writes them) as a stream of `kind`'s batches, decoded one batch at a time as the sink
/// asks for them. Every line goes through the kind's codec, as a file's would: an error
/// names `source`, the line (the item's position: `first_line` for the first) and the
/// field.
pub fn jsonl_batches(
    kind: CheckpointKind,
    source: impl Into<String>,
    data: bytes::Bytes,
    first_line: u64,
) -> BatchStream {
    let lines = InMemoryLines {
        decoder: save_decoder(kind, source),
        data,
        pos: 0,
        line_no: first_line.saturating_sub(1),
        done: false,
    };
    futures::stream::iter(lines).boxed()
}

/// Rows given as Arrow (the Python package's `save_arrow`) as a stream of `kind`'s
/// batches. They take the JSON route of every other row: brought to the kind's columns
/// (`conform`: by name, types cast, JSON-text metadata kept as text), written as the
/// lines Kura would write, and decoded by the kind's codec ([`jsonl_batches`]) — one
/// implementation of Kura's rules, whatever form the rows came in, at the cost of an
/// encode and a decode in Rust. An error names `source`, the row (`first_row` for the
/// first) and the field.
pub fn arrow_batches(
    kind: CheckpointKind,
    source: impl Into<String>,
    batch: RecordBatch,
    first_row: u64,
) -> BatchStream {
    let source = source.into();
    let lines = (|| -> Result<bytes::Bytes> {
        let schema = kind.schema();
        check_given_rows(&batch, &schema, &source, first_row)?;
        let batch = crate::layout::conform_from(&batch, &schema, &source)?;
        let mut out = Vec::with_capacity(batch.get_array_memory_size() * 3 + 1024);
        crate::jsonl::JsonlEncoder.encode(&batch, &mut out)?;
        Ok(out.into())
    })();
    match lines {
        Ok(lines) => jsonl_batches(kind, source, lines, first_row),
        Err(e) => futures::stream::once(async move { Err(e.into()) }).boxed(),
    }
}

/// What `conform` refuses for a whole column, checked here row by row so that the error
/// names the row (`first_row` for the first): a null in a required field, metadata text
/// that is not a JSON object. Everything else is the codec's to check, line by line.
fn check_given_rows(
    batch: &RecordBatch,
    schema: &datafusion::arrow::datatypes::SchemaRef,
    source: &str,
    first_row: u64,
) -> Result<()> {
    use datafusion::arrow::array::{Array, AsArray};
    use datafusion::arrow::datatypes::DataType;
    for field in schema.fields() {
        let Some(col) = batch.column_by_name(field.name()) else {
            continue;
        };
        let refuse = |row: usize, message: &str| {
            Err(Error::data(
                source,
                Some(first_row + row as u64),
                Some(field.name()),
                message,
            ))
        };
        if !field.is_nullable()
            && let Some(row) = (0..col.len()).find(|&i| col.is_null(i))
        {
            return refuse(row, "a value is required, the row has null");
        }
        if crate::kind::is_json_text(field) {
            let text = match col.data_type() {
                DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => {
                    datafusion::arrow::compute::cast(col, &DataType::Utf8)?
                }
                _ => continue,
            };
            let text = text.as_string::<i32>();
            if let Some(row) = (0..text.len())
                .find(|&i| text.is_valid(i) && !text.value(i).trim_start().starts_with('{'))
            {
                return refuse(row, "expected a JSON object (as text), such as {\"k\": 1}");
            }
        }
    }
    Ok(())
}

/// The decoder of rows given to a save (as lines, or as values: the Python package's
/// models): `kind`'s whole schema, errors naming `source`, batches of the save's size.
pub fn save_decoder(kind: CheckpointKind, source: impl Into<String>) -> crate::jsonl::JsonlDecoder {
    let schema = kind.schema();
    crate::jsonl::JsonlDecoder::new(
        Arc::clone(&schema),
        &schema,
        source,
        crate::jsonl::DecodeOptions {
            batch_rows: SAVE_BATCH_ROWS,
            ..Default::default()
        },
    )
}

/// The iterator behind [`jsonl_batches`].
struct InMemoryLines {
    decoder: crate::jsonl::JsonlDecoder,
    data: bytes::Bytes,
    pos: usize,
    line_no: u64,
    done: bool,
}

impl Iterator for InMemoryLines {
    type Item = datafusion::error::Result<RecordBatch>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let step = (|| -> Result<Option<RecordBatch>> {
            while self.pos < self.data.len() && !self.decoder.is_full() {
                let rest = &self.data[self.pos..];
                let end = memchr::memchr(b'\n', rest).unwrap_or(rest.len());
                self.line_no += 1;
                self.decoder.decode_line(&rest[..end], self.line_no)?;
                self.pos += end + 1;
            }
            if self.pos >= self.data.len() {
                self.done = true;
            }
            Ok(self.decoder.flush()?)
        })();
        match step {
            Ok(Some(batch)) => Some(Ok(batch)),
            Ok(None) => None,
            Err(e) => {
                self.done = true;
                Some(Err(e.into()))
            }
        }
    }
}
