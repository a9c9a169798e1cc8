#!/usr/bin/env python3
"""Predicted vs measured memory for every model whose file is here (from models.toml), plus
the tiny test models: the estimate from the GGUF header against what llama.cpp reports
allocating, and the process's resident growth after evaluating a full micro-batch.

    python benchmarks/memory_accuracy.py [--config PATH] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
from pathlib import Path

MiB = 2**20


def measure(path: Path, n_ctx: int, embedding: bool) -> dict[str, float]:
    import psutil

    from zeta_local.backend import LlamaCppBackend
    from zeta_local.config import ModelSpec
    from zeta_local.errors import ContextOverflow
    from zeta_local.gguf_info import read_gguf_info
    from zeta_local.memory import allocated_from_log, estimate_memory
    from zeta_local.sampling import SamplingParams

    lines: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: lines.append(record.getMessage())  # type: ignore[method-assign]
    logger = logging.getLogger("zeta_local.llama_cpp")
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    info = read_gguf_info(path)
    n_ctx = min(n_ctx, info.context_length or n_ctx)
    rss_before = psutil.Process().memory_info().rss
    model = LlamaCppBackend().load(ModelSpec(name="m", capabilities=frozenset(), n_ctx=n_ctx), path,
                                   info, embedding=embedding, n_threads=2)
    try:
        # About one full micro-batch of prompt: shorter for a byte-level vocabulary.
        words = 600
        while True:
            try:
                if embedding:
                    model.embed(["word " * words])
                else:
                    params = SamplingParams(max_tokens=1, temperature=0.0, top_p=1.0, top_k=1,
                                            repeat_penalty=1.0, seed=1)
                    list(model.generate("word " * words, params))
                break
            except ContextOverflow:
                words //= 2
        grown = psutil.Process().memory_info().rss - rss_before
    finally:
        model.close()
        logger.removeHandler(handler)
    measured = allocated_from_log(lines)
    predicted = estimate_memory(info, n_ctx=n_ctx, embedding=embedding).total
    return {"n_ctx": n_ctx, "embedding": embedding, "predicted_mib": round(predicted / MiB, 1),
            "measured_mib": round(measured / MiB, 1), "resident_growth_mib": round(grown / MiB, 1),
            "error_percent": round((predicted - measured) / measured * 100, 1)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    from zeta_local.config import load_config
    from zeta_local.errors import ZetaError
    from zeta_local.sources import find_model_file

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))
    from make_test_models import write_tiny_model

    models = {"tiny-test (generated)": write_tiny_model(Path(tempfile.mkdtemp()) / "tiny.gguf")}
    for name, spec in load_config(args.config).models.items():
        try:
            models[name] = find_model_file(spec)
        except ZetaError as exc:
            print(f"{name}: skipped ({exc})", file=sys.stderr)
    results = []
    for name, path in models.items():
        for n_ctx in (1024, 4096):
            for embedding in (False, True):
                row = {"model": name} | measure(path, n_ctx, embedding)
                results.append(row)
                print(json.dumps(row))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
