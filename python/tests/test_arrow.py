"""Arrow in and out of the managers: ``load_arrow`` gives the checkpoint's table, and
``save_arrow`` stores exactly what ``save_checkpoint`` stores for the same rows (JSONL byte
for byte, Parquet and datasets as the same table), for every kind and format, from
pyarrow, polars and pandas. Arrow given to a save is validated as a model's line is: a bad
row is refused with its file, row and field, and nothing is stored."""

from __future__ import annotations

import datetime
import json
import os
import random

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import ckpt.kura as ck
from conftest import make_conversations
from kura.types import Cluster, Conversation
from test_fast_paths import FORMATS, SEED, comparable, generated, manager

KINDS = ["summaries", "clusters", "dimensionality", "conversations"]


def rows_of(kind: str, rng: random.Random, n: int):
    if kind != "conversations":
        return generated(kind, rng, n)
    rows = make_conversations(n)
    # Aware datetimes beside naive ones: each must come back as it went.
    rows[1].created_at = datetime.datetime(2024, 5, 1, 10, 1, tzinfo=datetime.timezone(datetime.timedelta(hours=2)))
    rows[-1].messages[0].created_at = datetime.datetime(2024, 5, 2, tzinfo=datetime.timezone.utc)
    return rows, Conversation


def stored(m, kind: str, fmt: str):
    """What a manager stored for ``kind``: the JSONL bytes, the Parquet table, or the
    dataset's rows."""
    path = m.get_checkpoint_path(kind if fmt != "jsonl" else kind + ".jsonl")
    if fmt == "jsonl":
        return open(path, "rb").read()
    if fmt.startswith("parquet"):
        return pq.read_table(str(path))
    return m.load_arrow(kind).read_all()


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("kind", KINDS)
def test_save_arrow_stores_what_save_checkpoint_stores(tmp_path, kind, fmt):
    rows, cls = rows_of(kind, random.Random(SEED), 60)
    by_models = manager(fmt, tmp_path / "models")
    by_models.save_checkpoint(kind, rows)
    # The rows as Arrow, from JSONL (which keeps them exactly; a dataset directory keeps
    # them as Kura's encoding does, with losses of its own).
    jsonl = ck.JSONLCheckpointManager(str(tmp_path / "jsonl"))
    jsonl.save_checkpoint(kind, rows)
    table = jsonl.load_arrow(kind).read_all()
    assert table.num_rows == len(rows), f"seed {SEED}"

    by_arrow = manager(fmt, tmp_path / "arrow")
    assert by_arrow.save_arrow(kind, table) == len(rows)
    assert stored(by_arrow, kind, fmt) == stored(by_models, kind, fmt), f"seed {SEED}"
    loaded = by_arrow.load_checkpoint(kind, cls)
    assert comparable(loaded) == comparable(by_models.load_checkpoint(kind, cls)), f"seed {SEED}"


def test_load_arrow_is_the_table_sql_reads(tmp_path):
    rows, _ = generated("summaries", random.Random(SEED), 40)
    m = ck.JSONLCheckpointManager(str(tmp_path))
    m.save_checkpoint("summaries", rows)
    table = m.load_arrow("summaries").read_all()
    import ckpt

    via_sql = pa.table(ckpt.connect(str(tmp_path)).sql("SELECT * FROM summaries"))
    assert table.equals(via_sql)
    # Kura's fields, metadata as JSON text, the embedding as numbers.
    for row, model in zip(table.to_pylist(), rows):
        assert row["chat_id"] == model.chat_id
        assert json.loads(row["metadata"]) == json.loads(json.dumps(model.metadata))
        assert row["embedding"] == model.embedding


def test_load_arrow_of_nothing(tmp_path):
    m = ck.JSONLCheckpointManager(str(tmp_path))
    assert m.load_arrow("summaries") is None
    assert ck.JSONLCheckpointManager(str(tmp_path), enabled=False).load_arrow("summaries") is None
    assert os.listdir(tmp_path) == []


def test_save_arrow_from_polars_and_pandas(tmp_path):
    import polars as pl

    rows, cls = generated("summaries", random.Random(SEED), 30)
    m = ck.JSONLCheckpointManager(str(tmp_path / "models"))
    m.save_checkpoint("summaries", rows)
    expected = (tmp_path / "models" / "summaries.jsonl").read_bytes()
    table = m.load_arrow("summaries").read_all()

    frame = pl.from_arrow(table)
    # polars' own types (string views, large lists), columns in another order, and one
    # column Kura's models do not have (ignored, as pydantic ignores unknown keys).
    frame = frame.select(list(reversed(frame.columns))).with_columns(pl.lit(1).alias("extra"))
    for name, data in [("polars", frame), ("pandas", table.to_pandas())]:
        out = ck.JSONLCheckpointManager(str(tmp_path / name))
        assert out.save_arrow("summaries", data) == len(rows)
        assert (tmp_path / name / "summaries.jsonl").read_bytes() == expected, name


def test_save_arrow_in_many_batches_numbers_rows_across_them(tmp_path, monkeypatch):
    monkeypatch.setattr(ck, "_ARROW_CHUNK_ROWS", 7)
    rows, _ = generated("clusters", random.Random(SEED), 50)
    m = ck.JSONLCheckpointManager(str(tmp_path / "a"))
    m.save_checkpoint("clusters", rows)
    table = m.load_arrow("clusters").read_all()
    out = ck.JSONLCheckpointManager(str(tmp_path / "b"))
    reader = pa.RecordBatchReader.from_batches(table.schema, table.to_batches(max_chunksize=11))
    assert out.save_arrow("clusters", reader) == 50
    assert (tmp_path / "b" / "clusters.jsonl").read_bytes() == (tmp_path / "a" / "clusters.jsonl").read_bytes()

    # Row 38 (of 50, in the fourth batch of 11, the sixth chunk of 7) has a bad value.
    names = table.column("name").to_pylist()
    names[37] = None
    bad = table.set_column(table.schema.get_field_index("name"), "name", pa.array(names))
    with pytest.raises(ck._native.DataError) as e:
        out.save_arrow("clusters", pa.RecordBatchReader.from_batches(bad.schema, bad.to_batches(max_chunksize=11)))
    assert "save_arrow):38: name: " in str(e.value)


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_refused_table_stores_nothing(tmp_path, fmt):
    rows, _ = generated("summaries", random.Random(SEED), 20)
    m = manager(fmt, tmp_path)
    m.save_checkpoint("summaries", rows)
    before = sorted(os.listdir(tmp_path))
    kept = stored(m, "summaries", fmt)
    table = m.load_arrow("summaries").read_all()

    def with_column(name, values):
        return table.set_column(table.schema.get_field_index(name), name, pa.array(values, table.schema.field(name).type))

    scores = table.column("concerning_score").to_pylist()
    scores[4] = 9
    metadata = table.column("metadata").to_pylist()
    broken = list(metadata)
    metadata[6] = "[1, 2]"
    broken[2] = '{"a": '
    cases = [
        # Kura's rule on the value (1..5), found by the codec on the row's line.
        (with_column("concerning_score", scores), ":5: concerning_score: "),
        # Not an object, and not JSON at all.
        (with_column("metadata", metadata), ":7: metadata: "),
        (with_column("metadata", broken), ":3"),
        # A required column that is missing.
        (table.drop_columns(["summary"]), ": summary: "),
        # A type that cannot become the field's.
        (table.set_column(table.schema.get_field_index("embedding"), "embedding", pa.array([["x"]] * table.num_rows)), ": embedding"),
    ]
    for bad, where in cases:
        with pytest.raises(ck._native.DataError) as e:
            m.save_arrow("summaries", bad)
        message = str(e.value)
        assert "save_arrow)" in message and where in message, message
        assert sorted(os.listdir(tmp_path)) == before
        assert stored(m, "summaries", fmt) == kept


def test_save_arrow_needs_a_kind_and_arrow(tmp_path):
    rows, _ = generated("clusters", random.Random(SEED), 5)
    m = ck.JSONLCheckpointManager(str(tmp_path))
    m.save_checkpoint("clusters", rows)
    table = m.load_arrow("clusters").read_all()
    with pytest.raises(ck._native.ConfigError, match="give kind="):
        m.save_arrow("my_step", table)
    assert m.save_arrow("my_step", table, kind="clusters") == 5
    assert m.load_arrow("my_step", kind=Cluster).read_all().equals(table)
    with pytest.raises(TypeError, match="save_arrow takes Arrow rows"):
        m.save_arrow("clusters", [{"id": "x"}])
    with pytest.raises(ck._native.ConfigError, match="none of Kura's models"):
        m.save_arrow("clusters", table, kind=dict)


def test_save_arrow_keeps_zone_aware_timestamps_aware(tmp_path):
    rows = make_conversations(3)
    m = ck.JSONLCheckpointManager(str(tmp_path))
    m.save_checkpoint("conversations", rows)
    table = m.load_arrow("conversations").read_all()
    # As pandas and polars give aware datetimes: a zoned timestamp, no offset column.
    instants = pa.array(
        [datetime.datetime(2024, 5, 1, 8, i, tzinfo=datetime.timezone.utc) for i in range(3)],
        pa.timestamp("us", tz="UTC"),
    )
    zoned = table.drop_columns(["created_at", "created_at_utc_offset"]).append_column("created_at", instants)
    assert m.save_arrow("conversations", zoned) == 3
    for i, c in enumerate(m.load_checkpoint("conversations", Conversation)):
        assert c.created_at == datetime.datetime(2024, 5, 1, 8, i, tzinfo=datetime.timezone.utc)
        assert c.created_at.utcoffset() == datetime.timedelta(0)
