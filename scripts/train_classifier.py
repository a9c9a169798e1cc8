#!/usr/bin/env python3
"""Train the classifier's learned stage and calibration on the tuning prompts; write the weights file.

Run from the repository root:  python scripts/train_classifier.py [--tuning FILE] [--out FILE]
                                 [--lambdas 1e-7,1e-6] [--plain]

Only the tuning part is read: the held-out part is for scripts/classifier_accuracy.py and the
tests, never for choosing weights, the gate or the calibration. Deterministic (fixed seed).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # this checkout's zeta_local, whatever is installed

from zeta_local import classifier_training  # noqa: E402
from zeta_local import learned_classifier  # noqa: E402

TUNING = ROOT / "tests" / "data" / "classifier" / "tuning.jsonl"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tuning", type=Path, default=TUNING, help=f"labelled prompts (default {TUNING})")
    parser.add_argument("--out", type=Path, default=learned_classifier.WEIGHTS_PATH,
                        help="weights file to write (default: the package's)")
    parser.add_argument("--seed", type=int, default=0, help="fold assignment seed (default 0)")
    parser.add_argument("--lambdas", type=lambda s: tuple(float(x) for x in s.split(",")),
                        default=classifier_training.LAMBDAS,
                        help="L2 strengths to choose among out of fold, comma-separated (default: %(default)s)")
    parser.add_argument("--plain", action="store_true",
                        help="fit without per-task loss weights instead of choosing among CLASS_WEIGHTS "
                             "(a quarter of the time, when earlier runs chose none)")
    args = parser.parse_args()

    raw = args.tuning.read_bytes()
    rows = [json.loads(line) for line in raw.decode("utf-8").splitlines() if line.strip()]
    weightings = ((1.0, 1.0, 1.0),) if args.plain else classifier_training.CLASS_WEIGHTS
    trained = classifier_training.train([r["prompt"] for r in rows], [r["task"] for r in rows],
                                       [r["source"] for r in rows], seed=args.seed, lambdas=args.lambdas,
                                       class_weights=weightings)
    print("\n".join(trained.report))
    meta = (f"tuning={args.tuning.name} rows={len(rows)} sha256={hashlib.sha256(raw).hexdigest()[:16]} "
            f"seed={args.seed} l2={trained.lam:g} class_weights="
            + ("none" if trained.class_weight is None else "/".join(f"{c:g}" for c in trained.class_weight)))
    classifier_training.write(trained, args.out, meta)
    print(f"wrote {args.out} ({args.out.stat().st_size / 1024:.0f} KiB): {meta}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
