//! Checkpoint managers for Python: the engine's `CheckpointManager`, addressed by file
//! name, because the Python classes follow Kura's naming rules (`python/ckpt/kura.py`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use arrow::array::RecordBatch;
use ckpt::jsonl::JsonlDecoder;
use ckpt::kind::computed_len_of;
use ckpt::manager::{arrow_batches, jsonl_batches, kind_of_rows, save_decoder};
use ckpt::sink::WriteStats;
use ckpt::{CheckpointKind, CheckpointManager, Compression, FileFormat, Layout, StorageOptions};
use datafusion::error::DataFusionError;
use futures::StreamExt;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList, PyType};

use crate::arrow_stream::CheckpointStream;
use crate::errors::{CkptError, ConfigError, DataError, StorageError, to_py, to_py_core};
use crate::models::{ModelClass, ModelReader, ModelRow};
use crate::rows::RowBatches;
use crate::{run, runtime};

/// Storage options as the CLI's `--storage-option KEY=VALUE`s (values are secrets: ckpt's
/// errors name the key, never the value).
pub(crate) fn parse_storage_options(
    options: Option<HashMap<String, String>>,
) -> PyResult<StorageOptions> {
    let mut out = StorageOptions::default();
    // Sorted, so that an error about one option does not depend on the dict's order.
    let mut options: Vec<_> = options.unwrap_or_default().into_iter().collect();
    options.sort();
    for (k, v) in options {
        out.set(&format!("{k}={v}")).map_err(to_py_core)?;
    }
    Ok(out)
}

fn parse_kind(kind: &str) -> PyResult<CheckpointKind> {
    kind.parse().map_err(to_py_core)
}

/// The kind a read of `file` uses: `kind` as the rows' kind under that name
/// ([`kind_of_rows`]), or None (the name's, else the file's own columns).
fn file_kind(file: &str, kind: Option<&str>) -> PyResult<Option<CheckpointKind>> {
    kind.map(|k| parse_kind(k).map(|k| kind_of_rows(file, k)))
        .transpose()
}

/// The columns a Kura model of `kind` has, in `model_dump` order (the stored columns of
/// the kind's schema, without the computed ones such as `count`).
#[pyfunction]
pub(crate) fn kind_fields(kind: &str) -> PyResult<Vec<String>> {
    Ok(parse_kind(kind)?
        .schema()
        .fields()
        .iter()
        .filter(|f| computed_len_of(f).is_none())
        .map(|f| f.name().clone())
        .collect())
}

/// A checkpoint manager of one format on one root (a local path or an object-store URL).
#[pyclass(frozen, name = "Manager", module = "ckpt._native")]
pub(crate) struct PyManager {
    inner: CheckpointManager,
}

#[pymethods]
impl PyManager {
    #[new]
    #[pyo3(signature = (root, format, *, compression = None, layout = None, storage_options = None, fingerprint = None))]
    fn new(
        root: &str,
        format: &str,
        compression: Option<&str>,
        layout: Option<&str>,
        storage_options: Option<HashMap<String, String>>,
        fingerprint: Option<String>,
    ) -> PyResult<Self> {
        let storage = parse_storage_options(storage_options)?;
        let format: FileFormat = format.parse().map_err(to_py_core)?;
        let mut inner = CheckpointManager::with_storage(root, format, &storage).map_err(to_py)?;
        if let Some(c) = compression {
            inner = inner.compression(c.parse::<Compression>().map_err(to_py_core)?);
        }
        if let Some(l) = layout {
            inner = inner.layout(l.parse::<Layout>().map_err(to_py_core)?);
        }
        if let Some(fp) = fingerprint {
            inner = inner.with_fingerprint(fp);
        }
        Ok(PyManager { inner })
    }

    /// Creates a local root's directory (Kura's managers do so when they are made); an
    /// object-store root needs nothing.
    fn setup(&self) -> PyResult<()> {
        let root = self.inner.root();
        if !root.is_local() {
            return Ok(());
        }
        let dir = root.url().to_file_path().map_err(|()| {
            ConfigError::new_err(format!("{}: not a local directory", root.display()))
        })?;
        std::fs::create_dir_all(&dir)
            .map_err(|e| StorageError::new_err(format!("cannot create {}: {e}", dir.display())))
    }

    /// Starts saving checkpoint `file` (or, with `append`, one new part of it) from rows
    /// of `kind` given chunk by chunk ([`CheckpointWriter`]): JSON lines, or, with
    /// `model` (Kura's own model class, see `crate::models`), the model's instances. Each
    /// row is decoded and validated as the kind's row: errors name `source`, the item's
    /// line and the field.
    #[pyo3(signature = (file, kind, source, append = false, model = None))]
    fn open_writer(
        &self,
        file: &str,
        kind: &str,
        source: String,
        append: bool,
        model: Option<Bound<'_, PyType>>,
    ) -> PyResult<CheckpointWriter> {
        let kind = kind_of_rows(file, parse_kind(kind)?);
        let models = match model {
            None => None,
            Some(cls) => {
                let decoder = save_decoder(kind, source.clone());
                let reader = ModelReader::new(&cls, decoder.float_list_field())?;
                Some((reader, decoder))
            }
        };
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Chunk>(2);
        let committed = Arc::new(AtomicBool::new(false));
        let finished = Arc::clone(&committed);
        let chunks = futures::stream::poll_fn(move |cx| rx.poll_recv(cx));
        let batches = chunks
            .map(move |chunk| match chunk {
                Chunk::Lines(data, first_line) => {
                    jsonl_batches(kind, source.clone(), data, first_line)
                }
                Chunk::Batch(batch) => futures::stream::once(async move { Ok(batch) }).boxed(),
                Chunk::Arrow(batch, first_row) => {
                    arrow_batches(kind, source.clone(), batch, first_row)
                }
            })
            .flatten()
            .chain(
                futures::stream::once(async move {
                    // The rows ended: without a commit (an exception while the Python
                    // side gave its rows), fail the write so that nothing is stored.
                    if finished.load(Ordering::SeqCst) {
                        None
                    } else {
                        Some(Err(DataFusionError::Execution(
                            "the save was abandoned before its last row".into(),
                        )))
                    }
                })
                .filter_map(|item| async move { item }),
            )
            .boxed();
        let manager = self.inner.clone();
        let file = file.to_owned();
        let task = runtime().spawn(async move {
            if append {
                manager.append_record_batches(&file, kind, batches).await
            } else {
                manager.save_file_batches(&file, kind, batches).await
            }
        });
        Ok(CheckpointWriter {
            tx: Mutex::new(Some(tx)),
            committed,
            task: Mutex::new(Some(task)),
            next_line: AtomicU64::new(1),
            models: Mutex::new(models),
        })
    }

    /// Stores `data` as the file `file` exactly as given, atomically: rows of a model
    /// that is none of Kura's kinds, kept as Kura's JSONL manager keeps them. Returns the
    /// bytes written.
    fn save_raw(&self, py: Python<'_>, file: &str, data: Vec<u8>) -> PyResult<u64> {
        if self.inner.format() != FileFormat::Jsonl {
            return Err(ConfigError::new_err(format!(
                "{}: rows of no Kura kind can only be saved as JSONL",
                self.inner.root().describe(file)
            )));
        }
        let root = self.inner.root().clone();
        let file = file.to_owned();
        run(py, async move {
            let mut w = root.writer(&file)?;
            w.write(bytes::Bytes::from(data)).await?;
            w.commit().await
        })
        .map_err(to_py_core)
    }

    /// The ids of `ids` the checkpoint stored as `file` does not hold yet, in order,
    /// each once (all of them when there is no checkpoint).
    fn missing(&self, py: Python<'_>, file: &str, ids: Vec<String>) -> PyResult<Vec<String>> {
        run(py, self.inner.missing(file, &ids)).map_err(to_py)
    }

    /// Rewrites the checkpoint stored as `file` and its parts as one file, atomically.
    /// Returns (parts folded in, rows, bytes).
    fn compact(&self, py: Python<'_>, file: &str) -> PyResult<(usize, u64, u64)> {
        let stats = run(py, self.inner.compact(file)).map_err(to_py)?;
        Ok((stats.parts, stats.rows, stats.bytes))
    }

    /// The fingerprint stored with the checkpoint `file`, if any.
    fn fingerprint(&self, py: Python<'_>, file: &str) -> PyResult<Option<String>> {
        run(py, self.inner.fingerprint(file)).map_err(to_py)
    }

    /// Opens the file `file` for reading in batches (see [`RowBatches`]: JSON arrays,
    /// or lists of dicts with `python_values`); None when it does not exist. With no
    /// kind, the kind comes from the name, else the file's own columns.
    /// With `model` (Kura's own model class, see `crate::models`), Python values come
    /// as the model's instances.
    #[pyo3(signature = (file, kind = None, python_values = false, model = None))]
    fn open_rows(
        &self,
        py: Python<'_>,
        file: &str,
        kind: Option<&str>,
        python_values: bool,
        model: Option<Bound<'_, PyType>>,
    ) -> PyResult<Option<RowBatches>> {
        let model = model.map(|m| ModelClass::new(&m)).transpose()?;
        let kind = file_kind(file, kind)?;
        let stream = run(py, self.inner.load_file_batches(file, kind)).map_err(to_py)?;
        Ok(stream.map(|s| RowBatches::new(s, python_values, model)))
    }

    /// Opens the file `file` as Arrow ([`CheckpointStream`]): the columns of its table,
    /// as SQL reads it; None when it does not exist. The kind as for
    /// [`open_rows`](Self::open_rows).
    #[pyo3(signature = (file, kind = None))]
    fn open_arrow(
        &self,
        py: Python<'_>,
        file: &str,
        kind: Option<&str>,
    ) -> PyResult<Option<CheckpointStream>> {
        let kind = file_kind(file, kind)?;
        let stream = run(py, self.inner.load_file_stream(file, kind)).map_err(to_py)?;
        Ok(stream.map(CheckpointStream::new))
    }

    /// The stored bytes of `file` as they are; None when it does not exist.
    fn read_raw<'py>(&self, py: Python<'py>, file: &str) -> PyResult<Option<Bound<'py, PyBytes>>> {
        let root = self.inner.root().clone();
        let file = file.to_owned();
        let data = run(py, async move {
            match root.head(&file).await? {
                None => Ok(None),
                Some(_) => root.get(&file).await.map(Some),
            }
        })
        .map_err(to_py_core)?;
        Ok(data.map(|d| PyBytes::new(py, &d)))
    }

    /// The names of the files directly in the root (checkpoints or not), sorted.
    fn list_files(&self, py: Python<'_>) -> PyResult<Vec<String>> {
        let root = self.inner.root().clone();
        let files = run(py, async move { root.list().await }).map_err(to_py_core)?;
        let mut names: Vec<String> = files
            .0
            .iter()
            .filter_map(|m| self.inner.root().name_of(&m.location))
            .filter(|n| !n.contains('/'))
            .collect();
        names.sort();
        Ok(names)
    }

    /// The checkpoints of this manager's format, by the names they are loaded by (for
    /// Hugging Face datasets: the directories holding one), sorted.
    fn list_checkpoints(&self, py: Python<'_>) -> PyResult<Vec<String>> {
        run(py, self.inner.list()).map_err(to_py)
    }

    /// Size of `file` in bytes, None when it does not exist (a dataset: its data files).
    fn size(&self, py: Python<'_>, file: &str) -> PyResult<Option<u64>> {
        if self.inner.format() == FileFormat::Hf {
            return run(py, self.inner.size(file)).map_err(to_py);
        }
        let root = self.inner.root().clone();
        let file = file.to_owned();
        run(py, async move { root.head(&file).await })
            .map(|m| m.map(|m| m.size))
            .map_err(to_py_core)
    }

    /// Deletes `file` (with its appended parts and fingerprint, for a checkpoint file of
    /// this manager's format); whether it existed.
    fn delete(&self, py: Python<'_>, file: &str) -> PyResult<bool> {
        if self.is_checkpoint_file(file) {
            return run(py, self.inner.delete(file)).map_err(to_py);
        }
        let root = self.inner.root().clone();
        let file = file.to_owned();
        run(py, async move {
            if root.head(&file).await?.is_none() {
                return Ok(false);
            }
            root.delete(&file).await
        })
        .map_err(to_py_core)
    }

    /// Whether checkpoint `file` is stored (as a file, or as appended parts).
    fn exists(&self, py: Python<'_>, file: &str) -> PyResult<bool> {
        if self.is_checkpoint_file(file) {
            return run(py, self.inner.exists(file)).map_err(to_py);
        }
        Ok(self.size(py, file)?.is_some())
    }
}

impl PyManager {
    /// Whether `file` is named as this manager's checkpoints are (`x.jsonl` for JSONL):
    /// then it may have appended parts. Kura's older manager also writes files of any
    /// name, which are plain files.
    fn is_checkpoint_file(&self, file: &str) -> bool {
        // A dataset directory is named by the checkpoint name itself.
        self.inner.format() == FileFormat::Hf
            || ckpt::format::strip_extension(file).1 == Some(self.inner.format())
    }
}

/// The kind a checkpoint name stands for (`summaries`, `meta_clusters.jsonl`), if any.
#[pyfunction]
pub(crate) fn kind_of_name(name: &str) -> Option<&'static str> {
    CheckpointKind::from_name(name).map(CheckpointKind::default_name)
}

/// A save in progress: the Python side hands its rows over a chunk at a time
/// ([`write`](Self::write) for JSON lines, [`write_models`](Self::write_models) for
/// Kura's models, [`write_arrow`](Self::write_arrow) for Arrow); a task on the runtime validates and writes them meanwhile, so the
/// Python side (with the GIL) and the encoding and writing (without it) overlap, and
/// memory holds a few chunks rather than the whole checkpoint. Nothing is visible until
/// [`commit`](Self::commit); without one, nothing is stored.
#[pyclass(module = "ckpt._native")]
pub(crate) struct CheckpointWriter {
    tx: Mutex<Option<tokio::sync::mpsc::Sender<Chunk>>>,
    committed: Arc<AtomicBool>,
    task: Mutex<Option<tokio::task::JoinHandle<ckpt::Result<WriteStats>>>>,
    /// The line (item position, from 1) the next row is.
    next_line: AtomicU64,
    /// For a save of models: their reader and the decoder they go into.
    models: Mutex<Option<(ModelReader, JsonlDecoder)>>,
}

/// What the Python side hands to the write task.
enum Chunk {
    /// JSON lines and the line the first one is.
    Lines(bytes::Bytes, u64),
    /// Rows decoded already (models).
    Batch(RecordBatch),
    /// Rows given as Arrow, not validated yet, and the line (row) the first one is.
    Arrow(RecordBatch, u64),
}

impl CheckpointWriter {
    /// Waits for the write task (GIL released) and returns its outcome.
    fn finish(&self, py: Python<'_>) -> PyResult<WriteStats> {
        let task = self.task.lock().expect("not poisoned").take();
        let Some(task) = task else {
            return Err(ConfigError::new_err("this save is already finished"));
        };
        run(py, task)
            .map_err(|e| CkptError::new_err(format!("the write task failed: {e}")))?
            .map_err(to_py)
    }

    /// Hands `chunk` to the write task, waiting (without the GIL) while two are queued.
    /// Raises the write's error if it has failed.
    fn send(&self, py: Python<'_>, chunk: Chunk) -> PyResult<()> {
        let tx = self.tx.lock().expect("not poisoned").clone();
        let Some(tx) = tx else {
            return Err(ConfigError::new_err("this save is already finished"));
        };
        if run(py, async move { tx.send(chunk).await }).is_err() {
            // The task stopped reading: it failed (a bad row, the storage). Say why.
            self.tx.lock().expect("not poisoned").take();
            self.finish(py)?;
            return Err(CkptError::new_err("the save stopped early"));
        }
        Ok(())
    }

    /// The models' rows decoded and not sent yet, sent as one batch.
    fn flush_models(&self, py: Python<'_>) -> PyResult<()> {
        let batch = match self.models.lock().expect("not poisoned").as_mut() {
            Some((_, decoder)) => decoder.flush().map_err(to_py_core)?,
            None => None,
        };
        match batch {
            Some(batch) => self.send(py, Chunk::Batch(batch)),
            None => Ok(()),
        }
    }
}

#[pymethods]
impl CheckpointWriter {
    /// Whether the writer was opened for models ([`write_models`](Self::write_models)).
    #[getter]
    fn takes_models(&self) -> bool {
        self.models.lock().expect("not poisoned").is_some()
    }

    /// Hands over the next lines (each ending in a newline).
    fn write(&self, py: Python<'_>, chunk: Vec<u8>) -> PyResult<()> {
        let lines = chunk.iter().filter(|b| **b == b'\n').count() as u64;
        let first_line = self.next_line.fetch_add(lines, Ordering::SeqCst);
        self.send(py, Chunk::Lines(bytes::Bytes::from(chunk), first_line))
    }

    /// Hands over the next rows as models of the class the writer was opened for: each
    /// read field by field (see `crate::models`) into the kind's decoder, here, and sent
    /// on a batch at a time.
    fn write_models(&self, py: Python<'_>, rows: Bound<'_, PyList>) -> PyResult<()> {
        for item in rows.iter() {
            let line = self.next_line.fetch_add(1, Ordering::SeqCst);
            let full = {
                let mut guard = self.models.lock().expect("not poisoned");
                let Some((reader, decoder)) = guard.as_mut() else {
                    return Err(ConfigError::new_err(
                        "this writer takes JSON lines, not models",
                    ));
                };
                match reader.read(&item)? {
                    ModelRow::Values(entries, floats) => {
                        decoder.decode_values(&entries, floats.as_deref(), line)
                    }
                    ModelRow::Json(json) => decoder.decode_line(json.as_bytes(), line),
                }
                .map_err(to_py_core)?;
                decoder.is_full()
            };
            if full {
                self.flush_models(py)?;
            }
        }
        Ok(())
    }

    /// Hands over the next rows as an Arrow IPC stream (what `save_arrow` makes of a
    /// table, a reader or a data frame): each batch is validated as every other row is
    /// (`ckpt::manager::arrow_batches`), its rows numbered on from the rows before.
    fn write_arrow(&self, py: Python<'_>, ipc: Vec<u8>) -> PyResult<()> {
        let batches = py.detach(|| {
            let reader = datafusion::arrow::ipc::reader::StreamReader::try_new(
                std::io::Cursor::new(ipc),
                None,
            )?;
            reader.collect::<Result<Vec<RecordBatch>, _>>()
        });
        let batches = batches.map_err(|e| {
            DataError::new_err(format!(
                "the rows given are not a readable Arrow stream: {e}"
            ))
        })?;
        for batch in batches {
            let rows = batch.num_rows() as u64;
            let first_row = self.next_line.fetch_add(rows, Ordering::SeqCst);
            self.send(py, Chunk::Arrow(batch, first_row))?;
        }
        Ok(())
    }

    /// Ends the rows and commits the checkpoint atomically. Returns (rows, bytes).
    fn commit(&self, py: Python<'_>) -> PyResult<(u64, u64)> {
        self.flush_models(py)?;
        self.committed.store(true, Ordering::SeqCst);
        self.tx.lock().expect("not poisoned").take();
        let stats = self.finish(py)?;
        Ok((stats.rows, stats.bytes))
    }

    /// Abandons the save: nothing is stored, the previous checkpoint stays.
    fn abort(&self, py: Python<'_>) {
        self.tx.lock().expect("not poisoned").take();
        // The write fails by design here; its error says only that it was abandoned.
        let _ = self.finish(py);
    }
}
