"""ckpt: checkpoints of ML data pipelines as SQL tables, from Python.

- ``ckpt.kura``: drop-in replacements for Kura's checkpoint managers
  (``JSONLCheckpointManager``, ``ParquetCheckpointManager``, ``MultiCheckpointManager``)
  that save atomically, validate every row, and work on local disk or object stores.
- ``ckpt.connect(root)``: SQL over a root's checkpoints; results are Arrow streams
  (``pyarrow.table(result)``, ``polars.DataFrame(result)``, ``duckdb.from_arrow(result)``).
- ``ckpt.convert(src, dst)`` and ``ckpt.ls(root)``: the command line's ``convert`` and ``ls``.

Importing ckpt imports neither Kura nor pydantic nor pyarrow.
"""

from __future__ import annotations

import os
from typing import Mapping, Optional, Sequence, Union

from . import _native
from ._native import (
    ChangedWhileRead,
    CkptError,
    ConfigError,
    DataError,
    StaleCheckpoint,
    StorageError,
)

__version__ = _native.__version__

__all__ = [
    "ChangedWhileRead",
    "CkptError",
    "ConfigError",
    "DataError",
    "QueryResult",
    "Session",
    "StaleCheckpoint",
    "StorageError",
    "connect",
    "convert",
    "ls",
]


class QueryResult:
    """The rows of one SQL statement, read as Arrow.

    It implements the Arrow PyCapsule interface (``__arrow_c_stream__``), so any Arrow
    consumer takes it without copies. The query runs when the rows are read; reading
    again runs it again.
    """

    def __init__(self, native: _native.QueryResult):
        self._native = native

    def __arrow_c_stream__(self, requested_schema=None):
        return self._native.__arrow_c_stream__(requested_schema)

    def __arrow_c_schema__(self):
        return self._native.__arrow_c_schema__()

    @property
    def columns(self) -> list[str]:
        return self._native.columns

    def to_arrow(self):
        """A ``pyarrow.Table``."""
        import pyarrow

        return pyarrow.table(self)

    def to_pandas(self):
        """A ``pandas.DataFrame`` (through pyarrow)."""
        return self.to_arrow().to_pandas()

    def to_polars(self):
        """A ``polars.DataFrame``."""
        import polars

        return polars.DataFrame(self)

    def to_pylist(self) -> list[dict]:
        """The rows as dicts."""
        return self.to_arrow().to_pylist()

    def explain(self) -> str:
        """Runs the query and returns its plan with metrics (``EXPLAIN ANALYZE``)."""
        return self._native.explain()

    def __repr__(self) -> str:
        return f"QueryResult(columns={self.columns!r})"


class Session:
    """A SQL session over checkpoint roots (see :func:`connect`)."""

    def __init__(self, native: _native.Session):
        self._native = native

    def sql(self, query: str) -> QueryResult:
        """Plans one SQL statement. A query runs when its rows are read; COPY and other
        statements run now (their result holds e.g. the number of rows copied)."""
        return QueryResult(self._native.sql(query))

    def tables(self) -> dict[str, list[str]]:
        """Table names by schema (the first root's schema needs no qualifier)."""
        return self._native.tables()

    def refresh(self) -> None:
        """Lists the roots again, after checkpoints were added or removed."""
        self._native.refresh()


def connect(
    root: Union[str, "os.PathLike[str]", Mapping[str, Union[str, "os.PathLike[str]"]]],
    *,
    storage_options: Optional[Mapping[str, str]] = None,
    memory_limit: Optional[int] = None,
    sandbox: bool = False,
    workers: Optional[Sequence[str]] = None,
) -> Session:
    """A SQL session over one root (a path or URL: its checkpoints are tables) or
    several (``{"run1": "./a", "run2": "s3://bucket/b"}``: ``run2.summaries``; the first
    is the default schema).

    ``storage_options`` are the CLI's ``--storage-option`` keys (``aws_endpoint``,
    ``aws_access_key_id``, ...); ``memory_limit`` in bytes makes operators spill to
    disk beyond it; ``sandbox`` confines COPY targets to the roots. ``workers``
    (``["10.0.0.5:50051", ...]``, each a running ``ckpt worker``) runs queries on them;
    each reads the roots with its own credentials.
    """
    if isinstance(root, Mapping):
        roots = [(str(name), _location(loc)) for name, loc in root.items()]
    else:
        roots = [("root", _location(root))]
    return Session(
        _native.Session(
            roots,
            storage_options=_options(storage_options),
            memory_limit=memory_limit,
            sandbox=sandbox,
            workers=list(workers) if workers else None,
        )
    )


def convert(
    src,
    dst,
    *,
    to: Optional[str] = None,
    compression: Optional[str] = None,
    layout: Optional[str] = None,
    storage_options: Optional[Mapping[str, str]] = None,
) -> list[dict]:
    """Converts a checkpoint file or a whole root (JSONL ↔ Parquet, local ↔ object store),
    as ``ckpt convert``: streamed, atomic. Returns one dict per checkpoint converted."""
    return _native.convert(
        _location(src),
        _location(dst),
        to=to,
        compression=compression,
        layout=layout,
        storage_options=_options(storage_options),
    )


def ls(root, *, storage_options: Optional[Mapping[str, str]] = None) -> list[dict]:
    """The checkpoints of a root, as ``ckpt ls``: name, file, kind, format, layout, rows,
    bytes (and error, for one that cannot be read)."""
    return _native.ls(_location(root), storage_options=_options(storage_options))


def _location(loc) -> str:
    import os

    return os.fspath(loc)


def _options(options: Optional[Mapping[str, str]]) -> Optional[dict[str, str]]:
    if options is None:
        return None
    return {str(k): str(v) for k, v in options.items()}
