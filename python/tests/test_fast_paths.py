"""The fast routes against the slow ones they shortcut, on generated rows with nested
metadata, keys repeated at other depths, big and odd numbers, unicode and escapes:

- a load's three routes: Kura's models built natively, rows handed to pydantic as Python
  values, rows as JSON text in pydantic's JSON mode (what Kura does); every field of every
  model compared, and what pydantic keeps beside the fields;
- a save's two routes: Kura's models read natively, field by field, and their JSON from
  pydantic's serializer; the stored checkpoint compared (JSONL byte for byte), and the
  error of a row either route refuses;
- the garbage collector's state, the caller's again after any load."""

from __future__ import annotations

import datetime
import gc
import json
import math
import os
import random
import warnings

import pytest
from pydantic import field_validator

import ckpt.kura as ck
from kura.types import Cluster, ConversationSummary, ProjectedCluster

KuraSummary = ConversationSummary

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


FORMATS = ["jsonl", "parquet-kura", "parquet-native", "hf"]
KINDS = ["summaries", "clusters", "dimensionality"]


def manager(fmt: str, root):
    if fmt == "jsonl":
        return ck.JSONLCheckpointManager(str(root))
    if fmt == "hf":
        return ck.HFDatasetCheckpointManager(str(root))
    return ck.ParquetCheckpointManager(str(root), layout=fmt.split("-")[1])


def generated(kind: str, rng: random.Random, n: int):
    if kind == "summaries":
        return [random_summary(rng, i) for i in range(n)], ConversationSummary
    projected = kind == "dimensionality"
    return [random_cluster(rng, i, projected) for i in range(n)], (ProjectedCluster if projected else Cluster)


def set_route(monkeypatch, route: str) -> None:
    """native: models built/read natively; values: Python values and model_construct
    (loads) or JSON lines (saves); json: JSON text, pydantic's JSON mode (loads)."""
    monkeypatch.setattr(ck, "_FAST_ROWS", route != "json")
    monkeypatch.setattr(ck, "_NATIVE_MODELS", route == "native")


def beside_fields(models):
    """What pydantic keeps on an instance beside the field values: the order of its
    ``__dict__``, the fields set, the extra and private slots."""
    return [
        (list(vars(m)), sorted(m.model_fields_set), m.__pydantic_extra__, m.__pydantic_private__)
        for m in models
    ]


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("kind", KINDS)
def test_fast_rows_equal_json_rows(tmp_path, monkeypatch, fmt, kind):
    print(f"seed {SEED} (replay with CKPT_TEST_SEED={SEED})")
    rng = random.Random(f"{SEED}-{fmt}-{kind}")
    rows, model = generated(kind, rng, 3000)
    m = manager(fmt, tmp_path)
    m.save_checkpoint(kind, rows)
    loaded = {}
    for route in ["native", "values", "json"]:
        set_route(monkeypatch, route)
        loaded[route] = m.load_checkpoint(kind, model)
    assert type(loaded["native"][0]) is model
    assert comparable(loaded["native"]) == comparable(loaded["json"])
    assert comparable(loaded["values"]) == comparable(loaded["json"])
    if fmt != "hf":
        # Kura's dataset layout is lossy by design (float32 embeddings, metadata values
        # as text): there the routes are compared with each other only.
        assert comparable(loaded["json"]) == comparable(rows)
    assert beside_fields(loaded["native"]) == beside_fields(loaded["json"])
    assert beside_fields(loaded["values"]) == beside_fields(loaded["json"])
    # Equal as pydantic compares models, too (fields, fields set, extra, private).
    assert loaded["native"] == loaded["json"] or any(
        isinstance(v, float) and math.isnan(v) for r in rows for v in r.model_dump().values()
    )
    set_route(monkeypatch, "native")
    assert m.load_checkpoint(kind) == (lambda: (set_route(monkeypatch, "json"), m.load_checkpoint(kind))[1])()


def stored(fmt: str, root, kind: str):
    """What a save stored: JSONL's bytes; for Parquet and datasets, the table as pyarrow
    reads it (values, types and schema metadata), since the files' bytes depend on how
    rows were batched on their way."""
    if fmt == "jsonl":
        return (root / f"{kind}.jsonl").read_bytes()
    import pyarrow.parquet as pq

    if fmt == "hf":
        import pyarrow as pa

        tables = [
            pa.ipc.open_stream(f.read_bytes()).read_all()
            for f in sorted((root / kind).glob("*.arrow"))
        ]
        table = pa.concat_tables(tables)
        return table.schema, table.to_pylist()
    table = pq.read_table(root / f"{kind}.parquet")
    return table.schema, table.to_pylist()


def save_outcome(fmt: str, root, kind: str, rows):
    m = manager(fmt, root)
    try:
        m.save_checkpoint(kind, rows)
    except Exception as e:  # the error either route gives for a bad row
        return type(e).__name__, str(e).replace(str(root), "ROOT")
    return stored(fmt, root, kind)


def odd_field_values(rng: random.Random, kind: str):
    """Values a model may hold (``model_construct`` does not check them) whose JSON is
    not what the field's type says: each either route must take or refuse alike."""
    number = [3.0, 2.5, True, 2**70, -(2**63), float("nan"), float("inf"), 7, None, "4"]
    text = ["x", "", "\ud800", 5, 1.5, None, True, datetime.datetime(2024, 1, 2, 3, 4, 5)]
    floats = [[1, 2.5], [float("nan")], [float("-inf"), 1.0], [True], ["1.5"], (1.0, 2.0), [], None, [2**80]]
    texts = [["a", 1], ("a", "b"), ["\ud800"], [None], [], None, [["nested"]]]
    meta = [{"d": datetime.date(2024, 1, 2)}, {"n": float("nan")}, {1: "int key"}, {"b": b"bytes"},
            {"x": {"y": [1, {"z": None}]}}, None, [], {"big": 2**90}]
    if kind == "summaries":
        return {
            "concerning_score": rng.choice(number),
            "user_frustration": rng.choice(number),
            "summary": rng.choice(text),
            "topic": rng.choice(text),
            "embedding": rng.choice(floats),
            "languages": rng.choice(texts),
            "metadata": rng.choice(meta),
        }
    out = {"name": rng.choice(text), "chat_ids": rng.choice(texts), "parent_id": rng.choice(text)}
    if kind == "dimensionality":
        out.update(x_coord=rng.choice(number), level=rng.choice(number))
    return out


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("kind", KINDS)
def test_native_saves_equal_json_saves(tmp_path, monkeypatch, fmt, kind):
    print(f"seed {SEED} (replay with CKPT_TEST_SEED={SEED})")
    rng = random.Random(f"{SEED}-save-{fmt}-{kind}")
    rows, model = generated(kind, rng, 5000)
    outcomes = {}
    for route in ["native", "values"]:
        set_route(monkeypatch, route)
        outcomes[route] = save_outcome(fmt, tmp_path / route, kind, rows)
    assert not isinstance(outcomes["native"][0], str), outcomes["native"]
    assert outcomes["native"] == outcomes["values"]
    # One odd value at a time, in one row among good ones: the same checkpoint or the
    # same error (file, line, field, message) by either route.
    for case in range(40):
        field, value = rng.choice(sorted(odd_field_values(rng, kind).items()))
        bad = list(rows[:300])
        at = rng.randrange(len(bad))
        bad[at] = model.model_construct(**dict(bad[at].__dict__, **{field: value}))
        outcomes = {}
        for route in ["native", "values"]:
            set_route(monkeypatch, route)
            with warnings.catch_warnings():
                # pydantic warns when it serializes a value its field's type does not say.
                warnings.simplefilter("ignore")
                outcomes[route] = save_outcome(fmt, tmp_path / f"{case}-{route}", kind, bad)
        assert outcomes["native"] == outcomes["values"], (field, value)


def test_a_refused_model_stores_nothing(tmp_path):
    m = ck.JSONLCheckpointManager(str(tmp_path))
    m.save_checkpoint("summaries", [random_summary(random.Random(1), i) for i in range(10)])
    before = (tmp_path / "summaries.jsonl").read_bytes()
    rows = [random_summary(random.Random(2), i) for i in range(ck._SAVE_CHUNK_ROWS * 2 + 5)]
    rows[-3] = ConversationSummary.model_construct(**dict(rows[-3].__dict__, concerning_score=9))
    with pytest.raises(ck._native.DataError) as e:
        m.save_checkpoint("summaries", rows)
    assert f"save_checkpoint):{len(rows) - 2}: concerning_score: " in str(e.value)
    assert (tmp_path / "summaries.jsonl").read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["summaries.jsonl"]


def interrupting_model():
    """Kura's summary model with a validator (so pydantic validates its rows, in the
    load's batches), which interrupts the load at a chosen row as Ctrl-C would."""

    class ConversationSummary(KuraSummary):
        @field_validator("chat_id")
        @classmethod
        def _interrupt(cls, v):
            if v == STOP_AT[0]:
                raise KeyboardInterrupt
            return v

    return ConversationSummary


STOP_AT = [""]


@pytest.mark.parametrize("enabled", [True, False])
def test_the_collectors_state_is_the_callers_after_any_load(tmp_path, monkeypatch, enabled):
    m = ck.JSONLCheckpointManager(str(tmp_path))
    rows = [random_summary(random.Random(3), i) for i in range(20000)]
    m.save_checkpoint("summaries", rows)
    (tmp_path / "bad.jsonl").write_bytes((tmp_path / "summaries.jsonl").read_bytes() + b"{not json\n")
    thresholds = gc.get_threshold()
    was = gc.isenabled()
    try:
        gc.set_threshold(555, 7, 9)
        (gc.enable if enabled else gc.disable)()

        def unchanged():
            assert gc.isenabled() is enabled
            assert gc.get_threshold() == (555, 7, 9)

        # Success, native models and pydantic's routes.
        for route in ["native", "values", "json"]:
            set_route(monkeypatch, route)
            assert len(m.load_checkpoint("summaries", ConversationSummary)) == len(rows)
            unchanged()
        set_route(monkeypatch, "native")
        # Failure: a bad line after 20 000 good ones.
        with pytest.raises(ck._native.DataError):
            m.load_checkpoint("bad", ConversationSummary)
        unchanged()
        # Interrupted in a batch.
        STOP_AT[0] = rows[15000].chat_id
        with pytest.raises(KeyboardInterrupt):
            m.load_checkpoint("summaries", interrupting_model())
        unchanged()
        # Between the batches of iter_checkpoint, the caller's code runs with the collector
        # as the caller set it; an abandoned iteration leaves it so too.
        for batch in m.iter_checkpoint("summaries", ConversationSummary):
            unchanged()
            break
        unchanged()
    finally:
        gc.set_threshold(*thresholds)
        (gc.enable if was else gc.disable)()


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
