#!/usr/bin/env python3
"""Load a checkpoint file with Kura itself and describe what Kura got.

Usage:
    kura_check.py MODE PATH KIND [--all]

MODE  jsonl | parquet
PATH  the checkpoint file
KIND  summaries | clusters | meta_clusters | dimensionality | conversations

Prints one JSON object on stdout:
    {"rows": N, "first": <first item as model_dump(mode="json")> or null}
With --all it also holds "items": every item, dumped the same way.
Exits 0 when Kura loaded the file, 1 (reason on stderr) when it did not.

The Rust tests call this to prove that files the project writes are files Kura
reads. It goes through Kura's own checkpoint managers rather than re-implementing
their parsing, so Kura's quirks (e.g. how it turns Parquet nulls back into
fields) are what gets tested.
"""

from __future__ import annotations

import json
import logging
import sys
import tempfile
import traceback
from pathlib import Path
from typing import NoReturn

MODES = ("jsonl", "parquet")
KINDS = ("summaries", "clusters", "meta_clusters", "dimensionality", "conversations")


def fail(msg: str) -> NoReturn:
    print(f"kura_check: {msg}", file=sys.stderr)
    sys.exit(1)


def model_for(kind: str):
    from kura.types import Cluster, Conversation, ConversationSummary, ProjectedCluster

    return {
        "summaries": ConversationSummary,
        "clusters": Cluster,
        "meta_clusters": Cluster,
        "dimensionality": ProjectedCluster,
        "conversations": Conversation,
    }[kind]


def as_named(path: Path, suffix: str, tmp: str) -> Path:
    """Kura's managers take a directory plus a name and add the suffix themselves,
    so a file whose name lacks that suffix is reached through a symlink that has it."""
    if path.name.endswith(suffix):
        return path
    link = Path(tmp) / (path.name + suffix)
    link.symlink_to(path.resolve())
    return link


def load_jsonl(path: Path, model, tmp: str) -> list:
    try:
        from kura.checkpoints import JSONLCheckpointManager
    except ImportError:
        JSONLCheckpointManager = None

    if JSONLCheckpointManager is None:
        # Older Kura without the manager: this is what its loader did.
        with open(path, encoding="utf-8") as f:
            return [model.model_validate_json(line) for line in f if line.strip()]

    path = as_named(path, ".jsonl", tmp)
    manager = JSONLCheckpointManager(str(path.parent))
    items = manager.load_checkpoint(path.name[: -len(".jsonl")], model)
    # Kura answers None for an existing but empty file; existence was checked before.
    return items if items is not None else []


def load_parquet(path: Path, model, tmp: str) -> list:
    from kura.checkpoints import ParquetCheckpointManager

    path = as_named(path, ".parquet", tmp)
    manager = ParquetCheckpointManager(str(path.parent))
    items = manager.load_checkpoint(path.name, model)
    if items is not None:
        return items
    # Kura logs and swallows any load error, answering None. Redo its two steps
    # so the real exception reaches stderr instead of a bare "failed".
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    manager._deserialize_from_parquet(table, model)
    raise RuntimeError(f"Kura's ParquetCheckpointManager returned None for {path}")


def main(argv: list[str]) -> int:
    args = [a for a in argv if a != "--all"]
    dump_all = len(args) != len(argv)
    if len(args) != 3 or args[0] not in MODES or args[2] not in KINDS:
        fail(
            f"usage: kura_check.py {{{'|'.join(MODES)}}} PATH {{{'|'.join(KINDS)}}} [--all]"
        )
    mode, raw_path, kind = args
    path = Path(raw_path)
    if not path.is_file():
        fail(f"no such file: {path}")

    # Kura reports load problems through logging only; make them visible.
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)

    try:
        model = model_for(kind)
        with tempfile.TemporaryDirectory(prefix="kura_check.") as tmp:
            loader = load_jsonl if mode == "jsonl" else load_parquet
            items = loader(path, model, tmp)
        dumped = [item.model_dump(mode="json") for item in items]
    except SystemExit:
        raise
    except BaseException:  # noqa: BLE001 - any failure to load is the answer
        traceback.print_exc()
        fail(f"Kura could not load {path} as {mode} {kind}")

    out = {"rows": len(dumped), "first": dumped[0] if dumped else None}
    if dump_all:
        out["items"] = dumped
    json.dump(out, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
