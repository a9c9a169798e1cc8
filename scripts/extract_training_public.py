"""Record of how the training-only public extracts (v4) under tests/data/classifier/sources/
were drawn: gsm8k_train, bbh_extra, mbpp_extra, humaneval_extra, self_instruct_seed, nq_open.

Like scripts/extract_public_sources.py it reads local git mirrors of the upstream
repositories (one folder per repository under MIRROR_ROOT, named owner+name/repo), so it is
not part of the build.  Rows already used by the split sources (gsm8k, bbh, mbpp, humaneval)
are excluded by id, so the new sources repeat nothing; scripts/build_labelled_set.py would drop
an exact duplicate from a training-only source anyway.

usage: python scripts/extract_training_public.py MIRROR_ROOT OUT_DIR
"""
import gzip
import json
import random
import re
import subprocess
import sys
from pathlib import Path

SOURCES = Path(__file__).resolve().parent.parent / "tests" / "data" / "classifier" / "sources"
MAX_CHARS = 1500

# BIG-Bench Hard tasks that are `reason` by the README's definitions (logic, deduction,
# arithmetic, counting, dates, causation, argument validity).  Left out: dyck_languages and
# word_sorting (symbol/string manipulation, closer to code), geometric_shapes (SVG paths),
# disambiguation_qa, hyperbaton, salient_translation_error_detection, snarks (language),
# sports_understanding, movie_recommendation, ruin_names (knowledge/culture).
BBH_TASKS = [
    "boolean_expressions", "causal_judgement", "date_understanding", "formal_fallacies",
    "logical_deduction_five_objects", "logical_deduction_seven_objects",
    "logical_deduction_three_objects", "multistep_arithmetic_two", "navigate",
    "object_counting", "penguins_in_a_table", "reasoning_about_colored_objects",
    "temporal_sequences", "tracking_shuffled_objects_five_objects",
    "tracking_shuffled_objects_seven_objects", "tracking_shuffled_objects_three_objects",
    "web_of_lies",
]
BBH_PER_TASK = 17

# self-instruct seed tasks (175, human-written), labelled one by one; the rest are chat.
SEED_CODE = {28, 31, 37, 41, 50, 69, 72, 138, 139, 140, 141, 158}
# Plans under stated constraints (a school's weekly menu 24, a 7-day trip 40, a syllabus 145) are
# reason, as the README's planning rule says.
SEED_REASON = {22, 24, 25, 35, 40, 45, 58, 83, 109, 110, 136, 144, 145, 155, 164}
# dropped: ambiguous between tasks (verbal analogies 1 and 15, "create a fun math question" 21,
# word at position 53, html mask 61, chess puzzle 106, sorting a list 132, longest sentence 170,
# explaining ML to lay people 19, budgets 91 and 121) or asking for stereotypes, toxic text or
# personal data (67, 77, 113, 115, 120, 149, 151)
SEED_DROP = {1, 15, 19, 21, 53, 61, 91, 106, 121, 132, 170, 67, 77, 113, 115, 120, 149, 151}

# NQ-open questions that look like programming or computation are dropped (chat only).
NQ_DROP = re.compile(r"\b(python|java|javascript|sql|html|css|code|coding|program|programming|"
                     r"function|algorithm|compiler|software|database|linux|unix|excel|"
                     r"calculate|equation|formula|probability|derivative|integral|theorem|"
                     r"sum of|square root|percent(age)?)\b", re.I)


def show(mirrors, repo, path):
    return subprocess.run(["git", "--git-dir", str(Path(mirrors) / repo / "repo"), "show",
                           "HEAD:" + path], check=True, capture_output=True).stdout


def used_ids(name):
    return {json.loads(l)["id"] for l in (SOURCES / name).read_text(encoding="utf-8").splitlines()}


def write(out, name, rows):
    with open(Path(out) / name, "w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    print(name, len(rows))


def main(mirrors, out):
    # GSM8K train split (the split source used the test split): 200 questions, seed 41.
    gsm = [json.loads(l) for l in show(mirrors, "openai+grade-school-math",
                                       "grade_school_math/data/train.jsonl").decode().splitlines()]
    idx = sorted(random.Random(41).sample(range(len(gsm)), 200))
    write(out, "gsm8k_train.jsonl", [{"id": "gsm8k-train/%d" % i, "prompt": gsm[i]["question"],
                                      "task": "reason"} for i in idx])

    # BIG-Bench Hard: 17 per reason task, seed 42, skipping inputs already in bbh.jsonl.
    used = used_ids("bbh.jsonl")
    rng = random.Random(42)
    rows = []
    for task in BBH_TASKS:
        ex = json.loads(show(mirrors, "suzgunmirac+BIG-Bench-Hard", "bbh/%s.json" % task))["examples"]
        free = [i for i in range(len(ex)) if "bbh/%s/%d" % (task, i) not in used]
        for i in sorted(rng.sample(free, BBH_PER_TASK)):
            rows.append({"id": "bbh/%s/%d" % (task, i), "prompt": ex[i]["input"], "task": "reason"})
    write(out, "bbh_extra.jsonl", rows)

    # MBPP: 360 of the problems not in mbpp.jsonl, seed 43; `text` only.  Read from an
    # unmodified copy (muitiiifruckt/ASE, mbpp.jsonl; see README.md).
    used = used_ids("mbpp.jsonl")
    mb = [json.loads(l) for l in show(mirrors, "muitiiifruckt+ASE", "mbpp.jsonl").decode().splitlines() if l.strip()]
    free = [r for r in mb if "mbpp/%d" % r["task_id"] not in used]
    pick = sorted(random.Random(43).sample(free, 360), key=lambda r: r["task_id"])
    write(out, "mbpp_extra.jsonl", [{"id": "mbpp/%d" % r["task_id"], "prompt": r["text"],
                                     "task": "code"} for r in pick])

    # HumanEval: all 124 problems not in humaneval.jsonl; `prompt` stripped of newlines.
    used = used_ids("humaneval.jsonl")
    he = [json.loads(l) for l in gzip.decompress(show(mirrors, "openai+human-eval",
                                                      "data/HumanEval.jsonl.gz")).decode().splitlines()]
    write(out, "humaneval_extra.jsonl", [{"id": r["task_id"], "prompt": r["prompt"].strip("\n"),
                                          "task": "code"} for r in he if r["task_id"] not in used])

    # self-instruct seed tasks: instruction, plus "\n\n" + the first instance's input if any;
    # hand-labelled (sets above); rows over MAX_CHARS dropped.
    rows = []
    for l in show(mirrors, "yizhongw+self-instruct", "data/seed_tasks.jsonl").decode().splitlines():
        d = json.loads(l)
        n = int(d["id"].rsplit("_", 1)[1])
        if n in SEED_DROP:
            continue
        inp = d["instances"][0]["input"].strip()
        prompt = d["instruction"].strip() + ("\n\n" + inp if inp else "")
        if len(prompt) > MAX_CHARS:
            continue
        task = "code" if n in SEED_CODE else "reason" if n in SEED_REASON else "chat"
        rows.append({"id": d["id"], "prompt": prompt, "task": task})
    write(out, "self_instruct_seed.jsonl", rows)

    # NQ-open dev questions: 380 drawn with seed 44 after dropping code/maths-looking ones; chat.
    nq = [json.loads(l)["question"] for l in show(mirrors, "google-research-datasets+natural-questions",
                                                  "nq_open/NQ-open.dev.jsonl").decode().splitlines()]
    free = [i for i, q in enumerate(nq) if not NQ_DROP.search(q)]
    idx = sorted(random.Random(44).sample(free, 380))
    write(out, "nq_open.jsonl", [{"id": "nq-open-dev/%d" % i, "prompt": nq[i], "task": "chat"} for i in idx])


if __name__ == "__main__":
    main(*sys.argv[1:3])
