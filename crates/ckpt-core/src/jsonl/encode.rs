//! Arrow → JSON lines, written the way pydantic's `model_dump_json` writes Kura's models:
//! fields in schema order, nulls written out, floats in their shortest round-trip form,
//! naive datetimes as `2025-06-12T11:04:56.965428`, metadata as the JSON object itself.
//!
//! A datetime column with a UTC offset column beside it (`created_at_utc_offset`, see
//! `crate::kind::UTC_OFFSET_OF`) is written with its offset (`Z`, `+02:00`) where the
//! offset is set, so Kura reads an aware datetime again, and naive where it is null; the
//! offset column itself is not written. Non-finite floats are written as `NaN`,
//! `Infinity`, `-Infinity`, which Kura reads (pydantic itself would write `null`, which
//! it then refuses for a float).

use arrow::array::{Array, ArrayRef, AsArray, RecordBatch};
use arrow::datatypes::{
    DataType, Date32Type, Field, Float16Type, Float32Type, Float64Type, Int8Type, Int16Type,
    Int32Type, Int64Type, TimeUnit, TimestampMicrosecondType, TimestampMillisecondType,
    TimestampNanosecondType, TimestampSecondType, UInt8Type, UInt16Type, UInt32Type, UInt64Type,
};

use crate::datetime::{DateTime, format_datetime, format_timestamp_micros};
use crate::kind::is_json_text;
use crate::{Error, Result};

/// Encodes batches into JSONL bytes.
#[derive(Debug, Default, Clone)]
pub struct JsonlEncoder;

impl JsonlEncoder {
    /// Appends one line per row of `batch` to `out`.
    pub fn encode(&self, batch: &RecordBatch, out: &mut Vec<u8>) -> Result<()> {
        self.encode_rows(batch, out, b"", b"\n")
    }

    /// Appends the rows of `batch` to `out` as one JSON array (`[{...},{...}]`): the
    /// shape a whole batch is validated in at once on the Python side (pydantic's
    /// `TypeAdapter(list[Model]).validate_json`), one call instead of one per line.
    pub fn encode_array(&self, batch: &RecordBatch, out: &mut Vec<u8>) -> Result<()> {
        out.push(b'[');
        self.encode_rows(batch, out, b",", b"")?;
        out.push(b']');
        Ok(())
    }

    /// Each row as a JSON object; `between` goes between two rows, `after` after each.
    fn encode_rows(
        &self,
        batch: &RecordBatch,
        out: &mut Vec<u8>,
        between: &[u8],
        after: &[u8],
    ) -> Result<()> {
        let schema = batch.schema();
        // Field names are escaped once per batch, not once per row.
        let keys: Vec<Vec<u8>> = schema
            .fields()
            .iter()
            .map(|f| {
                let mut k = serde_json::to_vec(f.name()).expect("a string serialises");
                k.push(b':');
                k
            })
            .collect();
        let offsets = offset_columns(schema.fields());
        for row in 0..batch.num_rows() {
            if row > 0 {
                out.extend_from_slice(between);
            }
            out.push(b'{');
            let mut first = true;
            for (i, (field, col)) in schema.fields().iter().zip(batch.columns()).enumerate() {
                let Some(offset) = &offsets[i] else {
                    continue;
                };
                if !first {
                    out.push(b',');
                }
                first = false;
                out.extend_from_slice(&keys[i]);
                match offset {
                    Some(j) => write_datetime(out, col, batch.column(*j), row)?,
                    None => write_value(out, col, row, field)?,
                }
            }
            out.push(b'}');
            out.extend_from_slice(after);
        }
        Ok(())
    }
}

/// Per field: None when it is an offset column written with its datetime (skipped), else
/// Some(the index of its offset column, if it is a datetime that has one).
fn offset_columns(fields: &arrow::datatypes::Fields) -> Vec<Option<Option<usize>>> {
    let offset_name = |f: &Field| format!("{}_utc_offset", f.name());
    fields
        .iter()
        .map(|f| {
            let datetime = fields.iter().find(|d| {
                matches!(d.data_type(), DataType::Timestamp(..)) && offset_name(d) == *f.name()
            });
            if datetime.is_some() && f.data_type() == &DataType::Int32 {
                return None;
            }
            Some(if matches!(f.data_type(), DataType::Timestamp(_, None)) {
                fields
                    .iter()
                    .position(|o| *o.name() == offset_name(f) && o.data_type() == &DataType::Int32)
            } else {
                None
            })
        })
        .collect()
}

/// A naive timestamp written with the offset of its offset column at `row`, if set.
fn write_datetime(out: &mut Vec<u8>, col: &ArrayRef, offset: &ArrayRef, row: usize) -> Result<()> {
    let (DataType::Timestamp(TimeUnit::Microsecond, None), false) =
        (col.data_type(), col.is_null(row))
    else {
        return write_value(
            out,
            col,
            row,
            &Field::new("", col.data_type().clone(), true),
        );
    };
    let offsets = offset.as_primitive::<Int32Type>();
    let t = DateTime {
        micros: col.as_primitive::<TimestampMicrosecondType>().value(row),
        offset: offsets.is_valid(row).then(|| offsets.value(row)),
    };
    let mut s = String::with_capacity(40);
    format_datetime(t, &mut s);
    write_json(out, &s);
    Ok(())
}

fn write_non_finite(out: &mut Vec<u8>, v: f64) {
    let mut s = String::new();
    crate::jsonl::value::push_non_finite(v, &mut s);
    out.extend_from_slice(s.as_bytes());
}

fn write_json<T: serde::Serialize + ?Sized>(out: &mut Vec<u8>, v: &T) {
    serde_json::to_writer(out, v).expect("writing to a Vec cannot fail");
}

fn write_f64(out: &mut Vec<u8>, v: f64) {
    if v.is_finite() {
        write_json(out, &v);
    } else {
        write_non_finite(out, v);
    }
}

/// Writes the value at `row` of `col` (whose field is `field`) as JSON.
pub fn write_value(out: &mut Vec<u8>, col: &ArrayRef, row: usize, field: &Field) -> Result<()> {
    if col.is_null(row) {
        out.extend_from_slice(b"null");
        return Ok(());
    }
    match col.data_type() {
        DataType::Null => out.extend_from_slice(b"null"),
        DataType::Boolean => out.extend_from_slice(if col.as_boolean().value(row) {
            b"true"
        } else {
            b"false"
        }),
        DataType::Int8 => write_json(out, &col.as_primitive::<Int8Type>().value(row)),
        DataType::Int16 => write_json(out, &col.as_primitive::<Int16Type>().value(row)),
        DataType::Int32 => write_json(out, &col.as_primitive::<Int32Type>().value(row)),
        DataType::Int64 => write_json(out, &col.as_primitive::<Int64Type>().value(row)),
        DataType::UInt8 => write_json(out, &col.as_primitive::<UInt8Type>().value(row)),
        DataType::UInt16 => write_json(out, &col.as_primitive::<UInt16Type>().value(row)),
        DataType::UInt32 => write_json(out, &col.as_primitive::<UInt32Type>().value(row)),
        DataType::UInt64 => write_json(out, &col.as_primitive::<UInt64Type>().value(row)),
        DataType::Float16 => write_f64(out, col.as_primitive::<Float16Type>().value(row).to_f64()),
        DataType::Float32 => {
            let v = col.as_primitive::<Float32Type>().value(row);
            if v.is_finite() {
                write_json(out, &v)
            } else {
                write_non_finite(out, v as f64)
            }
        }
        DataType::Float64 => write_f64(out, col.as_primitive::<Float64Type>().value(row)),
        DataType::Utf8 => write_str(out, col.as_string::<i32>().value(row), field),
        DataType::LargeUtf8 => write_str(out, col.as_string::<i64>().value(row), field),
        DataType::Utf8View => write_str(out, col.as_string_view().value(row), field),
        DataType::Timestamp(unit, tz) => {
            let us = match unit {
                TimeUnit::Second => col
                    .as_primitive::<TimestampSecondType>()
                    .value(row)
                    .saturating_mul(1_000_000),
                TimeUnit::Millisecond => col
                    .as_primitive::<TimestampMillisecondType>()
                    .value(row)
                    .saturating_mul(1000),
                TimeUnit::Microsecond => col.as_primitive::<TimestampMicrosecondType>().value(row),
                TimeUnit::Nanosecond => {
                    col.as_primitive::<TimestampNanosecondType>().value(row) / 1000
                }
            };
            let mut s = String::with_capacity(32);
            format_timestamp_micros(us, &mut s);
            if tz.is_some() {
                s.push('Z');
            }
            write_json(out, &s);
        }
        DataType::Date32 => {
            let d = col.as_primitive::<Date32Type>().value(row);
            let date = chrono::DateTime::from_timestamp(d as i64 * 86_400, 0)
                .map(|t| t.date_naive())
                .unwrap_or_default();
            write_json(out, &date.format("%Y-%m-%d").to_string());
        }
        DataType::List(item) => {
            let list = col.as_list::<i32>().value(row);
            write_list(out, &list, item)?;
        }
        DataType::LargeList(item) => {
            let list = col.as_list::<i64>().value(row);
            write_list(out, &list, item)?;
        }
        DataType::FixedSizeList(item, _) => {
            let list = col.as_fixed_size_list().value(row);
            write_list(out, &list, item)?;
        }
        DataType::Struct(fields) => {
            let s = col.as_struct();
            let offsets = offset_columns(fields);
            out.push(b'{');
            let mut first = true;
            for (i, (f, c)) in fields.iter().zip(s.columns()).enumerate() {
                let Some(offset) = &offsets[i] else {
                    continue;
                };
                if !first {
                    out.push(b',');
                }
                first = false;
                write_json(out, f.name());
                out.push(b':');
                match offset {
                    Some(j) => write_datetime(out, c, s.column(*j), row)?,
                    None => write_value(out, c, row, f)?,
                }
            }
            out.push(b'}');
        }
        DataType::Map(_, _) => {
            let m = col.as_map();
            let entries = m.value(row);
            let (keys, values) = (entries.column(0), entries.column(1));
            let vfield = match col.data_type() {
                DataType::Map(f, _) => match f.data_type() {
                    DataType::Struct(fs) => fs[1].clone(),
                    _ => unreachable!("map entries are structs"),
                },
                _ => unreachable!(),
            };
            out.push(b'{');
            for i in 0..entries.len() {
                if i > 0 {
                    out.push(b',');
                }
                let k = arrow::util::display::array_value_to_string(keys, i)?;
                write_json(out, &k);
                out.push(b':');
                write_value(out, values, i, &vfield)?;
            }
            out.push(b'}');
        }
        DataType::Dictionary(_, _) => {
            let plain = arrow::compute::cast(&col.slice(row, 1), &DataType::Utf8)?;
            write_value(out, &plain, 0, field)?;
        }
        _ => {
            // Decimals, durations, binaries...: their display form, as a string.
            let s = arrow::util::display::array_value_to_string(col, row).map_err(|e| {
                Error::config(format!(
                    "column {}: cannot write {} as JSON: {e}",
                    field.name(),
                    col.data_type()
                ))
            })?;
            write_json(out, &s);
        }
    }
    Ok(())
}

fn write_str(out: &mut Vec<u8>, s: &str, field: &Field) {
    // Also Arrow's canonical JSON extension (what the SQL JSON functions return).
    if is_json_text(field) || field.extension_type_name() == Some("arrow.json") {
        out.extend_from_slice(s.as_bytes());
    } else {
        write_json(out, s);
    }
}

fn write_list(out: &mut Vec<u8>, values: &ArrayRef, item: &Field) -> Result<()> {
    // Embeddings are most of the bytes: write a float list straight from its buffer.
    if values.data_type() == &DataType::Float64 && values.null_count() == 0 {
        let mut buf = ryu::Buffer::new();
        out.push(b'[');
        for (i, v) in values
            .as_primitive::<Float64Type>()
            .values()
            .iter()
            .enumerate()
        {
            if i > 0 {
                out.push(b',');
            }
            if v.is_finite() {
                out.extend_from_slice(buf.format_finite(*v).as_bytes());
            } else {
                write_non_finite(out, *v);
            }
        }
        out.push(b']');
        return Ok(());
    }
    out.push(b'[');
    for i in 0..values.len() {
        if i > 0 {
            out.push(b',');
        }
        write_value(out, values, i, item)?;
    }
    out.push(b']');
    Ok(())
}
