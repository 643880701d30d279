"""Shared fixtures of the Python package's tests.

The tests compare ckpt's managers with Kura's own (installed in the test venv), so each
behaviour is checked against the real thing rather than a description of it. S3 tests use
the moto server that ``scripts/test`` starts (``CKPT_TEST_S3_*``); without it they fail,
they are never skipped.
"""

from __future__ import annotations

import os
import uuid
from datetime import datetime, timezone

import pytest


def s3_env() -> dict:
    names = ["ENDPOINT", "BUCKET", "KEY_ID", "SECRET", "REGION"]
    missing = [f"CKPT_TEST_S3_{n}" for n in names if not os.environ.get(f"CKPT_TEST_S3_{n}")]
    if missing:
        pytest.fail(
            f"{', '.join(missing)} not set: run the tests through scripts/test, which starts "
            "the S3 server they need"
        )
    return {n: os.environ[f"CKPT_TEST_S3_{n}"] for n in names}


@pytest.fixture
def s3_root():
    """A fresh prefix in the test bucket, with the options that reach it."""
    env = s3_env()
    options = {
        "aws_endpoint": env["ENDPOINT"],
        "aws_access_key_id": env["KEY_ID"],
        "aws_secret_access_key": env["SECRET"],
        "aws_region": env["REGION"],
        "aws_allow_http": "true",
    }
    return f"s3://{env['BUCKET']}/py-{uuid.uuid4().hex}", options


@pytest.fixture
def s3_client():
    import boto3

    env = s3_env()
    return boto3.client(
        "s3",
        endpoint_url=env["ENDPOINT"],
        region_name=env["REGION"],
        aws_access_key_id=env["KEY_ID"],
        aws_secret_access_key=env["SECRET"],
    )


def make_summaries(n: int = 3, dims: int = 4):
    from kura.types import ConversationSummary

    out = []
    for i in range(n):
        out.append(
            ConversationSummary(
                chat_id=f"chat_{i}",
                summary=f"User asks question {i} about \"quotes\", ünïcode and\nnewlines",
                request="Help request" if i % 2 == 0 else None,
                topic=["support", "coding", None][i % 3],
                languages=["english", "python"] if i % 2 == 0 else None,
                task="Provide assistance" if i % 3 else None,
                concerning_score=(i % 5) + 1 if i % 4 else None,
                user_frustration=((i + 2) % 5) + 1 if i % 3 else None,
                assistant_errors=["Minor issue"] if i % 2 else None,
                metadata={"turns": i, "nested": {"embedding": [0.5], "k": [1, {"a": None}]}},
                embedding=[((i * 7 + d) % 13) / 13.0 - 0.5 for d in range(dims)] if i % 5 else None,
            )
        )
    return out


def make_clusters(n: int = 3):
    from kura.types import Cluster

    return [
        Cluster(
            id=f"cluster_{i}",
            name=f"Cluster {i}",
            description=f"Summary of cluster {i}",
            slug=f"cluster_{i}_slug",
            chat_ids=[f"chat_{j}" for j in range(i, i + 3)],
            parent_id=None if i == 0 else "cluster_0",
        )
        for i in range(n)
    ]


def make_projected(n: int = 3):
    from kura.types import ProjectedCluster

    return [
        ProjectedCluster(
            id=f"proj_{i}",
            name=f"Projected {i}",
            description="d",
            slug="s",
            chat_ids=[f"chat_{i}"],
            parent_id=None if i == 0 else "proj_0",
            x_coord=i * 1.25 - 1.0,
            y_coord=-i * 0.5,
            level=i % 2,
        )
        for i in range(n)
    ]


def make_conversations(n: int = 3):
    from kura.types import Conversation, Message

    return [
        Conversation(
            chat_id=f"conv_{i}",
            created_at=datetime(2024, 5, 1, 10, i, 0),
            messages=[
                Message(role="user", content=f"Hello {i}", created_at=datetime(2024, 5, 1, 10, i, 1)),
                Message(role="assistant", content="Hi!", created_at=datetime(2024, 5, 1, 10, i, 2)),
            ],
            metadata={"source": "test", "i": i},
        )
        for i in range(n)
    ]


def dumps(rows):
    """Rows as Kura's models print them, to compare what two managers loaded."""
    return [r.model_dump() if hasattr(r, "model_dump") else r for r in rows]
