//! Kura's Parquet layout (JSON text columns): its schema, how to tell it from ours, and
//! writing a logical batch in it. Reading any layout back into the logical schema is
//! [`crate::conform`]'s (re-exported here).
//!
//! Kura 0.5.4's ParquetCheckpointManager stores lists, messages and metadata as JSON text
//! and timestamps as ISO text. [`to_kura`] writes that layout so Kura loads our files;
//! [`logical_column`] reads it back into real types, so one SQL query works on both.
//! Null lists are written as the JSON text `null` (Kura's `json.loads` accepts it, while a
//! Parquet null makes Kura fail), and `[]` as `[]`: both come back exactly.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, RecordBatch, StringBuilder};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimestampMicrosecondType};

use crate::Result;
use crate::datetime::format_timestamp_micros;
use crate::format::Layout;
use crate::kind::{CheckpointKind, computed_len_of, utc_offset_of};

use crate::conform::messages_without_offsets;
pub use crate::conform::{conform, conform_from, logical_column};

/// The columns Kura's Parquet manager writes, in its order, all nullable as pyarrow makes them.
pub fn kura_schema(kind: CheckpointKind) -> SchemaRef {
    let logical = kind.schema();
    let mut names: Vec<&str> = logical
        .fields()
        .iter()
        // Kura's files have no offset columns: an aware datetime carries its offset in
        // its text instead.
        .filter(|f| computed_len_of(f).is_none() && utc_offset_of(f).is_none())
        .map(|f| f.name().as_str())
        .collect();
    if kind == CheckpointKind::Summaries {
        // Kura's layout puts chat_id first.
        names.retain(|n| *n != "chat_id");
        names.insert(0, "chat_id");
    }
    let fields: Vec<Field> = names
        .into_iter()
        .map(|n| {
            let f = logical.field_with_name(n).expect("own schema");
            let dt = match f.data_type() {
                DataType::List(item) if item.data_type() == &DataType::Float64 => {
                    f.data_type().clone()
                }
                DataType::List(_) | DataType::Timestamp(..) => DataType::Utf8,
                other => other.clone(),
            };
            Field::new(n, dt, true)
        })
        .collect();
    Arc::new(Schema::new(fields))
}

/// Which layout a stored schema of a known kind is in.
pub fn detect_layout(kind: CheckpointKind, stored: &Schema) -> Layout {
    let list_col = match kind {
        CheckpointKind::Summaries => "languages",
        CheckpointKind::Conversations => "messages",
        _ => "chat_ids",
    };
    match stored.field_with_name(list_col).map(|f| f.data_type()) {
        Ok(DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View) => Layout::Kura,
        _ => Layout::Native,
    }
}

/// A logical batch in Kura's Parquet layout.
pub fn to_kura(kind: CheckpointKind, batch: &RecordBatch) -> Result<RecordBatch> {
    let target = kura_schema(kind);
    let logical = kind.schema();
    let columns = target
        .fields()
        .iter()
        .map(|f| {
            let col = batch
                .column_by_name(f.name())
                .expect("a logical batch has every column");
            let lf = logical.field_with_name(f.name()).expect("own schema");
            Ok(match lf.data_type() {
                DataType::List(item) if item.data_type() == &DataType::Float64 => col.clone(),
                DataType::List(_) => list_to_json_text(col)?,
                DataType::Timestamp(..) => {
                    let offsets = batch.column_by_name(&format!("{}_utc_offset", f.name()));
                    timestamps_to_text(col, offsets)
                }
                _ => col.clone(),
            })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(RecordBatch::try_new(target, columns)?)
}

/// Kura writes a conversation's `created_at` with Python's `str(datetime)`: a space, not
/// `T`, and an aware datetime with its offset (`2024-05-01 10:00:00+02:00`, `+00:00` for
/// UTC), which Kura's model reads back as the same aware datetime. `offsets` is the
/// column's UTC offset column, when the batch has one; a null offset is a naive datetime.
fn timestamps_to_text(col: &ArrayRef, offsets: Option<&ArrayRef>) -> ArrayRef {
    let ts = col.as_primitive::<TimestampMicrosecondType>();
    let offsets = offsets.and_then(|o| o.as_primitive_opt::<arrow::datatypes::Int32Type>());
    let mut b = StringBuilder::new();
    let mut s = String::new();
    for i in 0..ts.len() {
        if ts.is_null(i) {
            b.append_null();
            continue;
        }
        let offset = offsets.filter(|o| o.is_valid(i)).map(|o| o.value(i));
        s.clear();
        format_timestamp_micros(ts.value(i) + offset.unwrap_or(0) as i64 * 1_000_000, &mut s);
        s = s.replacen('T', " ", 1);
        if let Some(o) = offset {
            let (sign, o) = if o < 0 { ('-', -o) } else { ('+', o) };
            s.push_str(&format!("{sign}{:02}:{:02}", o / 3600, o / 60 % 60));
        }
        b.append_value(&s);
    }
    Arc::new(b.finish())
}

fn list_to_json_text(col: &ArrayRef) -> Result<ArrayRef> {
    let list = col.as_list::<i32>();
    let mut b = StringBuilder::new();
    let mut line = Vec::new();
    for i in 0..list.len() {
        line.clear();
        if list.is_null(i) {
            line.extend_from_slice(b"null");
        } else {
            crate::jsonl::encode::write_value(
                &mut line,
                col,
                i,
                &list_item_field(col.data_type()),
            )?;
        }
        b.append_value(std::str::from_utf8(&line).expect("JSON is UTF-8"));
    }
    Ok(Arc::new(b.finish()))
}

fn list_item_field(dt: &DataType) -> Field {
    // The encoder writes a list value given the list's own field.
    Field::new("value", dt.clone(), true)
}

/// Whether a stored Parquet schema of `kind` must be converted column by column to the
/// kind's schema: Kura's layout, or a native file written before conversations had their
/// UTC offset columns.
pub fn needs_conversion(kind: CheckpointKind, stored: &Schema) -> bool {
    detect_layout(kind, stored) == Layout::Kura
        || stored
            .fields()
            .iter()
            .any(|f| messages_without_offsets(f.data_type()))
}
