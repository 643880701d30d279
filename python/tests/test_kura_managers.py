"""ckpt's managers against Kura's own, operation by operation: what one writes the other
reads, both give the same answers on every edge (disabled, missing, empty, names with and
without extension), and the files have the names Kura gives them."""

from __future__ import annotations

import os

import pytest
from conftest import dumps, make_clusters, make_conversations, make_projected, make_summaries

import ckpt
import ckpt.kura as ck
from kura.checkpoint import CheckpointManager as KuraLegacy
from kura.checkpoints import JSONLCheckpointManager as KuraJSONL
from kura.checkpoints import MultiCheckpointManager as KuraMulti
from kura.checkpoints import ParquetCheckpointManager as KuraParquet
from kura.types import Cluster, Conversation, ConversationSummary, ProjectedCluster

KINDS = [
    ("summaries", ConversationSummary, make_summaries),
    ("clusters", Cluster, make_clusters),
    ("meta_clusters", Cluster, make_clusters),
    ("dimensionality", ProjectedCluster, make_projected),
    ("conversations", Conversation, make_conversations),
]

PAIRS = [
    pytest.param(KuraJSONL, ck.JSONLCheckpointManager, id="jsonl"),
    pytest.param(KuraParquet, ck.ParquetCheckpointManager, id="parquet"),
    pytest.param(KuraLegacy, ck.CheckpointManager, id="legacy"),
]


def test_import_does_not_import_kura_or_pydantic():
    import subprocess
    import sys

    code = (
        "import sys, ckpt, ckpt.kura; "
        "bad = [m for m in ('kura', 'pydantic', 'pyarrow', 'pandas') if m in sys.modules]; "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize("kura_cls,ckpt_cls", PAIRS)
@pytest.mark.parametrize("name,model,make", KINDS)
@pytest.mark.parametrize("writer", ["kura", "ckpt"])
def test_what_one_writes_the_other_reads(tmp_path, kura_cls, ckpt_cls, name, model, make, writer):
    rows = make(7)
    kura_m = kura_cls(str(tmp_path))
    ours = ckpt_cls(str(tmp_path))
    filename = name + ".jsonl" if kura_cls is KuraLegacy else name
    (kura_m if writer == "kura" else ours).save_checkpoint(filename, rows)
    files = sorted(os.listdir(tmp_path))
    assert files == [os.path.basename(kura_m.get_checkpoint_path(filename if kura_cls is not KuraJSONL else filename + ".jsonl"))]
    by_kura = kura_m.load_checkpoint(filename, model)
    by_ckpt = ours.load_checkpoint(filename, model)
    assert by_kura is not None and by_ckpt is not None
    assert dumps(by_ckpt) == dumps(rows)
    assert dumps(by_kura) == dumps(rows)
    assert [type(r) for r in by_ckpt] == [model] * len(rows)


@pytest.mark.parametrize("kura_cls,ckpt_cls", PAIRS)
def test_edges_answer_as_kura_does(tmp_path, kura_cls, ckpt_cls):
    """The same calls on both, in separate directories: the same results and files."""
    results = {}
    for who, cls in (("kura", kura_cls), ("ckpt", ckpt_cls)):
        d = tmp_path / who
        m = cls(str(d))
        seen = []
        seen.append(("fresh list", m.list_checkpoints()))
        seen.append(("missing", m.load_checkpoint("nonexistent", ConversationSummary)))
        m.save_checkpoint("empty", [])
        seen.append(("empty", m.load_checkpoint("empty", ConversationSummary)))
        m.save_checkpoint("test.jsonl", make_summaries(2))
        seen.append(("ext", dumps(m.load_checkpoint("test.jsonl", ConversationSummary) or [])))
        m.save_checkpoint("test.parquet", make_summaries(3))
        seen.append(("ext2", dumps(m.load_checkpoint("test.parquet", ConversationSummary) or [])))
        seen.append(("list", sorted(m.list_checkpoints())))
        seen.append(("files", sorted(os.listdir(d))))
        seen.append(("path", os.path.relpath(str(m.get_checkpoint_path("x")), d)))
        if kura_cls is not KuraParquet:
            # Kura's Parquet manager has no delete of its own (it warns and returns False).
            seen.append(("delete", m.delete_checkpoint("test.jsonl")))
            seen.append(("delete again", m.delete_checkpoint("test.jsonl")))
            seen.append(("files after delete", sorted(os.listdir(d))))
        results[who] = seen
        off = cls(str(tmp_path / f"{who}-off"), enabled=False)
        off.save_checkpoint("summaries", make_summaries(1))
        results[who].append(("disabled load", off.load_checkpoint("summaries", ConversationSummary)))
        results[who].append(("disabled dir", os.path.exists(tmp_path / f"{who}-off")))
        results[who].append(("disabled delete", off.delete_checkpoint("summaries")))
    assert results["ckpt"] == results["kura"]


def test_parquet_delete_removes_the_file(tmp_path):
    # Kura's Parquet manager cannot delete (it returns False); ckpt's does.
    m = ck.ParquetCheckpointManager(str(tmp_path))
    m.save_checkpoint("summaries", make_summaries(2))
    assert m.delete_checkpoint("summaries") is True
    assert os.listdir(tmp_path) == []
    assert m.delete_checkpoint("summaries") is False


def test_multi_manager_matches_kura(tmp_path):
    rows = make_summaries(4)
    results = {}
    for who, multi_cls, jsonl_cls, legacy_cls in (
        ("kura", KuraMulti, KuraJSONL, KuraLegacy),
        ("ckpt", ck.MultiCheckpointManager, ck.JSONLCheckpointManager, ck.CheckpointManager),
    ):
        d = tmp_path / who
        managers = [legacy_cls(str(d / "a")), legacy_cls(str(d / "b"), enabled=False), legacy_cls(str(d / "c"))]
        multi = multi_cls(managers)
        multi.save_checkpoint("summaries.jsonl", rows)
        got = [
            sorted(os.listdir(d / "a")),
            os.path.exists(d / "b"),
            sorted(os.listdir(d / "c")),
            dumps(multi.load_checkpoint("summaries.jsonl", ConversationSummary)),
            multi.list_checkpoints(),
            {k: v for k, v in multi.get_stats().items() if k != "managers"},
            [(s["type"].replace("JSONL", ""), s["enabled"], s["checkpoint_count"]) for s in multi.get_stats()["managers"]],
            multi.delete_checkpoint("summaries.jsonl"),
            multi.load_checkpoint("summaries.jsonl", ConversationSummary),
        ]
        prio = multi_cls([jsonl_cls(str(d / "p1")), jsonl_cls(str(d / "p2"))], load_strategy="priority")
        prio.managers[1].save_checkpoint("s", rows)
        got.append(prio.load_checkpoint("s", ConversationSummary))
        first = multi_cls([jsonl_cls(str(d / "p1")), jsonl_cls(str(d / "p2"))])
        got.append(len(first.load_checkpoint("s", ConversationSummary)))
        primary = multi_cls([jsonl_cls(str(d / "q1")), jsonl_cls(str(d / "q2"))], save_strategy="primary_only")
        primary.save_checkpoint("s", rows)
        got.append((sorted(os.listdir(d / "q1")), sorted(os.listdir(d / "q2"))))
        results[who] = got
    assert results["ckpt"] == results["kura"]
    for cls in (KuraMulti, ck.MultiCheckpointManager):
        with pytest.raises(ValueError, match="At least one checkpoint manager"):
            cls([])
        with pytest.raises(ValueError, match="Invalid save_strategy 'bad'"):
            cls([ck.JSONLCheckpointManager(str(tmp_path / "z"))], save_strategy="bad")
        with pytest.raises(ValueError, match="Invalid load_strategy 'bad'"):
            cls([ck.JSONLCheckpointManager(str(tmp_path / "z"))], load_strategy="bad")


def test_multi_manager_mixes_kura_and_ckpt_managers(tmp_path):
    rows = make_clusters(3)
    multi = ck.MultiCheckpointManager([KuraJSONL(str(tmp_path / "k")), ck.ParquetCheckpointManager(str(tmp_path / "c"))])
    multi.save_checkpoint("clusters", rows)
    assert dumps(KuraParquet(str(tmp_path / "c")).load_checkpoint("clusters", Cluster)) == dumps(rows)
    assert dumps(ck.JSONLCheckpointManager(str(tmp_path / "k")).load_checkpoint("clusters", Cluster)) == dumps(rows)


def test_multi_manager_save_failure_names_what_was_saved(tmp_path):
    good = ck.JSONLCheckpointManager(str(tmp_path / "good"))
    bad = ck.ParquetCheckpointManager(str(tmp_path / "bad"))
    multi = ck.MultiCheckpointManager([good, bad])
    with pytest.raises(ckpt.ConfigError) as err:
        # Dicts of no Kura kind: JSONL stores them, Parquet cannot.
        multi.save_checkpoint("notes", [{"a": 1}])
    assert "already saved to JSONLCheckpointManager" in "\n".join(getattr(err.value, "__notes__", []))
    assert good.load_checkpoint("notes") == [{"a": 1}]
    assert not (tmp_path / "bad" / "notes.parquet").exists()


def test_dicts_without_pydantic(tmp_path):
    m = ck.JSONLCheckpointManager(str(tmp_path))
    rows = [s.model_dump(mode="json") for s in make_summaries(3)]
    m.save_checkpoint("summaries", rows)
    loaded = m.load_checkpoint("summaries")
    assert loaded == rows
    # Kura reads the file as its models.
    assert [s.model_dump(mode="json") for s in KuraJSONL(str(tmp_path)).load_checkpoint("summaries", ConversationSummary)] == rows


def test_other_models_are_stored_as_kura_stores_them(tmp_path):
    from pydantic import BaseModel

    class Note(BaseModel):
        text: str
        n: int

    notes = [Note(text="a\nb", n=1), Note(text="ü", n=2)]
    ck.JSONLCheckpointManager(str(tmp_path / "c")).save_checkpoint("notes", notes)
    KuraJSONL(str(tmp_path / "k")).save_checkpoint("notes", notes)
    assert (tmp_path / "c" / "notes.jsonl").read_bytes() == (tmp_path / "k" / "notes.jsonl").read_bytes()
    assert ck.JSONLCheckpointManager(str(tmp_path / "k")).load_checkpoint("notes", Note) == notes


def test_iter_checkpoint_streams_batches(tmp_path):
    m = ck.JSONLCheckpointManager(str(tmp_path))
    rows = make_summaries(20000, dims=2)
    m.save_checkpoint("summaries", rows)
    batches = list(m.iter_checkpoint("summaries", ConversationSummary))
    assert len(batches) > 1
    assert sum(len(b) for b in batches) == len(rows)
    assert dumps([r for b in batches for r in b]) == dumps(rows)
    assert list(m.iter_checkpoint("missing", ConversationSummary)) == []


def test_bad_rows_fail_with_file_line_field_and_keep_the_old_checkpoint(tmp_path):
    m = ck.JSONLCheckpointManager(str(tmp_path))
    good = make_summaries(3)
    m.save_checkpoint("summaries", good)
    before = (tmp_path / "summaries.jsonl").read_bytes()
    bad = [s.model_dump(mode="json") for s in make_summaries(3)]
    bad[1]["embedding"] = ["not a number"]
    with pytest.raises(ckpt.DataError) as err:
        m.save_checkpoint("summaries", bad)
    message = str(err.value)
    assert "summaries.jsonl" in message and ":2:" in message and "embedding" in message, message
    assert (tmp_path / "summaries.jsonl").read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["summaries.jsonl"]


def test_a_damaged_file_raises_instead_of_returning_nothing(tmp_path):
    (tmp_path / "summaries.jsonl").write_text('{"chat_id": "a", "summary": "x", "metadata": {}}\n{"chat_id": 5}\n')
    m = ck.JSONLCheckpointManager(str(tmp_path))
    with pytest.raises(ckpt.DataError) as err:
        m.load_checkpoint("summaries", ConversationSummary)
    assert "summaries.jsonl:2" in str(err.value), str(err.value)
    (tmp_path / "clusters.parquet").write_bytes(b"PAR1 not really")
    with pytest.raises(ckpt.CkptError):
        ck.ParquetCheckpointManager(str(tmp_path)).load_checkpoint("clusters", Cluster)


def test_native_layout_is_read_by_ckpt(tmp_path):
    m = ck.ParquetCheckpointManager(str(tmp_path), layout="native", compression="zstd")
    rows = make_conversations(4)
    m.save_checkpoint("conversations", rows)
    assert dumps(m.load_checkpoint("conversations", Conversation)) == dumps(rows)
    info = {r["name"]: r for r in ckpt.ls(tmp_path)}
    assert info["conversations"]["layout"] == "native" and info["conversations"]["rows"] == 4


@pytest.mark.parametrize("kura_cls,ckpt_cls", PAIRS[:2])
@pytest.mark.parametrize("name", ["my summaries", "résumé", "日本語 要約"])
def test_names_with_spaces_and_unicode_are_stored_as_typed(tmp_path, kura_cls, ckpt_cls, name):
    """A name a user types is the file's name, both ways: Kura loads what ckpt saved under
    it, ckpt loads what Kura saved, and `ls` lists it by that name."""
    rows = make_summaries(3)
    kura_m, ours = kura_cls(str(tmp_path / "a")), ckpt_cls(str(tmp_path / "a"))
    ours.save_checkpoint(name, rows)
    assert os.path.exists(kura_m.get_checkpoint_path(name if kura_cls is not KuraJSONL else name + ".jsonl"))
    assert dumps(kura_m.load_checkpoint(name, ConversationSummary)) == dumps(rows)
    kura_b, ours_b = kura_cls(str(tmp_path / "b")), ckpt_cls(str(tmp_path / "b"))
    kura_b.save_checkpoint(name, rows)
    assert dumps(ours_b.load_checkpoint(name, ConversationSummary)) == dumps(rows)
    listed = {c["name"]: c for c in ckpt.ls(str(tmp_path / "b"))}
    assert listed[name]["rows"] == 3, listed


@pytest.mark.parametrize("ckpt_cls", [ck.JSONLCheckpointManager, ck.ParquetCheckpointManager])
def test_names_listings_would_hide_are_refused_and_nothing_is_written(tmp_path, ckpt_cls):
    ours = ckpt_cls(str(tmp_path))
    for name in ["_hidden", "star*", "set[1]"]:
        with pytest.raises(ckpt.CkptError, match="invalid checkpoint name"):
            ours.save_checkpoint(name, make_summaries(2))
    assert os.listdir(tmp_path) == []
