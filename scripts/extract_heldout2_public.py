"""Record of how the public extracts of held-out v2 (tests/data/classifier/sources/heldout2_*.jsonl,
all but heldout2_handwritten.jsonl) were drawn.

Like scripts/extract_public_sources.py it reads local git mirrors of the upstream repositories
(one folder per repository under MIRROR_ROOT, named owner+name/repo), so it is not part of the
build.  Every candidate already in any extract under sources/ is excluded by id; the rest are
visited in a seeded order and a candidate is skipped when it is an exact duplicate (after
normalisation) or a near duplicate (word-token Jaccard >= 0.6) of any row of any other extract
or of a row already picked (scripts/heldout_overlap.py --version 2), so held-out v2 shares no row and no
near copy with the tuning data.

* gsm8k (test split): 30 questions, seed 101.
* bbh: 32 inputs, seed 102, drawn round-robin over the eight tasks the split source bbh used.
  logical_deduction_three_objects, logical_deduction_five_objects, navigate and
  tracking_shuffled_objects_three_objects are templates whose every unused input is a near
  duplicate of a row already in bbh.jsonl or bbh_extra.jsonl, so the draw finds none there and
  the inputs come from web_of_lies, date_understanding, causal_judgement and temporal_sequences.
* mbpp: 52 problems, seed 103, from the same copy as mbpp_extra (muitiiifruckt/ASE); HumanEval
  is not drawn from: all 164 problems are already in humaneval.jsonl and humaneval_extra.jsonl.
* dolly-15k is not drawn by this script: it was read page by page through the search tool's
  file index (see the data README) and its rows were transcribed and labelled by hand.

usage: python scripts/extract_heldout2_public.py MIRROR_ROOT OUT_DIR
"""
import json
import random
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import heldout_overlap as overlap  # noqa: E402

SOURCES = overlap.SOURCES
BBH_TASKS = ["logical_deduction_three_objects", "logical_deduction_five_objects", "web_of_lies", "navigate",
             "date_understanding", "causal_judgement", "tracking_shuffled_objects_three_objects",
             "temporal_sequences"]


def show(mirrors, repo, path):
    return subprocess.run(["git", "--git-dir", str(Path(mirrors) / repo / "repo"), "show",
                           "HEAD:" + path], check=True, capture_output=True).stdout


def used_ids():
    ids = set()
    for path in SOURCES.glob("*.jsonl"):
        if not path.name.startswith(overlap.prefix(2)):
            ids |= {json.loads(line).get("id") for line in path.read_text(encoding="utf-8").splitlines()}
    return ids


def write(out, name, rows):
    with open(Path(out) / name, "w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    print(name, len(rows))


def draw(candidates, n, index, picked):
    """The first n of candidates [(id, text)] (already in seeded order) that overlap nothing."""
    rows = []
    for rid, text in candidates:
        if len(rows) == n:
            break
        if overlap.overlapping(text, index) or overlap.overlapping(text, picked):
            continue
        picked.add(rid, text)
        rows.append((rid, text))
    return rows


def main(mirrors, out):
    index = overlap.existing_index(2)
    picked = overlap.Index()
    used = used_ids()

    gsm = [json.loads(line) for line in show(mirrors, "openai+grade-school-math",
                                             "grade_school_math/data/test.jsonl").decode().splitlines()]
    free = [("gsm8k-test/%d" % i, gsm[i]["question"]) for i in range(len(gsm)) if "gsm8k-test/%d" % i not in used]
    rows = draw(random.Random(101).sample(free, len(free)), 30, index, picked)
    write(out, "heldout2_gsm8k.jsonl", [{"id": i, "prompt": t, "task": "reason"}
                                        for i, t in sorted(rows, key=lambda r: int(r[0].split("/")[1]))])

    rng = random.Random(102)
    queues = []
    for task in BBH_TASKS:
        ex = json.loads(show(mirrors, "suzgunmirac+BIG-Bench-Hard", "bbh/%s.json" % task))["examples"]
        free = [("bbh/%s/%d" % (task, i), ex[i]["input"]) for i in range(len(ex)) if "bbh/%s/%d" % (task, i) not in used]
        queues.append(rng.sample(free, len(free)))
    rows = []
    while len(rows) < 32 and any(queues):
        for q in queues:
            while q and len(rows) < 32:
                got = draw([q.pop(0)], 1, index, picked)
                if got:
                    rows += got
                    break
    order = {t: k for k, t in enumerate(BBH_TASKS)}
    rows.sort(key=lambda r: (order[r[0].split("/")[1]], int(r[0].split("/")[2])))
    write(out, "heldout2_bbh.jsonl", [{"id": i, "prompt": t, "task": "reason"} for i, t in rows])

    mb = [json.loads(line) for line in show(mirrors, "muitiiifruckt+ASE", "mbpp.jsonl").decode().splitlines() if line.strip()]
    free = [("mbpp/%d" % r["task_id"], r["text"]) for r in mb if "mbpp/%d" % r["task_id"] not in used]
    rows = draw(random.Random(103).sample(free, len(free)), 52, index, picked)
    write(out, "heldout2_mbpp.jsonl", [{"id": i, "prompt": t, "task": "code"}
                                       for i, t in sorted(rows, key=lambda r: int(r[0].split("/")[1]))])


if __name__ == "__main__":
    main(*sys.argv[1:3])
