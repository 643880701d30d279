//! A checkpoint's table: the kind's declared schema over its files, in every format and
//! layout, with the stored columns checked against the kind before anything is read.

use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Schema, SchemaRef};
use datafusion::catalog::TableProvider;
use datafusion::datasource::file_format::json::JsonFormat;
use datafusion::datasource::listing::{
    ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl,
};
use object_store::{ObjectMeta, ObjectStoreExt};

use crate::format::FileFormat;
use crate::jsonl::DecodeOptions;
use crate::kind::CheckpointKind;
use crate::scan::parquet::{SnapshotParquetFormat, parquet_footer};
use crate::scan::{FileNames, JsonlFormat, SkipLog};
use crate::storage::Root;
use crate::{Error, Result};

use super::*;

/// Settings every table of a root shares.
#[derive(Debug, Clone, Default)]
pub struct TableOptions {
    pub decode: DecodeOptions,
    pub skips: SkipLog,
}

/// The table for one checkpoint: a checkpoint with appended parts is one table of all its
/// files, duplicates resolved (see [`crate::catalog::appended`]).
pub async fn table_for(
    root: &Root,
    entry: &Entry,
    opts: &TableOptions,
) -> Result<Arc<dyn TableProvider>> {
    entry.check_readable()?;
    if part_count(entry) == 0 {
        return single_file_table(root, entry, None, opts).await;
    }
    let kind = resolve_kind(root, entry).await?.ok_or_else(|| {
        Error::config(format!(
            "{} has appended parts but no known kind (summaries, clusters, meta_clusters, \
             dimensionality, conversations): its rows have no id to resolve duplicates by",
            root.describe(&entry.file)
        ))
    })?;
    Ok(Arc::new(AppendedTable::new(root, entry, kind, opts).await?))
}

/// The table of a checkpoint stored as one file (or a directory of parts written by
/// COPY), of kind `kind` when given, else as [`resolve_kind`] finds it.
pub(crate) async fn single_file_table(
    root: &Root,
    entry: &Entry,
    kind: Option<CheckpointKind>,
    opts: &TableOptions,
) -> Result<Arc<dyn TableProvider>> {
    let kind = match kind {
        Some(k) => Some(k),
        None => resolve_kind(root, entry).await?,
    };
    match (entry.format, kind) {
        (FileFormat::Hf, kind) => {
            let first = entry
                .files
                .first()
                .ok_or_else(|| Error::config(format!("{} has no data files", entry.file)))?;
            let stored = crate::scan::hf::stored_schema(root, first).await?;
            let kind = kind.filter(|k| crate::scan::hf::fits_kind(*k, &stored));
            crate::scan::hf::hf_table(root, &entry.file, &entry.files, stored, kind)
        }
        (FileFormat::Jsonl, Some(kind)) => {
            let format = JsonlFormat::new(kind, opts.decode, opts.skips.clone())
                .with_file_names(FileNames::relative_to(root.prefix().clone()));
            listing(root, entry, Arc::new(format), kind.schema(), "")
        }
        (FileFormat::Jsonl, None) => {
            let schema = infer_jsonl_schema(root, &entry.files).await?;
            listing(root, entry, Arc::new(JsonFormat::default()), schema, "")
        }
        (FileFormat::Parquet, kind) => {
            let first = entry
                .files
                .first()
                .ok_or_else(|| Error::config(format!("{} has no files", entry.file)))?;
            let stored = Arc::new(
                parquet_footer(root.store(), first, &display_name(root, first))
                    .await?
                    .schema,
            );
            // Reads that never mix two versions of a file a save replaces meanwhile.
            let format = Arc::new(SnapshotParquetFormat::new());
            match kind {
                // Kura's layout, or a native file from before the UTC offset columns.
                Some(kind) if crate::layout::needs_conversion(kind, &stored) => {
                    let inner = listing(root, entry, format, stored, ".parquet")?;
                    crate::scan::kura::kura_layout_table(kind, inner, &entry.file)
                }
                Some(kind) => {
                    check_native_columns(kind, &stored, &entry.file)?;
                    listing(root, entry, format, kind.schema(), ".parquet")
                }
                None => listing(root, entry, format, stored, ".parquet"),
            }
        }
    }
}

/// The columns of a stored Parquet file of `kind`, as `ckpt ls` checks them: in the native
/// layout, what [`single_file_table`] checks before a read; in Kura's layout, that every
/// required column is there (a read would fail on the first row without it).
pub(crate) fn check_stored_columns(
    kind: CheckpointKind,
    stored: &Schema,
    file: &str,
) -> Result<()> {
    if !crate::layout::needs_conversion(kind, stored) {
        return check_native_columns(kind, stored, file);
    }
    for f in kind.schema().fields() {
        let optional = f.is_nullable()
            || crate::kind::computed_len_of(f).is_some()
            || f.metadata().get(crate::kind::DEFAULT_JSON).is_some();
        if !optional && stored.field_with_name(f.name()).is_err() {
            return Err(Error::data(
                file,
                None,
                Some(f.name()),
                format!("required column is missing for a {kind} checkpoint"),
            ));
        }
    }
    Ok(())
}

/// A native-layout file must have the kind's columns with compatible types; say which
/// column is wrong before a query trips over it.
fn check_native_columns(kind: CheckpointKind, stored: &Schema, file: &str) -> Result<()> {
    for f in kind.schema().fields() {
        if crate::kind::computed_len_of(f).is_some() {
            continue;
        }
        match stored.field_with_name(f.name()) {
            Err(_) if !f.is_nullable() && f.metadata().get(crate::kind::DEFAULT_JSON).is_none() => {
                return Err(Error::data(
                    file,
                    None,
                    Some(f.name()),
                    format!("required column is missing for a {kind} checkpoint"),
                ));
            }
            Ok(s) if !compatible_column(s.data_type(), f.data_type()) => {
                return Err(Error::data(
                    file,
                    None,
                    Some(f.name()),
                    format!("expected {}, found {}", f.data_type(), s.data_type()),
                ));
            }
            _ => {}
        }
    }
    Ok(())
}

/// Whether a stored column can be read as the kind's type: castable, and not text where a
/// number or boolean is expected (or the reverse), which a cast would only fail on (or
/// silently accept) row by row, without naming the column.
fn compatible_column(stored: &DataType, wanted: &DataType) -> bool {
    fn text(dt: &DataType) -> bool {
        match dt {
            DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => true,
            DataType::Dictionary(_, v) => text(v),
            _ => false,
        }
    }
    fn scalar(dt: &DataType) -> bool {
        dt.is_numeric() || *dt == DataType::Boolean
    }
    fn list(dt: &DataType) -> bool {
        matches!(
            dt,
            DataType::List(_) | DataType::LargeList(_) | DataType::FixedSizeList(..)
        )
    }
    if !datafusion::arrow::compute::can_cast_types(stored, wanted) {
        return false;
    }
    // A cast would turn a list into its text ("[1.0]") or a value into a one-item list.
    if list(stored) != list(wanted) {
        return false;
    }
    match (stored, wanted) {
        (s, w) if text(s) && scalar(w) || scalar(s) && text(w) => false,
        (
            DataType::List(s) | DataType::LargeList(s) | DataType::FixedSizeList(s, _),
            DataType::List(w),
        ) => compatible_column(s.data_type(), w.data_type()),
        _ => true,
    }
}

fn listing(
    root: &Root,
    entry: &Entry,
    format: Arc<dyn datafusion::datasource::file_format::FileFormat>,
    schema: SchemaRef,
    ext: &str,
) -> Result<Arc<dyn TableProvider>> {
    // A directory's URL ends in '/', so the listing reads its parts.
    let url = root.url_of(entry.file.trim_end_matches('/'))?;
    let url = match entry.is_dir() {
        true => format!("{url}/"),
        false => url.to_string(),
    };
    let table_url = ListingTableUrl::parse(&url)?;
    let ext = if entry.is_dir() {
        entry.format_ext()
    } else {
        ext.to_owned()
    };
    let options = ListingOptions::new(format).with_file_extension(ext);
    let config = ListingTableConfig::new(table_url)
        .with_listing_options(options)
        .with_schema(schema);
    Ok(Arc::new(ListingTable::try_new(config)?))
}

impl Entry {
    fn format_ext(&self) -> String {
        self.files
            .first()
            .and_then(|m| m.location.extension().map(|e| format!(".{e}")))
            .unwrap_or_default()
    }
}

/// Schema of a JSONL checkpoint of no known kind, inferred from its first 1000 lines.
async fn infer_jsonl_schema(root: &Root, files: &[ObjectMeta]) -> Result<SchemaRef> {
    // An empty file has no columns to infer: an empty table (and no read of zero bytes,
    // which stores refuse as an invalid range).
    let Some(first) = files.iter().find(|m| m.size > 0) else {
        return Ok(Arc::new(Schema::empty()));
    };
    let end = first.size.min(8 << 20);
    let bytes = root
        .store()
        .get_range(&first.location, 0..end)
        .await
        .map_err(|e| Error::storage(format!("cannot read {}", display_name(root, first)), e))?;
    let body = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(&bytes);
    let (schema, _) =
        datafusion::arrow::json::reader::infer_json_schema(std::io::Cursor::new(body), Some(1000))
            .map_err(|e| {
                Error::data(
                    display_name(root, first),
                    None,
                    None,
                    format!("cannot infer a schema: {e}"),
                )
            })?;
    Ok(Arc::new(schema))
}
