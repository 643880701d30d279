"""Differential test of ckpt's JSONL codec against Kura's own models.

`generate` writes, per checkpoint kind, seeded lines that give each field values of every
JSON type, boundary numbers, missing / null / extra / duplicated keys, many datetime forms,
unicode and escapes, nested metadata; then every line of the committed corpus. `check`
reads ckpt's verdict on each line (its output line, or its error) and compares it with
`Model.model_validate_json(line)`: both accept with the same `model_dump()` (ckpt's output
loaded by Kura), or both reject. Disagreements are printed and added to the corpus, which
every run replays.

Usage: kura_differential.py generate SEED LINES DIR CORPUS
       kura_differential.py check DIR CORPUS
"""

import json
import math
import random
import re
import sys
from datetime import datetime

from kura.types import Cluster, Conversation, ConversationSummary, ProjectedCluster

MODELS = {
    "summaries": ConversationSummary,
    "clusters": Cluster,
    "meta_clusters": Cluster,
    "dimensionality": ProjectedCluster,
    "conversations": Conversation,
}

INTS = [
    "0", "1", "2", "3", "4", "5", "6", "-1", "-0", "9223372036854775807", "9223372036854775808",
    "-9223372036854775809", "18446744073709551616", "2147483647", "2147483648", "-2147483649",
    "1" + "0" * 40,
]
FLOATS = [
    "1e308", "-1e308", "1e400", "-1e400", "-0.0", "0.0", "1.0", "3.0", "3.5", "5.0", "6.0",
    "4.9999999999999999", "5.000000000000001", "0.5", "1E2", "1e-7", "2.5e-324", "NaN",
    "Infinity", "-Infinity", "9.2e18", "1e19", "-1.5",
]
NUMERIC_STRINGS = [
    '"3"', '" 3 "', '"3.0"', '"3.00"', '"3.5"', '"+3"', '"-0"', '"1_0"', '"1__0"', '"_1"',
    '"1_"', '"1e0"', '"0x3"', '"inf"', '"-inf"', '"+inf"', '"nan"', '"NaN"', '"-nan"',
    '"Infinity"', '"infinity"', '"iNf"', '""', '"abc"', '"\\u2162"', '"\\u0663"', '"\\t1"',
    '"1."', '".5"', '"5."', '"1_000.5"', '"1.5_0"', '"03"', '"1e400"', '" "', '"1 2"',
    '"9223372036854775808"', '"99999999999999999999999999999999999999999"', '"2.0e1"',
    '"\\u00a03"', '"3\\n"', '"+"', '"-"', '"."', '"1e"', '"e5"', '"1.0.0"', '"2147483648"',
]
STRINGS = [
    '"s"', '""', '"\\u00e9t\\u00e9"', '"été"', '"\\ud83d\\ude00"', '"😀"', '"\\ud800"',
    '"\\udc00"', '"\\"q\\""', '"tab\\tnew\\nline"', '"\\u0000"', '"\\/"', '"\\x41"',
    '"a\x7fb"', '"a\x01b"', '"\\\\"', '"user"', '"assistant"', '"User"', '"null"',
]
DATETIMES = [
    '"2024-05-01T10:00:00"', '"2024-05-01T10:00:00Z"', '"2024-05-01T10:00:00z"',
    '"2024-05-01T10:00:01+02:00"', '"2024-05-01T10:00:00-05:30"', '"2024-05-01T10:00:00+0200"',
    '"2024-05-01T10:00:00+02"', '"2024-05-01T10:00:00-00:00"', '"2024-05-01T10:00:00+23:59"',
    '"2024-05-01T10:00:00+24:00"', '"2024-05-01"', '"2024-05-01 10:00:00"',
    '"2024-05-01t10:00:00"', '"2024-05-01_10:00:00"', '"2024-05-01T10:00"',
    '"2024-05-01T10"', '"2024-05-01T10:00:00.123456"', '"2024-05-01T10:00:00.123456789"',
    '"2024-05-01T10:00:00.9999995"', '"2024-05-01T10:00:00,5"', '"2024-05-01T10:00:00."',
    '"2024-05-01T24:00:00"', '"2024-05-01T10:60:00"', '"2024-05-01T10:00:60"', '"2024-02-29"',
    '"2023-02-29"', '"2024-13-01"', '"2024-00-10"', '"0000-01-01"', '"0001-01-01T00:00:00"',
    '"0001-01-01T00:00:00+01:00"', '"9999-12-31T23:59:59.999999"',
    '"9999-12-31T23:59:59-01:00"', '" 2024-05-01"', '"2024-05-01 "', '"2024-5-1"',
    '"20240501"', '"2024-W18"', '"1714557600"', '"1714557600.5"', '"-1"', '"1e5"',
    '"2024-05-01T10:00:00.5Z"', '"2024-05-01T10:00:00Z "', '"2024-05-01Z"',
    '"2024-05-01T10:00Z"', '"2024-05-01T10:00+01:00"', '"2025-06-12T11:04:56.965428"',
    "1714557600", "1714557600.5", "1714557600000", "1714557600123", "-1", "0", "1e11", "2e10",
    "20000000001", "-20000000001", "253402300799", "253402300800", "-62135596800",
    "1e20", "-1.5", "1714557600.0000001", "true", "null", "[]", "{}",
    # Numeric strings: an integer, or a float only when a point comes first; rounding of
    # the fraction to microseconds, the seconds / milliseconds watershed.
    '"2.0e1"', '"1.e5"', '"+.5"', '"-.5"', '"1.5E+3"', '"1e16"', '"-1e-7"', '"1.5e400"',
    '"+1714557600"', '"1_000"', '"1.5_0"', '"."', '"-."', '".e1"', '"1..5"', '"+-1"',
    '"1714557600.9999999"', '"-0.0000005"', '"-1.0000005"', '"1714557600123.4567"',
    '"25000000000000.5"', '"20000000000.5"', '"-11676096001"', '"253402300800000"',
    '"99999999999999999999.5"', '"9223372036854775808"',
    "1714557600.9999999", "-0.0000005", "-1.0000005", "1714557600123.4567",
    "25000000000000.5", "20000000000.5", "-20000000000", "-62135596800000",
    "253402300799999", "253402300800000", "-1e-7", "2.5e13",
]
LISTS = [
    "[]", '["a"]', '["a","b"]', '["a",null]', "[null]", "[1]", '[1,"2"]', "[1.5]", "[true]",
    '["x",1]', "[[1]]", '[{"a":1}]', '["\\u00e9"]', "[1,2,3]", "[1,1.5]", "[NaN]",
    '["1","2.5"]', "[1e400]", "[-0.0]", '["nan"]', "[false,1.5]", '[true,"x"]',
]
OBJECTS = [
    "{}", '{"a":1}', '{"a":1,"a":2}', '{"a":{"b":1,"b":[2]}}', '{"a":[1,"2"]}', '{"a":null}',
    '{"model":"gpt","turns":3,"score":0.5,"ok":true,"tags":["x","y"]}', '{"a":[1,1.5]}',
    '{"a":[true,1]}', '{"a":["x",1]}', '{"a":{"b":{"c":{"d":[]}}}}', '{"a":NaN}',
    '{"a":18446744073709551616}', '{"a":1e400}', '{"a":-0.0}', '{"\\u00e9":"\\ud83d\\ude00"}',
    '{"embedding":[1,2]}', '{"a":[["x"]]}', '{"a":[null]}', '{"":""}', '{"a":"1","a":[1]}',
    '{"a":[1.0,2]}', '{"a":["1",2]}', '{"a":["1.5",2]}', '{"a":[false,1.5]}',
]
ANY = INTS + FLOATS + NUMERIC_STRINGS + STRINGS + LISTS + OBJECTS + ["true", "false", "null"]


def jstr(s):
    return json.dumps(s, ensure_ascii=False)


def message(rng):
    fields = [
        ("created_at", rng.choice(DATETIMES[:20]) if rng.random() < 0.8 else rng.choice(DATETIMES)),
        ("role", rng.choice(['"user"', '"assistant"']) if rng.random() < 0.9 else rng.choice(STRINGS + ["1", "null"])),
        ("content", rng.choice(['"hi"', '"\\u00e9\\n"', '""']) if rng.random() < 0.9 else rng.choice(ANY)),
    ]
    mutate(rng, fields, {"created_at": DATETIMES, "role": STRINGS, "content": STRINGS}, 0.2)
    return "{" + ",".join(f"{jstr(k)}:{v}" for k, v in fields) + "}"


def base(kind, rng):
    cluster = [
        ("id", jstr(f"c{rng.randrange(1000)}")),
        ("name", '"n"'),
        ("description", '"d"'),
        ("slug", '"s_l_g"'),
        ("chat_ids", rng.choice(['["a","b"]', "[]", '["\\u00e9"]'])),
        ("parent_id", rng.choice(["null", '"p"'])),
    ]
    if kind == "summaries":
        return [
            ("summary", '"a summary"'),
            ("request", '"r"'),
            ("topic", "null"),
            ("languages", '["english","python"]'),
            ("task", '"t"'),
            ("concerning_score", str(rng.randint(1, 5))),
            ("user_frustration", rng.choice(["1", "5", "null"])),
            ("assistant_errors", "[]"),
            ("chat_id", '"c1"'),
            ("metadata", rng.choice(OBJECTS[:8])),
            ("embedding", rng.choice(["[0.1,-0.2,3]", "null", "[]", "[1e-7, 2.5]"])),
        ]
    if kind in ("clusters", "meta_clusters"):
        return cluster + [("count", "2")]
    if kind == "dimensionality":
        return cluster + [("x_coord", "0.5"), ("y_coord", "-1.25"), ("level", "0"), ("count", "2")]
    msgs = "[" + ",".join(message(rng) for _ in range(rng.randint(0, 3))) + "]"
    return [
        ("chat_id", '"c1"'),
        ("created_at", rng.choice(DATETIMES[:20])),
        ("messages", msgs),
        ("metadata", rng.choice(OBJECTS)),
    ]


POOLS = {
    "summary": STRINGS, "request": STRINGS, "topic": STRINGS, "task": STRINGS,
    "languages": LISTS, "assistant_errors": LISTS, "chat_ids": LISTS,
    "concerning_score": INTS + FLOATS + NUMERIC_STRINGS,
    "user_frustration": INTS + FLOATS + NUMERIC_STRINGS,
    "chat_id": STRINGS, "metadata": OBJECTS, "embedding": LISTS,
    "id": STRINGS, "name": STRINGS, "description": STRINGS, "slug": STRINGS, "parent_id": STRINGS,
    "x_coord": INTS + FLOATS + NUMERIC_STRINGS, "y_coord": INTS + FLOATS + NUMERIC_STRINGS,
    "level": INTS + FLOATS + NUMERIC_STRINGS, "count": ANY,
    "created_at": DATETIMES, "messages": LISTS,
}


def mutate(rng, fields, pools, p_any):
    for _ in range(rng.choice([0, 1, 1, 2, 3])):
        op = rng.random()
        i = rng.randrange(len(fields)) if fields else None
        if i is None:
            break
        k = fields[i][0]
        if op < 0.45:
            pool = pools.get(k, ANY) if rng.random() > p_any else ANY
            fields[i] = (k, rng.choice(pool))
        elif op < 0.55:
            del fields[i]
        elif op < 0.65:
            fields[i] = (k, "null")
        elif op < 0.75:
            fields.append((k, rng.choice(pools.get(k, ANY))))  # a duplicate key, last wins
        elif op < 0.82:
            fields.insert(rng.randrange(len(fields) + 1), (k, rng.choice(ANY)))  # earlier duplicate
        elif op < 0.9:
            fields.append((rng.choice(["extra", "x", "\u00e9", "embedding_x"]), rng.choice(ANY)))
        else:
            rng.shuffle(fields)


def line(kind, rng):
    fields = base(kind, rng)
    mutate(rng, fields, POOLS, 0.25)
    ws = rng.choice(["", "", " ", "\t"])
    text = "{" + ws + ("," + ws).join(f"{jstr(k)}{ws}:{ws}{v}" for k, v in fields) + ws + "}"
    r = rng.random()
    if r < 0.01:
        text = text[: rng.randrange(len(text))]  # truncated
    elif r < 0.02:
        text = rng.choice(["[]", "null", "1", '"x"', "{}", text + " x", " " + text + " "])
    elif r < 0.025:
        depth = rng.choice([198, 199, 200, 201])
        text = text[:-1] + ',"deep":' + "[" * depth + "]" * depth + "}"
    return text


def corpus_lines(path):
    out = []
    try:
        with open(path, encoding="utf-8") as f:
            for raw in f:
                if raw.strip():
                    out.append(json.loads(raw))
    except FileNotFoundError:
        pass
    return out


def generate(seed, n, out_dir, corpus):
    rng = random.Random(seed)
    replay = corpus_lines(corpus)
    for kind in MODELS:
        with open(f"{out_dir}/{kind}.lines", "w", encoding="utf-8") as f:
            for _ in range(n):
                f.write(json.dumps(line(kind, rng)) + "\n")
            for c in replay:
                if c["kind"] == kind:
                    f.write(json.dumps(c["line"]) + "\n")


def norm(v):
    """A value with floats by repr (so -0.0, NaN and inf compare exactly) and datetimes
    with their awareness."""
    if isinstance(v, float):
        return ("float", repr(v))
    if isinstance(v, datetime):
        return ("datetime", v.tzinfo is None, v.timestamp() if v.tzinfo else v.isoformat())
    if isinstance(v, dict):
        return {k: norm(x) for k, x in v.items()}
    if isinstance(v, list):
        return [norm(x) for x in v]
    return v


HEX32 = re.compile(r"^[0-9a-f]{32}$")

# Where ckpt differs from Kura on purpose (README, "Validation"): it is more lenient about
# a missing or null `metadata` (read as {}), and an integer must fit its column.
def lenient(errors):
    return errors and all(
        e["loc"] == ("metadata",) and (e["type"] == "missing" or e.get("input") is None)
        for e in errors
    )


def narrower(kura_ok, ckpt_error):
    return kura_ok and "out of range for int32" in ckpt_error


def check(out_dir, corpus):
    report = {}
    new = []
    for kind, model in MODELS.items():
        counts = dict(lines=0, both_accept=0, both_reject=0, lenient=0, int32=0, disagree=0)
        examples = []
        with open(f"{out_dir}/{kind}.lines", encoding="utf-8") as f_in, open(
            f"{out_dir}/{kind}.ckpt", encoding="utf-8"
        ) as f_ckpt:
            for raw, verdict in zip(f_in, f_ckpt):
                text = json.loads(raw)
                v = json.loads(verdict)
                counts["lines"] += 1
                try:
                    kura = model.model_validate_json(text)
                    kura_errors = None
                except Exception as e:  # pydantic's ValidationError
                    kura = None
                    kura_errors = e.errors() if hasattr(e, "errors") else [{"loc": (), "type": str(e)}]
                problem = None
                if "error" in v:
                    if kura is None:
                        counts["both_reject"] += 1
                    elif narrower(True, v["error"]):
                        counts["int32"] += 1
                    else:
                        problem = f"Kura accepts, ckpt rejects: {v['error']}"
                else:
                    try:
                        back = model.model_validate_json(v["ok"])
                    except Exception as e:
                        back = None
                        problem = f"Kura cannot load ckpt's output {v['ok']!r}: {e}"
                    if back is not None and kura is None:
                        if lenient(kura_errors):
                            counts["lenient"] += 1
                        else:
                            problem = f"Kura rejects ({kura_errors[0]['loc']}: {kura_errors[0]['msg']}), ckpt accepts"
                    elif back is not None:
                        a, b = kura.model_dump(), back.model_dump()
                        if "id" in a and HEX32.match(a["id"]) and HEX32.match(b["id"]) and '"id"' not in text:
                            a["id"] = b["id"] = "<uuid4>"
                        if norm(a) == norm(b):
                            counts["both_accept"] += 1
                        else:
                            problem = f"values differ: Kura {a!r}, via ckpt {b!r}"
                if problem:
                    counts["disagree"] += 1
                    if len(examples) < 20:
                        examples.append({"line": text, "problem": problem})
                    new.append({"kind": kind, "line": text})
        report[kind] = {"counts": counts, "examples": examples}
    known = {(c["kind"], c["line"]) for c in corpus_lines(corpus)}
    added = 0
    with open(corpus, "a", encoding="utf-8") as f:
        for c in new:
            if (c["kind"], c["line"]) not in known:
                known.add((c["kind"], c["line"]))
                f.write(json.dumps(c, ensure_ascii=False) + "\n")
                added += 1
    report["corpus_added"] = added
    print(json.dumps(report))


if __name__ == "__main__":
    if sys.argv[1] == "generate":
        generate(int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5])
    elif sys.argv[1] == "check":
        check(sys.argv[2], sys.argv[3])
    else:
        sys.exit(__doc__)
