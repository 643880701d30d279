//! Formats (JSONL, Parquet, Hugging Face dataset directories), Parquet compression and layout, and checkpoint names.

use std::fmt;
use std::str::FromStr;

use parquet::basic::{BrotliLevel, Compression as PqCompression, GzipLevel, ZstdLevel};

use crate::{Error, Result};

/// How a checkpoint is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FileFormat {
    /// One JSON object per line: Kura's default.
    Jsonl,
    /// Apache Parquet, in our layout or Kura's.
    Parquet,
    /// A Hugging Face dataset directory (`datasets`' `save_to_disk`): `NAME/` holding
    /// `dataset_info.json`, `state.json` and Arrow IPC stream files. Kura's third manager.
    /// A directory, never a file extension: [`FileFormat::from_extension`] does not know it.
    Hf,
}

impl FileFormat {
    /// The extension a checkpoint of this format is saved under.
    pub fn extension(self) -> &'static str {
        match self {
            FileFormat::Jsonl => "jsonl",
            FileFormat::Parquet => "parquet",
            FileFormat::Hf => "hf",
        }
    }

    /// The format an extension stands for. `.json` is read as JSON lines too, which is what
    /// DataFusion's `COPY ... STORED AS JSON` writes.
    pub fn from_extension(ext: &str) -> Option<Self> {
        match ext.to_ascii_lowercase().as_str() {
            "jsonl" | "json" | "ndjson" => Some(FileFormat::Jsonl),
            "parquet" | "pq" => Some(FileFormat::Parquet),
            _ => None,
        }
    }
}

impl fmt::Display for FileFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.extension())
    }
}

impl FromStr for FileFormat {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        if s.eq_ignore_ascii_case("hf") {
            return Ok(FileFormat::Hf);
        }
        Self::from_extension(s).ok_or_else(|| {
            Error::config(format!(
                "unknown format {s:?}: expected jsonl, parquet or hf"
            ))
        })
    }
}

/// Parquet compression codecs Kura offers, with optional levels: `zstd(3)`, `gzip(9)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Compression {
    /// Snappy: fast, Kura's and pyarrow's default.
    #[default]
    Snappy,
    /// Gzip, at a level 0–9 or its default.
    Gzip(Option<u32>),
    /// Brotli, at a level 0–11 or its default.
    Brotli(Option<u32>),
    /// LZ4 (raw).
    Lz4,
    /// Zstandard, at a level 1–22 or its default.
    Zstd(Option<i32>),
    /// No compression.
    Uncompressed,
}

impl Compression {
    /// The codec names as written on the command line, without levels.
    pub const NAMES: [&'static str; 6] =
        ["snappy", "gzip", "brotli", "lz4", "zstd", "uncompressed"];

    /// The codec as the Parquet writer takes it; fails on a level it refuses.
    pub fn to_parquet(self) -> Result<PqCompression> {
        let bad =
            |e: parquet::errors::ParquetError| Error::config(format!("compression {self}: {e}"));
        Ok(match self {
            Compression::Snappy => PqCompression::SNAPPY,
            Compression::Gzip(l) => PqCompression::GZIP(
                l.map(GzipLevel::try_new)
                    .transpose()
                    .map_err(bad)?
                    .unwrap_or_default(),
            ),
            Compression::Brotli(l) => PqCompression::BROTLI(
                l.map(BrotliLevel::try_new)
                    .transpose()
                    .map_err(bad)?
                    .unwrap_or_default(),
            ),
            Compression::Lz4 => PqCompression::LZ4_RAW,
            Compression::Zstd(l) => PqCompression::ZSTD(
                l.map(ZstdLevel::try_new)
                    .transpose()
                    .map_err(bad)?
                    .unwrap_or_default(),
            ),
            Compression::Uncompressed => PqCompression::UNCOMPRESSED,
        })
    }
}

impl fmt::Display for Compression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Compression::Snappy => f.write_str("snappy"),
            Compression::Lz4 => f.write_str("lz4"),
            Compression::Uncompressed => f.write_str("uncompressed"),
            Compression::Gzip(None) => f.write_str("gzip"),
            Compression::Brotli(None) => f.write_str("brotli"),
            Compression::Zstd(None) => f.write_str("zstd"),
            Compression::Gzip(Some(l)) => write!(f, "gzip({l})"),
            Compression::Brotli(Some(l)) => write!(f, "brotli({l})"),
            Compression::Zstd(Some(l)) => write!(f, "zstd({l})"),
        }
    }
}

impl FromStr for Compression {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        let s = s.trim().to_ascii_lowercase();
        let (name, level) = match s.split_once('(') {
            Some((n, rest)) => {
                let l = rest
                    .strip_suffix(')')
                    .ok_or_else(|| Error::config(format!("compression {s:?}: missing ')'")))?;
                (n.trim().to_owned(), Some(l.trim().to_owned()))
            }
            None => (s.clone(), None),
        };
        let level_err = || {
            Error::config(format!(
                "compression {s:?}: the level must be a whole number"
            ))
        };
        let lvl_u = || {
            level
                .as_deref()
                .map(|l| l.parse::<u32>().map_err(|_| level_err()))
                .transpose()
        };
        let c = match name.as_str() {
            "snappy" => Compression::Snappy,
            "gzip" => Compression::Gzip(lvl_u()?),
            "brotli" => Compression::Brotli(lvl_u()?),
            "lz4" | "lz4_raw" => Compression::Lz4,
            "zstd" => Compression::Zstd(
                level
                    .as_deref()
                    .map(|l| l.parse::<i32>().map_err(|_| level_err()))
                    .transpose()?,
            ),
            "uncompressed" | "none" => Compression::Uncompressed,
            _ => {
                return Err(Error::config(format!(
                    "unknown compression {s:?}: expected one of {} (with a level: zstd(3), gzip(9), brotli(5))",
                    Self::NAMES.join(", ")
                )));
            }
        };
        if level.is_some()
            && matches!(
                c,
                Compression::Snappy | Compression::Lz4 | Compression::Uncompressed
            )
        {
            return Err(Error::config(format!(
                "compression {s:?}: {name} takes no level"
            )));
        }
        c.to_parquet()?; // validates the level's range
        Ok(c)
    }
}

/// How a known kind's columns are laid out in Parquet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Layout {
    /// Real types: lists as `List<Utf8>`, timestamps as timestamps, messages as structs.
    #[default]
    Native,
    /// Kura 0.5.4's ParquetCheckpointManager layout: lists, messages and metadata as JSON
    /// text, so Kura loads the file.
    Kura,
}

impl fmt::Display for Layout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Layout::Native => "native",
            Layout::Kura => "kura",
        })
    }
}

impl FromStr for Layout {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "native" => Ok(Layout::Native),
            "kura" => Ok(Layout::Kura),
            _ => Err(Error::config(format!(
                "unknown layout {s:?}: expected native or kura"
            ))),
        }
    }
}

/// Everything that decides the bytes of a saved checkpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct WriteOptions {
    /// The format; `None` keeps the one the name or the existing file says.
    pub format: Option<FileFormat>,
    /// Parquet only: the codec.
    pub compression: Compression,
    /// Parquet only: our column layout or Kura's JSON-text one.
    pub layout: Layout,
    /// Parquet only: store embeddings as float32. Models emit float32 numbers, so this is
    /// usually lossless and halves the column; a value that is not float32-exact makes the
    /// write fail (nothing is stored) rather than round it.
    pub float32_embeddings: bool,
}

/// Splits a known extension off a name: `summaries.jsonl` → (`summaries`, Some(Jsonl)).
pub fn strip_extension(name: &str) -> (&str, Option<FileFormat>) {
    if let Some((stem, ext)) = name.rsplit_once('.')
        && !stem.is_empty()
        && !ext.contains('/')
        && let Some(f) = FileFormat::from_extension(ext)
    {
        return (stem, Some(f));
    }
    (name, None)
}

/// The longest name we accept, in bytes; object stores allow 1024 for a whole key.
pub const MAX_NAME_BYTES: usize = 512;

/// Checks that a checkpoint name stays inside its root: relative, no `..` or `.`
/// components, no NUL or control characters, no backslash, not too long.
pub fn validate_name(name: &str) -> Result<()> {
    let refuse = |why: &str| Err(Error::invalid_name(name, why));
    if name.is_empty() {
        return refuse("the name is empty");
    }
    if name.len() > MAX_NAME_BYTES {
        return refuse(&format!("longer than {MAX_NAME_BYTES} bytes"));
    }
    if name.chars().any(|c| c == '\0') {
        return refuse("contains a NUL character");
    }
    if name.chars().any(char::is_control) {
        return refuse("contains a control character");
    }
    if name.starts_with('/') || name.starts_with('\\') || name.as_bytes().get(1) == Some(&b':') {
        return refuse("absolute paths are not allowed: give a name relative to the root");
    }
    if name.contains('\\') {
        return refuse("contains a backslash");
    }
    if name.contains('#') {
        return refuse("contains '#', which local stores reserve for temporary files");
    }
    if name.contains('%') {
        // A name travels as a store path and as a URL (SQL tables, COPY targets), which
        // decode `%xx` differently: `a%2fb` would be saved under one name and read (empty)
        // under another.
        return refuse("contains '%', which paths and URLs would decode differently");
    }
    for part in name.split('/') {
        match part {
            "" => return refuse("contains an empty path component ('//' or a trailing '/')"),
            "." | ".." => return refuse("'.' and '..' would leave the root"),
            p if p.len() > 255 => return refuse("a path component is longer than 255 bytes"),
            p if p.starts_with('.') => {
                return refuse("names starting with '.' are reserved for temporaries");
            }
            _ => {}
        }
    }
    Ok(())
}

/// Checks a name a user gives a checkpoint or a write (saves, appends, COPY targets,
/// convert destinations): [`validate_name`]'s rules, plus the two that keep "accepted"
/// meaning "visible everywhere". The same rule holds for every writer, and listings hide
/// exactly the names it refuses, so nothing can be written that is then never listed:
///
/// - no component starting with `_` (listings hide those, as DataFusion's and Spark's do:
///   `_SUCCESS`, ckpt's own `NAME.parts/_fingerprint`);
/// - no `*`, `?`, `[` or `]`, which DataFusion reads as a glob pattern in a table's path.
///
/// Spaces and any Unicode are fine: names are stored as written, locally and in buckets.
pub fn validate_checkpoint_name(name: &str) -> Result<()> {
    validate_name(name)?;
    let refuse = |why: &str| Err(Error::invalid_name(name, why));
    if name.split('/').any(|p| p.starts_with('_')) {
        return refuse(
            "names starting with '_' are hidden from listings (kept for ckpt's own files); choose a name without the leading '_'",
        );
    }
    if name.contains(['*', '?', '[', ']']) {
        return refuse(
            "contains '*', '?', '[' or ']', which table paths read as a pattern; choose a name without them",
        );
    }
    Ok(())
}

/// The file name of a checkpoint saved in `format`: Kura accepts `summaries` and
/// `summaries.jsonl` alike, and so do we. A name with the other format's extension is
/// refused rather than silently written as `summaries.jsonl.parquet`.
pub fn file_name(name: &str, format: FileFormat) -> Result<String> {
    validate_checkpoint_name(name)?;
    if format == FileFormat::Hf {
        // A dataset directory is named by the checkpoint name itself, as Kura names it
        // (`summaries.jsonl` too).
        return Ok(name.to_owned());
    }
    match strip_extension(name) {
        (stem, None) => Ok(format!("{stem}.{}", format.extension())),
        (_, Some(f)) if f == format => Ok(name.to_owned()),
        (_, Some(f)) => Err(Error::invalid_name(
            name,
            format!(
                "the extension says {f} but this manager writes {format}; drop the extension or use a {f} manager"
            ),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(
            file_name("summaries", FileFormat::Jsonl).unwrap(),
            "summaries.jsonl"
        );
        assert_eq!(
            file_name("summaries.jsonl", FileFormat::Jsonl).unwrap(),
            "summaries.jsonl"
        );
        assert_eq!(
            file_name("summaries", FileFormat::Parquet).unwrap(),
            "summaries.parquet"
        );
        assert!(file_name("summaries.jsonl", FileFormat::Parquet).is_err());
        for bad in [
            "",
            "../x",
            "a/../b",
            "/etc/passwd",
            "a\0b",
            "a\\b",
            ".hidden",
            "a//b",
            "x#1",
            "C:foo",
        ] {
            assert!(validate_name(bad).is_err(), "{bad:?} accepted");
        }
        assert!(validate_name(&"a".repeat(600)).is_err());
        assert!(validate_name("run1/summaries").is_ok());
        // Names a user may type that listings would hide, or table paths misread.
        for bad in [
            "_batch",
            "run/_x.parquet",
            "a*.jsonl",
            "b?.jsonl",
            "c[1].jsonl",
        ] {
            assert!(validate_name(bad).is_ok(), "{bad:?}");
            assert!(validate_checkpoint_name(bad).is_err(), "{bad:?} accepted");
            assert!(
                file_name(bad, FileFormat::Jsonl).is_err(),
                "{bad:?} accepted"
            );
        }
        for good in ["my file", "résumé", "日本語/要約", "a_b", "x-1.2"] {
            assert!(validate_checkpoint_name(good).is_ok(), "{good:?} refused");
        }
    }

    #[test]
    fn compressions() {
        assert_eq!(
            "zstd(3)".parse::<Compression>().unwrap(),
            Compression::Zstd(Some(3))
        );
        assert_eq!(
            "SNAPPY".parse::<Compression>().unwrap(),
            Compression::Snappy
        );
        assert!("zstd(99)".parse::<Compression>().is_err());
        assert!("snappy(1)".parse::<Compression>().is_err());
        assert!("lzma".parse::<Compression>().is_err());
        for c in Compression::NAMES {
            let parsed: Compression = c.parse().unwrap();
            assert_eq!(parsed.to_string(), c);
        }
    }
}
