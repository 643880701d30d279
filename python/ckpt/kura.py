"""Drop-in replacements for Kura's checkpoint managers.

Kura's pipeline steps take a ``checkpoint_manager=`` and call ``load_checkpoint(filename,
model_class)`` / ``save_checkpoint(filename, data)`` on it. The classes here have the
constructors, methods and edge-case behaviour of Kura 0.5.4's (``JSONLCheckpointManager``,
the older ``CheckpointManager``, ``ParquetCheckpointManager``,
``HFDatasetCheckpointManager``, ``MultiCheckpointManager``), file names included, so files written by either are read by the other. What changes:

- saves are atomic (a crash leaves the previous checkpoint, never a torn file) and every
  row is validated against its Kura model's rules before anything is stored;
- ``checkpoint_dir`` may be an object-store URL (``s3://bucket/run1``, ``gs://``,
  ``az://``), with ``storage_options`` (endpoint, credentials...);
- reading and decoding run in Rust with the GIL released, one batch at a time
  (``iter_checkpoint`` streams batches without loading the whole checkpoint);
- a Parquet checkpoint that cannot be read raises instead of returning ``None`` (which
  would make a pipeline silently recompute a step).

Nothing here imports Kura: the four Kura kinds are recognised by their model's name and
fields, rows go to and from the caller's pydantic ``model_class``, and plain ``dict`` rows
work without pydantic. Kura's own models (exactly: ``_builds_natively``) are built and
read by the native module as pydantic's ``model_construct`` builds them and its
serializer reads them, with the kind's codec validating every field; any other model
goes through pydantic (one ``TypeAdapter(list[model_class])`` call per batch). A load
builds its objects with the cyclic garbage collector paused (``_gc_paused``). Rows of a model that is none of Kura's kinds are stored as JSONL lines as
Kura's JSONL manager stores them.
"""

from __future__ import annotations

import contextlib
import gc
import inspect
import json
import logging
import os
from pathlib import Path
from typing import Any, Awaitable, Callable, Dict, Iterator, List, Literal, Mapping, Optional, Union

from . import _native
from ._native import ChangedWhileRead

__all__ = [
    "BaseCheckpointManager",
    "CheckpointManager",
    "HFDatasetCheckpointManager",
    "JSONLCheckpointManager",
    "MultiCheckpointManager",
    "ParquetCheckpointManager",
]

logger = logging.getLogger(__name__)

#: Kura's model class name for each kind ckpt knows.
_MODEL_KINDS = {
    "ConversationSummary": "summaries",
    "Cluster": "clusters",
    "ProjectedCluster": "dimensionality",
    "Conversation": "conversations",
}

#: How many times a load starts again when the checkpoint is replaced while it is read.
_READ_ATTEMPTS = 5

#: Rows reach pydantic as Python values where the columns allow it, else as JSON text
#: (see ``RowBatches`` in the native module). The tests turn it off to compare the two.
_FAST_ROWS = True

#: Kura's own models are built (a load) and read (a save) by the native module (see
#: ``_builds_natively``). The tests turn it off to compare with pydantic's routes.
_NATIVE_MODELS = True


#: Rows per Arrow chunk a ``save_arrow`` hands over (about 35 MB of JSON for summaries
#: with 384-d embeddings): memory stays bounded whatever the caller's batch size.
_ARROW_CHUNK_ROWS = 4096


def _kind_name(kind: Any) -> Optional[str]:
    """A kind given as a name or as a Kura model class, as the native module names it."""
    if kind is None or isinstance(kind, str):
        return kind
    name = _kind_of_model(kind)
    if name is None:
        raise _native.ConfigError(
            f"{getattr(kind, '__name__', kind)!r} is none of Kura's models "
            "(ConversationSummary, Cluster, ProjectedCluster, Conversation)"
        )
    return name


def _arrow_reader(data: Any) -> Any:
    """``data`` as a ``pyarrow.RecordBatchReader`` (see ``save_arrow``)."""
    import pyarrow

    if isinstance(data, pyarrow.RecordBatchReader):
        return data
    if isinstance(data, pyarrow.Table):
        return data.to_reader()
    if isinstance(data, pyarrow.RecordBatch):
        return pyarrow.RecordBatchReader.from_batches(data.schema, [data])
    if type(data).__module__.partition(".")[0] == "pandas":
        return pyarrow.Table.from_pandas(data, preserve_index=False).to_reader()
    if hasattr(data, "__arrow_c_stream__"):
        return pyarrow.RecordBatchReader.from_stream(data)
    if hasattr(data, "to_arrow"):
        return _arrow_reader(data.to_arrow())
    raise TypeError(
        "save_arrow takes Arrow rows (a pyarrow Table, RecordBatchReader or RecordBatch, "
        f"a polars or pandas DataFrame, or an object with __arrow_c_stream__), not "
        f"{type(data).__name__}"
    )


def _is_url(location: str) -> bool:
    return "://" in location


def _kind_of_model(model_class: Any) -> Optional[str]:
    """The Kura kind a model class is, by its name and its fields; None for any other."""
    kind = _MODEL_KINDS.get(getattr(model_class, "__name__", ""))
    if kind is None:
        return None
    fields = getattr(model_class, "model_fields", None)
    # Every field of the model is a column of the kind (a kind may hold more, e.g. a
    # datetime's offset, which the model reads back from the JSON it is given).
    if not fields or not set(fields) <= set(_native.kind_fields(kind)):
        return None
    return kind


#: The field types of Kura 0.5.4's models whose rows come as Python values (see
#: ``_constructs``), as ``repr(field.annotation)``.
_KURA_FIELD_TYPES = {
    "ConversationSummary": {
        "summary": "<class 'str'>",
        "request": "typing.Optional[str]",
        "topic": "typing.Optional[str]",
        "languages": "typing.Optional[list[str]]",
        "task": "typing.Optional[str]",
        "concerning_score": "typing.Optional[int]",
        "user_frustration": "typing.Optional[int]",
        "assistant_errors": "typing.Optional[list[str]]",
        "chat_id": "<class 'str'>",
        "metadata": "<class 'dict'>",
        "embedding": "typing.Optional[list[float]]",
    },
    "Cluster": {
        "id": "<class 'str'>",
        "name": "<class 'str'>",
        "description": "<class 'str'>",
        "slug": "<class 'str'>",
        "chat_ids": "list[str]",
        "parent_id": "typing.Optional[str]",
    },
}
_KURA_FIELD_TYPES["ProjectedCluster"] = dict(
    _KURA_FIELD_TYPES["Cluster"],
    x_coord="<class 'float'>",
    y_coord="<class 'float'>",
    level="<class 'int'>",
)

_adapters: Dict[Any, Any] = {}
_constructible: Dict[Any, bool] = {}


def _constructs(model_class: Any) -> bool:
    """Whether rows of ``model_class`` may be built with ``model_construct`` from the
    values ckpt decoded, without pydantic validating them again: true for Kura's own
    models exactly (same fields, same types, no validators of their own), whose rules the
    codec applies already (proven against Kura by the differential test, and the result
    against pydantic's own validation by ``python/tests/test_fast_paths.py``). Validation
    is most of a load's time; any other class is validated."""
    known = _constructible.get(model_class)
    if known is None:
        expected = _KURA_FIELD_TYPES.get(getattr(model_class, "__name__", ""))
        fields = getattr(model_class, "model_fields", None)
        decorators = getattr(model_class, "__pydantic_decorators__", None)
        known = bool(
            expected is not None
            and fields is not None
            and {k: repr(f.annotation) for k, f in fields.items()} == expected
            and decorators is not None
            and not (
                decorators.validators
                or decorators.field_validators
                or decorators.root_validators
                or decorators.model_validators
            )
            and not getattr(model_class, "model_config", {}).get("strict")
        )
        _constructible[model_class] = known
    return known


_native_models: Dict[Any, bool] = {}


def _builds_natively(model_class: Any) -> bool:
    """Whether instances of ``model_class`` are built (a load) and read (a save) by the
    native module as pydantic's ``model_construct`` builds them and its serializer reads
    them (see ``python/src/models.rs``): a class that ``_constructs``, with no serializers
    of its own, no post-init hook, no extra fields and no root model."""
    known = _native_models.get(model_class)
    if known is None:
        decorators = getattr(model_class, "__pydantic_decorators__", None)
        known = bool(
            _constructs(model_class)
            and decorators is not None
            and not (decorators.field_serializers or decorators.model_serializers)
            and not (decorators.computed_fields)
            and getattr(model_class, "__pydantic_post_init__", None) is None
            and not getattr(model_class, "__pydantic_root_model__", False)
            and getattr(model_class, "model_config", {}).get("extra") != "allow"
            and hasattr(model_class, "__pydantic_serializer__")
        )
        _native_models[model_class] = known
    return known


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    """No cyclic garbage collection while a load builds its objects. Building 100 000
    models makes millions of tracked objects, and each collection the allocations trigger
    walks all built so far: more than half of a load's time. Nothing built here is garbage
    (the rows are kept), so the pause changes nothing but the time. The collector's state
    is the caller's again afterwards, whatever happens (an error, an interrupt); a pause
    inside a pause leaves it to the outer one. The collector is process-wide: another
    thread's collections wait too, for the time of the load."""
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def _list_adapter(model_class: Any) -> Any:
    """``TypeAdapter(list[model_class])``, made once per class (pydantic is imported only
    here, by callers that pass pydantic models)."""
    adapter = _adapters.get(model_class)
    if adapter is None:
        from pydantic import TypeAdapter

        adapter = TypeAdapter(List[model_class])  # type: ignore[valid-type]
        _adapters[model_class] = adapter
    return adapter


def _is_pydantic_model(model_class: Any) -> bool:
    return hasattr(model_class, "model_validate_json") and hasattr(model_class, "model_fields")


#: Rows handed to the native writer at a time: big enough that a call costs nothing,
#: small enough that memory holds a few chunks, not the checkpoint.
_SAVE_CHUNK_ROWS = 2048


def _dump_line(item: Any) -> bytes:
    """One row as Kura writes it: ``model_dump_json()`` for a model (the same bytes, from
    pydantic's serializer, without the round trip through ``str``), JSON for a dict."""
    serializer = getattr(type(item), "__pydantic_serializer__", None)
    if serializer is not None and hasattr(item, "model_dump_json"):
        return serializer.to_json(item)
    if isinstance(item, Mapping):
        return json.dumps(
            item, ensure_ascii=False, allow_nan=False, default=_json_default
        ).encode("utf-8")
    raise TypeError(
        f"cannot save a {type(item).__name__}: rows are pydantic models or dicts"
    )


def _lines(items: List[Any]) -> bytes:
    return b"".join(_dump_line(item) + b"\n" for item in items)


def _json_default(value: Any) -> Any:
    iso = getattr(value, "isoformat", None)
    if iso is not None:
        return iso()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


class BaseCheckpointManager:
    """What ckpt's managers share (Kura's ``BaseCheckpointManager`` interface)."""

    #: "jsonl" or "parquet": the format files are stored in.
    _format = "jsonl"

    def __init__(
        self,
        checkpoint_dir: Union[str, "os.PathLike[str]"],
        *,
        enabled: bool = True,
        storage_options: Optional[Mapping[str, str]] = None,
        compression: Optional[str] = None,
        layout: Optional[str] = None,
        fingerprint: Optional[str] = None,
    ):
        location = os.fspath(checkpoint_dir)
        # Kura's managers expose a Path; a URL stays a string.
        self.checkpoint_dir: Union[Path, str] = (
            location.rstrip("/") if _is_url(location) else Path(location)
        )
        self.enabled = enabled
        self.storage_options = dict(storage_options) if storage_options else None
        self._native = _native.Manager(
            location,
            self._format,
            compression=compression,
            layout=layout,
            storage_options=self.storage_options,
            fingerprint=fingerprint,
        )
        self.fingerprint = fingerprint
        if self.enabled:
            self.setup_checkpoint_dir()

    # --- naming (Kura's rules, per class) -------------------------------------------

    def _file(self, filename: str) -> str:
        """The file ``load_checkpoint``/``save_checkpoint`` use for ``filename``."""
        return filename

    def get_checkpoint_path(self, filename: str) -> Union[Path, str]:
        """Full path (or URL) of a checkpoint file, as Kura computes it."""
        if isinstance(self.checkpoint_dir, Path):
            return self.checkpoint_dir / filename
        return f"{self.checkpoint_dir}/{filename}"

    # --- Kura's interface ---------------------------------------------------------------

    def setup_checkpoint_dir(self) -> None:
        """Creates a local checkpoint directory; an object-store root needs nothing."""
        self._native.setup()

    def is_enabled(self) -> bool:
        return self.enabled

    def save_checkpoint(self, filename: str, data: List[Any], **kwargs: Any) -> None:
        """Saves ``data`` (pydantic models or dicts) as checkpoint ``filename``, replacing
        any previous one atomically."""
        if not self.enabled:
            return
        self._save(self._file(filename), filename, data)

    def load_checkpoint(
        self, filename: str, model_class: Any = dict, **kwargs: Any
    ) -> Optional[List[Any]]:
        """The rows of checkpoint ``filename`` as ``model_class`` instances (or dicts);
        None when it does not exist, is empty, or the manager is disabled."""
        if not self.enabled:
            return None
        for attempt in range(_READ_ATTEMPTS):
            try:
                rows: List[Any] = []
                found = False
                with _gc_paused():
                    for batch in self._batches(self._file(filename), filename, model_class):
                        found = True
                        rows.extend(batch)
                if not found:
                    return None
                return rows if rows else None
            except ChangedWhileRead:
                # Saved again while it was read: read the new version.
                if attempt + 1 == _READ_ATTEMPTS:
                    raise
        return None

    def iter_checkpoint(
        self, filename: str, model_class: Any = dict
    ) -> Iterator[List[Any]]:
        """The rows of checkpoint ``filename`` in batches (lists), read one batch at a
        time; nothing when it does not exist or the manager is disabled."""
        if not self.enabled:
            return iter(())
        return self._batches(self._file(filename), filename, model_class)

    # --- Arrow: the rows without a Python object per value -------------------------------

    def load_arrow(self, filename: str, kind: Any = None) -> Optional[Any]:
        """The rows of checkpoint ``filename`` as Arrow, with no Python object per row: a
        ``pyarrow.RecordBatchReader`` over the checkpoint's table, the columns SQL reads
        (Kura's fields, ``metadata`` as JSON text, ``count`` where Kura writes one),
        decoded in Rust batch by batch as it is read. ``.read_all()`` gives a
        ``pyarrow.Table``, ``polars.from_arrow(reader)`` a DataFrame. None when it does not
        exist or the manager is disabled. ``kind`` (a kind name or a Kura model class)
        names the kind when the name does not say it. A save replacing the checkpoint
        while it is read ends the read with ``ChangedWhileRead``."""
        if not self.enabled:
            return None
        import pyarrow

        stream = self._native.open_arrow(self._file(filename), _kind_name(kind))
        if stream is None:
            return None
        return pyarrow.RecordBatchReader.from_stream(stream)

    def save_arrow(self, filename: str, data: Any, kind: Any = None) -> int:
        """Saves Arrow rows as checkpoint ``filename``, replacing any previous one
        atomically, and returns the rows saved. ``data``: a ``pyarrow.Table``,
        ``RecordBatchReader`` or ``RecordBatch``, ``load_arrow``'s reader, a polars or
        pandas DataFrame, or any object with the Arrow stream interface
        (``__arrow_c_stream__``); it is read batch by batch. Columns are matched to the
        kind's fields by name (others are ignored, as Kura's models ignore unknown keys);
        ``metadata`` is JSON text, as ``load_arrow`` gives it. Every row is validated by
        the kind's codec exactly as a saved model's line is (the same rules and errors,
        naming the row and the field); if one fails, nothing is stored. The kind:
        ``kind`` (a kind name or a Kura model class), else the checkpoint name's."""
        if not self.enabled:
            return 0
        import pyarrow

        file = self._file(filename)
        kind_name = _kind_name(kind) or _native.kind_of_name(filename)
        if kind_name is None:
            raise _native.ConfigError(
                f"{self.get_checkpoint_path(file)}: the name says no kind; give kind= "
                "(summaries, clusters, meta_clusters, dimensionality, conversations, or "
                "Kura's model class)"
            )
        reader = _arrow_reader(data)
        source = f"{self.get_checkpoint_path(file)} (rows given to save_arrow)"
        writer = self._native.open_writer(file, kind_name, source)
        try:
            for batch in reader:
                # Bounded chunks whatever the batches' size: each is validated and written
                # while the next is prepared.
                for start in range(0, batch.num_rows, _ARROW_CHUNK_ROWS):
                    part = batch.slice(start, _ARROW_CHUNK_ROWS)
                    sink = pyarrow.BufferOutputStream()
                    with pyarrow.ipc.new_stream(sink, part.schema) as ipc:
                        ipc.write_batch(part)
                    writer.write_arrow(sink.getvalue().to_pybytes())
        except BaseException:
            writer.abort()
            raise
        rows, size = writer.commit()
        logger.info(
            "Saved checkpoint to %s with %d items (%d bytes)",
            self.get_checkpoint_path(file),
            rows,
            size,
        )
        return rows

    def list_checkpoints(self) -> List[str]:
        """Checkpoint files in the directory."""
        if not self.enabled:
            return []
        return self._list_files()

    def delete_checkpoint(self, filename: str) -> bool:
        """Deletes a checkpoint file (named as Kura names it here: with its extension);
        True if it existed."""
        if not self.enabled:
            return False
        deleted = self._native.delete(filename)
        if deleted:
            logger.info("Deleted checkpoint: %s", self.get_checkpoint_path(filename))
        return deleted

    def __repr__(self) -> str:
        return (
            f"{self.__class__.__name__}(checkpoint_dir='{self.checkpoint_dir}', "
            f"enabled={self.enabled})"
        )

    # --- ckpt's additions ------------------------------------------------------------

    def checkpoint_exists(self, filename: str) -> bool:
        """Whether checkpoint ``filename`` is stored (as a file or appended parts)."""
        return self._native.exists(self._file(filename))

    # --- incremental checkpoints ------------------------------------------------------

    def append_checkpoint(self, filename: str, data: List[Any]) -> None:
        """Adds ``data`` to checkpoint ``filename`` as one new part, durably and atomically
        (concurrent appenders, in any process, never lose or tear a batch). Every reader
        sees the checkpoint and its parts as one; an id appended again replaces its
        earlier row (the last row wins). Rows must be of one of Kura's kinds."""
        if not self.enabled or not data:
            return
        file = self._file(filename)
        kind = self._kind_of_rows(filename, data)
        if kind is None:
            raise _native.ConfigError(
                f"{self.get_checkpoint_path(file)}: only rows of Kura's kinds can be appended "
                "(ConversationSummary, Cluster, ProjectedCluster, Conversation, or dicts "
                "under a kind's name such as 'summaries')"
            )
        source = f"{self.get_checkpoint_path(file)} (rows given to append_checkpoint)"
        self._write(self._open_writer(file, kind, source, data, append=True), data)

    def missing(self, filename: str, ids: List[str]) -> List[str]:
        """The ids of ``ids`` that checkpoint ``filename`` does not hold yet (by the kind's
        id: ``chat_id``, or ``id`` for clusters), in the order given, each once."""
        if not self.enabled:
            return list(dict.fromkeys(ids))
        return self._native.missing(self._file(filename), list(ids))

    def compact_checkpoint(self, filename: str) -> Dict[str, int]:
        """Rewrites checkpoint ``filename`` and its appended parts as one file, atomically
        (Kura loads the result); returns ``{"parts", "rows", "bytes"}``."""
        parts, rows, size = self._native.compact(self._file(filename))
        return {"parts": parts, "rows": rows, "bytes": size}

    def stored_fingerprint(self, filename: str) -> Optional[str]:
        """The fingerprint saved with checkpoint ``filename`` (what produced it), if any."""
        return self._native.fingerprint(self._file(filename))

    def load_or_compute_each(
        self,
        filename: str,
        inputs: List[Any],
        *,
        id_of: Callable[[Any], str],
        compute: Callable[[List[Any]], List[Any]],
        model_class: Any = dict,
        batch_size: int = 100,
    ) -> List[Any]:
        """The per-item resume pattern: computes only the inputs whose id (``id_of``) the
        checkpoint does not hold yet, ``batch_size`` at a time, appends each batch as soon
        as it is computed, and returns the whole checkpoint. A step killed part-way loses
        at most the batch in flight; run again, it computes what is missing."""
        for batch in self._todo(filename, inputs, id_of, batch_size):
            self.append_checkpoint(filename, compute(batch))
        return self.load_checkpoint(filename, model_class) or []

    async def aload_or_compute_each(
        self,
        filename: str,
        inputs: List[Any],
        *,
        id_of: Callable[[Any], str],
        compute: Callable[[List[Any]], Awaitable[List[Any]]],
        model_class: Any = dict,
        batch_size: int = 100,
    ) -> List[Any]:
        """:meth:`load_or_compute_each` with an async ``compute`` (a model call)."""
        for batch in self._todo(filename, inputs, id_of, batch_size):
            out = compute(batch)
            if inspect.isawaitable(out):
                out = await out
            self.append_checkpoint(filename, out)
        return self.load_checkpoint(filename, model_class) or []

    def _todo(self, filename: str, inputs: List[Any], id_of: Callable[[Any], str], batch_size: int):
        todo_ids = set(self.missing(filename, [id_of(x) for x in inputs]))
        todo = [x for x in inputs if id_of(x) in todo_ids]
        if todo:
            logger.info(
                "%s: %d of %d items to compute", filename, len(todo), len(inputs)
            )
        step = max(1, batch_size)
        for i in range(0, len(todo), step):
            yield todo[i : i + step]

    def get_file_size(self, filename: str) -> int:
        """Size of a checkpoint file in bytes, 0 when it does not exist."""
        return self._native.size(self._file(filename)) or 0

    # --- the work ------------------------------------------------------------------------

    def _list_files(self) -> List[str]:
        try:
            return self._native.list_files()
        except _native.StorageError:
            if isinstance(self.checkpoint_dir, Path) and not self.checkpoint_dir.exists():
                return []
            raise

    def _save(self, file: str, filename: str, data: List[Any]) -> None:
        kind = self._kind_of_rows(filename, data)
        if kind is None:
            size = self._native.save_raw(file, _lines(data))
            rows = len(data)
        else:
            source = f"{self.get_checkpoint_path(file)} (rows given to save_checkpoint)"
            rows, size = self._write(self._open_writer(file, kind, source, data), data)
        logger.info(
            "Saved checkpoint to %s with %d items (%d bytes)",
            self.get_checkpoint_path(file),
            rows,
            size,
        )

    def _open_writer(
        self, file: str, kind: str, source: str, data: List[Any], append: bool = False
    ) -> Any:
        """A native writer for ``data``: one that reads the models themselves when they
        are all of one of Kura's model classes (see ``_builds_natively``), else one that
        takes their JSON lines."""
        model = type(data[0]) if data else None
        if not (
            _FAST_ROWS
            and _NATIVE_MODELS
            and model is not None
            and _is_pydantic_model(model)
            and _builds_natively(model)
            and all(type(item) is model for item in data)
        ):
            model = None
        return self._native.open_writer(file, kind, source, append=append, model=model)

    @staticmethod
    def _write(writer: Any, data: List[Any]):
        """Hands the rows a chunk at a time to a native writer (which validates and
        writes them meanwhile, without the GIL), then commits; on any error the writer is
        abandoned and nothing is stored."""
        try:
            for start in range(0, len(data), _SAVE_CHUNK_ROWS):
                chunk = data[start : start + _SAVE_CHUNK_ROWS]
                if writer.takes_models:
                    writer.write_models(chunk)
                else:
                    writer.write(_lines(chunk))
        except BaseException:
            writer.abort()
            raise
        return writer.commit()

    def _kind_of_rows(self, filename: str, data: List[Any]) -> Optional[str]:
        """The Kura kind of the rows: their model's, else (dicts, or no rows) the name's."""
        if data and not isinstance(data[0], Mapping):
            return _kind_of_model(type(data[0]))
        return _native.kind_of_name(filename)

    def _batches(
        self, file: str, filename: str, model_class: Any
    ) -> Iterator[List[Any]]:
        kind = _kind_of_model(model_class) if model_class is not dict else None
        if kind is None and model_class is not dict:
            yield from self._raw_batches(file, model_class)
            return
        if kind is None:
            kind = _native.kind_of_name(filename)
        if kind is None and self._format == "jsonl":
            yield from self._raw_batches(file, model_class)
            return
        native = (
            _FAST_ROWS
            and _NATIVE_MODELS
            and _is_pydantic_model(model_class)
            and _builds_natively(model_class)
        )
        batches = self._native.open_rows(
            file, kind, python_values=_FAST_ROWS, model=model_class if native else None
        )
        if batches is None:
            return
        logger.info(
            "Loading checkpoint from %s for %s",
            self.get_checkpoint_path(file),
            getattr(model_class, "__name__", model_class),
        )
        convert: Callable[[Any], List[Any]]
        if _is_pydantic_model(model_class):
            adapter = _list_adapter(model_class)
            construct = model_class.model_construct if _constructs(model_class) else None

            def convert(batch: Any) -> List[Any]:
                # A batch is a JSON array, a list of dicts (plain columns) or of models
                # built natively (see `RowBatches` in the native module); every route
                # gives the same models.
                if isinstance(batch, bytes):
                    return adapter.validate_json(batch)
                if construct is None:
                    return adapter.validate_python(batch)
                if batch and not isinstance(batch[0], dict):
                    return batch
                return [construct(**row) for row in batch]

        else:

            def convert(batch: Any) -> List[Any]:
                return json.loads(batch) if isinstance(batch, bytes) else batch

        while True:
            # The objects of a batch are built without collections (see `_gc_paused`);
            # the caller's code between batches runs with the collector as it was.
            with _gc_paused():
                batch = next(batches, None)
                if batch is None:
                    return
                rows = convert(batch)
            yield rows

    def _raw_batches(self, file: str, model_class: Any) -> Iterator[List[Any]]:
        """A JSONL file of rows that are none of Kura's kinds: each line through the
        model, as Kura's JSONL manager reads it."""
        if self._format != "jsonl":
            raise _native.ConfigError(
                f"{self.get_checkpoint_path(file)}: {getattr(model_class, '__name__', model_class)} "
                "is not one of Kura's models (ConversationSummary, Cluster, ProjectedCluster, "
                "Conversation); only JSONL checkpoints hold other rows"
            )
        data = self._native.read_raw(file)
        if data is None:
            return
        lines = data.decode("utf-8").splitlines(keepends=True)
        if _is_pydantic_model(model_class):
            yield [model_class.model_validate_json(line) for line in lines]
        else:
            yield [json.loads(line) for line in lines]


class JSONLCheckpointManager(BaseCheckpointManager):
    """Kura's ``JSONLCheckpointManager``: ``save_checkpoint("summaries", ...)`` writes
    ``summaries.jsonl`` (the extension is always added, as Kura adds it)."""

    _format = "jsonl"

    def __init__(
        self,
        checkpoint_dir: Union[str, "os.PathLike[str]"],
        *,
        enabled: bool = True,
        storage_options: Optional[Mapping[str, str]] = None,
        fingerprint: Optional[str] = None,
    ):
        super().__init__(
            checkpoint_dir, enabled=enabled, storage_options=storage_options, fingerprint=fingerprint
        )

    def _file(self, filename: str) -> str:
        return filename + ".jsonl"

    def list_checkpoints(self) -> List[str]:
        if not self.enabled:
            return []
        return [f for f in self._list_files() if f.endswith((".jsonl", ".json"))]


class CheckpointManager(BaseCheckpointManager):
    """Kura's original ``kura.checkpoint.CheckpointManager``: JSONL, the file name used as
    given (``save_checkpoint("summaries.jsonl", ...)``)."""

    _format = "jsonl"

    def __init__(
        self,
        checkpoint_dir: Union[str, "os.PathLike[str]"],
        *,
        enabled: bool = True,
        storage_options: Optional[Mapping[str, str]] = None,
    ):
        super().__init__(checkpoint_dir, enabled=enabled, storage_options=storage_options)

    def load_checkpoint(
        self, filename: str, model_class: Any = dict, **kwargs: Any
    ) -> Optional[List[Any]]:
        # Unlike the newer managers, this one returns [] for an empty file.
        if not self.enabled:
            return None
        if self._native.size(filename) is None:
            return None
        return super().load_checkpoint(filename, model_class) or []


class ParquetCheckpointManager(BaseCheckpointManager):
    """Kura's ``ParquetCheckpointManager``: ``summaries`` is stored as
    ``summaries.parquet``, in Kura's Parquet layout (JSON text columns) by default so that
    Kura reads it; ``layout="native"`` stores lists and structs as Parquet types."""

    _format = "parquet"

    def __init__(
        self,
        checkpoint_dir: Union[str, "os.PathLike[str]"],
        *,
        enabled: bool = True,
        compression: str = "snappy",
        storage_options: Optional[Mapping[str, str]] = None,
        layout: Literal["kura", "native"] = "kura",
        fingerprint: Optional[str] = None,
    ):
        self.compression = compression
        self.layout = layout
        super().__init__(
            checkpoint_dir,
            enabled=enabled,
            storage_options=storage_options,
            compression=compression,
            layout=layout,
            fingerprint=fingerprint,
        )

    def _file(self, filename: str) -> str:
        return filename if filename.endswith(".parquet") else filename + ".parquet"

    def get_checkpoint_path(self, filename: str) -> Union[Path, str]:
        return super().get_checkpoint_path(self._file(filename))

    def save_checkpoint(self, filename: str, data: List[Any], **kwargs: Any) -> None:
        # Kura writes nothing for an empty list.
        if not self.enabled or not data:
            return
        if _kind_of_model(type(data[0])) is None and not isinstance(data[0], Mapping):
            raise ValueError(f"Unknown model class: {type(data[0])}")
        self._save(self._file(filename), filename, data)

    def list_checkpoints(self) -> List[str]:
        # As Kura's: listed whether enabled or not.
        return [f for f in self._list_files() if f.endswith(".parquet")]

    def delete_checkpoint(self, filename: str) -> bool:
        return super().delete_checkpoint(self._file(filename))


class HFDatasetCheckpointManager(BaseCheckpointManager):
    """Kura's ``HFDatasetCheckpointManager``: checkpoint ``summaries`` is the Hugging Face
    dataset directory ``summaries/`` (``dataset_info.json``, ``state.json``, Arrow IPC
    stream data), read and written by ckpt's engine: ``datasets`` is not needed for local
    or object-store checkpoints. Kura and ``datasets`` (3.6 and 5.x) read what it saves;
    it reads what they save (exactly the data files ``state.json`` lists).

    ``hub_repo`` delegates to ``datasets``/``huggingface_hub`` as Kura does (a push after
    each save, a load from the Hub first); without them installed it raises ImportError.
    ``streaming`` and ``compression`` are accepted and, as in Kura, change nothing."""

    _format = "hf"

    def __init__(
        self,
        checkpoint_dir: Union[str, "os.PathLike[str]"],
        *,
        enabled: bool = True,
        hub_repo: Optional[str] = None,
        hub_token: Optional[str] = None,
        streaming: bool = False,
        compression: Optional[str] = "gzip",
        storage_options: Optional[Mapping[str, str]] = None,
    ):
        if hub_repo is not None:
            import importlib.util

            missing = [
                m for m in ("datasets", "huggingface_hub") if importlib.util.find_spec(m) is None
            ]
            if missing:
                raise ImportError(
                    f"hub_repo={hub_repo!r} needs {' and '.join(missing)}: "
                    "pip install datasets huggingface_hub (local and object-store "
                    "checkpoints need neither)"
                )
        self.hub_repo = hub_repo
        self.hub_token = hub_token
        self.streaming = streaming
        self.compression = compression
        super().__init__(checkpoint_dir, enabled=enabled, storage_options=storage_options)

    def save_checkpoint(self, filename: str, data: List[Any], **kwargs: Any) -> None:
        # Kura writes nothing for an empty list.
        if not self.enabled or not data:
            return
        if _kind_of_model(type(data[0])) is None and not isinstance(data[0], Mapping):
            raise ValueError(f"Unknown model class: {type(data[0])}")
        self._save(filename, filename, data)
        if self.hub_repo:
            self._push_to_hub(filename, len(data))

    def load_checkpoint(
        self, filename: str, model_class: Any = dict, **kwargs: Any
    ) -> Optional[List[Any]]:
        if not self.enabled:
            return None
        if self.hub_repo:
            rows = self._load_from_hub(filename, model_class, **kwargs)
            if rows is not None:
                return rows
        return super().load_checkpoint(filename, model_class)

    def list_checkpoints(self) -> List[str]:
        """The dataset directories in the checkpoint directory."""
        if not self.enabled:
            return []
        try:
            return self._native.list_checkpoints()
        except _native.StorageError:
            if isinstance(self.checkpoint_dir, Path) and not self.checkpoint_dir.exists():
                return []
            raise

    def get_checkpoint_info(self, filename: str) -> Optional[Dict[str, Any]]:
        """Rows, columns, features and size of a dataset, with its ``dataset_info.json``,
        as Kura's manager gives them; None when it does not exist."""
        if not self.enabled:
            return None
        raw = self._native.read_raw(f"{filename}/dataset_info.json")
        size = self._native.size(filename)
        if raw is None or size is None:
            return None
        dataset_info = json.loads(raw)
        features = dataset_info.get("features", {})
        rows = 0
        for batch in self._native.open_rows(filename, None, python_values=True) or ():
            rows += len(batch if not isinstance(batch, bytes) else json.loads(batch))
        for meta in ("dataset_info.json", "state.json"):
            size += len(self._native.read_raw(f"{filename}/{meta}") or b"")
        info: Dict[str, Any] = {
            "num_rows": rows,
            "num_columns": len(features),
            "column_names": list(features),
            "features": str(features),
            "size_bytes": size,
        }
        info.update(dataset_info)
        return info

    def filter_checkpoint(
        self,
        filename: str,
        filter_fn: Callable[[Dict[str, Any]], bool],
        model_class: Any,
        **kwargs: Any,
    ) -> Optional[List[Any]]:
        """The rows for which ``filter_fn`` holds. As in Kura, ``filter_fn`` sees a row as
        the dataset stores it (``None`` as ``""``/``0``/``[]``, metadata as keys and
        values, messages as lists with role ids); the result is ``model_class`` rows."""
        if not self.enabled:
            return None
        kind = _kind_of_model(model_class) or _native.kind_of_name(filename)
        out: List[Any] = []
        for batch in self._batches(filename, filename, dict):
            for row in batch:
                if filter_fn(_stored_row(row, kind)):
                    out.append(row)
        if not out:
            return [] if self._native.exists(filename) else None
        if _is_pydantic_model(model_class):
            return _list_adapter(model_class).validate_python(out)
        return out

    def delete_checkpoint(self, filename: str) -> bool:
        return super().delete_checkpoint(filename)

    # --- the Hub, through datasets (as Kura) ---------------------------------------------

    def _push_to_hub(self, filename: str, rows: int) -> None:
        from datasets import load_from_disk

        try:
            load_from_disk(str(self.get_checkpoint_path(filename))).push_to_hub(
                self.hub_repo,
                config_name=filename,
                token=self.hub_token,
                commit_message=f"Update {filename} checkpoint with {rows} items",
            )
        except Exception as e:  # as Kura: the local checkpoint stands
            logger.warning("Failed to push to hub: %s", e)

    def _load_from_hub(self, filename: str, model_class: Any, **kwargs: Any) -> Optional[List[Any]]:
        from datasets import load_dataset

        try:
            dataset = load_dataset(
                self.hub_repo,
                name=filename,
                token=self.hub_token,
                split=kwargs.get("split", "train"),
            )
        except Exception as e:
            logger.warning("Failed to load from hub, trying local: %s", e)
            return None
        import tempfile

        # The Hub's rows through the same decoding as a local dataset's.
        with tempfile.TemporaryDirectory() as tmp:
            dataset.save_to_disk(os.path.join(tmp, "hub"))
            local = HFDatasetCheckpointManager(tmp)
            return local.load_checkpoint("hub", model_class)


def _kura_str(value: Any) -> str:
    """Kura's ``_serialize_metadata`` of one value."""
    return json.dumps(value) if isinstance(value, (list, tuple)) else str(value)


def _stored_row(row: Dict[str, Any], kind: Optional[str]) -> Dict[str, Any]:
    """A row as Kura's HF manager stores it (``_model_to_dict``), for ``filter_fn``."""
    row = dict(row)
    if "metadata" in row:
        metadata = row["metadata"] or {}
        row["metadata"] = {
            "keys": list(metadata),
            "values": [_kura_str(v) for v in metadata.values()],
        }
    if kind == "summaries":
        for field in ("request", "topic", "task"):
            if row.get(field) is None:
                row[field] = ""
        for field in ("languages", "assistant_errors", "embedding"):
            if row.get(field) is None:
                row[field] = []
        for field in ("concerning_score", "user_frustration"):
            if row.get(field) is None:
                row[field] = 0
    elif kind in ("clusters", "meta_clusters", "dimensionality"):
        if row.get("parent_id") is None:
            row["parent_id"] = ""
        row["count"] = len(row.get("chat_ids") or [])
    elif kind == "conversations":
        messages = row.get("messages") or []
        row["messages"] = {
            "created_at": [m["created_at"] for m in messages],
            "role": [["user", "assistant"].index(m["role"]) for m in messages],
            "content": [m["content"] for m in messages],
        }
    return row


class MultiCheckpointManager:
    """Kura's ``MultiCheckpointManager``: several managers (ckpt's or Kura's) as one."""

    def __init__(
        self,
        managers: List[Any],
        *,
        save_strategy: Literal["all_enabled", "primary_only"] = "all_enabled",
        load_strategy: Literal["first_found", "priority"] = "first_found",
    ):
        if not managers:
            raise ValueError("At least one checkpoint manager must be provided")
        valid_save = {"all_enabled", "primary_only"}
        if save_strategy not in valid_save:
            raise ValueError(
                f"Invalid save_strategy '{save_strategy}'. Must be one of: "
                f"{', '.join(sorted(valid_save))}"
            )
        valid_load = {"first_found", "priority"}
        if load_strategy not in valid_load:
            raise ValueError(
                f"Invalid load_strategy '{load_strategy}'. Must be one of: "
                f"{', '.join(sorted(valid_load))}"
            )
        self.managers = managers
        self.save_strategy = save_strategy
        self.load_strategy = load_strategy
        self.enabled = any(m.enabled for m in managers)
        self.checkpoint_dir = managers[0].checkpoint_dir

    def is_enabled(self) -> bool:
        return self.enabled

    def setup_checkpoint_dir(self) -> None:
        for m in self.managers:
            if m.enabled:
                m.setup_checkpoint_dir()

    def get_checkpoint_path(self, filename: str) -> Union[Path, str]:
        return self.managers[0].get_checkpoint_path(filename)

    def load_checkpoint(
        self, filename: str, model_class: Any = dict, **kwargs: Any
    ) -> Optional[List[Any]]:
        if not self.enabled:
            return None
        if self.load_strategy == "first_found":
            for m in self.managers:
                if m.enabled:
                    result = m.load_checkpoint(filename, model_class, **kwargs)
                    if result is not None:
                        return result
            return None
        if self.load_strategy == "priority":
            for m in self.managers:
                if m.enabled:
                    return m.load_checkpoint(filename, model_class, **kwargs)
            return None
        raise ValueError(f"Unknown load strategy: {self.load_strategy}")

    def save_checkpoint(self, filename: str, data: List[Any], **kwargs: Any) -> None:
        """Saves to the managers the strategy names, in order. Each save is atomic; if
        one fails, the error names how many managers already hold the new checkpoint."""
        if not self.enabled:
            return
        if self.save_strategy not in ("all_enabled", "primary_only"):
            raise ValueError(f"Unknown save strategy: {self.save_strategy}")
        saved: List[str] = []
        for m in self.managers:
            if not m.enabled:
                continue
            try:
                m.save_checkpoint(filename, data, **kwargs)
            except Exception as e:
                if saved and hasattr(e, "add_note"):
                    e.add_note(
                        f"checkpoint {filename!r} was already saved to "
                        f"{', '.join(saved)}; the managers after it were not written"
                    )
                raise
            saved.append(f"{type(m).__name__}({m.checkpoint_dir})")
            if self.save_strategy == "primary_only":
                break

    def list_checkpoints(self) -> List[str]:
        if not self.enabled:
            return []
        found = set()
        for m in self.managers:
            if m.enabled and hasattr(m, "list_checkpoints"):
                found.update(m.list_checkpoints())
        return sorted(found)

    def delete_checkpoint(self, filename: str) -> bool:
        if not self.enabled:
            return False
        deleted = False
        for m in self.managers:
            if m.enabled and hasattr(m, "delete_checkpoint"):
                if m.delete_checkpoint(filename):
                    deleted = True
        return deleted

    def get_stats(self) -> Dict[str, Any]:
        stats: Dict[str, Any] = {
            "enabled": self.enabled,
            "save_strategy": self.save_strategy,
            "load_strategy": self.load_strategy,
            "num_managers": len(self.managers),
            "enabled_managers": sum(1 for m in self.managers if m.enabled),
            "managers": [],
        }
        for m in self.managers:
            info: Dict[str, Any] = {
                "type": type(m).__name__,
                "enabled": m.enabled,
                "checkpoint_dir": m.checkpoint_dir,
            }
            if hasattr(m, "list_checkpoints"):
                info["checkpoint_count"] = len(m.list_checkpoints())
            stats["managers"].append(info)
        return stats

    def __repr__(self) -> str:
        return (
            f"MultiCheckpointManager(managers={len(self.managers)}, "
            f"save_strategy='{self.save_strategy}', load_strategy='{self.load_strategy}')"
        )
