"""`zeta-local bench`: where the router stands, measured side by side with its baselines.

Every figure is a median (with spread) over repeated runs after a warm-up, and every
comparison a ratio of A and B measured interleaved in the same run, because the machines this
runs on are shared and noisy. Sections:

    overhead     tokens/s through the router / through llama-cpp-python directly, same model,
                 prompt and sampling; and the latency a short request pays for the router
    failover     a stalled primary: its last token to the fallback's first, minus the stall
                 budget; beside the total-timeout way (wait out the request timeout, then retry)
    cancel       a trip during a long prompt evaluation until the worker is ready again
    memory       predicted vs what llama.cpp allocates vs resident growth, per model
    concurrency  K client threads, mixed tasks, random injected faults: throughput, latency
                 percentiles, and requests lost (neither a result nor a typed error)
    server       the OpenAI-compatible server against the in-process path (bench_server.py)
    roofline     decoding tokens/s against memory bandwidth / bytes read per token

It runs on whatever is here: the generation model is the first of models.toml whose file is
present (the embedded default on a fresh install); router-behaviour sections use generated
tiny models, so they measure the router rather than a model.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable

MiB = 2**20
LONG_PROMPT = "The quick brown fox jumps over the lazy dog. " * 200  # about 2,000 tokens
STORY_PROMPT = "The history of the Roman Empire is a long story. It began"
GREEDY = dict(temperature=0.0, top_k=40, top_p=0.95, repeat_penalty=1.1)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))]


def spread(values: list[float], scale: float = 1.0, digits: int = 1) -> dict[str, float]:
    v = [x * scale for x in values]
    return {"p50": round(statistics.median(v), digits), "p95": round(percentile(v, 0.95), digits),
            "min": round(min(v), digits), "max": round(max(v), digits), "runs": len(v)}


def run_bench(config_path: str | None, *, quick: bool, progress: Callable[[str], None]) -> dict[str, Any]:
    from zeta_local.config import load_config
    from zeta_local.errors import ZetaError
    from zeta_local.sources import find_model_file

    config = load_config(config_path)
    work = Path(tempfile.mkdtemp(prefix="zeta-bench-"))
    tiny = _tiny_models(work)
    model_path, model_name = None, "tiny-test"
    for name, spec in config.models.items():
        if "generate" in spec.capabilities:
            try:
                model_path, model_name = find_model_file(spec), name
                break
            except ZetaError:
                continue
    model_path = model_path or tiny["a"]
    runs = 3 if quick else 7
    sections: list[tuple[str, Callable[[], Any]]] = [
        ("machine", _machine),
        ("overhead", lambda: _overhead(model_path, tiny, work, runs, 48 if quick else 128)),
        ("failover", lambda: _failover(tiny, work, 5 if quick else 15)),
        ("cancel", lambda: _cancel(model_path, work, runs)),
        ("memory", lambda: _memory(model_path, model_name, tiny)),
        ("concurrency", lambda: _concurrency(tiny, work, 8 if quick else 16, 4 if quick else 8)),
        ("server", lambda: _server(model_path, tiny, work, runs, 48 if quick else 128)),
        ("roofline", None),  # uses overhead's decode speed
    ]
    results: dict[str, Any] = {"quick": quick, "model": model_name, "model_path": str(model_path)}
    for index, (name, measure) in enumerate(sections, 1):
        progress(f"[{index}/{len(sections)}] {name}")
        started = time.monotonic()
        results[name] = _roofline(model_path, results["overhead"]) if measure is None else measure()
        progress(f"      {name} done in {time.monotonic() - started:.1f} s")
    return results


def _tiny_models(work: Path) -> dict[str, Path]:
    from zeta_local.tiny_models import write_tiny_model

    return {k: write_tiny_model(work / f"tiny-{k}.gguf", seed=i) for i, k in enumerate("abc", 1)}


def _config(work: Path, name: str, models: dict[str, Path], routes: dict[str, list[str]],
            router: dict[str, Any] | None = None, n_ctx: int = 2048) -> Path:
    lines = ["[router]"] + [f"{k} = {json.dumps(v)}" for k, v in (router or {}).items()]
    for model, path in models.items():
        lines += [f'[models."{model}"]', f"path = {json.dumps(str(path))}", f"n_ctx = {n_ctx}",
                  'capabilities = ["generate", "embed"]']
    lines.append("[routes]")
    first = next(iter(models))
    for task in ("code", "reason", "chat", "embed"):
        lines.append(f"{task} = {json.dumps(routes.get(task, [first]))}")
    path = work / f"{name}.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def _machine() -> dict[str, Any]:
    import llama_cpp
    import numpy
    import psutil

    from zeta_local import __version__
    from zeta_local.admission import gpu_offload_supported

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "physical_cores": psutil.cpu_count(logical=False),
            "ram_gib": round(psutil.virtual_memory().total / 2**30, 1),
            "gpu_offload": gpu_offload_supported(),
            "llama_cpp_system_info": llama_cpp.llama_print_system_info().decode("utf-8", "replace").strip(),
            "versions": {"zeta_local": __version__, "llama_cpp_python": llama_cpp.__version__,
                         "python": platform.python_version(), "numpy": numpy.__version__},
            "os": f"{platform.system()} {platform.release()}"}


def _overhead(model_path: Path, tiny: dict[str, Path], work: Path, runs: int, max_tokens: int) -> dict[str, Any]:
    import llama_cpp

    from zeta_local import ZetaDynamicRouter

    config = _config(work, "overhead", {"m": model_path}, {}, n_ctx=2048)
    threads = max(1, os.cpu_count() or 1)
    with ZetaDynamicRouter.from_toml(config, faults="") as router:
        router.generate(STORY_PROMPT, task="chat", max_tokens=8, **GREEDY)  # load and warm up
        raw = llama_cpp.Llama(str(model_path), n_ctx=2048, n_threads=router._pool.n_threads,
                              n_threads_batch=router._pool.n_threads, verbose=False)
        raw.create_completion(STORY_PROMPT, max_tokens=8, **GREEDY)
        zeta_tps, raw_tps, ratios = [], [], []
        for _ in range(runs):
            t = time.perf_counter()
            ours = router.generate(STORY_PROMPT, task="chat", max_tokens=max_tokens, **GREEDY)
            a = ours.usage.completion_tokens / (time.perf_counter() - t)
            t = time.perf_counter()
            ref = raw.create_completion(STORY_PROMPT, max_tokens=max_tokens, **GREEDY)
            b = ref["usage"]["completion_tokens"] / (time.perf_counter() - t)
            zeta_tps.append(a)
            raw_tps.append(b)
            ratios.append(a / b)
        raw.close()
    # The latency a short request pays for routing, workers and the watchdog, on a tiny model.
    small = _config(work, "latency", {"t": tiny["a"]}, {})
    with ZetaDynamicRouter.from_toml(small, faults="") as router:
        router.generate("hi", task="chat", max_tokens=4, **GREEDY)
        raw = llama_cpp.Llama(str(tiny["a"]), n_ctx=2048, n_threads=threads, verbose=False)
        added = []
        for _ in range(runs * 10):
            t = time.perf_counter()
            router.generate("hi", task="chat", max_tokens=4, **GREEDY)
            a = time.perf_counter() - t
            t = time.perf_counter()
            raw.create_completion("hi", max_tokens=4, **GREEDY)
            added.append(a - (time.perf_counter() - t))
        raw.close()
    return {"tokens_per_s_ratio": round(statistics.median(ratios), 3),
            "router_tokens_per_s": spread(zeta_tps), "raw_tokens_per_s": spread(raw_tps),
            "latency_ms_added": round(statistics.median(added) * 1000, 2),
            "latency_ms_added_spread": spread(added, 1000, 2), "max_tokens": max_tokens}


def _failover(tiny: dict[str, Path], work: Path, runs: int) -> dict[str, Any]:
    from zeta_local import CancelToken, Cancelled, TextChunk, ZetaDynamicRouter

    stall_s, request_timeout_s = 0.5, 5.0
    config = _config(work, "failover", {"primary": tiny["a"], "fallback": tiny["b"]},
                     {"chat": ["primary", "fallback"], "code": ["fallback"]},
                     router={"stall_timeout_s": stall_s, "allowed_fails": 10**6, "max_tokens": 24})
    excess: list[float] = []
    with ZetaDynamicRouter.from_toml(config, faults="primary=stall_after:3") as router:
        router.generate("warm", task="code", **GREEDY)  # the fallback is loaded
        for i in range(runs + 1):
            last_primary = time.monotonic()
            for event in router.stream(f"story {i}", task="chat", **GREEDY):
                if isinstance(event, TextChunk):
                    if event.model == "primary":
                        last_primary = time.monotonic()
                    else:
                        if i:
                            excess.append(time.monotonic() - last_primary - stall_s)
                        break
    # The total-timeout way: the primary hangs, the client waits out its whole request timeout,
    # then asks the next model. One run: its cost is the timeout, by construction.
    with ZetaDynamicRouter.from_toml(config, faults="primary=stall_after:3") as router:
        router.generate("warm", task="code", **GREEDY)
        started = time.monotonic()
        token = CancelToken()
        threading.Timer(request_timeout_s, token.cancel).start()
        try:
            router.generate("story", task="chat", cancel=token, stall_timeout_s=3600, **GREEDY)
        except Cancelled:
            pass
        next(e for e in router.stream("story", task="code", **GREEDY) if isinstance(e, TextChunk))
        baseline_s = time.monotonic() - started
    ours_s = stall_s + statistics.median(excess)
    return {"excess_ms_p50": round(statistics.median(excess) * 1000, 1),
            "excess_ms_p95": round(percentile(excess, 0.95) * 1000, 1),
            "excess_ms": spread(excess, 1000), "stall_timeout_s": stall_s,
            "baseline_s": round(baseline_s, 2), "baseline_request_timeout_s": request_timeout_s,
            "speedup": round(baseline_s / ours_s, 1)}


def _cancel(model_path: Path, work: Path, runs: int) -> dict[str, Any]:
    from zeta_local import CancelToken, Cancelled, ZetaDynamicRouter, ZetaError

    config = _config(work, "cancel", {"m": model_path}, {}, n_ctx=4096)
    times: list[float] = []
    with ZetaDynamicRouter.from_toml(config, faults="") as router:
        router.generate("Hi", task="chat", max_tokens=1)
        worker = router._pool.workers[("m", False)]
        for i in range(runs):
            token = CancelToken()
            threading.Timer(0.3, token.cancel).start()
            try:
                router.generate(f"{i} {LONG_PROMPT}", task="chat", cancel=token, max_tokens=1,
                                first_token_timeout_s=600)
                continue  # finished before the cancel: nothing to measure
            except Cancelled:
                cancelled_at = time.monotonic()
            except ZetaError:  # the prompt does not fit this model's context
                token.cancel()
                continue
            while worker.current is not None:
                time.sleep(0.0002)
            times.append(time.monotonic() - cancelled_at)
    if not times:
        return {"note": "no long prompt evaluation to cancel on this model (it finished within "
                        "0.3 s, or the prompt did not fit its context)"}
    return {"ms_p50": round(statistics.median(times) * 1000, 1),
            "ms_p95": round(percentile(times, 0.95) * 1000, 1), "ms": spread(times, 1000),
            "prompt": "about 2,000 tokens, cancelled 0.3 s into its evaluation"}


def measure_allocation(path: Path, n_ctx: int, embedding: bool = False,
                       flash_attn: bool = False) -> tuple[int, int]:
    """Load the model, evaluate about one full micro-batch, and return (bytes llama.cpp reports
    allocating, growth of this process's resident memory)."""
    import psutil

    from zeta_local.backend import LlamaCppBackend
    from zeta_local.config import ModelSpec
    from zeta_local.errors import ContextOverflow
    from zeta_local.gguf_info import read_gguf_info
    from zeta_local.memory import allocated_from_log
    from zeta_local.sampling import SamplingParams

    lines: list[str] = []
    handler = logging.Handler(logging.DEBUG)
    handler.emit = lambda record: lines.append(record.getMessage())  # type: ignore[method-assign]
    logger = logging.getLogger("zeta_local.llama_cpp")
    saved = logger.level, logger.propagate
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False  # llama.cpp's debug lines are for us here, not for the console
    rss = psutil.Process().memory_info().rss
    try:
        spec = ModelSpec(name=path.stem, capabilities=frozenset(), n_ctx=n_ctx, flash_attn=flash_attn)
        model = LlamaCppBackend().load(spec, path, read_gguf_info(path), embedding=embedding,
                                       n_threads=os.cpu_count() or 1)
        params = SamplingParams(max_tokens=1, temperature=0.0, top_p=1.0, top_k=1, repeat_penalty=1.0, seed=1)
        words = 600
        while True:  # about one full micro-batch of prompt (fewer words for byte-level vocabularies)
            try:
                model.embed(["word " * words]) if embedding else list(model.generate("word " * words, params))
                break
            except ContextOverflow:
                words //= 2
        grown = psutil.Process().memory_info().rss - rss
        model.close()
    finally:
        logger.removeHandler(handler)
        logger.setLevel(saved[0])
        logger.propagate = saved[1]
    return allocated_from_log(lines), grown


def _memory(model_path: Path, model_name: str, tiny: dict[str, Path]) -> dict[str, Any]:
    from zeta_local.gguf_info import read_gguf_info
    from zeta_local.memory import context_length, estimate_memory

    rows = []
    for name, path in ((model_name, model_path), ("tiny-test", tiny["c"])):
        info = read_gguf_info(path)
        n_ctx = context_length(2048, info)
        measured, grown = measure_allocation(path, n_ctx)
        predicted = estimate_memory(info, n_ctx=n_ctx).total
        rows.append({"model": name, "n_ctx": n_ctx, "predicted_bytes": predicted, "measured_bytes": measured,
                     "resident_growth_bytes": grown,
                     "error_percent": round((predicted - measured) / measured * 100, 1)})
    return {"models": rows, "measured_is": "the buffers llama.cpp reports allocating (its log)"}


def _concurrency(tiny: dict[str, Path], work: Path, clients: int, per_client: int) -> dict[str, Any]:
    import random

    from zeta_local import ZetaDynamicRouter, ZetaError

    config = _config(work, "concurrency", {"a": tiny["a"], "b": tiny["b"], "c": tiny["c"]},
                     {"code": ["a", "b", "c"], "reason": ["b", "c", "a"], "chat": ["c", "a", "b"],
                      "embed": ["a", "b"]},
                     router={"first_token_timeout_s": 0.5, "stall_timeout_s": 0.5, "max_tokens": 16,
                             "allowed_fails": 10**6})
    rng = random.Random(7)
    faults = ";".join(f"{m}={rng.choice(['hang_prefill', 'stall_after:2', 'raise_after:1', 'slow_token:5'])}"
                      for m in ("a", "b"))
    latencies: list[float] = []
    outcomes = {"result": 0, "typed_error": 0, "lost": 0}
    lock = threading.Lock()

    def client(i: int) -> None:
        for j in range(per_client):
            started = time.monotonic()
            try:
                if (i + j) % 4 == 3:
                    router.embed([f"text {i} {j}"])
                else:
                    router.generate(f"request {i} {j}", task=("code", "reason", "chat")[(i + j) % 3])
                kind = "result"
            except ZetaError:
                kind = "typed_error"
            except Exception:  # anything else is a request lost to a bug
                kind = "lost"
            with lock:
                outcomes[kind] += 1
                latencies.append(time.monotonic() - started)

    with ZetaDynamicRouter.from_toml(config, faults=faults) as router:
        threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
        started = time.monotonic()
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=300)
        elapsed = time.monotonic() - started
    total = clients * per_client
    outcomes["lost"] += total - sum(outcomes.values())  # requests that never returned
    return {"clients": clients, "requests": total, "faults": faults,
            "requests_per_s": round(total / elapsed, 2),
            "latency_ms_p50": round(statistics.median(latencies) * 1000, 1),
            "latency_ms_p95": round(percentile(latencies, 0.95) * 1000, 1),
            "latency_ms_p99": round(percentile(latencies, 0.99) * 1000, 1),
            "results": outcomes["result"], "typed_errors": outcomes["typed_error"], "lost": outcomes["lost"]}


def _server(model_path: Path, tiny: dict[str, Path], work: Path, runs: int, max_tokens: int) -> dict[str, Any]:
    try:
        from zeta_local.bench_server import measure_server
    except ImportError as exc:
        return {"note": f"needs the serve extra ({exc.name} is not installed)"}
    return measure_server(model_path, tiny, work, runs, max_tokens)


def _roofline(model_path: Path, overhead: dict[str, Any]) -> dict[str, Any]:
    import numpy as np

    from zeta_local.gguf_info import read_gguf_info

    # Memory bandwidth: copy a buffer much larger than the caches; a copy reads and writes it.
    source = np.ones(256 * MiB // 8)
    target = np.empty_like(source)
    rates = []
    for _ in range(5):
        t = time.perf_counter()
        np.copyto(target, source)
        rates.append(2 * source.nbytes / (time.perf_counter() - t))
    bandwidth = statistics.median(rates)
    weights = sum(t.nbytes for t in read_gguf_info(model_path).tensors)
    bound = bandwidth / weights  # each decoded token reads every weight once
    measured = overhead["router_tokens_per_s"]["p50"]
    return {"memory_bandwidth_gb_s": round(bandwidth / 1e9, 2), "bytes_per_token": weights,
            "bound_tokens_per_s": round(bound, 1), "tokens_per_s": measured,
            "fraction": round(measured / bound, 3),
            "note": "bytes per token counts the weights only (the KV cache read is small at these "
                    "contexts); the copy is single-threaded numpy, so the bound is conservative"}


def to_markdown(r: dict[str, Any]) -> str:
    m, o, f, c, q, roof = r["machine"], r["overhead"], r["failover"], r["cancel"], r["concurrency"], r["roofline"]
    s = r["server"]
    lines = [f"# zeta_local benchmark{' (quick)' if r['quick'] else ''}", "",
             f"Machine: {m['cpu']}, {m['cores']} cores, {m['ram_gib']} GiB RAM, "
             f"{'GPU offload' if m['gpu_offload'] else 'no GPU offload'}; llama-cpp-python "
             f"{m['versions']['llama_cpp_python']}, Python {m['versions']['python']}. Model: {r['model']}.", "",
             "| measure | value |", "|---|---|",
             f"| tokens/s, router ÷ llama-cpp-python (median of per-run ratios) | {o['tokens_per_s_ratio']} |",
             f"| tokens/s through the router (p50) | {o['router_tokens_per_s']['p50']} |",
             f"| tokens/s through llama-cpp-python (p50) | {o['raw_tokens_per_s']['p50']} |",
             f"| latency added to a short request (ms, p50) | {o['latency_ms_added']} |",
             f"| stall → fallback's first token, minus the {f['stall_timeout_s']} s stall budget (ms, p50 / p95) | "
             f"{f['excess_ms_p50']} / {f['excess_ms_p95']} |",
             f"| the same, waiting out a {f['baseline_request_timeout_s']} s request timeout (s) | {f['baseline_s']} "
             f"({f['speedup']}× slower) |"]
    if "ms_p50" in c:
        lines.append(f"| cancel during a long prompt evaluation → worker ready (ms, p50 / p95) | {c['ms_p50']} / {c['ms_p95']} |")
    lines += [f"| concurrency: {q['clients']} clients, {q['requests']} requests, random faults: requests/s | {q['requests_per_s']} |",
              f"| concurrency latency p50 / p95 / p99 (ms) | {q['latency_ms_p50']} / {q['latency_ms_p95']} / {q['latency_ms_p99']} |",
              f"| requests lost (neither a result nor a typed error) | {q['lost']} |"]
    if "note" in s:
        lines.append(f"| server | not measured: {s['note']} |")
    else:
        lines += [f"| server: tokens/s streamed over HTTP ÷ in-process (median of per-run ratios) | "
                  f"{s['tokens_per_s_ratio']} |",
                  f"| server: latency added to a short request over HTTP (ms, p50 / p95) | "
                  f"{s['latency_ms_added_p50']} / {s['latency_ms_added']['p95']} |"]
        if "ms_p50" in s["disconnect"]:
            lines.append(f"| server: client disconnect during a long prompt evaluation → worker free "
                         f"(ms, p50 / p95) | {s['disconnect']['ms_p50']} / {s['disconnect']['ms_p95']} |")
    lines += [f"| decoding vs memory-bandwidth bound ({roof['memory_bandwidth_gb_s']} GB/s) | {roof['fraction']} of "
              f"{roof['bound_tokens_per_s']} tokens/s |", "", "| model | n_ctx | predicted MiB | llama.cpp allocated MiB | "
              "resident growth MiB | error |", "|---|---|---|---|---|---|"]
    for row in r["memory"]["models"]:
        lines.append(f"| {row['model']} | {row['n_ctx']} | {row['predicted_bytes'] / MiB:.1f} | "
                     f"{row['measured_bytes'] / MiB:.1f} | {row['resident_growth_bytes'] / MiB:.1f} | "
                     f"{row['error_percent']:+.1f} % |")
    return "\n".join(lines) + "\n"


def write_plots(r: dict[str, Any], directory: Path) -> list[Path]:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        from zeta_local.errors import InvalidRequest

        raise InvalidRequest("--plots needs matplotlib: pip install -e '.[bench]'") from None
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    fig, ax = plt.subplots(figsize=(5, 3))
    o = r["overhead"]
    ax.bar(["llama-cpp-python", "zeta_local"], [o["raw_tokens_per_s"]["p50"], o["router_tokens_per_s"]["p50"]])
    ax.set_ylabel("tokens/s (median)")
    ax.set_title(f"Decoding, {r['model']}")
    fig.tight_layout()
    written.append(directory / "overhead.png")
    fig.savefig(written[-1])
    fig, ax = plt.subplots(figsize=(5, 3))
    f = r["failover"]
    ax.bar(["total timeout", "zeta_local stall watchdog"],
           [f["baseline_s"], f["stall_timeout_s"] + f["excess_ms_p50"] / 1000])
    ax.set_ylabel("seconds to the fallback's first token")
    fig.tight_layout()
    written.append(directory / "failover.png")
    fig.savefig(written[-1])
    return written
