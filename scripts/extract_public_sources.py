"""Record of how the public extracts under tests/data/classifier/sources/ were drawn.

It reads local git mirrors of the upstream repositories (paths below), so it is not
part of the build; scripts/build_labelled_set.py only reads the committed extracts.
Kept so the selection can be audited and redone.  MBPP and Dolly were read through a
file index page by page (see README.md), not by this script.

usage: python scripts/extract_public_sources.py MIRROR_ROOT OUT_DIR
"""
import gzip
import json
import random
import subprocess
import sys
from pathlib import Path


def show(repo, path):
    return subprocess.run(["git", "-C", str(repo), "show", "HEAD:" + path],
                          check=True, capture_output=True).stdout


def write(out, name, rows):
    with open(Path(out) / name, "w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")


def main(mirrors, out):
    mirrors = Path(mirrors)
    # GSM8K test split: 50 questions, seed 11.
    gsm = [json.loads(l) for l in show(mirrors / "openai+grade-school-math/repo",
                                       "grade_school_math/data/test.jsonl").decode().splitlines()]
    idx = sorted(random.Random(11).sample(range(len(gsm)), 50))
    write(out, "gsm8k.jsonl", [{"id": "gsm8k-test/%d" % i, "prompt": gsm[i]["question"], "task": "reason"} for i in idx])

    # HumanEval: 40 docstring prompts, seed 12.
    he = [json.loads(l) for l in gzip.decompress(show(mirrors / "openai+human-eval/repo",
                                                      "data/HumanEval.jsonl.gz")).decode().splitlines()]
    idx = sorted(random.Random(12).sample(range(len(he)), 40))
    write(out, "humaneval.jsonl", [{"id": he[i]["task_id"], "prompt": he[i]["prompt"].strip("\n"), "task": "code"} for i in idx])

    # BIG-Bench Hard: a few items per task, seed 13 (inputs only, no canary string).
    per_task = {"logical_deduction_three_objects": 8, "logical_deduction_five_objects": 5,
                "web_of_lies": 8, "navigate": 7, "date_understanding": 8, "causal_judgement": 8,
                "tracking_shuffled_objects_three_objects": 6, "temporal_sequences": 5}
    rows = []
    rng = random.Random(13)
    for task, n in per_task.items():
        ex = json.loads(show(mirrors / "suzgunmirac+BIG-Bench-Hard/repo", "bbh/%s.json" % task))["examples"]
        for i in sorted(rng.sample(range(len(ex)), n)):
            rows.append({"id": "bbh/%s/%d" % (task, i), "prompt": ex[i]["input"], "task": "reason"})
    write(out, "bbh.jsonl", rows)


if __name__ == "__main__":
    main(*sys.argv[1:3])
