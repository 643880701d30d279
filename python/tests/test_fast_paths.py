"""The load's fast path (rows handed to pydantic as Python values) against its slow path
(rows as JSON text, pydantic's JSON mode, what Kura does): generated rows with nested
metadata, keys repeated at other depths, big and odd numbers, unicode and escapes; every
field of every model compared."""

from __future__ import annotations

import json
import math
import os
import random

import pytest

import ckpt.kura as ck
from kura.types import Cluster, ConversationSummary, ProjectedCluster

BACKSLASH = "\\"
SEED = int(os.environ.get("CKPT_TEST_SEED", random.randrange(1 << 30)))


def odd_value(rng: random.Random, depth: int = 0):
    choices = [
        lambda: rng.choice([0, 1, -1, 5, 6, 2**63, -(2**63) - 1, 10**30]),
        lambda: rng.choice([0.0, -0.0, 1e308, -1e-308, 1.5, 0.1 + 0.2, 1e16, 123456789.123456789]),
        lambda: rng.choice(["", "é", "ü\n\t\"", "\u2028", "😀", "embedding", '{"embedding":[1]}']),
        lambda: rng.choice([True, False, None]),
    ]
    if depth < 3:
        choices.append(lambda: [odd_value(rng, depth + 1) for _ in range(rng.randrange(3))])
        choices.append(
            lambda: {
                rng.choice(["embedding", "chat_id", "a", "é", "x y", "metadata"]): odd_value(rng, depth + 1)
                for _ in range(rng.randrange(3))
            }
        )
    return rng.choice(choices)()


def random_summary(rng: random.Random, i: int) -> ConversationSummary:
    opt = lambda v: v if rng.random() < 0.7 else None  # noqa: E731
    return ConversationSummary(
        chat_id=f"c{i}-" + rng.choice(["", "é", " ", BACKSLASH]),
        summary=rng.choice(["s", "", "ünïcode \"quoted\"\n", "x" * 300]),
        request=opt("r"),
        topic=opt(rng.choice(["a", "b", "😀"])),
        languages=opt([rng.choice(["en", "fr", ""]) for _ in range(rng.randrange(3))]),
        task=opt("t"),
        concerning_score=opt(rng.randint(1, 5)),
        user_frustration=opt(rng.randint(1, 5)),
        assistant_errors=opt(["e"] * rng.randrange(3)),
        metadata={k: odd_value(rng) for k in rng.sample(["embedding", "a", "nested", "chat_id", "n"], rng.randrange(5))},
        embedding=opt([rng.choice([rng.uniform(-1, 1), 0.0, -0.0, 1e-310, 1e308, float(rng.randrange(-5, 5))]) for _ in range(rng.randrange(0, 9))]),
    )


def random_cluster(rng: random.Random, i: int, projected: bool):
    fields = dict(
        id=f"id{i}",
        name=rng.choice(["n", "é", ""]),
        description="d\n",
        slug="s",
        chat_ids=[f"c{j}" for j in range(rng.randrange(4))],
        parent_id=rng.choice([None, "p", ""]),
    )
    if projected:
        return ProjectedCluster(**fields, x_coord=rng.uniform(-1e6, 1e6), y_coord=rng.choice([-0.0, 0.0, 1e-300]), level=rng.randrange(-3, 10))
    return Cluster(**fields)


def comparable(models):
    # json.dumps with repr-exact floats: -0.0 and 0.0 differ, NaN equals itself.
    return json.dumps([m.model_dump() for m in models], sort_keys=True, default=str, allow_nan=True)


@pytest.mark.parametrize("fmt", ["jsonl", "parquet-kura", "parquet-native"])
@pytest.mark.parametrize("kind", ["summaries", "clusters", "dimensionality"])
def test_fast_rows_equal_json_rows(tmp_path, monkeypatch, fmt, kind):
    print(f"seed {SEED} (replay with CKPT_TEST_SEED={SEED})")
    rng = random.Random(f"{SEED}-{fmt}-{kind}")
    if kind == "summaries":
        rows, model = [random_summary(rng, i) for i in range(3000)], ConversationSummary
    else:
        projected = kind == "dimensionality"
        rows = [random_cluster(rng, i, projected) for i in range(3000)]
        model = ProjectedCluster if projected else Cluster
    if fmt == "jsonl":
        m = ck.JSONLCheckpointManager(str(tmp_path))
    else:
        m = ck.ParquetCheckpointManager(str(tmp_path), layout=fmt.split("-")[1])
    m.save_checkpoint(kind, rows)
    monkeypatch.setattr(ck, "_FAST_ROWS", True)
    fast = m.load_checkpoint(kind, model)
    monkeypatch.setattr(ck, "_FAST_ROWS", False)
    slow = m.load_checkpoint(kind, model)
    assert comparable(fast) == comparable(slow)
    assert comparable(slow) == comparable(rows)
    assert [m.model_fields_set for m in fast] == [m.model_fields_set for m in slow]
    monkeypatch.setattr(ck, "_FAST_ROWS", True)
    assert m.load_checkpoint(kind) == (lambda: (monkeypatch.setattr(ck, "_FAST_ROWS", False), m.load_checkpoint(kind))[1])()


def test_saved_lines_are_model_dump_json(tmp_path):
    """Saves take each row's JSON from pydantic's serializer directly: the bytes of
    ``model_dump_json()``, which is what Kura writes."""
    rng = random.Random(f"{SEED}-dump")
    rows = [random_summary(rng, i) for i in range(2000)] + [random_cluster(rng, i, True) for i in range(500)]
    assert [ck._dump_line(r) for r in rows] == [r.model_dump_json().encode() for r in rows]


def test_an_exception_while_dumping_stores_nothing(tmp_path):
    m = ck.JSONLCheckpointManager(str(tmp_path))
    m.save_checkpoint("summaries", [random_summary(random.Random(1), i) for i in range(10)])
    before = (tmp_path / "summaries.jsonl").read_bytes()
    rows = [random_summary(random.Random(2), i) for i in range(ck._SAVE_CHUNK_ROWS * 2)]
    rows.append(object())  # not a row: fails while the third chunk is dumped
    with pytest.raises(TypeError):
        m.save_checkpoint("summaries", rows)
    assert (tmp_path / "summaries.jsonl").read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["summaries.jsonl"]
