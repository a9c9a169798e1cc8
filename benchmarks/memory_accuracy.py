#!/usr/bin/env python3
"""Predicted vs measured memory for every model whose file is here (from models.toml), plus a
generated tiny model, at two contexts, for generation and embedding contexts, without and with
flash attention: the estimate from the GGUF header against what llama.cpp reports allocating,
and the process's resident growth after evaluating a full micro-batch. (`zeta-local bench`
reports one context of each.)

    python benchmarks/memory_accuracy.py [--config PATH] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

MiB = 2**20


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    from zeta_local.bench import _tiny_models, measure_allocation
    from zeta_local.config import load_config
    from zeta_local.errors import ZetaError
    from zeta_local.gguf_info import read_gguf_info
    from zeta_local.memory import context_length, embedding_context, estimate_memory
    from zeta_local.sources import find_model_file

    models = {"tiny-test (generated)": _tiny_models(Path(tempfile.mkdtemp()))["a"]}
    for name, spec in load_config(args.config).models.items():
        try:
            models[name] = find_model_file(spec)
        except ZetaError as exc:
            print(f"{name}: skipped ({exc})", file=sys.stderr)
    results = []
    for name, path in models.items():
        info = read_gguf_info(path)
        for n_ctx in (1024, 4096):
            n_ctx = context_length(n_ctx, info)
            for embedding in (False, True):
                for flash_attn in (False, True):
                    measured, grown = measure_allocation(path, n_ctx, embedding, flash_attn)
                    # An embedding context is sized for the longest text it embeds.
                    predicted = estimate_memory(info, n_ctx=embedding_context(n_ctx) if embedding else n_ctx,
                                                embedding=embedding, flash_attn=flash_attn).total
                    row = {"model": name, "n_ctx": n_ctx, "embedding": embedding, "flash_attn": flash_attn,
                           "predicted_mib": round(predicted / MiB, 1), "measured_mib": round(measured / MiB, 1),
                           "resident_growth_mib": round(grown / MiB, 1),
                           "error_percent": round((predicted - measured) / measured * 100, 1)}
                    results.append(row)
                    print(json.dumps(row))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
