#!/usr/bin/env python3
"""Accuracy, confusion, calibration, misclassified prompts and decision latency of zeta_local.classifier.

Run from the repository root:  python scripts/classifier_accuracy.py [--reps 50]

Reports the tuning part (tuning.jsonl: what the rules, weights and calibration were fitted on)
and the held-out part (heldout_v10.jsonl since 2026-11-27, when the spent v1 to v9 held-out sets
were folded into tuning; never used to fit anything). Its misses are not listed unless asked for
(--list-heldout-misses): a person who reads them and then changes a rule has spent the set.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # this checkout's zeta_local, whatever is installed

from zeta_local import classifier_eval as ce  # noqa: E402

DATA = ce.LABELLED_DIR
PARTS = {"tuning": ce.TUNING_FILE, "heldout": ce.HELDOUT_FILE}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=50, help="timed classifications per prompt (default 50)")
    parser.add_argument("--data", type=Path, default=DATA, help=f"folder of {ce.TUNING_FILE} and {ce.HELDOUT_FILE} (default {DATA})")
    parser.add_argument("--list-heldout-misses", action="store_true",
                        help="list the held-out prompts it gets wrong (read them, never tune on them)")
    args = parser.parse_args()

    parts = {name: ce.load_rows(args.data / file) for name, file in PARTS.items() if (args.data / file).exists()}
    if not parts:
        print(f"no {ce.TUNING_FILE} or {ce.HELDOUT_FILE} in {args.data}", file=sys.stderr)
        return 2
    for name, rows in parts.items():
        listed = name != "heldout" or args.list_heldout_misses
        print("\n".join(ce.report_lines(name, ce.evaluate(rows), list_wrong=listed)))
        print()

    rows = [row for part in parts.values() for row in part]
    lat = ce.latency([r["prompt"] for r in rows], args.reps)
    print(f"latency over {len(rows)} prompts x {args.reps}: p50 {lat['p50_us']:.0f} us, "
          f"p99 {lat['p99_us']:.0f} us, max {lat['max_us']:.0f} us")
    for task, prompt in ce.long_prompts(rows).items():
        lat = ce.latency([prompt], max(args.reps, 200))
        stage = ce.classify(prompt).stage
        print(f"  {len(prompt)}-character {task} prompt ({stage}): p50 {lat['p50_us']:.0f} us, "
              f"p99 {lat['p99_us']:.0f} us")
    return 0


if __name__ == "__main__":
    sys.exit(main())
