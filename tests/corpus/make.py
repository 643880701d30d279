#!/usr/bin/env python3
"""Writes the malformed-input corpus of tests/malformed.rs (run from this directory).

Every file is a `summaries` checkpoint in JSONL: `good.jsonl` holds 20 valid
ConversationSummary lines and every other file is a damaged copy of it. What ckpt must
do with each file (accept it, or fail naming file, line and field) is asserted in
tests/malformed.rs; README.md lists the cases. Files that must be big (a 50 MB line,
100 000 levels of nesting) are made by the test itself in a temporary directory.
"""
import json
import os

HERE = os.path.dirname(os.path.abspath(__file__))
TOPICS = ["python debugging", "cooking", "travel planning", "poetry", "history"]


def summary(i):
    return {
        "summary": f"The user asked for help with task {i}; the assistant answered step by step.",
        "request": f"Help with task {i}",
        "topic": TOPICS[i % len(TOPICS)],
        "languages": ["english", "python"] if i % 2 else ["english"],
        "task": "explain" if i % 3 else None,
        "concerning_score": 1 + i % 5,
        "user_frustration": 1 + (i * 7) % 5,
        "assistant_errors": [] if i % 4 else ["misread the question"],
        "chat_id": f"chat-{i:03d}",
        "metadata": {"turns": 2 + i % 6, "model": "gpt-4", "tags": ["a", "b"], "score": i / 8},
        "embedding": [round(0.01 * i + 0.001 * j, 6) for j in range(4)],
    }


GOOD = [json.dumps(summary(i), separators=(",", ":")).encode() for i in range(20)]


def write(name, data):
    with open(os.path.join(HERE, name), "wb") as f:
        f.write(data)


def lines(ls, sep=b"\n", end=b"\n"):
    return sep.join(ls) + end


def replace_line(n, new):
    """GOOD with (1-based) line n replaced."""
    out = list(GOOD)
    out[n - 1] = new
    return out


def edit_line(n, old, new):
    line = GOOD[n - 1]
    assert old in line, (n, old)
    return replace_line(n, line.replace(old, new, 1))


write("good.jsonl", lines(GOOD))
# Accepted variants: same 20 rows.
write("bom.jsonl", b"\xef\xbb\xbf" + lines(GOOD))
write("crlf.jsonl", lines(GOOD, b"\r\n", b"\r\n"))
write("blank_lines.jsonl", b"\n" + lines(GOOD, b"\n\n \t\n", b"\n\n\n"))
write("no_final_newline.jsonl", lines(GOOD, end=b""))
extra = []
for i, line in enumerate(GOOD):
    d = json.loads(line)
    d["model_version"] = {"name": "x", "params": [1, 2, {"deep": None}]}
    d["unknown_" + str(i)] = None
    extra.append(json.dumps(d, separators=(",", ":")).encode())
write("extra_fields.jsonl", lines(extra))
deep = b'{"level":' * 64 + b"1" + b"}" * 64
write("deep_metadata.jsonl", lines(edit_line(2, b'"metadata":{', b'"metadata":{"deep":' + deep + b",")))
write("empty.jsonl", b"")
write("only_blank_lines.jsonl", b"\n\n  \n\r\n")

# Rejected variants: one bad line each.
last = GOOD[-1]
write("truncated_last_line.jsonl", lines(GOOD[:-1]) + last[: last.index(b'"embedding":[') + 20])
write("invalid_json_middle.jsonl", lines(replace_line(7, b'{"summary":"broken","chat_id":"chat-006","topic":}')))
write("not_an_object.jsonl", lines(replace_line(6, b"[1,2,3]")))
write("wrong_type_int.jsonl", lines(edit_line(5, b'"concerning_score":5', b'"concerning_score":"high"')))
write("wrong_type_list.jsonl", lines(edit_line(9, b'"languages":["english"]', b'"languages":"english"')))
write("wrong_type_embedding.jsonl", lines(edit_line(12, b'"embedding":[', b'"embedding":["x",')))
write("wrong_type_metadata.jsonl", lines(edit_line(3, b'"metadata":{', b'"metadata":[1,2],"ignored":{')))
write("missing_required.jsonl", lines(edit_line(4, b'"chat_id":"chat-003",', b"")))
write("missing_summary.jsonl", lines(replace_line(15, b'{"chat_id":"chat-014","topic":"cooking"}')))
write("invalid_utf8.jsonl", lines(edit_line(6, b'"summary":"The user', b'"summary":"The \xff\xfe user')))
write("control_char.jsonl", lines(edit_line(13, b"step by step", b"step\x01by step")))
write("nan.jsonl", lines(edit_line(3, b'"concerning_score":3', b'"concerning_score":NaN')))
write("infinity.jsonl", lines(edit_line(10, b'"embedding":[', b'"embedding":[Infinity,')))
write("neg_infinity.jsonl", lines(edit_line(11, b'"user_frustration":1', b'"user_frustration":-Infinity')))
write("null_required.jsonl", lines(edit_line(14, b'"chat_id":"chat-013"', b'"chat_id":null')))
write("duplicate_key.jsonl", lines(edit_line(8, b'"topic":"travel planning"', b'"topic":"travel planning","topic":"history"')))

# Salvage: 3 bad lines (5, 12, 18) among the 20 good ones.
salvage = list(GOOD)
salvage.insert(4, b'{"summary":"bad","chat_id":5}')
salvage.insert(11, b"this is not JSON")
salvage.insert(17, b'{"summary":"no chat id"}')
write("skip_3_bad.jsonl", lines(salvage))
