//! A root as a DataFusion schema: its checkpoints as tables, listed again when a query
//! names one, so a checkpoint saved after start-up is visible to the next query.

use std::collections::BTreeMap;
use std::sync::Arc;

use parking_lot::RwLock;

use async_trait::async_trait;
use datafusion::catalog::{SchemaProvider, TableProvider};
use datafusion::error::{DataFusionError, Result as DfResult};

use crate::Result;
use crate::format::FileFormat;
use crate::storage::Root;

use super::*;

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

/// The entry a table name stands for: a file name, else the checkpoint name (Parquet first,
/// then JSONL, then a Hugging Face dataset).
fn pick<'a>(entries: &'a [Entry], name: &str) -> Option<&'a Entry> {
    entries
        .iter()
        .find(|e| {
            // A dataset directory's name is the checkpoint name: it follows the order of
            // formats below, and is reached on its own as `name/`.
            e.file == name || (e.format != FileFormat::Hf && e.file.trim_end_matches('/') == name)
        })
        .or_else(|| {
            entries
                .iter()
                .filter(|e| e.name == name)
                .min_by_key(|e| match e.format {
                    FileFormat::Parquet => 0,
                    FileFormat::Jsonl => 1,
                    FileFormat::Hf => 2,
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
                _ if e.format == FileFormat::Hf => e.file.clone(),
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
