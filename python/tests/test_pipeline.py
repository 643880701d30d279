"""Kura's own pipeline steps with ckpt's managers as ``checkpoint_manager=``: the first run
computes and saves, the second loads instead of computing (the models are stubs that count
their calls), locally and on S3."""

from __future__ import annotations

import asyncio
import os

import pytest
from conftest import dumps, make_conversations

import ckpt.kura as ck

os.environ.setdefault("OPENAI_API_KEY", "unused-by-these-tests")

from kura.cluster import generate_base_clusters_from_conversation_summaries  # noqa: E402
from kura.dimensionality import reduce_dimensionality_from_clusters  # noqa: E402
from kura.meta_cluster import reduce_clusters_from_base_clusters  # noqa: E402
from kura.summarisation import summarise_conversations  # noqa: E402
from kura.types import Cluster, ConversationSummary, ProjectedCluster  # noqa: E402


class Calls:
    def __init__(self):
        self.n = 0


class StubSummaryModel:
    checkpoint_filename = "summaries"

    def __init__(self, calls):
        self.calls = calls

    async def summarise(self, conversations, **kwargs):
        self.calls.n += 1
        return [
            ConversationSummary(
                chat_id=c.chat_id,
                summary=f"summary of {c.chat_id}",
                topic="testing",
                concerning_score=1,
                user_frustration=2,
                metadata={"conversation_turns": len(c.messages)},
                embedding=[float(i), 0.5],
            )
            for i, c in enumerate(conversations)
        ]


class StubEmbedding:
    async def embed(self, texts):
        return [[float(i % 2), 1.0] for i, _ in enumerate(texts)]


class StubClustering:
    def cluster(self, items):
        out = {}
        for i, item in enumerate(items):
            out.setdefault(i % 2, []).append(item["item"])
        return out


class StubClusterModel:
    checkpoint_filename = "clusters"

    def __init__(self, calls):
        self.calls = calls

    async def generate_clusters(self, cluster_id_to_summaries, **kwargs):
        self.calls.n += 1
        return [
            Cluster(
                id=f"c{k}",
                name=f"Cluster {k}",
                description="d",
                slug=f"cluster_{k}",
                chat_ids=[s.chat_id for s in v],
                parent_id=None,
            )
            for k, v in cluster_id_to_summaries.items()
        ]


class StubMetaModel:
    checkpoint_filename = "meta_clusters"
    max_clusters = 1

    def __init__(self, calls):
        self.calls = calls

    async def reduce_clusters(self, clusters):
        self.calls.n += 1
        parent = Cluster(id="root", name="All", description="d", slug="all", chat_ids=[i for c in clusters for i in c.chat_ids], parent_id=None)
        return [parent] + [c.model_copy(update={"parent_id": "root"}) for c in clusters]


class StubDimensionality:
    checkpoint_filename = "dimensionality"

    def __init__(self, calls):
        self.calls = calls

    async def reduce_dimensionality(self, clusters):
        self.calls.n += 1
        return [
            ProjectedCluster(**c.model_dump(exclude={"count"}), x_coord=float(i), y_coord=-float(i), level=0 if c.parent_id is None else 1)
            for i, c in enumerate(clusters)
        ]


async def run_pipeline(manager, calls):
    conversations = make_conversations(6)
    summaries = await summarise_conversations(conversations, model=StubSummaryModel(calls), checkpoint_manager=manager)
    clusters = await generate_base_clusters_from_conversation_summaries(
        summaries,
        embedding_model=StubEmbedding(),
        clustering_method=StubClustering(),
        clustering_model=StubClusterModel(calls),
        checkpoint_manager=manager,
    )
    meta = await reduce_clusters_from_base_clusters(clusters, model=StubMetaModel(calls), checkpoint_manager=manager)
    projected = await reduce_dimensionality_from_clusters(meta, model=StubDimensionality(calls), checkpoint_manager=manager)
    return [dumps(x) for x in (summaries, clusters, meta, projected)]


def managers(tmp_path, s3=None):
    yield "jsonl", ck.JSONLCheckpointManager(str(tmp_path / "jsonl"))
    yield "parquet", ck.ParquetCheckpointManager(str(tmp_path / "parquet"))
    yield "multi", ck.MultiCheckpointManager([ck.JSONLCheckpointManager(str(tmp_path / "m1")), ck.ParquetCheckpointManager(str(tmp_path / "m2"))])


@pytest.mark.parametrize("which", ["jsonl", "parquet", "multi", "s3"])
def test_second_run_loads_instead_of_computing(tmp_path, which, request):
    if which == "s3":
        url, options = request.getfixturevalue("s3_root")
        manager = ck.JSONLCheckpointManager(url, storage_options=options)
    else:
        manager = dict(managers(tmp_path))[which]
    first_calls = Calls()
    first = asyncio.run(run_pipeline(manager, first_calls))
    assert first_calls.n == 4
    second_calls = Calls()
    second = asyncio.run(run_pipeline(manager, second_calls))
    assert second_calls.n == 0, "every step should have loaded its checkpoint"
    assert second == first
    if which == "jsonl":
        assert sorted(os.listdir(tmp_path / "jsonl")) == [
            "clusters.jsonl", "dimensionality.jsonl", "meta_clusters.jsonl", "summaries.jsonl",
        ]
