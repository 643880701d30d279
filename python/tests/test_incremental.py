"""Appends from Python: a step killed part-way resumes from its last appended batch."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
from conftest import dumps, make_summaries

import ckpt
import ckpt.kura as ck
from kura.checkpoints import JSONLCheckpointManager as KuraJSONL
from kura.checkpoints import ParquetCheckpointManager as KuraParquet
from kura.types import ConversationSummary


@pytest.mark.parametrize("cls", [ck.JSONLCheckpointManager, ck.ParquetCheckpointManager])
def test_append_missing_compact(tmp_path, cls):
    m = cls(str(tmp_path))
    rows = make_summaries(30)
    assert m.missing("summaries", ["chat_1", "chat_2", "chat_1"]) == ["chat_1", "chat_2"]
    m.append_checkpoint("summaries", rows[:10])
    m.append_checkpoint("summaries", rows[10:30])
    # Appended again (a retry after a crash): the last row wins, no duplicate.
    again = rows[5].model_copy(update={"summary": "second version"})
    m.append_checkpoint("summaries", [again])
    loaded = m.load_checkpoint("summaries", ConversationSummary)
    assert len(loaded) == 30
    assert {s.chat_id: s.summary for s in loaded}["chat_5"] == "second version"
    assert m.missing("summaries", ["chat_3", "nope", "chat_29"]) == ["nope"]
    assert m.checkpoint_exists("summaries")
    n = ckpt.connect(tmp_path).sql("SELECT count(*) AS n, count(DISTINCT chat_id) AS d FROM summaries").to_pylist()
    assert n == [{"n": 30, "d": 30}]
    stats = m.compact_checkpoint("summaries")
    assert stats["parts"] == 3 and stats["rows"] == 30
    ext = "jsonl" if cls is ck.JSONLCheckpointManager else "parquet"
    assert sorted(f.name for f in tmp_path.iterdir() if f.is_file()) == [f"summaries.{ext}"]
    # Nothing is left beside the compacted file: no part, no lock file, no parts directory.
    parts_dir = tmp_path / f"summaries.{ext}.parts"
    assert not parts_dir.exists(), os.listdir(parts_dir)
    kura = (KuraJSONL if ext == "jsonl" else KuraParquet)(str(tmp_path))
    assert dumps(kura.load_checkpoint("summaries", ConversationSummary)) == dumps(loaded)
    assert m.delete_checkpoint(f"summaries.{ext}") is True
    m.append_checkpoint("summaries", rows[:1])
    assert m.delete_checkpoint(f"summaries.{ext}") is True
    assert not m.checkpoint_exists("summaries")
    assert [f for f in tmp_path.rglob("*") if f.is_file() and not f.name.startswith("_")] == []


def test_append_refuses_bad_rows_and_keeps_the_rest(tmp_path):
    m = ck.JSONLCheckpointManager(str(tmp_path))
    m.append_checkpoint("summaries", make_summaries(3))
    bad = [s.model_dump(mode="json") for s in make_summaries(2)]
    bad[1]["concerning_score"] = 9
    with pytest.raises(ckpt.DataError) as err:
        m.append_checkpoint("summaries", bad)
    assert ":2:" in str(err.value) and "concerning_score" in str(err.value), str(err.value)
    assert len(m.load_checkpoint("summaries", ConversationSummary)) == 3


def test_fingerprint_says_when_a_checkpoint_is_stale(tmp_path):
    a = ck.JSONLCheckpointManager(str(tmp_path), fingerprint="model=a")
    a.save_checkpoint("summaries", make_summaries(2))
    assert a.stored_fingerprint("summaries") == "model=a"
    assert len(a.load_checkpoint("summaries", ConversationSummary)) == 2
    b = ck.JSONLCheckpointManager(str(tmp_path), fingerprint="model=b")
    with pytest.raises(ckpt.StaleCheckpoint) as err:
        b.load_checkpoint("summaries", ConversationSummary)
    assert "model=a" in str(err.value) or "fingerprint" in str(err.value)


RESUMABLE_STEP = textwrap.dedent(
    """
    import sys, time
    import ckpt.kura as ck
    from kura.types import ConversationSummary

    root, log = sys.argv[1], sys.argv[2]
    m = ck.JSONLCheckpointManager(root)

    def summarise(batch):
        with open(log, "a") as f:
            f.write("".join(c + "\\n" for c in batch))
        time.sleep(0.05)
        return [ConversationSummary(chat_id=c, summary="s " + c, metadata={}) for c in batch]

    ids = [f"c{i:03}" for i in range(200)]
    out = m.load_or_compute_each("summaries", ids, id_of=lambda c: c, compute=summarise,
                                 model_class=ConversationSummary, batch_size=10)
    print(len(out), flush=True)
    """
)


def test_a_killed_step_resumes_from_its_last_batch(tmp_path):
    root, log = tmp_path / "root", tmp_path / "computed.log"
    proc = subprocess.Popen([sys.executable, "-c", RESUMABLE_STEP, str(root), str(log)])
    try:
        deadline = time.monotonic() + 60
        # Kill once some batches are stored and the step is far from done.
        while not (log.exists() and len(log.read_text().split()) >= 60):
            assert time.monotonic() < deadline, "the step did not start"
            assert proc.poll() is None, "the step ended before it was killed"
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
    m = ck.JSONLCheckpointManager(str(root))
    stored = m.load_checkpoint("summaries", ConversationSummary) or []
    computed_before = log.read_text().split()
    # Every stored batch is whole; at most the batch in flight was lost.
    assert len(stored) % 10 == 0 and len(computed_before) - len(stored) <= 10
    assert len(stored) >= 50
    log.write_text("")
    done = subprocess.run([sys.executable, "-c", RESUMABLE_STEP, str(root), str(log)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["200"]
    recomputed = log.read_text().split()
    assert len(recomputed) == 200 - len(stored), (len(recomputed), len(stored))
    assert not set(recomputed) & {s.chat_id for s in stored}
    final = m.load_checkpoint("summaries", ConversationSummary)
    assert sorted(s.chat_id for s in final) == [f"c{i:03}" for i in range(200)]


def test_append_on_s3(s3_root):
    url, options = s3_root
    m = ck.JSONLCheckpointManager(url, storage_options=options)
    rows = make_summaries(12)
    for i in range(0, 12, 4):
        m.append_checkpoint("summaries", rows[i : i + 4])
    assert m.missing("summaries", ["chat_0", "chat_99"]) == ["chat_99"]
    assert dumps(sorted(m.load_checkpoint("summaries", ConversationSummary), key=lambda s: s.chat_id)) == dumps(
        sorted(rows, key=lambda s: s.chat_id)
    )
    assert m.compact_checkpoint("summaries")["parts"] == 3
    assert m.list_checkpoints() == ["summaries.jsonl"]
