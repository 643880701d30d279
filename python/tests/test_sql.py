"""SQL from Python: results as Arrow without copies, COPY, convert and ls as in the CLI."""

from __future__ import annotations

import os

import pyarrow as pa
import pyarrow.parquet as pq
import polars as pl
import pytest
from conftest import dumps, make_clusters, make_summaries

import ckpt
import ckpt.kura as ck
from kura.checkpoints import JSONLCheckpointManager as KuraJSONL
from kura.types import ConversationSummary


@pytest.fixture
def root(tmp_path):
    KuraJSONL(str(tmp_path)).save_checkpoint("summaries", make_summaries(50))
    KuraJSONL(str(tmp_path)).save_checkpoint("clusters", make_clusters(4))
    return tmp_path


def test_query_to_pyarrow_polars_pandas(root):
    session = ckpt.connect(root)
    result = session.sql(
        "SELECT topic, count(*) AS n FROM summaries GROUP BY topic ORDER BY n DESC, topic"
    )
    table = pa.table(result)
    expected = {}
    for s in make_summaries(50):
        expected[s.topic] = expected.get(s.topic, 0) + 1
    assert dict(zip(table.column("topic").to_pylist(), table.column("n").to_pylist())) == expected
    assert result.columns == ["topic", "n"]
    frame = pl.DataFrame(result)
    assert frame.shape == (len(expected), 2)
    assert frame.to_dicts() == table.to_pylist()
    # polars.from_arrow reads a stream as one Series of structs, the rows as they are.
    assert pl.from_arrow(result).struct.unnest().to_dicts() == table.to_pylist()
    assert result.to_polars().to_dicts() == table.to_pylist()
    assert result.to_pandas()["n"].sum() == 50
    assert result.to_pylist() == table.to_pylist()


def test_types_reach_arrow_as_kura_values(root):
    table = ckpt.connect(root).sql(
        "SELECT chat_id, embedding, metadata, languages FROM summaries ORDER BY chat_id"
    ).to_arrow()
    rows = sorted(make_summaries(50), key=lambda s: s.chat_id)
    assert table.column("chat_id").to_pylist() == [s.chat_id for s in rows]
    assert table.column("embedding").to_pylist() == [s.embedding for s in rows]
    assert table.column("languages").to_pylist() == [s.languages for s in rows]
    import json

    assert [json.loads(m) for m in table.column("metadata").to_pylist()] == [s.metadata for s in rows]


def test_copy_to_parquet_runs_at_once_and_kura_reads_it(root, tmp_path):
    session = ckpt.connect(root)
    out = tmp_path / "out.parquet"
    done = session.sql(f"COPY (SELECT * FROM summaries WHERE user_frustration >= 3) TO '{out}' STORED AS PARQUET")
    assert out.exists()
    copied = pa.table(done).column(0).to_pylist()[0]
    expected = [s for s in make_summaries(50) if s.user_frustration is not None and s.user_frustration >= 3]
    assert copied == len(expected)
    assert pq.read_table(out).num_rows == len(expected)


def test_several_roots_and_errors(root, tmp_path):
    other = tmp_path / "other"
    ck.JSONLCheckpointManager(str(other)).save_checkpoint("summaries", make_summaries(5))
    session = ckpt.connect({"a": root, "b": other})
    n = session.sql("SELECT (SELECT count(*) FROM a.summaries) + (SELECT count(*) FROM b.summaries) AS n").to_pylist()
    assert n == [{"n": 55}]
    assert sorted(session.tables()["b"]) == ["summaries"]
    with pytest.raises(ckpt.CkptError, match="(?i)no_such_table|not found"):
        session.sql("SELECT * FROM no_such_table").to_arrow()
    with pytest.raises(ckpt.ConfigError, match="SQL syntax error"):
        session.sql("SELEKT 1")
    with pytest.raises(ckpt.CkptError) as err:
        ckpt.connect(tmp_path / "does-not-exist")
    assert "does-not-exist" in str(err.value)
    assert not (tmp_path / "does-not-exist").exists()


def test_data_error_in_a_query_names_file_line_field(tmp_path):
    (tmp_path / "summaries.jsonl").write_text(
        '{"chat_id":"a","summary":"x","metadata":{}}\n{"chat_id":"b","summary":"y","metadata":{},"concerning_score":[1]}\n'
    )
    with pytest.raises(Exception) as err:
        ckpt.connect(tmp_path).sql("SELECT * FROM summaries").to_arrow()
    message = str(err.value)
    assert "summaries.jsonl:2" in message and "concerning_score" in message, message


def test_convert_and_ls(root, tmp_path):
    out = tmp_path / "pq"
    done = ckpt.convert(root, out, compression="zstd")
    assert {d["name"]: d["rows"] for d in done} == {"summaries": 50, "clusters": 4}
    listed = {r["name"]: r for r in ckpt.ls(out)}
    assert listed["summaries"]["format"] == "parquet" and listed["summaries"]["rows"] == 50
    loaded = ck.ParquetCheckpointManager(str(out)).load_checkpoint("summaries", ConversationSummary)
    assert dumps(loaded) == dumps(make_summaries(50))
    with pytest.raises(ckpt.CkptError):
        ckpt.ls(tmp_path / "missing")
    assert not (tmp_path / "missing").exists()


def test_explain_shows_the_scan(root):
    text = ckpt.connect(root).sql("SELECT count(*) FROM summaries").explain()
    assert "DataSourceExec" in text and "lines=" in text, text


def test_arrow_stream_can_be_read_twice_and_released_unread(root):
    result = ckpt.connect(root).sql("SELECT chat_id FROM summaries")
    assert pa.table(result).num_rows == 50
    assert pa.table(result).num_rows == 50
    capsule = result.__arrow_c_stream__()
    del capsule  # released without being read: no leak, no crash
    reader = pa.RecordBatchReader.from_stream(result)
    assert sum(b.num_rows for b in reader) == 50
