"""Record of how the public extracts of the held-out sets were drawn (held-out v2:
tests/data/classifier/sources/heldout2_{gsm8k,bbh,mbpp}.jsonl; v3: heldout3_*; v4: heldout4_*; v5: heldout5_*; v6: heldout6_*; v7: heldout7_*; v8: heldout8_*; v9: heldout9_*; v10: heldout10_*; v11: heldout11_*).

It reads local git mirrors of the upstream repositories (one folder per repository under
MIRROR_ROOT, named owner+name/repo), so it is not part of the build.  Every candidate already in
an extract that existed when the version was drawn (any but those of that held-out version
and later ones) is excluded by id (only the `id` field of those extracts is read); the rest are visited in a seeded order, and a candidate is skipped when
it is an exact duplicate (after normalisation) or a near duplicate (word-token Jaccard >= 0.6) of
any row of those extracts or of a row already picked (scripts/heldout_overlap.py), so a held-out
set shares no row and no near copy with anything else.

* gsm8k (test split): 30 questions.
* bbh: drawn round-robin over the version's BBH tasks: for v2 the eight tasks of the v1 bbh
  extract; v3 adds seven more that are `reason` by the label guidelines.  A task whose every
  unused input is a near duplicate of an earlier row (the fixed templates) yields nothing.
  Never drawn from: boolean_expressions (code-like expressions), multistep_arithmetic_two (bare
  arithmetic, no words), dyck_languages, word_sorting, geometric_shapes (symbol and string
  manipulation, SVG paths), disambiguation_qa, hyperbaton, salient_translation_error_detection,
  snarks (language judgements), sports_understanding, movie_recommendation, ruin_names
  (knowledge and culture).
* mbpp: `text` only, from muitiiifruckt/ASE (the copy mbpp_extra came from).  HumanEval is not
  drawn from: all 164 problems are already in humaneval.jsonl and humaneval_extra.jsonl.
* dolly-15k is not drawn by this script: it was read page by page (see the data README).

Items that a reading of v3's draw showed not to be clearly their task are skipped (DROP and a
rule for the coloured-objects items that only read a stated fact back), and the next one in the
seeded order is drawn instead.

usage: python scripts/extract_heldout_public.py {2,3,...,11} MIRROR_ROOT OUT_DIR
"""
import json
import random
import re
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import heldout_overlap as overlap  # noqa: E402

BBH_V1_TASKS = ["logical_deduction_three_objects", "logical_deduction_five_objects", "web_of_lies", "navigate",
                "date_understanding", "causal_judgement", "tracking_shuffled_objects_three_objects",
                "temporal_sequences"]
# version -> seeds (gsm8k, bbh, mbpp), how many of each, and the BBH tasks drawn from
DRAWS = {
    2: {"seeds": (101, 102, 103), "counts": (30, 32, 52), "bbh_tasks": BBH_V1_TASKS},
    3: {"seeds": (201, 202, 203), "counts": (30, 30, 55),
        "bbh_tasks": BBH_V1_TASKS + ["logical_deduction_seven_objects", "tracking_shuffled_objects_five_objects",
                                     "tracking_shuffled_objects_seven_objects", "formal_fallacies",
                                     "reasoning_about_colored_objects", "object_counting", "penguins_in_a_table"]},
}
DRAWS[4] = {"seeds": (401, 402, 403), "counts": (30, 30, 55), "bbh_tasks": DRAWS[3]["bbh_tasks"]}
DRAWS[5] = {"seeds": (501, 502, 503), "counts": (30, 30, 55), "bbh_tasks": DRAWS[3]["bbh_tasks"]}
DRAWS[6] = {"seeds": (601, 602, 603), "counts": (30, 30, 55), "bbh_tasks": DRAWS[3]["bbh_tasks"]}
DRAWS[7] = {"seeds": (701, 702, 703), "counts": (30, 30, 55), "bbh_tasks": DRAWS[3]["bbh_tasks"]}
DRAWS[8] = {"seeds": (801, 802, 803), "counts": (30, 30, 55), "bbh_tasks": DRAWS[3]["bbh_tasks"]}
DRAWS[9] = {"seeds": (901, 902, 903), "counts": (30, 30, 55), "bbh_tasks": DRAWS[3]["bbh_tasks"]}
DRAWS[10] = {"seeds": (1001, 1002, 1003), "counts": (30, 30, 55), "bbh_tasks": DRAWS[3]["bbh_tasks"]}
DRAWS[11] = {"seeds": (1101, 1102, 1103), "counts": (30, 30, 55), "bbh_tasks": DRAWS[3]["bbh_tasks"]}
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


def not_clearly_its_task(rid, text):
    if rid in DROP:
        return True
    return (rid.startswith("bbh/reasoning_about_colored_objects/") and bool(_READ_BACK.search(text))
            and not re.search(r"left|right|next to|furthest|directly", text))


def show(mirrors, repo, path):
    return subprocess.run(["git", "--git-dir", str(Path(mirrors) / repo / "repo"), "show",
                           "HEAD:" + path], check=True, capture_output=True).stdout


def earlier(version):
    """The extracts that existed before held-out `version` was drawn: all but those of that
    version and later ones. (A later set's ids would shorten the list of free items and so
    change the whole seeded order: the draw would not reproduce.)"""
    def version_of(path):
        m = re.match(r"heldout(\d+)_", path.name)
        return int(m.group(1)) if m else 0
    return [p for p in sorted(overlap.SOURCES.glob("*.jsonl")) if version_of(p) < version]


def used_ids(version):
    """The `id` of every row of the extracts before `version`."""
    return {rec.get("id") for path in earlier(version) for rec in overlap.read(path)}


def write(out, name, rows):
    with open(Path(out) / name, "w", encoding="utf-8") as f:
        f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    print(name, len(rows))


class Draw:
    """Seeded draws that skip candidates overlapping the other extracts or an earlier pick."""

    def __init__(self, version):
        self.index = overlap.Index()
        for path in earlier(version):
            for lineno, rec in enumerate(overlap.read(path), 1):
                self.index.add(f"{path.name}:{lineno}", rec["prompt"])
        self.picked = overlap.Index()
        self.skipped = {}
        self.dropped = []

    def take(self, candidates, n, source):
        """The first n of candidates [(id, text)] (already in seeded order) that overlap nothing."""
        rows = []
        for rid, text in candidates:
            if len(rows) == n:
                break
            if not_clearly_its_task(rid, text):
                self.dropped.append(rid)
                continue
            if overlap.overlapping(text, self.index) or overlap.overlapping(text, self.picked):
                self.skipped[source] = self.skipped.get(source, 0) + 1
                continue
            self.picked.add(rid, text)
            rows.append((rid, text))
        return rows


def by_number(rows):
    return sorted(rows, key=lambda r: int(r[0].split("/")[1]))


def main(version, mirrors, out):
    spec = DRAWS[version]
    (gsm_seed, bbh_seed, mbpp_seed), (n_gsm, n_bbh, n_mbpp) = spec["seeds"], spec["counts"]
    name = overlap.prefix(version) + "%s.jsonl"
    d = Draw(version)
    used = used_ids(version)

    gsm = [json.loads(line) for line in show(mirrors, "openai+grade-school-math",
                                             "grade_school_math/data/test.jsonl").decode().splitlines()]
    free = [(f"gsm8k-test/{i}", gsm[i]["question"]) for i in range(len(gsm)) if f"gsm8k-test/{i}" not in used]
    rows = d.take(random.Random(gsm_seed).sample(free, len(free)), n_gsm, "gsm8k")
    write(out, name % "gsm8k", [{"id": i, "prompt": t, "task": "reason"} for i, t in by_number(rows)])

    rng = random.Random(bbh_seed)
    queues = []
    for task in spec["bbh_tasks"]:
        ex = json.loads(show(mirrors, "suzgunmirac+BIG-Bench-Hard", f"bbh/{task}.json"))["examples"]
        free = [(f"bbh/{task}/{i}", ex[i]["input"]) for i in range(len(ex)) if f"bbh/{task}/{i}" not in used]
        queues.append(rng.sample(free, len(free)))
    rows = []
    while len(rows) < n_bbh and any(queues):
        for q in queues:
            while q and len(rows) < n_bbh:
                cand = q.pop(0)
                got = d.take([cand], 1, "bbh/" + cand[0].split("/")[1])
                if got:
                    rows += got
                    break
    order = {t: k for k, t in enumerate(spec["bbh_tasks"])}
    rows.sort(key=lambda r: (order[r[0].split("/")[1]], int(r[0].split("/")[2])))
    write(out, name % "bbh", [{"id": i, "prompt": t, "task": "reason"} for i, t in rows])

    mb = [json.loads(line) for line in show(mirrors, "muitiiifruckt+ASE", "mbpp.jsonl").decode().splitlines()
          if line.strip()]
    free = [(f"mbpp/{r['task_id']}", r["text"]) for r in mb if f"mbpp/{r['task_id']}" not in used]
    rows = d.take(random.Random(mbpp_seed).sample(free, len(free)), n_mbpp, "mbpp")
    write(out, name % "mbpp", [{"id": i, "prompt": t, "task": "code"} for i, t in by_number(rows)])
    print("skipped as exact or near duplicates:", d.skipped)
    print("dropped as not clearly their task:", d.dropped)


if __name__ == "__main__":
    if len(sys.argv) != 4 or not sys.argv[1].isdigit() or int(sys.argv[1]) not in DRAWS:
        sys.exit(f"usage: python scripts/extract_heldout_public.py {{{','.join(map(str, DRAWS))}}} MIRROR_ROOT OUT_DIR")
    main(int(sys.argv[1]), *sys.argv[2:4])
