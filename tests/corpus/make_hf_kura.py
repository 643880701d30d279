import sys, json
from datetime import datetime, timezone, timedelta
from kura.checkpoints.hf_dataset import HFDatasetCheckpointManager
from kura.types import Conversation, ConversationSummary, Cluster, Message
from kura.types.dimensionality import ProjectedCluster
root = sys.argv[1]
m = HFDatasetCheckpointManager(root)
m.setup_checkpoint_dir()
summ = [
    ConversationSummary(chat_id="a", summary="s1 ünï 日本", request="r", topic=None, languages=["en","fr"], task=None,
        concerning_score=3, user_frustration=None, assistant_errors=[], metadata={"n": 1, "f": 1.5, "b": True, "s": "x", "l": [1,2], "ls": ["a"], "none": None, "num_str": "42"}, embedding=[0.1, 0.25]),
    ConversationSummary(chat_id="b", summary="", metadata={}, embedding=None),
]
m.save_checkpoint("summaries", summ)
convs = [
    Conversation(chat_id="c1", created_at=datetime(2024,1,2,3,4,5,123456, tzinfo=timezone(timedelta(hours=2))),
        messages=[Message(created_at=datetime(2024,1,2,3,4,6), role="user", content="hi 👋"),
                  Message(created_at=datetime(2024,1,2,3,4,7, tzinfo=timezone.utc), role="assistant", content="")],
        metadata={"k": 1, "t": "v", "l": ["x", "y"], "f": 2.5, "b": False}),
    Conversation(chat_id="c2", created_at=datetime(2023,5,6), messages=[], metadata={}),
]
m.save_checkpoint("conversations", convs)
cl = [Cluster(id="1", name="n", description="d", slug="s", chat_ids=["a","b"], parent_id=None),
      Cluster(id="2", name="n2", description="", slug="", chat_ids=[], parent_id="1")]
m.save_checkpoint("clusters", cl)
m.save_checkpoint("meta_clusters", cl)
pc = [ProjectedCluster(id="1", name="n", description="d", slug="s", chat_ids=["a"], parent_id=None, x_coord=1.5, y_coord=-2.25, level=0)]
m.save_checkpoint("dimensionality", pc)
m.save_checkpoint("my_summaries", summ)
out = {}
for name, cls in [("summaries", ConversationSummary), ("conversations", Conversation), ("clusters", Cluster), ("meta_clusters", Cluster), ("dimensionality", ProjectedCluster), ("my_summaries", ConversationSummary)]:
    out[name] = [x.model_dump(mode="json") for x in m.load_checkpoint(name, cls)]
json.dump(out, open(root + ".expected.json", "w"), indent=1)
# A cache file beside the data (what filter_checkpoint leaves), and a dataset in two shards.
m.filter_checkpoint("summaries", lambda r: r["chat_id"] == "a", ConversationSummary)
from datasets import load_from_disk
import shutil
ds = load_from_disk(root + "/summaries")
ds.save_to_disk(root + "/sharded", num_shards=2)
out["sharded"] = out["summaries"]
json.dump(out, open(root + ".expected.json", "w"), indent=1)
# An unfinished save: features written, no state.json.
shutil.copytree(root + "/clusters", root + "/unfinished")
import os; os.remove(root + "/unfinished/state.json")
