//! Bringing any batch of a known kind to its logical schema ([`conform`], one column at a
//! time with [`logical_column`]), whatever layout or physical types it was stored with:
//! Kura's JSON and ISO text parsed, view/large types cast, counts computed, absent
//! nullable columns filled. The JSONL decoder, the Parquet scans and the Rust types all
//! read through it, so every reader gives the same columns.

use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, Int32Array, Int64Array, ListBuilder, RecordBatch, StringArray,
    StringBuilder, StructBuilder, TimestampMicrosecondBuilder, new_null_array,
};
use arrow::compute::{CastOptions, cast_with_options};
use arrow::datatypes::{DataType, Field, SchemaRef};
use arrow::util::display::FormatOptions;

use crate::datetime::{parse_datetime, parse_timestamp_micros};
use crate::kind::{computed_len_of, is_json_text, message_fields, utc_offset_of};
use crate::{Error, Result};

/// Brings a batch of a known kind to the kind's logical schema, whatever layout or
/// physical types it was stored with: columns matched by name, Kura JSON text parsed,
/// view/large types cast, `count` computed, absent nullable columns filled with nulls.
/// A column that cannot be brought is named in the error.
pub fn conform(batch: &RecordBatch, schema: &SchemaRef) -> Result<RecordBatch> {
    conform_from(batch, schema, "batch")
}

/// [`conform`], with errors naming `source` (where the batch came from).
pub fn conform_from(batch: &RecordBatch, schema: &SchemaRef, source: &str) -> Result<RecordBatch> {
    if batch.schema() == *schema {
        return Ok(batch.clone());
    }
    let columns = schema
        .fields()
        .iter()
        .map(|f| logical_column(f, batch, source))
        .collect::<Result<Vec<_>>>()?;
    Ok(RecordBatch::try_new_with_options(
        schema.clone(),
        columns,
        &arrow::array::RecordBatchOptions::new().with_row_count(Some(batch.num_rows())),
    )?)
}

/// One logical column from a stored batch. `file` names the source in errors.
pub fn logical_column(field: &Field, batch: &RecordBatch, file: &str) -> Result<ArrayRef> {
    let name = field.name();
    let col_err = |msg: String| Error::data(file, None, Some(name), msg);
    if let Some(list) = computed_len_of(field) {
        let src = batch
            .column_by_name(list)
            .ok_or_else(|| col_err(format!("cannot compute: column {list} is missing")))?;
        let src = logical_column(
            &Field::new(list, crate::kind::string_list_type(), true),
            batch,
            file,
        )
        .or_else(|_| Ok::<_, Error>(src.clone()))?;
        let counts: Int64Array = match src.data_type() {
            DataType::List(_) => {
                let l = src.as_list::<i32>();
                (0..l.len())
                    .map(|i| {
                        if l.is_null(i) {
                            0
                        } else {
                            l.value_length(i) as i64
                        }
                    })
                    .collect()
            }
            _ => {
                return Err(col_err(format!(
                    "cannot compute from column {list} of type {}",
                    src.data_type()
                )));
            }
        };
        return Ok(Arc::new(counts));
    }
    let Some(col) = batch.column_by_name(name) else {
        if let Some(of) = utc_offset_of(field)
            && let Some(datetimes) = batch.column_by_name(of)
        {
            if is_text(datetimes.data_type()) {
                return text_to_offsets(datetimes);
            }
            // A zone-aware timestamp (what pyarrow, pandas and polars make of aware
            // datetimes) is a UTC instant: offset 0, written `Z`, so it stays aware.
            if matches!(datetimes.data_type(), DataType::Timestamp(_, Some(_))) {
                let zeros: Int32Array = (0..datetimes.len())
                    .map(|i| datetimes.is_valid(i).then_some(0))
                    .collect();
                return Ok(Arc::new(zeros));
            }
        }
        if let Some(default) = field.metadata().get(crate::kind::DEFAULT_JSON) {
            return Ok(Arc::new(StringArray::from(vec![
                default.as_str();
                batch.num_rows()
            ])));
        }
        if field.is_nullable() {
            return Ok(new_null_array(field.data_type(), batch.num_rows()));
        }
        return Err(col_err("required column is missing".into()));
    };
    let out = if col.data_type() == field.data_type() {
        col.clone()
    } else {
        let text_like = matches!(
            col.data_type(),
            DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View
        );
        match field.data_type() {
            DataType::List(_) if text_like => json_text_to_list(col, field, file)?,
            DataType::List(_) if messages_without_offsets(col.data_type()) => {
                add_null_offsets(col, field)?
            }
            DataType::Timestamp(..) if text_like => text_to_timestamps(col, name, file)?,
            dt => {
                let opts = CastOptions {
                    safe: false,
                    format_options: FormatOptions::default(),
                };
                cast_with_options(col, dt, &opts).map_err(|e| {
                    col_err(format!("expected {dt}, found {} ({e})", col.data_type()))
                })?
            }
        }
    };
    if !field.is_nullable() && out.null_count() > 0 {
        return Err(col_err("null values in a required column".into()));
    }
    if is_json_text(field) {
        // Metadata must be a JSON object; Kura's files store it as JSON text already.
        let s = out.as_string::<i32>();
        for i in 0..s.len() {
            if s.is_valid(i) && !s.value(i).trim_start().starts_with('{') {
                return Err(col_err(format!("row {i}: expected a JSON object")));
            }
        }
    }
    Ok(out)
}

fn is_text(dt: &DataType) -> bool {
    matches!(
        dt,
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View
    )
}

/// The UTC offsets of datetimes stored as text (Kura's layout): null where naive or null.
fn text_to_offsets(col: &ArrayRef) -> Result<ArrayRef> {
    let text = as_utf8(col)?;
    let s = text.as_string::<i32>();
    let offsets: Int32Array = (0..s.len())
        .map(|i| {
            s.is_valid(i)
                .then(|| parse_datetime(s.value(i)).and_then(|(_, o)| o))
                .flatten()
        })
        .collect();
    Ok(Arc::new(offsets))
}

/// Whether a stored type is the messages list as native files held it before messages had
/// their `created_at_utc_offset`: a list of structs without that field.
pub(crate) fn messages_without_offsets(dt: &DataType) -> bool {
    match dt {
        DataType::List(item) => match item.data_type() {
            DataType::Struct(fields) => {
                fields.find("created_at").is_some()
                    && fields.find("created_at_utc_offset").is_none()
            }
            _ => false,
        },
        _ => false,
    }
}

/// Messages of an earlier native file: their datetimes are naive (null offsets).
fn add_null_offsets(col: &ArrayRef, field: &Field) -> Result<ArrayRef> {
    let list = col.as_list::<i32>();
    let structs = list.values().as_struct();
    let DataType::List(item) = field.data_type() else {
        unreachable!("messages are a list")
    };
    let DataType::Struct(fields) = item.data_type() else {
        unreachable!("messages are structs")
    };
    let columns = fields
        .iter()
        .map(|f| match structs.column_by_name(f.name()) {
            Some(c) if c.data_type() == f.data_type() => Ok(c.clone()),
            Some(c) => Ok(arrow::compute::cast(c, f.data_type())?),
            None => Ok(new_null_array(f.data_type(), structs.len())),
        })
        .collect::<Result<Vec<_>>>()?;
    let structs =
        arrow::array::StructArray::try_new(fields.clone(), columns, structs.nulls().cloned())?;
    Ok(Arc::new(arrow::array::ListArray::try_new(
        item.clone(),
        list.offsets().clone(),
        Arc::new(structs),
        list.nulls().cloned(),
    )?))
}

fn as_utf8(col: &ArrayRef) -> Result<ArrayRef> {
    Ok(arrow::compute::cast(col, &DataType::Utf8)?)
}

fn text_to_timestamps(col: &ArrayRef, name: &str, file: &str) -> Result<ArrayRef> {
    let text = as_utf8(col)?;
    let s = text.as_string::<i32>();
    let mut b = TimestampMicrosecondBuilder::new();
    for i in 0..s.len() {
        if s.is_null(i) {
            b.append_null();
        } else {
            let v = parse_datetime(s.value(i))
                .map(|(us, _)| us)
                .or_else(|| parse_timestamp_micros(s.value(i)))
                .ok_or_else(|| {
                    Error::data(
                        file,
                        None,
                        Some(name),
                        format!(
                            "row {i}: expected an ISO-8601 datetime, found {:?}",
                            s.value(i)
                        ),
                    )
                })?;
            b.append_value(v);
        }
    }
    Ok(Arc::new(b.finish()))
}

fn json_text_to_list(col: &ArrayRef, field: &Field, file: &str) -> Result<ArrayRef> {
    let text = as_utf8(col)?;
    let s = text.as_string::<i32>();
    let name = field.name();
    let bad =
        |i: usize, msg: String| Error::data(file, None, Some(name), format!("row {i}: {msg}"));
    let DataType::List(item) = field.data_type() else {
        unreachable!("called for list fields")
    };
    match item.data_type() {
        DataType::Utf8 => {
            let mut b = ListBuilder::new(StringBuilder::new()).with_field(item.clone());
            for i in 0..s.len() {
                let v: Option<Vec<Option<String>>> = if s.is_null(i) {
                    None
                } else {
                    serde_json::from_str(s.value(i))
                        .map_err(|e| bad(i, format!("expected a JSON list of strings ({e})")))?
                };
                match v {
                    Some(items) => {
                        for it in items {
                            b.values().append_option(it);
                        }
                        b.append(true)
                    }
                    None => b.append(false),
                }
            }
            Ok(Arc::new(b.finish()))
        }
        DataType::Struct(_) => {
            #[derive(serde::Deserialize)]
            struct Msg {
                created_at: String,
                role: String,
                content: String,
            }
            let mut b = ListBuilder::new(StructBuilder::from_fields(message_fields(), 0))
                .with_field(item.clone());
            for i in 0..s.len() {
                let v: Option<Vec<Msg>> = if s.is_null(i) {
                    None
                } else {
                    serde_json::from_str(s.value(i))
                        .map_err(|e| bad(i, format!("expected a JSON list of messages ({e})")))?
                };
                match v {
                    Some(msgs) => {
                        for m in msgs {
                            let (us, offset) = parse_datetime(&m.created_at).ok_or_else(|| {
                                bad(
                                    i,
                                    format!(
                                        "message created_at {:?} is not a datetime",
                                        m.created_at
                                    ),
                                )
                            })?;
                            let sb = b.values();
                            sb.field_builder::<TimestampMicrosecondBuilder>(0)
                                .expect("created_at")
                                .append_value(us);
                            sb.field_builder::<StringBuilder>(1)
                                .expect("role")
                                .append_value(&m.role);
                            sb.field_builder::<StringBuilder>(2)
                                .expect("content")
                                .append_value(&m.content);
                            sb.field_builder::<arrow::array::Int32Builder>(3)
                                .expect("created_at_utc_offset")
                                .append_option(offset);
                            sb.append(true);
                        }
                        b.append(true)
                    }
                    None => b.append(false),
                }
            }
            Ok(Arc::new(b.finish()))
        }
        other => Err(bad(
            0,
            format!("cannot read a list of {other} from JSON text"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::TimestampMicrosecondArray;
    use arrow::datatypes::{Int32Type, Schema};

    #[test]
    fn a_zone_aware_timestamp_without_offsets_is_a_utc_instant() {
        let schema = crate::kind::CheckpointKind::Conversations.schema();
        let offset = schema.field_with_name("created_at_utc_offset").unwrap();
        let at = TimestampMicrosecondArray::from(vec![Some(1_000_000), None]).with_timezone("UTC");
        let given = Schema::new(vec![Field::new("created_at", at.data_type().clone(), true)]);
        let batch = RecordBatch::try_new(Arc::new(given), vec![Arc::new(at)]).unwrap();
        let offsets = logical_column(offset, &batch, "t").unwrap();
        let offsets = offsets.as_primitive::<Int32Type>();
        assert_eq!(offsets.iter().collect::<Vec<_>>(), [Some(0), None]);

        // A naive timestamp stays naive: no offsets.
        let naive = TimestampMicrosecondArray::from(vec![Some(1_000_000)]);
        let given = Schema::new(vec![Field::new(
            "created_at",
            naive.data_type().clone(),
            true,
        )]);
        let batch = RecordBatch::try_new(Arc::new(given), vec![Arc::new(naive)]).unwrap();
        let offsets = logical_column(offset, &batch, "t").unwrap();
        assert_eq!(offsets.null_count(), 1);
    }
}
