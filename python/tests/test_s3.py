"""The managers and SQL on an object store (the moto S3 server scripts/test starts)."""

from __future__ import annotations

import pyarrow as pa
import pytest
from conftest import dumps, make_conversations, make_summaries

import ckpt
import ckpt.kura as ck
from kura.types import Conversation, ConversationSummary


@pytest.mark.parametrize("cls", [ck.JSONLCheckpointManager, ck.ParquetCheckpointManager])
def test_managers_on_s3(s3_root, s3_client, cls):
    url, options = s3_root
    m = cls(url, storage_options=options)
    assert m.checkpoint_dir == url
    assert m.list_checkpoints() == []
    assert m.load_checkpoint("summaries", ConversationSummary) is None
    m.save_checkpoint("summaries", make_summaries(30))
    m.save_checkpoint("conversations", make_conversations(5))
    assert dumps(m.load_checkpoint("summaries", ConversationSummary)) == dumps(make_summaries(30))
    assert dumps(m.load_checkpoint("conversations", Conversation)) == dumps(make_conversations(5))
    ext = "jsonl" if cls is ck.JSONLCheckpointManager else "parquet"
    assert sorted(m.list_checkpoints()) == [f"conversations.{ext}", f"summaries.{ext}"]
    bucket, prefix = url[len("s3://"):].split("/", 1)
    keys = sorted(o["Key"] for o in s3_client.list_objects_v2(Bucket=bucket, Prefix=prefix)["Contents"])
    assert keys == [f"{prefix}/conversations.{ext}", f"{prefix}/summaries.{ext}"]
    assert m.delete_checkpoint(f"summaries.{ext}") is True
    assert m.list_checkpoints() == [f"conversations.{ext}"]


def test_sql_on_s3(s3_root):
    url, options = s3_root
    ck.JSONLCheckpointManager(url, storage_options=options).save_checkpoint("summaries", make_summaries(40))
    result = ckpt.connect(url, storage_options=options).sql("SELECT count(*) AS n FROM summaries")
    assert pa.table(result).to_pylist() == [{"n": 40}]
    listed = ckpt.ls(url, storage_options=options)
    assert [(r["name"], r["rows"]) for r in listed] == [("summaries", 40)]


def test_secret_never_in_errors(s3_root):
    url, options = s3_root
    bad = dict(options, aws_endpoint="http://127.0.0.1:9")  # nothing listens there
    bad["retry_max"] = "0"
    m = ck.JSONLCheckpointManager(url, storage_options=bad)
    with pytest.raises(ckpt.StorageError) as err:
        m.load_checkpoint("summaries", ConversationSummary)
    assert options["aws_secret_access_key"] not in str(err.value)
    assert options["aws_access_key_id"] not in repr(m.__dict__.get("_native"))
    with pytest.raises(ckpt.ConfigError) as err:
        ck.JSONLCheckpointManager(url, storage_options=dict(options, retry_max="lots-" + options["aws_secret_access_key"]))
    assert options["aws_secret_access_key"] not in str(err.value)
