#!/usr/bin/env python3
"""Write the real Kura sample checkpoints again, with Kura's own managers.

Usage:
    kura_write.py MODE OUT_DIR [COMPRESSION]

MODE         parquet (Kura's ParquetCheckpointManager) | jsonl (its JSONLCheckpointManager)
OUT_DIR      created if missing; gets summaries, clusters, meta_clusters,
             dimensionality and conversations, with Kura's own file suffix
COMPRESSION  Parquet codec handed to Kura: snappy (Kura's default) | gzip |
             brotli | lz4 | zstd | none

The input is the folder named by $CKPT_KURA_SAMPLE (JSONL files Kura wrote),
loaded with Kura's JSONLCheckpointManager. The point is to give the Rust tests
Parquet files that Kura really wrote, without keeping such files in the repo.

Prints {"<kind>": <rows written>, ...} as one JSON object on stdout.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path

# Checkpoint name (as Kura's pipeline names it) -> model class name in kura.types.
KINDS = {
    "summaries": "ConversationSummary",
    "clusters": "Cluster",
    "meta_clusters": "Cluster",
    "dimensionality": "ProjectedCluster",
    "conversations": "Conversation",
}
CODECS = ("snappy", "gzip", "brotli", "lz4", "zstd", "none")


def fail(msg: str) -> int:
    print(f"kura_write: {msg}", file=sys.stderr)
    return 1


def main(argv: list[str]) -> int:
    if len(argv) not in (2, 3) or argv[0] not in ("parquet", "jsonl"):
        return fail("usage: kura_write.py {parquet|jsonl} OUT_DIR [COMPRESSION]")
    mode, out_dir = argv[0], Path(argv[1])
    compression = argv[2] if len(argv) == 3 else "snappy"
    if compression not in CODECS:
        return fail(f"unknown compression {compression!r}; one of {', '.join(CODECS)}")

    sample = os.environ.get("CKPT_KURA_SAMPLE")
    if not sample or not Path(sample).is_dir():
        return fail("CKPT_KURA_SAMPLE must name the folder of Kura's sample JSONL files")

    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    import kura.types
    from kura.checkpoints import JSONLCheckpointManager, ParquetCheckpointManager

    # The sample folder is read-only; that is fine because Kura's managers only
    # mkdir their folder when it does not exist yet.
    reader = JSONLCheckpointManager(sample)
    if mode == "parquet":
        writer = ParquetCheckpointManager(str(out_dir), compression=compression)
    else:
        writer = JSONLCheckpointManager(str(out_dir))

    written = {}
    for name, class_name in KINDS.items():
        model = getattr(kura.types, class_name)
        items = reader.load_checkpoint(name, model)
        if not items:
            return fail(f"{sample}/{name}.jsonl is missing or empty")
        writer.save_checkpoint(name, items)
        written[name] = len(items)

    json.dump(written, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
