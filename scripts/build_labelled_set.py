"""Assemble the classifier's labelled set from the extracts in tests/data/classifier/sources/.

Writes tests/data/classifier/tuning.jsonl, tests/data/classifier/heldout_v6.jsonl (the held-out
part: every row of the HELDOUT sources), and zeta_local/data/routing_examples.jsonl: a seeded
sample of the tuning part that the package ships for its semantic routing stage, without the
rows whose licence asks more than attribution (NOT_PACKAGED).

* Every extract is a jsonl file with at least "prompt" and "task"; the file name maps to a
  source id (SOURCES below).  Extra fields (id, kind, dolly_category) are only provenance.
* Prompts are deduplicated across all sources on normalised text (Unicode NFKC, casefolded,
  whitespace collapsed); the first occurrence in SOURCES order wins, and two copies with
  different labels stop the build.
* The v1 split is done once, with a fixed seed: within every (task, source) group the rows are
  ordered by the SHA-256 of their normalised text, shuffled with random.Random(SEED), and the
  first round(60 %) go to tuning, the rest to v1 held-out.  v1 held-out is spent (it steered
  development) and, since 2026-11-26, folded into tuning.jsonl too; the split is still
  computed, so the printout says which rows were v1 held-out.
* Training-only sources (TRAINING_ONLY) are not split: all their rows go to tuning.  They are
  listed last in SOURCES and take no part in the split (no group, no draw from the generator),
  so adding or editing them never changes which of the other rows are held out.
* Held-out sources (HELDOUT, today v10's) are read after all the others and are not split: all
  their rows go to heldout_v10.jsonl.  They must share no row with any other source, nor with
  each other: a duplicate stops the build (it is never silently dropped).  A spent held-out
  set's sources become training-only (v2 and v3 since 2026-11-26, v4 to v9 since 2026-11-27),
  and its file must not linger (SPENT: --check fails while one exists).
* Output is sorted by (source, task, sha) and written with sorted keys, so rerunning gives
  byte-identical files.  `--check` verifies the committed files instead of writing them.

The held-out file (heldout_v10.jsonl) must never be used for tuning: not for rules, training or
calibration.
"""
import argparse
import collections
import hashlib
import json
import random
import sys
import unicodedata
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # this checkout's zeta_local, whatever is installed
from zeta_local import classifier_eval  # noqa: E402

DATA = classifier_eval.LABELLED_DIR
SEED = 20240611
TUNING_SHARE = 0.6
TASKS = ("code", "reason", "chat")
PACKAGED = ROOT / "zeta_local" / "data" / "routing_examples.jsonl"
# kept out of the MIT-licensed package: share-alike (Dolly, Natural Questions) or a licence that
# asks for its own text to travel with copies (self-instruct, Apache-2.0)
NOT_PACKAGED = {"dolly-15k", "nq-open", "self-instruct-seed"}
# The semantic stage embeds every packaged example once per embedding model, which takes
# minutes on a CPU: the package ships a seeded sample, this many per task.
PACKAGED_PER_TASK = 250

# file name -> source id, in priority order for deduplication
SOURCES = [
    ("zeta_handwritten_v1.jsonl", "zeta-handwritten-v1"),
    ("zeta_handwritten_v2.jsonl", "zeta-handwritten-v2"),
    ("gsm8k.jsonl", "gsm8k"),
    ("bbh.jsonl", "bbh"),
    ("mbpp.jsonl", "mbpp"),
    ("humaneval.jsonl", "humaneval"),
    ("dolly.jsonl", "dolly-15k"),
    # training-only sources last: a duplicate of an earlier row is dropped here, never there
    ("zeta_handwritten_v3.jsonl", "zeta-handwritten-v3"),
    ("zeta_handwritten_v4a.jsonl", "zeta-handwritten-v4a"),
    ("zeta_handwritten_v4b.jsonl", "zeta-handwritten-v4b"),
    ("gsm8k_train.jsonl", "gsm8k-train"),
    ("bbh_extra.jsonl", "bbh-extra"),
    ("mbpp_extra.jsonl", "mbpp-extra"),
    ("humaneval_extra.jsonl", "humaneval-extra"),
    ("self_instruct_seed.jsonl", "self-instruct-seed"),
    ("nq_open.jsonl", "nq-open"),
    ("zeta_handwritten_v5a.jsonl", "zeta-handwritten-v5a"),
    ("zeta_handwritten_v5b.jsonl", "zeta-handwritten-v5b"),
    ("zeta_handwritten_v5c.jsonl", "zeta-handwritten-v5c"),
    ("zeta_handwritten_v6a.jsonl", "zeta-handwritten-v6a"),
    ("zeta_handwritten_v6b.jsonl", "zeta-handwritten-v6b"),
    ("zeta_handwritten_v6c.jsonl", "zeta-handwritten-v6c"),
    # held-out v2, spent (measured twice) and folded into tuning on 2026-11-26
    ("heldout2_handwritten.jsonl", "zeta-heldout2-handwritten"),
    ("heldout2_gsm8k.jsonl", "gsm8k-heldout2"),
    ("heldout2_bbh.jsonl", "bbh-heldout2"),
    ("heldout2_mbpp.jsonl", "mbpp-heldout2"),
    ("heldout2_dolly.jsonl", "dolly-15k-heldout2"),
    ("zeta_handwritten_v7a.jsonl", "zeta-handwritten-v7a"),
    ("zeta_handwritten_v7b.jsonl", "zeta-handwritten-v7b"),
    ("zeta_handwritten_v7c.jsonl", "zeta-handwritten-v7c"),
    ("zeta_handwritten_v8a.jsonl", "zeta-handwritten-v8a"),
    ("zeta_handwritten_v8b.jsonl", "zeta-handwritten-v8b"),
    ("zeta_handwritten_v8c.jsonl", "zeta-handwritten-v8c"),
    ("heldout3_code.jsonl", "zeta-heldout3-code"),
    ("heldout3_reason.jsonl", "zeta-heldout3-reason"),
    ("heldout3_chat.jsonl", "zeta-heldout3-chat"),
    ("heldout3_gsm8k.jsonl", "gsm8k-heldout3"),
    ("heldout3_bbh.jsonl", "bbh-heldout3"),
    ("heldout3_mbpp.jsonl", "mbpp-heldout3"),
    ("heldout3_dolly.jsonl", "dolly-15k-heldout3"),
    ("zeta_handwritten_v9a.jsonl", "zeta-handwritten-v9a"),
    ("zeta_handwritten_v9b.jsonl", "zeta-handwritten-v9b"),
    ("zeta_handwritten_v9c.jsonl", "zeta-handwritten-v9c"),
    ("zeta_handwritten_v9d.jsonl", "zeta-handwritten-v9d"),
    ("zeta_handwritten_v9e.jsonl", "zeta-handwritten-v9e"),
    ("zeta_handwritten_v9f.jsonl", "zeta-handwritten-v9f"),
    ("zeta_handwritten_v9g.jsonl", "zeta-handwritten-v9g"),
    # held-out v4, spent (measured twice) and folded into tuning on 2026-11-27
    ("heldout4_code.jsonl", "zeta-heldout4-code"),
    ("heldout4_reason.jsonl", "zeta-heldout4-reason"),
    ("heldout4_chat.jsonl", "zeta-heldout4-chat"),
    ("heldout4_gsm8k.jsonl", "gsm8k-heldout4"),
    ("heldout4_bbh.jsonl", "bbh-heldout4"),
    ("heldout4_mbpp.jsonl", "mbpp-heldout4"),
    ("heldout4_dolly.jsonl", "dolly-15k-heldout4"),
    ("zeta_handwritten_v10a.jsonl", "zeta-handwritten-v10a"),
    ("zeta_handwritten_v10b.jsonl", "zeta-handwritten-v10b"),
    ("zeta_handwritten_v10c.jsonl", "zeta-handwritten-v10c"),
    ("zeta_handwritten_v10d.jsonl", "zeta-handwritten-v10d"),
    ("zeta_handwritten_v10e.jsonl", "zeta-handwritten-v10e"),
    # held-out v5, spent (measured twice) and folded into tuning on 2026-11-27
    ("heldout5_code.jsonl", "zeta-heldout5-code"),
    ("heldout5_reason.jsonl", "zeta-heldout5-reason"),
    ("heldout5_chat.jsonl", "zeta-heldout5-chat"),
    ("heldout5_gsm8k.jsonl", "gsm8k-heldout5"),
    ("heldout5_bbh.jsonl", "bbh-heldout5"),
    ("heldout5_mbpp.jsonl", "mbpp-heldout5"),
    ("heldout5_dolly.jsonl", "dolly-15k-heldout5"),
    # written for held-out v6's second look (the data README, v6 step 7)
    ("zeta_handwritten_v10f.jsonl", "zeta-handwritten-v10f"),
    ("zeta_handwritten_v10g.jsonl", "zeta-handwritten-v10g"),
    ("zeta_handwritten_v10h.jsonl", "zeta-handwritten-v10h"),
    ("zeta_handwritten_v10i.jsonl", "zeta-handwritten-v10i"),
    # held-out v6, spent (measured twice) and folded into tuning on 2026-11-27
    ("heldout6_code.jsonl", "zeta-heldout6-code"),
    ("heldout6_reason.jsonl", "zeta-heldout6-reason"),
    ("heldout6_chat.jsonl", "zeta-heldout6-chat"),
    ("heldout6_gsm8k.jsonl", "gsm8k-heldout6"),
    ("heldout6_bbh.jsonl", "bbh-heldout6"),
    ("heldout6_mbpp.jsonl", "mbpp-heldout6"),
    ("heldout6_dolly.jsonl", "dolly-15k-heldout6"),
    # written for held-out v7's first look (the data README, v7 step 1)
    ("zeta_handwritten_v11a.jsonl", "zeta-handwritten-v11a"),
    ("zeta_handwritten_v11b.jsonl", "zeta-handwritten-v11b"),
    ("zeta_handwritten_v11c.jsonl", "zeta-handwritten-v11c"),
    ("zeta_handwritten_v11d.jsonl", "zeta-handwritten-v11d"),
    # written for held-out v7's second look (the data README, v7 step 4)
    ("zeta_handwritten_v11e.jsonl", "zeta-handwritten-v11e"),
    ("zeta_handwritten_v11f.jsonl", "zeta-handwritten-v11f"),
    # held-out v7, spent (measured twice) and folded into tuning on 2026-11-27
    ("heldout7_code.jsonl", "zeta-heldout7-code"),
    ("heldout7_reason.jsonl", "zeta-heldout7-reason"),
    ("heldout7_chat.jsonl", "zeta-heldout7-chat"),
    ("heldout7_functions.jsonl", "zeta-heldout7-functions"),
    ("heldout7_gsm8k.jsonl", "gsm8k-heldout7"),
    ("heldout7_bbh.jsonl", "bbh-heldout7"),
    ("heldout7_dolly.jsonl", "dolly-15k-heldout7"),
    # written for held-out v8's first look (the data README, v8 step 1)
    ("zeta_handwritten_v12a.jsonl", "zeta-handwritten-v12a"),
    ("zeta_handwritten_v12b.jsonl", "zeta-handwritten-v12b"),
    ("zeta_handwritten_v12c.jsonl", "zeta-handwritten-v12c"),
    # written for held-out v8's second look (the data README, v8 step 4)
    ("zeta_handwritten_v12d.jsonl", "zeta-handwritten-v12d"),
    ("zeta_handwritten_v12e.jsonl", "zeta-handwritten-v12e"),
    ("zeta_handwritten_v12f.jsonl", "zeta-handwritten-v12f"),
    # held-out v8, spent (measured twice) and folded into tuning on 2026-11-27
    ("heldout8_code.jsonl", "zeta-heldout8-code"),
    ("heldout8_reason.jsonl", "zeta-heldout8-reason"),
    ("heldout8_chat.jsonl", "zeta-heldout8-chat"),
    ("heldout8_functions.jsonl", "zeta-heldout8-functions"),
    ("heldout8_gsm8k.jsonl", "gsm8k-heldout8"),
    ("heldout8_bbh.jsonl", "bbh-heldout8"),
    ("heldout8_dolly.jsonl", "dolly-15k-heldout8"),
    # held-out v9, spent (measured twice) and folded into tuning on 2026-11-27
    ("heldout9_code.jsonl", "zeta-heldout9-code"),
    ("heldout9_reason.jsonl", "zeta-heldout9-reason"),
    ("heldout9_chat.jsonl", "zeta-heldout9-chat"),
    ("heldout9_functions.jsonl", "zeta-heldout9-functions"),
    ("heldout9_gsm8k.jsonl", "gsm8k-heldout9"),
    ("heldout9_bbh.jsonl", "bbh-heldout9"),
    ("heldout9_dolly.jsonl", "dolly-15k-heldout9"),
]
# Spent held-out files: v1 (the split part's 40 %, measured about a dozen times during
# development), v2 to v9 (measured twice each) steered development, so their rows are in
# tuning.jsonl now and the old files must not linger: --check fails while one exists.
SPENT = [DATA / "heldout.jsonl"] + [DATA / ("heldout_v%d.jsonl" % v) for v in (2, 3, 4, 5, 6, 7, 8, 9)]
HELDOUT_FILE = DATA / classifier_eval.HELDOUT_FILE  # named once, where the evaluation reads it
# Held-out v10: written apart from everything above, frozen before any classifier ran on it (see
# the data README); every row goes to heldout_v10.jsonl, none to tuning. MBPP ran out, so
# hand-written short function tasks stand in for its part.
HELDOUT_SOURCES = [
    ("heldout10_code.jsonl", "zeta-heldout10-code"),
    ("heldout10_reason.jsonl", "zeta-heldout10-reason"),
    ("heldout10_chat.jsonl", "zeta-heldout10-chat"),
    ("heldout10_functions.jsonl", "zeta-heldout10-functions"),
    ("heldout10_gsm8k.jsonl", "gsm8k-heldout10"),
    ("heldout10_bbh.jsonl", "bbh-heldout10"),
    ("heldout10_dolly.jsonl", "dolly-15k-heldout10"),
]
HELDOUT = {source for _, source in HELDOUT_SOURCES}
# Sources whose rows all go to tuning, leaving the held-out split as it was: every source after
# dolly-15k, the last of the split part (new sources are appended to SOURCES).
TRAINING_ONLY = {source for _, source in SOURCES[[s for _, s in SOURCES].index("dolly-15k") + 1:]}


def normalise(text):
    text = unicodedata.normalize("NFKC", text).casefold()
    return " ".join(text.split())


def load():
    seen = {}
    rows = []
    dropped = collections.Counter()
    for name, source in SOURCES + HELDOUT_SOURCES:
        path = DATA / "sources" / name
        for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            rec = json.loads(line)
            prompt, task = rec["prompt"], rec["task"]
            if task not in TASKS or not prompt.strip():
                sys.exit("%s:%d: bad row" % (name, lineno))
            key = normalise(prompt)
            if key in seen:
                if source in HELDOUT:
                    sys.exit("%s:%d: held-out row duplicates an earlier row" % (name, lineno))
                if seen[key] != task:
                    sys.exit("%s:%d: duplicate with a different label" % (name, lineno))
                dropped[source] += 1
                continue
            seen[key] = task
            rows.append({"prompt": prompt, "task": task, "source": source,
                         "_sha": hashlib.sha256(key.encode("utf-8")).hexdigest()})
    return rows, dropped


def split(rows):
    groups = collections.defaultdict(list)
    tuning, heldout = [], []
    for r in rows:
        if r["source"] in HELDOUT:
            continue
        if r["source"] in TRAINING_ONLY:
            tuning.append(r)
        else:
            groups[(r["task"], r["source"])].append(r)
    rng = random.Random(SEED)
    for key in sorted(groups):
        group = sorted(groups[key], key=lambda r: r["_sha"])
        rng.shuffle(group)
        n = round(len(group) * TUNING_SHARE)
        tuning += group[:n]
        heldout += group[n:]
    return tuning, heldout


def packaged_sample(tuning):
    """PACKAGED_PER_TASK rows of each task, drawn with SEED from the packageable tuning rows."""
    rng = random.Random(SEED)
    sample = []
    for task in TASKS:
        rows = sorted((r for r in tuning if r["task"] == task and r["source"] not in NOT_PACKAGED),
                      key=lambda r: r["_sha"])
        sample += rng.sample(rows, min(PACKAGED_PER_TASK, len(rows)))
    return sample


def render(rows):
    rows = sorted(rows, key=lambda r: (r["source"], r["task"], r["_sha"]))
    return "".join(json.dumps({k: r[k] for k in ("prompt", "task", "source")},
                              ensure_ascii=False, sort_keys=True) + "\n" for r in rows)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="verify the files instead of writing them")
    args = ap.parse_args()
    rows, dropped = load()
    split_tuning, heldout = split(rows)
    tuning = split_tuning + heldout
    held_out = [r for r in rows if r["source"] in HELDOUT]
    outputs = {DATA / "tuning.jsonl": render(tuning), HELDOUT_FILE: render(held_out),
               PACKAGED: render(packaged_sample(tuning))}
    if args.check:
        bad = [str(p.relative_to(ROOT)) for p, text in outputs.items()
               if not p.exists() or p.read_text(encoding="utf-8") != text]
        bad += [str(p.relative_to(ROOT)) + " (spent, folded into tuning: remove it)" for p in SPENT if p.exists()]
        if bad:
            sys.exit("out of date: " + ", ".join(bad))
    else:
        for p, text in outputs.items():
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_text(text, encoding="utf-8")
        for p in SPENT:
            p.unlink(missing_ok=True)
    counts = collections.Counter((r["task"], r["source"], s) for s, part in
                                 (("tuning", split_tuning), ("heldout", heldout), ("held", held_out)) for r in part)
    print("rows: %d (tuning %d, of which v1 held-out %d; %s %d); duplicates dropped: %s"
          % (len(rows), len(tuning), len(heldout), HELDOUT_FILE.name, len(held_out), dict(sorted(dropped.items())) or "none"))
    for task in TASKS:
        total = sum(v for (t, _, _), v in counts.items() if t == task)
        print("%-6s %4d (%.1f %%)" % (task, total, 100.0 * total / len(rows)))
        for _, source in SOURCES + HELDOUT_SOURCES:
            t = counts[(task, source, "tuning")]
            h = counts[(task, source, "heldout")]
            v = counts[(task, source, "held")]
            if t or h:
                print("    %-26s %4d  tuning %4d  (v1 split: tuning %4d, held-out %4d)" % (source, t + h, t + h, t, h))
            if v:
                print("    %-26s %4d  %s %4d" % (source, v, HELDOUT_FILE.name, v))


if __name__ == "__main__":
    main()
