"""ckpt's HFDatasetCheckpointManager against Kura's own and the real ``datasets``: what
Kura saves ckpt loads equal, what ckpt saves Kura and ``datasets`` load equal (``datasets``
3.6 in the test venv, and 5.x when ``CKPT_TEST_DATASETS5`` names a directory holding it),
multi-shard datasets, cache files beside, a SIGKILL during a save, and S3."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from datetime import datetime, timedelta, timezone

import pytest

import ckpt.kura as ck
from conftest import dumps, make_clusters, make_conversations, make_projected, make_summaries
from kura.checkpoints.hf_dataset import HFDatasetCheckpointManager as KuraHF
from kura.types import Cluster, Conversation, ConversationSummary, Message
from kura.types.dimensionality import ProjectedCluster


def odd_summaries():
    return make_summaries(7) + [
        ConversationSummary(
            chat_id="odd",
            summary="",
            request="",
            languages=[],
            assistant_errors=[],
            embedding=[],
            metadata={
                "int": 3,
                "float": 2.5,
                "tiny": 1e-07,
                "bool": True,
                "none": None,
                "text": "日本語 ✓",
                "numeric_text": "42",
                "list": [1, "two", 3.5, None, True],
                "dict": {"a": [1, 2], "b": "it's"},
            },
        )
    ]


def odd_conversations():
    return make_conversations(3) + [
        Conversation(
            chat_id="aware",
            created_at=datetime(2024, 2, 29, 23, 59, 59, 999999, tzinfo=timezone(timedelta(hours=-5))),
            messages=[
                Message(role="assistant", content="", created_at=datetime(2024, 3, 1, tzinfo=timezone.utc)),
            ],
            metadata={"flag": False, "ids": ["x", "y"], "score": 0.1},
        ),
        Conversation(chat_id="empty", created_at=datetime(1999, 12, 31, 12), messages=[], metadata={}),
    ]


KINDS = [
    ("summaries", ConversationSummary, odd_summaries),
    ("conversations", Conversation, odd_conversations),
    ("clusters", Cluster, lambda: make_clusters(4)),
    ("meta_clusters", Cluster, lambda: make_clusters(2)),
    ("dimensionality", ProjectedCluster, lambda: make_projected(3)),
]


@pytest.fixture(autouse=True)
def utc(monkeypatch):
    # Kura takes naive datetimes as local time; ckpt as UTC: the same on a UTC machine.
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()


@pytest.mark.parametrize("name,model,rows", KINDS, ids=[k[0] for k in KINDS])
def test_kura_writes_ckpt_reads_equal(tmp_path, name, model, rows):
    KuraHF(str(tmp_path)).save_checkpoint(name, rows())
    want = KuraHF(str(tmp_path)).load_checkpoint(name, model)
    got = ck.HFDatasetCheckpointManager(tmp_path).load_checkpoint(name, model)
    assert dumps(got) == dumps(want)
    assert ck.HFDatasetCheckpointManager(tmp_path).list_checkpoints() == [name]


@pytest.mark.parametrize("name,model,rows", KINDS, ids=[k[0] for k in KINDS])
def test_ckpt_writes_kura_and_datasets_read_equal(tmp_path, name, model, rows):
    from datasets import load_from_disk

    (tmp_path / "kura").mkdir()
    (tmp_path / "ckpt").mkdir()
    KuraHF(str(tmp_path / "kura")).save_checkpoint(name, rows())
    ck.HFDatasetCheckpointManager(tmp_path / "ckpt").save_checkpoint(name, rows())
    # Kura loads from ckpt's dataset what it loads from its own.
    assert dumps(KuraHF(str(tmp_path / "ckpt")).load_checkpoint(name, model)) == dumps(
        KuraHF(str(tmp_path / "kura")).load_checkpoint(name, model)
    )
    theirs = load_from_disk(str(tmp_path / "kura" / name))
    ours = load_from_disk(str(tmp_path / "ckpt" / name))
    assert ours.features == theirs.features
    assert len(ours) == len(theirs)
    # ckpt reads its own nulls back as nulls and "" and [] as themselves; metadata,
    # datetimes and floats as Kura reads them (str() of each value; naive UTC; float32).
    ours = dumps(ck.HFDatasetCheckpointManager(tmp_path / "ckpt").load_checkpoint(name, model))
    kura = dumps(KuraHF(str(tmp_path / "ckpt")).load_checkpoint(name, model))
    want = dumps(rows())
    for o, k, w in zip(ours, kura, want):
        for field in ("metadata", "created_at", "messages", "embedding", "x_coord", "y_coord"):
            if field in o:
                theirs = k.pop(field)
                assert o.pop(field) == (theirs if theirs is not None or field != "embedding" else w[field])
                w.pop(field)
        assert o == w


def test_random_rows_both_ways(tmp_path):
    """Generated summaries (odd metadata of every type, big and odd numbers, unicode and
    escapes, None and empty everywhere): Kura and ckpt load the same from each other's
    datasets as Kura loads from its own."""
    import random

    from test_fast_paths import SEED, random_summary

    print(f"seed {SEED} (replay with CKPT_TEST_SEED={SEED})")
    rng = random.Random(SEED)
    rows = [random_summary(rng, i) for i in range(300)]
    (tmp_path / "kura").mkdir()
    (tmp_path / "ckpt").mkdir()
    KuraHF(str(tmp_path / "kura")).save_checkpoint("summaries", rows)
    ck.HFDatasetCheckpointManager(tmp_path / "ckpt").save_checkpoint("summaries", rows)
    want = dumps(KuraHF(str(tmp_path / "kura")).load_checkpoint("summaries", ConversationSummary))
    kura_reads_ckpt = dumps(KuraHF(str(tmp_path / "ckpt")).load_checkpoint("summaries", ConversationSummary))
    ckpt_reads_kura = dumps(ck.HFDatasetCheckpointManager(tmp_path / "kura").load_checkpoint("summaries", ConversationSummary))
    for i, w in enumerate(want):
        assert kura_reads_ckpt[i] == w, (i, rows[i])
        assert ckpt_reads_kura[i] == w, (i, rows[i])


def test_datasets_5_reads_ckpt(tmp_path):
    target = os.environ.get("CKPT_TEST_DATASETS5")
    if not target:
        pytest.fail("CKPT_TEST_DATASETS5 is not set: scripts/test installs datasets 5.x there")
    ck.HFDatasetCheckpointManager(tmp_path).save_checkpoint("summaries", odd_summaries())
    ck.HFDatasetCheckpointManager(tmp_path).save_checkpoint("conversations", odd_conversations())
    script = textwrap.dedent(
        """
        import sys, datasets
        assert datasets.__version__.startswith("5."), datasets.__version__
        for name in ("summaries", "conversations"):
            print(name, len(datasets.load_from_disk(sys.argv[1] + "/" + name)))
        """
    )
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([target, os.environ.get("PYTHONPATH", "")]))
    out = subprocess.run([sys.executable, "-c", script, str(tmp_path)], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["summaries", "8", "conversations", "5"]


def test_shards_and_cache_files(tmp_path):
    from datasets import load_from_disk

    kura = KuraHF(str(tmp_path))
    kura.save_checkpoint("summaries", odd_summaries())
    # filter_checkpoint leaves cache-*.arrow beside the data; a copy in two shards.
    kura.filter_checkpoint("summaries", lambda r: r["user_frustration"] > 2, ConversationSummary)
    assert any(p.name.startswith("cache-") for p in (tmp_path / "summaries").iterdir())
    load_from_disk(str(tmp_path / "summaries")).save_to_disk(str(tmp_path / "sharded"), num_shards=3)
    m = ck.HFDatasetCheckpointManager(tmp_path)
    want = dumps(kura.load_checkpoint("summaries", ConversationSummary))
    assert dumps(m.load_checkpoint("summaries", ConversationSummary)) == want
    assert dumps(m.load_checkpoint("sharded", ConversationSummary)) == want
    assert sorted(m.list_checkpoints()) == ["sharded", "summaries"]
    # filter_checkpoint sees rows as Kura's does (None stored as 0).
    pick = lambda r: r["user_frustration"] > 2 or r["concerning_score"] == 0  # noqa: E731
    assert dumps(m.filter_checkpoint("summaries", pick, ConversationSummary)) == dumps(
        kura.filter_checkpoint("summaries", pick, ConversationSummary)
    )
    info, theirs = m.get_checkpoint_info("summaries"), kura.get_checkpoint_info("summaries")
    for key in ("num_rows", "num_columns", "column_names", "citation", "license"):
        assert info[key] == theirs[key], key
    assert m.delete_checkpoint("sharded") and not (tmp_path / "sharded").exists()


def test_edges_answer_as_kura_does(tmp_path):
    """The same calls on Kura's manager and ckpt's, in separate directories: the same
    results and the same files."""
    results = {}
    for who, cls in (("kura", KuraHF), ("ckpt", ck.HFDatasetCheckpointManager)):
        d = tmp_path / who
        m = cls(str(d))
        seen = [("fresh list", m.list_checkpoints())]
        seen.append(("missing", m.load_checkpoint("nonexistent", ConversationSummary)))
        m.save_checkpoint("empty", [])
        seen.append(("empty", m.load_checkpoint("empty", ConversationSummary)))
        m.save_checkpoint("test.jsonl", make_summaries(2))
        seen.append(("ext", dumps(m.load_checkpoint("test.jsonl", ConversationSummary) or [])))
        m.save_checkpoint("run 1", make_clusters(2))
        seen.append(("space", dumps(m.load_checkpoint("run 1", Cluster) or [])))
        seen.append(("list", sorted(m.list_checkpoints())))
        seen.append(("files", sorted(os.listdir(d))))
        seen.append(("data", sorted(os.listdir(d / "run 1"))))
        seen.append(("path", os.path.relpath(str(m._get_checkpoint_path("x") if who == "kura" else m.get_checkpoint_path("x")), d)))
        seen.append(("delete", m.delete_checkpoint("test.jsonl")))
        seen.append(("delete again", m.delete_checkpoint("test.jsonl")))
        seen.append(("files after delete", sorted(os.listdir(d))))
        seen.append(("info of missing", m.get_checkpoint_info("nope")))
        off = cls(str(tmp_path / f"{who}-off"), enabled=False)
        off.save_checkpoint("summaries", make_summaries(1))
        seen.append(("disabled load", off.load_checkpoint("summaries", ConversationSummary)))
        seen.append(("disabled delete", off.delete_checkpoint("summaries")))
        seen.append(("disabled list", off.list_checkpoints()))
        results[who] = seen
    assert results["ckpt"] == results["kura"]


def test_multi_manager_with_hf(tmp_path):
    hf = ck.HFDatasetCheckpointManager(tmp_path / "hf")
    multi = ck.MultiCheckpointManager([hf, ck.JSONLCheckpointManager(tmp_path / "jsonl")])
    multi.save_checkpoint("clusters", make_clusters(3))
    assert (tmp_path / "hf" / "clusters" / "state.json").is_file()
    assert (tmp_path / "jsonl" / "clusters.jsonl").is_file()
    assert dumps(multi.load_checkpoint("clusters", Cluster)) == dumps(make_clusters(3))
    assert multi.list_checkpoints() == ["clusters", "clusters.jsonl"]


def test_hub_repo_needs_datasets(monkeypatch, tmp_path):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda n, *a: None if n == "huggingface_hub" else real(n, *a)
    )
    with pytest.raises(ImportError, match="huggingface_hub"):
        ck.HFDatasetCheckpointManager(tmp_path, hub_repo="me/run")


WRITER = textwrap.dedent(
    """
    import sys
    import ckpt.kura as ck
    from kura.types import ConversationSummary

    m = ck.HFDatasetCheckpointManager(sys.argv[1])
    rows = {
        v: [ConversationSummary(chat_id=f"{v}-{i}", summary=v * 20, metadata={"v": v},
                                embedding=[0.5] * 128) for i in range(20000)]
        for v in ("old", "new")
    }
    print("ready", flush=True)
    v = "new"
    while True:
        m.save_checkpoint("summaries", rows[v])
        v = "old" if v == "new" else "new"
    """
)


def test_sigkill_during_save_leaves_a_whole_dataset(tmp_path):
    from datasets import load_from_disk

    manager = ck.HFDatasetCheckpointManager(tmp_path)
    manager.save_checkpoint(
        "summaries",
        [ConversationSummary(chat_id=f"old-{i}", summary="old" * 20, metadata={"v": "old"}) for i in range(20000)],
    )
    for delay in (0.3, 0.7, 1.1, 1.6, 2.2):
        proc = subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path)], stdout=subprocess.PIPE, text=True)
        try:
            assert proc.stdout.readline().strip() == "ready"
            time.sleep(delay)
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=30)
        loaded = manager.load_checkpoint("summaries", ConversationSummary)
        assert len(loaded) == 20000 and len({s.metadata["v"] for s in loaded}) == 1
        assert len(load_from_disk(str(tmp_path / "summaries"))) == 20000
    # The next save removes what killed writers staged.
    manager.save_checkpoint("summaries", manager.load_checkpoint("summaries", ConversationSummary))
    assert sorted(os.listdir(tmp_path)) == ["summaries"]


def test_s3(s3_root, tmp_path):
    url, options = s3_root
    m = ck.HFDatasetCheckpointManager(url, storage_options=options)
    local = ck.HFDatasetCheckpointManager(tmp_path)
    for manager in (m, local):
        manager.save_checkpoint("summaries", odd_summaries())
        manager.save_checkpoint("conversations", odd_conversations())
    assert sorted(m.list_checkpoints()) == ["conversations", "summaries"]
    for name, model in (("summaries", ConversationSummary), ("conversations", Conversation)):
        assert dumps(m.load_checkpoint(name, model)) == dumps(local.load_checkpoint(name, model))
    m.save_checkpoint("clusters", make_clusters(3))
    assert dumps(m.load_checkpoint("clusters", Cluster)) == dumps(make_clusters(3))
    m.save_checkpoint("clusters", make_clusters(2))
    assert dumps(m.load_checkpoint("clusters", Cluster)) == dumps(make_clusters(2))
    assert m.delete_checkpoint("summaries")
    assert m.load_checkpoint("summaries", ConversationSummary) is None
