#!/usr/bin/env python3
"""Write the tiny GGUF models the tests use (see zeta_local.tiny_models).

    python scripts/make_test_models.py OUT_DIR
"""

from __future__ import annotations

import argparse
import sys

from zeta_local.tiny_models import write_standard_set


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", help="folder to write the models into")
    args = parser.parse_args(argv)
    for role, path in write_standard_set(args.out_dir).items():
        sys.stdout.write(f"{role:16} {path} ({path.stat().st_size:,} bytes)\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
