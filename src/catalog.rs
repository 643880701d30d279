//! A checkpoint root as a DataFusion schema: every checkpoint is a table named by its
//! checkpoint name.
//!
//! - Known kinds (`summaries`, `clusters`, `meta_clusters`, `dimensionality`,
//!   `conversations`, or a file whose columns are one of those) get the kind's declared
//!   schema, in every format and layout, so one query works on JSONL, native Parquet and
//!   Kura-layout Parquet alike.
//! - Other `*.jsonl`/`*.json`/`*.parquet` files and directories of parts are inferred.
//! - When one name exists in both formats, the bare name is the **Parquet** file (typed,
//!   faster); the JSONL one stays reachable as `"summaries.jsonl"` (quoted). Every file is
//!   also reachable by its file name.
//! - The listing is read again when a query names a table, so a checkpoint saved after
//!   start-up is visible to the next query.

use std::collections::BTreeMap;
use std::sync::Arc;

use parking_lot::RwLock;

use async_trait::async_trait;
use datafusion::arrow::datatypes::{DataType, Schema, SchemaRef};
use datafusion::catalog::{SchemaProvider, TableProvider};
use datafusion::datasource::file_format::json::JsonFormat;
use datafusion::datasource::listing::{
    ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl,
};
use datafusion::error::{DataFusionError, Result as DfResult};
use object_store::{ObjectMeta, ObjectStoreExt};

use crate::format::{FileFormat, strip_extension};
use crate::jsonl::DecodeOptions;
use crate::kind::{CheckpointKind, kind_of_columns};
use crate::layout::detect_layout;
use crate::scan::parquet::{ParquetFooter, SnapshotParquetFormat, parquet_footer};
use crate::scan::{FileNames, JsonlFormat, SkipLog};
use crate::storage::Root;
use crate::{Error, Result};

/// One checkpoint found in a root.
#[derive(Debug, Clone)]
pub struct Entry {
    /// The checkpoint name: the file name without extension (`summaries`).
    pub name: String,
    /// The file (or directory, ending in `/`) name within the root.
    pub file: String,
    pub format: FileFormat,
    /// The kind, when the name says it (the contents may tell more: see [`resolve_kind`]).
    pub kind: Option<CheckpointKind>,
    /// The files holding the rows (one, or the parts of a directory).
    pub files: Vec<ObjectMeta>,
    /// Why the checkpoint cannot be read (a symlink loop, a directory that cannot be
    /// listed): it is listed all the same, its error reported by `ckpt ls` and by any
    /// query that names it, while the root's other checkpoints read as usual.
    pub problem: Option<String>,
}

impl Entry {
    /// An entry of `root` that cannot be read: `file` as listed (a directory ends in `/`).
    fn unreadable(root: &Root, file: &str, reason: &str) -> Entry {
        let trimmed = file.trim_end_matches('/');
        let (stem, format) = strip_extension(trimmed);
        Entry {
            name: stem.to_owned(),
            file: file.to_owned(),
            format: format.unwrap_or(FileFormat::Jsonl),
            kind: CheckpointKind::from_name(stem),
            files: Vec::new(),
            problem: Some(format!("cannot read {}: {reason}", root.describe(trimmed))),
        }
    }

    /// The entry's problem as an error, when it has one.
    fn check_readable(&self) -> Result<()> {
        match &self.problem {
            Some(p) => Err(Error::config(p.clone())),
            None => Ok(()),
        }
    }

    pub fn bytes(&self) -> u64 {
        self.files.iter().map(|f| f.size).sum()
    }
    pub fn is_dir(&self) -> bool {
        self.file.ends_with('/')
    }
}

/// Lists the checkpoints of a root, sorted by name (then JSONL before Parquet).
///
/// An entry that cannot be read (see [`Root::list_checked`]) is listed with its
/// [`problem`](Entry::problem) when it could be a checkpoint (a directory, or a file with a
/// checkpoint's extension); only a root that cannot be listed fails.
pub async fn list_checkpoints(root: &Root) -> Result<Vec<Entry>> {
    let listing = root.list_checked().await?;
    let (files, dirs) = (listing.files, listing.dirs);
    let mut out = Vec::new();
    for bad in &listing.unreadable {
        if strip_extension(&bad.name).1.is_some() {
            out.push(Entry::unreadable(root, &bad.name, &bad.reason));
        }
    }
    for meta in files {
        let Some(file) = root.name_of(&meta.location) else {
            continue;
        };
        let (stem, Some(format)) = strip_extension(&file) else {
            continue;
        };
        out.push(Entry {
            name: stem.to_owned(),
            kind: CheckpointKind::from_name(stem),
            format,
            file: file.clone(),
            files: vec![meta],
            problem: None,
        });
    }
    for dir in dirs {
        // The parts of an appended checkpoint belong to its entry (made here when it has
        // no base yet): listed after the base, as every reader lists them.
        if let Some((base, format)) = crate::append::parts_dir_base(&dir) {
            let parts = match crate::append::list_parts(root, base, format).await {
                Ok(parts) => parts,
                Err(e) => {
                    out.retain(|e| e.file != base);
                    out.push(Entry::unreadable(root, base, &e.to_string()));
                    continue;
                }
            };
            if parts.is_empty() {
                continue;
            }
            match out.iter_mut().find(|e| e.file == base) {
                Some(e) => e.files.extend(parts),
                None => out.push(Entry {
                    name: strip_extension(base).0.to_owned(),
                    kind: CheckpointKind::from_name(strip_extension(base).0),
                    format,
                    file: base.to_owned(),
                    files: parts,
                    problem: None,
                }),
            }
            continue;
        }
        let parts = match root.list_dir(&dir).await {
            Ok(parts) => parts,
            Err(e) => {
                out.push(Entry::unreadable(root, &format!("{dir}/"), &e.to_string()));
                continue;
            }
        };
        // A directory is a checkpoint when its files share one checkpoint format.
        let formats: Vec<FileFormat> = parts
            .iter()
            .filter_map(|m| m.location.extension().and_then(FileFormat::from_extension))
            .collect();
        let Some(&format) = formats.first() else {
            continue;
        };
        if formats.iter().any(|f| *f != format) || formats.len() != parts.len() {
            continue;
        }
        // Files named as different kinds (parquet/summaries.parquet, parquet/clusters.parquet)
        // are a root of their own, not one checkpoint in parts.
        let mut kinds: Vec<CheckpointKind> = parts
            .iter()
            .filter_map(|m| m.location.filename().and_then(CheckpointKind::from_name))
            .collect();
        kinds.dedup();
        if kinds.len() > 1 {
            continue;
        }
        let name = dir.trim_end_matches('/').to_owned();
        out.push(Entry {
            kind: CheckpointKind::from_name(strip_extension(&name).0),
            name: strip_extension(&name).0.to_owned(),
            format,
            file: format!("{name}/"),
            files: parts,
            problem: None,
        });
    }
    out.sort_by(|a, b| (&a.name, a.format.extension()).cmp(&(&b.name, b.format.extension())));
    Ok(out)
}

/// The kind of a checkpoint: from its name, else from its columns (Parquet footer or
/// the keys of the first JSONL line).
pub async fn resolve_kind(root: &Root, entry: &Entry) -> Result<Option<CheckpointKind>> {
    if entry.kind.is_some() {
        return Ok(entry.kind);
    }
    let Some(first) = entry.files.first() else {
        return Ok(None);
    };
    let display = display_name(root, first);
    match entry.format {
        FileFormat::Parquet => Ok(kind_of_footer(
            &parquet_footer(root.store(), first, &display).await?,
        )),
        FileFormat::Jsonl => Ok(kind_of_first_line(&first_line(root, first).await?)),
    }
}

/// The kind a Parquet footer says: ckpt's `ckpt.kind` key, else the columns.
fn kind_of_footer(footer: &ParquetFooter) -> Option<CheckpointKind> {
    if let Some((_, k)) = footer.key_value.iter().find(|(k, _)| k == "ckpt.kind")
        && let Some(kind) = CheckpointKind::from_name(k)
    {
        return Some(kind);
    }
    kind_of_columns(footer.schema.fields().iter().map(|f| f.name().as_str()))
}

/// The kind the keys of a JSONL file's first line say.
fn kind_of_first_line(line: &[u8]) -> Option<CheckpointKind> {
    let line = line.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(line);
    let keys: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(line).ok()?;
    kind_of_columns(keys.keys().map(String::as_str))
}

/// A first line longer than this is not read further (its keys then say no kind).
const FIRST_LINE_MAX: usize = 64 << 20;

async fn first_line(root: &Root, meta: &ObjectMeta) -> Result<Vec<u8>> {
    // An empty file has no first line (and stores refuse a read of zero bytes).
    if meta.size == 0 {
        return Ok(Vec::new());
    }
    let mut len = 64 * 1024u64;
    loop {
        let end = len.min(meta.size);
        let bytes = root
            .store()
            .get_range(&meta.location, 0..end)
            .await
            .map_err(|e| Error::storage(format!("cannot read {}", display_name(root, meta)), e))?;
        let b = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(&bytes);
        if let Some(i) = memchr::memchr(b'\n', b) {
            return Ok(b[..i].to_vec());
        }
        if end == meta.size || len > FIRST_LINE_MAX as u64 {
            return Ok(b.to_vec());
        }
        len *= 4;
    }
}

fn display_name(root: &Root, meta: &ObjectMeta) -> String {
    root.name_of(&meta.location)
        .unwrap_or_else(|| meta.location.to_string())
}

/// Settings every table of a root shares.
#[derive(Debug, Clone, Default)]
pub struct TableOptions {
    pub decode: DecodeOptions,
    pub skips: SkipLog,
}

/// The table for one checkpoint: a checkpoint with appended parts is one table of all its
/// files, duplicates resolved (see [`crate::append`]).
pub async fn table_for(
    root: &Root,
    entry: &Entry,
    opts: &TableOptions,
) -> Result<Arc<dyn TableProvider>> {
    entry.check_readable()?;
    if crate::append::part_count(entry) == 0 {
        return single_file_table(root, entry, None, opts).await;
    }
    let kind = resolve_kind(root, entry).await?.ok_or_else(|| {
        Error::config(format!(
            "{} has appended parts but no known kind (summaries, clusters, meta_clusters, \
             dimensionality, conversations): its rows have no id to resolve duplicates by",
            root.describe(&entry.file)
        ))
    })?;
    Ok(Arc::new(
        crate::append::AppendedTable::new(root, entry, kind, opts).await?,
    ))
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
fn check_stored_columns(kind: CheckpointKind, stored: &Schema, file: &str) -> Result<()> {
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

/// A root as a DataFusion schema. Tables created with SQL (`CREATE VIEW`, `CREATE TABLE AS`)
/// live beside the checkpoints for the session.
#[derive(Debug)]
pub struct CheckpointSchema {
    root: Root,
    opts: TableOptions,
    entries: RwLock<Vec<Entry>>,
    extra: RwLock<BTreeMap<String, Arc<dyn TableProvider>>>,
}

impl CheckpointSchema {
    pub async fn open(root: Root, opts: TableOptions) -> Result<Arc<Self>> {
        let s = Arc::new(CheckpointSchema {
            root,
            opts,
            entries: RwLock::new(vec![]),
            extra: RwLock::default(),
        });
        s.refresh().await?;
        Ok(s)
    }

    pub fn root(&self) -> &Root {
        &self.root
    }

    pub fn options(&self) -> &TableOptions {
        &self.opts
    }

    /// Lists the root again.
    pub async fn refresh(&self) -> Result<()> {
        let entries = list_checkpoints(&self.root).await?;
        *self.entries.write() = entries;
        Ok(())
    }

    pub fn entries(&self) -> Vec<Entry> {
        self.entries.read().clone()
    }

    /// The entry a table name stands for (see the module docs for the rule).
    pub fn lookup(&self, name: &str) -> Option<Entry> {
        pick(&self.entries.read(), name).cloned()
    }
}

/// The entry a table name stands for: a file name, else the checkpoint name (Parquet first).
fn pick<'a>(entries: &'a [Entry], name: &str) -> Option<&'a Entry> {
    entries
        .iter()
        .find(|e| e.file == name || e.file.trim_end_matches('/') == name)
        .or_else(|| {
            entries
                .iter()
                .filter(|e| e.name == name)
                .min_by_key(|e| match e.format {
                    FileFormat::Parquet => 0,
                    FileFormat::Jsonl => 1,
                })
        })
}

#[async_trait]
impl SchemaProvider for CheckpointSchema {
    fn table_names(&self) -> Vec<String> {
        let entries = self.entries.read();
        let mut names: Vec<String> = Vec::new();
        for e in entries.iter() {
            // The bare name is the entry `lookup` gives for it (the Parquet file when both
            // formats exist); the other keeps its file name.
            let name = match pick(&entries, &e.name) {
                Some(p) if std::ptr::eq(p, e) => e.name.clone(),
                _ => e.file.trim_end_matches('/').to_owned(),
            };
            if !names.contains(&name) {
                names.push(name);
            }
        }
        names.extend(self.extra.read().keys().cloned());
        names
    }

    async fn table(&self, name: &str) -> DfResult<Option<Arc<dyn TableProvider>>> {
        if let Some(t) = self.extra.read().get(name) {
            return Ok(Some(t.clone()));
        }
        self.refresh().await.map_err(DataFusionError::from)?;
        let Some(entry) = self.lookup(name) else {
            return Ok(None);
        };
        Ok(Some(
            table_for(&self.root, &entry, &self.opts)
                .await
                .map_err(DataFusionError::from)?,
        ))
    }

    fn register_table(
        &self,
        name: String,
        table: Arc<dyn TableProvider>,
    ) -> DfResult<Option<Arc<dyn TableProvider>>> {
        if self.lookup(&name).is_some() {
            return Err(DataFusionError::Plan(format!(
                "{name} is a checkpoint in {}; choose another name for the new table",
                self.root.display()
            )));
        }
        Ok(self.extra.write().insert(name, table))
    }

    fn deregister_table(&self, name: &str) -> DfResult<Option<Arc<dyn TableProvider>>> {
        if let Some(t) = self.extra.write().remove(name) {
            return Ok(Some(t));
        }
        match self.lookup(name) {
            // Else `DROP TABLE summaries` would report success and change nothing.
            Some(e) => Err(DataFusionError::Plan(format!(
                "{name} is the checkpoint {} in {}; SQL does not delete checkpoint files",
                e.file,
                self.root.display()
            ))),
            None => Ok(None),
        }
    }

    fn table_exist(&self, name: &str) -> bool {
        self.extra.read().contains_key(name) || self.lookup(name).is_some()
    }
}

/// What `ckpt ls` shows of one checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct CheckpointInfo {
    pub name: String,
    pub file: String,
    /// The kind's default name, or null for a checkpoint of no known kind.
    pub kind: Option<String>,
    pub format: String,
    /// `native` or `kura` for Parquet of a known kind.
    pub layout: Option<String>,
    /// Null when the checkpoint could not be read (see `error`).
    pub rows: Option<u64>,
    pub bytes: u64,
    /// Appended parts not yet compacted (0 for a checkpoint stored as one file).
    pub parts: usize,
    /// Why the checkpoint could not be read (a damaged Parquet footer, say); the other
    /// checkpoints of the root are listed all the same.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// How many checkpoints [`describe_root`] reads at once: on an object store each costs a
/// request's latency, and a root may hold thousands of files.
const DESCRIBE_CONCURRENCY: usize = 16;

/// Describes every checkpoint of a root: kind, format, rows and bytes. Rows come from
/// the Parquet footer (one ranged read per file, which also gives kind and layout), or
/// from counting the JSONL lines that are not blank (one read of the file, whose first
/// line gives the kind). A checkpoint that cannot be read is listed with its error; only
/// a root that cannot be listed fails. On local disk it first removes the staged files
/// (`name#N`) of writers that are gone.
pub async fn describe_root(root: &Root) -> Result<Vec<CheckpointInfo>> {
    use futures::StreamExt;
    // `ckpt ls` reclaims the disk that killed writers left (see `Root::clean_staged`).
    root.clean_staged().await;
    let entries = list_checkpoints(root).await?;
    // Each read owns its entry and root: futures that borrowed them could not be sent
    // between threads by callers that spawn this (the Python package).
    let reads = entries.iter().cloned().map(|entry| {
        let root = root.clone();
        async move { describe_entry(&root, &entry).await }
    });
    let described: Vec<_> = futures::stream::iter(reads)
        .buffered(DESCRIBE_CONCURRENCY)
        .collect()
        .await;
    Ok(entries
        .iter()
        .zip(described)
        .map(|(entry, described)| {
            let (kind, layout, rows, error) = match described {
                Ok((kind, layout, rows)) => (kind, layout, Some(rows), None),
                Err(e) => (entry.kind, None, None, Some(e.to_string())),
            };
            CheckpointInfo {
                name: entry.name.clone(),
                file: entry.file.clone(),
                kind: kind.map(|k| k.to_string()),
                format: entry.format.to_string(),
                layout,
                rows,
                bytes: entry.bytes(),
                parts: crate::append::part_count(entry),
                error,
            }
        })
        .collect())
}

/// Kind, layout and rows of one checkpoint.
async fn describe_entry(
    root: &Root,
    entry: &Entry,
) -> Result<(Option<CheckpointKind>, Option<String>, u64)> {
    entry.check_readable()?;
    if crate::append::part_count(entry) > 0 {
        let kind = resolve_kind(root, entry).await?;
        return describe_appended(root, entry, kind).await;
    }
    let mut kind = entry.kind;
    let mut rows = 0u64;
    let mut layout = None;
    for (i, meta) in entry.files.iter().enumerate() {
        let display = display_name(root, meta);
        match entry.format {
            FileFormat::Parquet => {
                let footer = parquet_footer(root.store(), meta, &display).await?;
                rows += footer.rows;
                if i == 0 && kind.is_none() {
                    kind = kind_of_footer(&footer);
                }
                if let Some(k) = kind {
                    // What a read checks before its first row, `ls` checks too: a file it
                    // lists as fine is one a query reads.
                    check_stored_columns(k, &footer.schema, &display)?;
                    layout = Some(detect_layout(k, &footer.schema).to_string());
                }
            }
            FileFormat::Jsonl => {
                let want_head = i == 0 && kind.is_none();
                let (lines, head) = count_jsonl_rows(root, meta, &display, want_head).await?;
                rows += lines;
                if want_head {
                    kind = kind_of_first_line(&head);
                }
            }
        }
    }
    Ok((kind, layout, rows))
}

/// The lines of a JSONL file that are not blank, in one read; with `want_head`, also its
/// first line (up to [`FIRST_LINE_MAX`] bytes).
async fn count_jsonl_rows(
    root: &Root,
    meta: &ObjectMeta,
    display: &str,
    want_head: bool,
) -> Result<(u64, Vec<u8>)> {
    use futures::StreamExt;
    let cannot_read = |e| Error::storage(format!("cannot read {display}"), e);
    let mut s = root
        .store()
        .get(&meta.location)
        .await
        .map_err(cannot_read)?
        .into_stream();
    let mut rows = 0u64;
    let mut in_line = false;
    let mut head = Vec::new();
    let mut head_done = !want_head;
    // A byte order mark opens the file, as the scan reads it: it is no row (a file holding
    // only one has none). Its bytes may straddle chunks.
    let mut bom_left: &[u8] = b"\xEF\xBB\xBF";
    while let Some(chunk) = s.next().await {
        let mut chunk = chunk.map_err(cannot_read)?;
        while !bom_left.is_empty() && !chunk.is_empty() {
            if chunk[0] == bom_left[0] {
                chunk = chunk.slice(1..);
                bom_left = &bom_left[1..];
            } else {
                // Not a BOM after all: the bytes taken as one so far were a row's.
                if bom_left.len() < 3 {
                    in_line = true;
                }
                bom_left = &[];
            }
        }
        if !head_done {
            match memchr::memchr(b'\n', &chunk) {
                Some(j) => {
                    head.extend_from_slice(&chunk[..j]);
                    head_done = true;
                }
                None => {
                    head.extend_from_slice(&chunk);
                    head_done = head.len() > FIRST_LINE_MAX;
                }
            }
        }
        for b in chunk.iter() {
            match b {
                b'\n' => {
                    if in_line {
                        rows += 1;
                    }
                    in_line = false;
                }
                b' ' | b'\t' | b'\r' => {}
                _ => in_line = true,
            }
        }
    }
    if in_line {
        rows += 1;
    }
    Ok((rows, head))
}

/// Kind, layout and rows of an appended checkpoint: rows as every reader sees them (the
/// last row of each id), counted by DataFusion over its table; the layout of its first
/// file.
async fn describe_appended(
    root: &Root,
    entry: &Entry,
    kind: Option<CheckpointKind>,
) -> Result<(Option<CheckpointKind>, Option<String>, u64)> {
    let layout = match (entry.format, kind, entry.files.first()) {
        (FileFormat::Parquet, Some(k), Some(first)) => {
            let footer = parquet_footer(root.store(), first, &display_name(root, first)).await?;
            Some(detect_layout(k, &footer.schema).to_string())
        }
        _ => None,
    };
    let ctx = datafusion::prelude::SessionContext::new();
    ctx.register_object_store(&root.store_url(), root.store().clone());
    let table = table_for(root, entry, &TableOptions::default()).await?;
    let rows = ctx.read_table(table)?.count().await? as u64;
    Ok((kind, layout, rows))
}
