"""``ckpt.connect(root, workers=[...])``: queries run on ``ckpt worker`` processes give the
answers of a single process.

The workers are the ``ckpt`` binary that ``scripts/test`` builds (``$CKPT_BIN``, default
``target/debug/ckpt``), started on 127.0.0.1 with port 0; without it the test fails.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

import ckpt

REPO = Path(__file__).resolve().parents[2]
SAMPLE = ["summaries", "conversations", "clusters", "meta_clusters", "dimensionality"]


def ckpt_binary() -> Path:
    path = Path(os.environ.get("CKPT_BIN") or REPO / "target" / "debug" / "ckpt")
    if not os.access(path, os.X_OK):
        pytest.fail(f"{path} is missing: build it (cargo build) or set CKPT_BIN")
    return path


@pytest.fixture
def workers(tmp_path):
    procs, addrs, logs = [], [], []
    try:
        for i in range(2):
            log = tmp_path / f"worker{i}.log"
            p = subprocess.Popen(
                [str(ckpt_binary()), "worker", "--listen", "127.0.0.1:0"],
                stdout=subprocess.PIPE,
                stderr=log.open("w"),
                stdin=subprocess.DEVNULL,
                text=True,
            )
            procs.append(p)
            line = p.stdout.readline().strip()
            assert line.startswith("listening on "), (line, log.read_text())
            addrs.append(line.removeprefix("listening on "))
            logs.append(log)
        yield addrs, logs
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(timeout=30)


@pytest.fixture
def root(tmp_path):
    d = tmp_path / "root"
    d.mkdir()
    for name in SAMPLE:
        shutil.copy(REPO / "data" / f"{name}.jsonl", d / f"{name}.jsonl")
    return d


QUERIES = [
    "SELECT topic, count(*) AS n, avg(user_frustration) AS f FROM summaries GROUP BY topic ORDER BY topic NULLS FIRST",
    "SELECT s.chat_id, cardinality(c.messages) AS m FROM summaries s JOIN conversations c "
    "ON c.chat_id = s.chat_id ORDER BY s.chat_id",
    "SELECT * FROM clusters ORDER BY id",
]


def rows(session, sql):
    out = session.sql(sql).to_pylist()
    # Averages add up in another order when rows are split across tasks.
    return [{k: round(v, 9) if isinstance(v, float) else v for k, v in r.items()} for r in out]


def test_queries_on_workers_equal_a_single_process(root, workers):
    addrs, logs = workers
    single = ckpt.connect(root)
    spread = ckpt.connect(root, workers=addrs)
    # The sample's files are small: a task per 8 KiB makes each scan several tasks.
    spread.sql("SET distributed.file_scan_config_bytes_per_partition = 8192").to_pylist()
    for sql in QUERIES:
        want = rows(single, sql)
        assert want, sql
        assert rows(spread, sql) == want, sql
    for log in logs:
        assert " started: " in log.read_text(), log.read_text()


def test_a_bad_worker_address_is_a_config_error(root):
    with pytest.raises(ckpt.ConfigError, match="--workers"):
        ckpt.connect(root, workers=["no-port-here"])
