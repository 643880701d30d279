"""A process killed (SIGKILL) while it saves leaves the previous checkpoint whole."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap
import time

import pytest

import ckpt.kura as ck
from kura.types import ConversationSummary

WRITER = textwrap.dedent(
    """
    import sys
    import ckpt.kura as ck
    from kura.types import ConversationSummary

    root, fmt = sys.argv[1], sys.argv[2]
    cls = ck.JSONLCheckpointManager if fmt == "jsonl" else ck.ParquetCheckpointManager
    m = cls(root)
    import random
    rng = random.Random(7)
    # Distinct floats, so that the Parquet file is large too (several upload parts).
    rows = {
        v: [
            ConversationSummary(
                chat_id=f"{v}-{i}", summary=v * 20, metadata={"v": v},
                embedding=[rng.random() for _ in range(256)],
            )
            for i in range(6000)
        ]
        for v in ("old", "new")
    }
    print("ready", flush=True)
    v = "new"
    while True:
        m.save_checkpoint("summaries", rows[v])
        v = "old" if v == "new" else "new"
    """
)


def staged_files(directory) -> dict:
    """The staged files (``NAME#N``) in ``directory``: name -> (inode, size).

    The inode tells a file of a later save from an earlier kill's of the same name: staged
    names are numbered from ``#1`` again once the earlier file was cleaned away.
    """
    found = {}
    for name in os.listdir(directory):
        if "#" not in name:
            continue
        try:
            st = os.stat(os.path.join(directory, name))
        except FileNotFoundError:  # renamed or cleaned away meanwhile
            continue
        found[name] = (st.st_ino, st.st_size)
    return found


def new_staged(directory, before: dict) -> dict:
    """The staged files in ``directory`` that are not among ``before`` (by name and inode)."""
    return {
        name: (ino, size)
        for name, (ino, size) in staged_files(directory).items()
        if before.get(name, (None, 0))[0] != ino
    }


@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
def test_sigkill_during_save_leaves_a_whole_checkpoint(tmp_path, fmt):
    seed = int(os.environ.get("CKPT_TEST_SEED", random.randrange(1 << 30)))
    print(f"seed {seed} (replay with CKPT_TEST_SEED={seed})")
    rng = random.Random(seed)
    manager = (ck.JSONLCheckpointManager if fmt == "jsonl" else ck.ParquetCheckpointManager)(str(tmp_path))
    manager.save_checkpoint(
        "summaries",
        [ConversationSummary(chat_id=f"old-{i}", summary="old" * 20, metadata={"v": "old"}, embedding=[0.25] * 256) for i in range(6000)],
    )
    file = tmp_path / f"summaries.{fmt}"
    kills, mid_write = 12, 0
    for _ in range(kills):
        # What earlier kills left staged: neither a sign that this writer's save began
        # nor evidence that this kill cut it.
        before = staged_files(tmp_path)
        proc = subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path), fmt], stdout=subprocess.PIPE, text=True)
        try:
            assert proc.stdout.readline().strip() == "ready"
            # Most of a save's time is Python dumping the models; to kill inside the
            # write itself, wait until a staged file of this writer shows, then a little more.
            deadline = time.monotonic() + 30
            while not new_staged(tmp_path, before):
                assert time.monotonic() < deadline, "no save started within 30 s"
                time.sleep(0.001)
            time.sleep(rng.uniform(0, 0.03))
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=30)
        # Looked at once the writer is dead (a save it finished just before the signal has
        # renamed its staged file away): a staged file of its own, with data, is a write the
        # kill cut. An empty one is a save killed before its first byte.
        left = {name: size for name, (_, size) in new_staged(tmp_path, before).items() if size > 0}
        mid_write += bool(left)
        loaded = manager.load_checkpoint("summaries", ConversationSummary)
        versions = {s.metadata["v"] for s in loaded}
        assert len(loaded) == 6000 and len(versions) == 1, (len(loaded), versions)
        assert file.exists()
    print(f"{kills} kills, {mid_write} during a write")
    assert mid_write >= kills * 0.3, f"only {mid_write} of {kills} kills landed during a write"
    # The next save (or `ckpt ls`) reclaims what killed writers staged.
    manager.save_checkpoint("summaries", manager.load_checkpoint("summaries", ConversationSummary))
    deadline = time.monotonic() + 30
    while [f for f in os.listdir(tmp_path) if "#" in f]:
        assert time.monotonic() < deadline, os.listdir(tmp_path)
        time.sleep(0.5)
        manager.save_checkpoint("summaries", manager.load_checkpoint("summaries", ConversationSummary))
