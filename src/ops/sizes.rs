//! `ckpt sizes`: JSONL vs Parquet size of each checkpoint of a root (the "Compression
//! Benefits" table of Kura's documentation); the format a checkpoint lacks is made by
//! converting it into a temporary directory.

use crate::catalog::list_checkpoints;
use crate::format::FileFormat;
use crate::storage::Root;
use crate::{Error, Result};

use super::convert::{ConvertOptions, convert};

/// One row of the "Compression Benefits" table.
#[derive(Debug, Clone, PartialEq)]
pub struct SizeRow {
    /// The checkpoint's name.
    pub name: String,
    /// Bytes as JSONL.
    pub jsonl_bytes: u64,
    /// Bytes as Parquet.
    pub parquet_bytes: u64,
    /// Whether a format was made by converting in a temporary location.
    pub converted: bool,
}

impl SizeRow {
    /// 1 - parquet/jsonl, as a percentage.
    pub fn reduction_pct(&self) -> f64 {
        if self.jsonl_bytes == 0 {
            0.0
        } else {
            100.0 * (1.0 - self.parquet_bytes as f64 / self.jsonl_bytes as f64)
        }
    }
    /// JSONL bytes per Parquet byte.
    pub fn ratio(&self) -> f64 {
        if self.parquet_bytes == 0 {
            0.0
        } else {
            self.jsonl_bytes as f64 / self.parquet_bytes as f64
        }
    }
}

/// JSONL vs Parquet size per checkpoint of a root; the missing format is made by
/// converting into a temporary directory (`opts.write` sets the Parquet codec).
pub async fn sizes(root: &str, opts: &ConvertOptions) -> Result<Vec<SizeRow>> {
    let src = Root::open_existing(root, &opts.session.storage)?;
    let entries = list_checkpoints(&src).await?;
    let tmp =
        tempfile::tempdir().map_err(|e| Error::io("cannot create a temporary directory", e))?;
    let mut rows: Vec<SizeRow> = Vec::new();
    let mut names: Vec<String> = entries.iter().map(|e| e.name.clone()).collect();
    names.dedup();
    for name in names {
        let of = |f: FileFormat| entries.iter().find(|e| e.name == name && e.format == f);
        let (j, p) = (of(FileFormat::Jsonl), of(FileFormat::Parquet));
        if j.is_none() && p.is_none() {
            // A Hugging Face dataset only: this table compares JSONL with Parquet.
            continue;
        }
        let mut row = SizeRow {
            name: name.clone(),
            jsonl_bytes: 0,
            parquet_bytes: 0,
            converted: false,
        };
        for (have, missing) in [(j, FileFormat::Parquet), (p, FileFormat::Jsonl)] {
            let Some(e) = have else { continue };
            let size = e.bytes();
            match missing {
                FileFormat::Parquet => row.jsonl_bytes = size,
                FileFormat::Jsonl => row.parquet_bytes = size,
                FileFormat::Hf => {}
            }
        }
        for (present, want) in [
            (j.is_some(), FileFormat::Jsonl),
            (p.is_some(), FileFormat::Parquet),
        ] {
            if present {
                continue;
            }
            let from = j.or(p).expect("one format exists");
            let c = ConvertOptions {
                to: Some(want),
                ..opts.clone()
            };
            let converted = convert(
                &src.describe(&from.file),
                &tmp.path().display().to_string(),
                &c,
            )
            .await?;
            let bytes = converted.first().map(|c| c.bytes_out).unwrap_or(0);
            match want {
                FileFormat::Jsonl => row.jsonl_bytes = bytes,
                FileFormat::Parquet => row.parquet_bytes = bytes,
                FileFormat::Hf => {}
            }
            row.converted = true;
        }
        rows.push(row);
    }
    Ok(rows)
}
