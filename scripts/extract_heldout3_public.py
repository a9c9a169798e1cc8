"""Record of how the public extracts of held-out v3 (tests/data/classifier/sources/heldout3_gsm8k.jsonl,
heldout3_bbh.jsonl and heldout3_mbpp.jsonl) were drawn.

Modelled on scripts/extract_heldout2_public.py.  It reads local git mirrors of the upstream
repositories (one folder per repository under MIRROR_ROOT, named owner+name/repo), so it is not
part of the build.  Every candidate already in any extract under sources/ -- the held-out v2
extracts (heldout2_*) included; only the held-out v3 extracts are left out -- is excluded by id
(only the `id` field of those extracts is read).  The rest are visited in a seeded order and a
candidate is skipped when it is an exact duplicate (after normalisation) or a near duplicate
(word-token Jaccard >= 0.6) of any row of any extract that is not part of held-out v3, or of a
row already picked (scripts/heldout_overlap.py), so held-out v3 shares no row and no near copy
with the tuning data or with held-out v2.

* gsm8k (test split): 30 questions, seed 201.
* bbh: 30 inputs, seed 202, drawn round-robin over BBH_TASKS: the eight tasks of the v1 bbh
  extract plus seven more that are `reason` by the label guidelines (logical deduction and
  shuffled-object tracking with five and seven objects, formal fallacies, coloured objects,
  object counting, the penguins table).  A task whose every unused input is a near duplicate of
  an earlier row (the fixed templates) simply yields nothing.  Not drawn from:
  boolean_expressions (code-like expressions), multistep_arithmetic_two (bare arithmetic
  expressions, no words), dyck_languages, word_sorting, geometric_shapes (symbol and string
  manipulation, SVG paths), disambiguation_qa, hyperbaton, salient_translation_error_detection,
  snarks (language judgements), sports_understanding, movie_recommendation, ruin_names
  (knowledge and culture).
* mbpp: 55 problems, seed 203, from the same copy as mbpp_extra and heldout2_mbpp
  (muitiiifruckt/ASE), `text` only.

Items that a reading showed not to be clearly their task are listed in DROP and skipped (the
next one in the seeded order is drawn instead).

usage: python scripts/extract_heldout3_public.py MIRROR_ROOT OUT_DIR
"""
import json
import random
import re
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import heldout_overlap as overlap  # noqa: E402

VERSION = 3
SOURCES = overlap.SOURCES
BBH_TASKS = ["logical_deduction_three_objects", "logical_deduction_five_objects", "web_of_lies", "navigate",
             "date_understanding", "causal_judgement", "tracking_shuffled_objects_three_objects",
             "temporal_sequences",
             # added for v3: reason by the guidelines
             "logical_deduction_seven_objects", "tracking_shuffled_objects_five_objects",
             "tracking_shuffled_objects_seven_objects", "formal_fallacies",
             "reasoning_about_colored_objects", "object_counting", "penguins_in_a_table"]
# ids read and judged not clearly their task (see the data README); skipped, the next one is drawn
DROP = {
    "bbh/date_understanding/204",  # "Today is Sep 9, 1909. What is the date today in MM/DD/YYYY?": reformatting only
    # "On the floor ... a mauve booklet. Is the booklet mauve?": reading back a stated fact, no reasoning
    "bbh/reasoning_about_colored_objects/46", "bbh/reasoning_about_colored_objects/77",
    "bbh/reasoning_about_colored_objects/141", "bbh/reasoning_about_colored_objects/173",
    "bbh/reasoning_about_colored_objects/189",
}
# the same kind of reading-back item, found over and over among the coloured-objects inputs: a list
# of objects and "Is the <object> <colour>?" with no position, count or other step; skipped by rule
_READ_BACK = re.compile(r"Is the [a-z ]+\?\nOptions:\n\(A\) yes\n\(B\) no$")


def not_clearly_reason(rid, text):
    if rid in DROP:
        return True
    return (rid.startswith("bbh/reasoning_about_colored_objects/") and bool(_READ_BACK.search(text))
            and not re.search(r"left|right|next to|furthest|directly", text))


def show(mirrors, repo, path):
    return subprocess.run(["git", "--git-dir", str(Path(mirrors) / repo / "repo"), "show",
                           "HEAD:" + path], check=True, capture_output=True).stdout


def used_ids():
    """The `id` of every row of every extract that is not part of held-out v3 (nothing else is read)."""
    ids = set()
    for path in SOURCES.glob("*.jsonl"):
        if not path.name.startswith(overlap.prefix(VERSION)):
            ids |= {json.loads(line).get("id") for line in path.read_text(encoding="utf-8").splitlines()
                    if line.strip()}
    return ids


def write(out, name, rows):
    with open(Path(out) / name, "w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    print(name, len(rows))


class Draw:
    """Seeded draws that skip candidates overlapping the other extracts or an earlier pick."""

    def __init__(self):
        self.index = overlap.existing_index(VERSION)
        self.picked = overlap.Index()
        self.skipped = {}
        self.dropped = []

    def take(self, candidates, n, source):
        """The first n of candidates [(id, text)] (already in seeded order) that overlap nothing."""
        rows = []
        for rid, text in candidates:
            if len(rows) == n:
                break
            if not_clearly_reason(rid, text):
                self.dropped.append(rid)
                continue
            if overlap.overlapping(text, self.index) or overlap.overlapping(text, self.picked):
                self.skipped[source] = self.skipped.get(source, 0) + 1
                continue
            self.picked.add(rid, text)
            rows.append((rid, text))
        return rows


def main(mirrors, out):
    d = Draw()
    used = used_ids()

    gsm = [json.loads(line) for line in show(mirrors, "openai+grade-school-math",
                                             "grade_school_math/data/test.jsonl").decode().splitlines()]
    free = [("gsm8k-test/%d" % i, gsm[i]["question"]) for i in range(len(gsm)) if "gsm8k-test/%d" % i not in used]
    rows = d.take(random.Random(201).sample(free, len(free)), 30, "gsm8k")
    write(out, "heldout3_gsm8k.jsonl", [{"id": i, "prompt": t, "task": "reason"}
                                        for i, t in sorted(rows, key=lambda r: int(r[0].split("/")[1]))])

    rng = random.Random(202)
    queues = []
    for task in BBH_TASKS:
        ex = json.loads(show(mirrors, "suzgunmirac+BIG-Bench-Hard", "bbh/%s.json" % task))["examples"]
        free = [("bbh/%s/%d" % (task, i), ex[i]["input"]) for i in range(len(ex)) if "bbh/%s/%d" % (task, i) not in used]
        queues.append(rng.sample(free, len(free)))
    rows = []
    while len(rows) < 30 and any(queues):
        for q in queues:
            while q and len(rows) < 30:
                cand = q.pop(0)
                got = d.take([cand], 1, "bbh/" + cand[0].split("/")[1])
                if got:
                    rows += got
                    break
    order = {t: k for k, t in enumerate(BBH_TASKS)}
    rows.sort(key=lambda r: (order[r[0].split("/")[1]], int(r[0].split("/")[2])))
    write(out, "heldout3_bbh.jsonl", [{"id": i, "prompt": t, "task": "reason"} for i, t in rows])

    mb = [json.loads(line) for line in show(mirrors, "muitiiifruckt+ASE", "mbpp.jsonl").decode().splitlines() if line.strip()]
    free = [("mbpp/%d" % r["task_id"], r["text"]) for r in mb if "mbpp/%d" % r["task_id"] not in used]
    rows = d.take(random.Random(203).sample(free, len(free)), 55, "mbpp")
    write(out, "heldout3_mbpp.jsonl", [{"id": i, "prompt": t, "task": "code"}
                                       for i, t in sorted(rows, key=lambda r: int(r[0].split("/")[1]))])
    print("skipped as exact or near duplicates:", d.skipped)
    print("dropped as not clearly their task:", d.dropped)


if __name__ == "__main__":
    main(*sys.argv[1:3])
