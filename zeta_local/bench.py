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
    routing      the classifier's accuracy, calibration and speed; the semantic stage; affinity
                 (bench_routing.py)
    adaptive     a flaky primary under static and adaptive order; load spreading to an idle
                 model; what the usage metrics cost a request (bench_adaptive.py)
    remote       tokens/s through a remote chain member (llama-cpp-python's own server on
                 loopback) / the same model in process; failover from a stalled remote to a
                 local model (bench_remote.py)
    gpu          on a build that offloads: synthetic real-shape 7B/4B/14B models, VRAM predicted
                 vs measured, decode router vs raw, cancel, load/unload cycles, a real
                 out-of-memory (bench_gpu.py); elsewhere a note
    roofline     decoding tokens/s against memory bandwidth / bytes read per token (the GPU's
                 bandwidth and the offloaded weights where the model is offloaded)

It runs on whatever is here: the generation model is the first of models.toml whose file is
present (the embedded default on a fresh install); router-behaviour sections use generated
tiny models, so they measure the router rather than a model.

The raw llama-cpp-python baseline loads the model with the arguments the router's backend used
(`backend.llama_kwargs`, recorded at the router's own load) and samples with exactly the
parameters the router's model was given; the settings llama.cpp reports for both are compared
and the result says whether they match.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import platform
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator

from zeta_local.bench_adaptive import adaptive_markdown, measure_adaptive
from zeta_local.bench_remote import measure_remote, remote_markdown
from zeta_local.bench_routing import measure_routing
from zeta_local.bench_baseline import (GREEDY, RecordingBackend, compare_decoding, handover_excess, interleaved,
                                       llama_settings, median_error, percentile, ratio_spread, run_clients,
                                       spread)

__all__ = ["GREEDY", "RecordingBackend", "compare_decoding", "interleaved", "llama_settings",
           "median_error", "percentile", "ratio_spread", "run_bench", "spread", "to_markdown"]

log = logging.getLogger(__name__)
MiB = 2**20
# Overhead: many short interleaved pairs rather than a few long runs (see interleaved()):
# (at least, at most) pairs of runs of this many tokens. Not shorter: the router's fixed cost
# per request (about 2 ms on Gemma 3 270M on 2 cores) would weigh 1 % in a 16-token run.
OVERHEAD_PAIRS_QUICK, OVERHEAD_TOKENS_QUICK = (12, 24), 32
OVERHEAD_PAIRS, OVERHEAD_TOKENS = (24, 64), 64
LONG_PROMPT = "The quick brown fox jumps over the lazy dog. " * 200  # about 2,000 tokens
STORY_PROMPT = "The history of the Roman Empire is a long story. It began"


OPTIONAL = ("server", "routing", "adaptive", "remote", "gpu")  # may be skipped; a failure is a note


def run_bench(config_path: str | None, *, quick: bool, progress: Callable[[str], None],
              skip: tuple[str, ...] | list[str] = ()) -> dict[str, Any]:
    """Every section in turn; those named in `skip` (any of OPTIONAL) are only a note."""
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
    pairs, decode_tokens = (OVERHEAD_PAIRS_QUICK, OVERHEAD_TOKENS_QUICK) if quick else (OVERHEAD_PAIRS, OVERHEAD_TOKENS)
    sections: list[tuple[str, Callable[[], Any] | None]] = [
        ("machine", _machine),
        ("overhead", lambda: _overhead(model_path, tiny, work, runs, pairs, decode_tokens)),
        ("failover", lambda: _failover(tiny, work, 5 if quick else 15)),
        ("cancel", lambda: _cancel(model_path, work, runs)),
        ("memory", lambda: _memory(model_path, model_name, tiny)),
        ("concurrency", lambda: _concurrency(tiny, work, 8 if quick else 16, 4 if quick else 8)),
        ("server", lambda: _server(model_path, tiny, work, runs, 48 if quick else 128)),
        ("routing", lambda: measure_routing(model_path, work, quick=quick, progress=progress)),
        ("adaptive", lambda: measure_adaptive(tiny, work, quick=quick)),
        ("remote", lambda: measure_remote(model_path, tiny, work, quick=quick)),
        ("gpu", lambda: _gpu(work, quick, progress)),
        ("roofline", None),  # uses overhead's decode speed
    ]
    results: dict[str, Any] = {"quick": quick, "model": model_name, "model_path": str(model_path)}
    for index, (name, measure) in enumerate(sections, 1):
        progress(f"[{index}/{len(sections)}] {name}")
        started = time.monotonic()
        if name in skip:
            results[name] = {"note": "skipped (--skip)"}
        elif name in OPTIONAL:
            try:  # one optional section that fails must not lose the others' figures
                results[name] = measure()
            except Exception as exc:
                log.exception("bench section %s failed", name)
                results[name] = {"note": f"failed: {type(exc).__name__}: {exc}"}
        else:
            results[name] = _roofline(model_path, results["overhead"]) if measure is None else measure()
        progress(f"      {name} done in {time.monotonic() - started:.1f} s")
    return results


def _tiny_models(work: Path) -> dict[str, Path]:
    from zeta_local.tiny_models import write_tiny_model

    return {k: write_tiny_model(work / f"tiny-{k}.gguf", seed=i) for i, k in enumerate("abc", 1)}


def _config(work: Path, name: str, models: dict[str, Path | dict[str, Any]], routes: dict[str, list[str]],
            router: dict[str, Any] | None = None, n_ctx: int = 2048) -> Path:
    """A models.toml in `work`: each model a GGUF path (run with `n_ctx`, both capabilities) or
    a whole table of its own (a remote one, say); a task not in `routes` goes to the first."""
    # The bench's routers keep their usage metrics in memory: the user's file is for real use.
    router = {"metrics": False} | (router or {})
    lines = ["[router]"] + [f"{k} = {json.dumps(v)}" for k, v in router.items()]
    for model, source in models.items():
        table = source if isinstance(source, dict) else \
            {"path": str(source), "n_ctx": n_ctx, "capabilities": ["generate", "embed"]}
        lines += [f'[models."{model}"]'] + [f"{k} = {json.dumps(v)}" for k, v in table.items()]
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

    from zeta_local import __version__, gpu_probe
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
            **({"gpu": gpu_probe.gpu_facts()} if gpu_offload_supported() else {}),
            "llama_cpp_system_info": llama_cpp.llama_print_system_info().decode("utf-8", "replace").strip(),
            "versions": {"zeta_local": __version__, "llama_cpp_python": llama_cpp.__version__,
                         "python": platform.python_version(), "numpy": numpy.__version__},
            "os": f"{platform.system()} {platform.release()}"}


def _overhead(model_path: Path, tiny: dict[str, Path], work: Path, runs: int,
              pairs: tuple[int, int], max_tokens: int) -> dict[str, Any]:
    from zeta_local import ZetaDynamicRouter

    config = _config(work, "overhead", {"m": model_path}, {}, n_ctx=2048)
    backend = RecordingBackend()
    with ZetaDynamicRouter.from_toml(config, backend=backend, faults="") as router:
        router.generate(STORY_PROMPT, model="m", max_tokens=8, **GREEDY)  # load and warm up
        decoding = compare_decoding(router, backend, "m", STORY_PROMPT, pairs, max_tokens)
    # The latency a short request pays for routing, workers and the watchdog, on a tiny model.
    small = _config(work, "latency", {"t": tiny["a"]}, {})
    backend = RecordingBackend()
    with ZetaDynamicRouter.from_toml(small, backend=backend, faults="") as router:
        router.generate("hi", task="chat", max_tokens=4, **GREEDY)
        raw, sampling = backend.raw_twin("t")
        raw.create_completion("hi", max_tokens=4, **sampling)
        added = []
        for _ in range(runs * 10):
            t = time.perf_counter()
            router.generate("hi", task="chat", max_tokens=4, **GREEDY)
            a = time.perf_counter() - t
            t = time.perf_counter()
            raw.create_completion("hi", max_tokens=4, **sampling)
            added.append(a - (time.perf_counter() - t))
        raw.close()
    return decoding | {"latency_ms_added": round(statistics.median(added) * 1000, 2),
                       "latency_ms_added_spread": spread(added, 1000, 2)}


def _failover(tiny: dict[str, Path], work: Path, runs: int) -> dict[str, Any]:
    from zeta_local import CancelToken, Cancelled, TextChunk, ZetaDynamicRouter

    stall_s, request_timeout_s = 0.5, 5.0
    config = _config(work, "failover", {"primary": tiny["a"], "fallback": tiny["b"]},
                     {"chat": ["primary", "fallback"], "code": ["fallback"]},
                     router={"stall_timeout_s": stall_s, "allowed_fails": 10**6, "max_tokens": 24})
    with ZetaDynamicRouter.from_toml(config, faults="primary=stall_after:3") as router:
        router.generate("warm", task="code", **GREEDY)  # the fallback is loaded
        excess = handover_excess(router, "primary", runs, stall_s, **GREEDY)
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


@contextlib.contextmanager
def captured_llama_log() -> Iterator[list[str]]:
    """Collect llama.cpp's log lines (debug level included) while the block runs, keeping them
    off the console: its buffer sizes are the measurements the estimate is held to."""
    lines: list[str] = []
    handler = logging.Handler(logging.DEBUG)
    handler.emit = lambda record: lines.append(record.getMessage())  # type: ignore[method-assign]
    logger = logging.getLogger("zeta_local.llama_cpp")
    saved = logger.level, logger.propagate
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False  # llama.cpp's debug lines are for us here, not for the console
    try:
        yield lines
    finally:
        logger.removeHandler(handler)
        logger.setLevel(saved[0])
        logger.propagate = saved[1]


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

    rss = psutil.Process().memory_info().rss
    with captured_llama_log() as lines:
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
    return allocated_from_log(lines), grown


def _memory(model_path: Path, model_name: str, tiny: dict[str, Path]) -> dict[str, Any]:
    from zeta_local.admission import gpu_offload_supported
    from zeta_local.gguf_info import read_gguf_info
    from zeta_local.memory import context_length, estimate_memory

    gpu = gpu_offload_supported()
    rows = []
    for name, path in ((model_name, model_path), ("tiny-test", tiny["c"])):
        info = read_gguf_info(path)
        n_ctx = context_length(2048, info)
        measured, grown = measure_allocation(path, n_ctx)
        # As measure_allocation loads it: every layer offloaded where the build can.
        predicted = estimate_memory(info, n_ctx=n_ctx, n_gpu_layers=-1 if gpu else 0).total
        rows.append({"model": name, "n_ctx": n_ctx, "predicted_bytes": predicted, "measured_bytes": measured,
                     "resident_growth_bytes": grown,
                     "error_percent": round((predicted - measured) / measured * 100, 1)})
    return {"models": rows, "measured_is": "the buffers llama.cpp reports allocating (its log), "
                                           "on every device"}


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
        elapsed = run_clients(client, clients)
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
        import zeta_local.server  # noqa: F401  (fastapi and uvicorn, and what they import)
        from zeta_local.bench_server import measure_server
    except ImportError as exc:
        return {"note": f"needs the serve extra ({exc.name} is not installed)"}
    return measure_server(model_path, tiny, work, runs, max_tokens)


def _gpu(work: Path, quick: bool, progress: Callable[[str], None]) -> dict[str, Any]:
    from zeta_local.bench_gpu import measure_gpu

    return measure_gpu(work, quick=quick, progress=progress)


def weights_read_per_token(info: Any, n_gpu_layers: int) -> tuple[int, int]:
    """(bytes on the GPU, bytes on the CPU) that decoding one token reads, for a model loaded
    with `n_gpu_layers`: every weight once, except the token embeddings, of which one row is
    read, unless the output layer reads them whole (tied embeddings: no output.weight), on
    the GPU when every layer is offloaded (llama.cpp then puts a copy there)."""
    from zeta_local.memory import estimate_memory, tied_embeddings, token_embedding_bytes

    split = estimate_memory(info, n_ctx=256, n_gpu_layers=n_gpu_layers)  # counts the GPU's copy
    embd, tied = token_embedding_bytes(info), tied_embeddings(info)
    copy_on_gpu = tied and split.weights_gpu and (n_gpu_layers < 0 or split.weights_cpu == embd)
    return split.weights_gpu, split.weights_cpu - embd + (embd if tied and not copy_on_gpu else 0)


def roofline_bound(gpu_bytes: int, cpu_bytes: int, gpu_bandwidth: float | None,
                   cpu_bandwidth: float | None) -> float:
    """Tokens/s if decoding only had to read its weights at full bandwidth: each token reads
    the GPU's share at the GPU's bandwidth, then the CPU's share at the CPU's."""
    seconds = (gpu_bytes / gpu_bandwidth if gpu_bytes else 0.0) + (cpu_bytes / cpu_bandwidth if cpu_bytes else 0.0)
    return 1 / seconds


def fraction_of_bound(tokens_per_s: float, bound: float) -> float:
    """Three significant figures, not three decimals: a tiny model on an H200 decodes at a few
    ten-thousandths of its bound (launches, not bytes, limit it), which three decimals made 0.0."""
    return float(f"{tokens_per_s / bound:.3g}")


def _cpu_bandwidth() -> float:
    import numpy as np

    # Copy a buffer much larger than the caches; a copy reads and writes it.
    source = np.ones(256 * MiB // 8)
    target = np.empty_like(source)
    rates = []
    for _ in range(5):
        t = time.perf_counter()
        np.copyto(target, source)
        rates.append(2 * source.nbytes / (time.perf_counter() - t))
    return statistics.median(rates)


def gpu_bandwidth() -> tuple[float | None, str]:
    """The GPU's memory bandwidth and where the figure comes from: a timed device-to-device
    copy (what the card delivers), else NVML's maximum memory clock and bus width (its peak)."""
    from zeta_local import gpu_probe

    copied = gpu_probe.copy_bandwidth()
    if copied:
        return copied, "measured: device-to-device copy of 1 GiB (CUDA driver API), median of 5"
    facts = gpu_probe.gpu_facts()
    if "peak_bandwidth_gb_s" in facts:
        return facts["peak_bandwidth_gb_s"] * 1e9, (
            f"NVML: max memory clock {facts['memory_clock_mhz_max']} MHz x "
            f"{facts['memory_bus_width_bits']}-bit bus x 2 (peak)")
    return None, "neither a device-to-device copy nor NVML was available"


def _roofline(model_path: Path, overhead: dict[str, Any]) -> dict[str, Any]:
    from zeta_local.admission import gpu_offload_supported
    from zeta_local.gguf_info import read_gguf_info

    info = read_gguf_info(model_path)
    measured = overhead["router_tokens_per_s"]["p50"]
    layers = (overhead.get("settings") or {}).get("n_gpu_layers", 0)
    if not (gpu_offload_supported() and layers):
        bandwidth = _cpu_bandwidth()
        weights = sum(t.nbytes for t in info.tensors)
        bound = bandwidth / weights  # each decoded token reads every weight once
        return {"memory_bandwidth_gb_s": round(bandwidth / 1e9, 2), "bytes_per_token": weights,
                "bound_tokens_per_s": round(bound, 1), "tokens_per_s": measured,
                "fraction": fraction_of_bound(measured, bound), "device": "cpu",
                "bandwidth_source": "measured: numpy copy of 256 MiB, one thread",
                "note": "bytes per token counts the weights only (the KV cache read is small at these "
                        "contexts); the copy is single-threaded numpy, so the bound is conservative"}
    gpu_bytes, cpu_bytes = weights_read_per_token(info, layers)
    bandwidth, source = gpu_bandwidth()
    if bandwidth is None:
        return {"note": f"the model is offloaded but the GPU's bandwidth is unknown: {source}",
                "device": "gpu", "bandwidth_source": None, "tokens_per_s": measured}
    cpu_bandwidth = _cpu_bandwidth() if cpu_bytes else None
    bound = roofline_bound(gpu_bytes, cpu_bytes, bandwidth, cpu_bandwidth)
    return {"memory_bandwidth_gb_s": round(bandwidth / 1e9, 2), "bandwidth_source": source,
            "device": "gpu", "n_gpu_layers": layers, "bytes_per_token": gpu_bytes + cpu_bytes,
            "gpu_bytes_per_token": gpu_bytes, "cpu_bytes_per_token": cpu_bytes,
            **({"cpu_bandwidth_gb_s": round(cpu_bandwidth / 1e9, 2)} if cpu_bandwidth else {}),
            "bound_tokens_per_s": round(bound, 1), "tokens_per_s": measured,
            "fraction": fraction_of_bound(measured, bound),
            "note": "bytes per token counts the weights read per token (the offloaded ones at the "
                    "GPU's bandwidth; one row of the token embeddings is not counted); the KV "
                    "cache read is small at these contexts"}


def to_markdown(r: dict[str, Any]) -> str:
    m, o, f, c, q, roof = r["machine"], r["overhead"], r["failover"], r["cancel"], r["concurrency"], r["roofline"]
    s = r["server"]
    lines = [f"# zeta_local benchmark{' (quick)' if r['quick'] else ''}", "",
             f"Machine: {m['cpu']}, {m['cores']} cores, {m['ram_gib']} GiB RAM, "
             f"{'GPU offload' if m['gpu_offload'] else 'no GPU offload'}; llama-cpp-python "
             f"{m['versions']['llama_cpp_python']}, Python {m['versions']['python']}. Model: {r['model']}.", "",
             "| measure | value |", "|---|---|",
             f"| tokens/s, router ÷ llama-cpp-python (median of {o['ratio_spread']['pairs']} interleaved pairs; "
             f"p25–p75, min–max) | {o['tokens_per_s_ratio']} ({o['ratio_spread']['p25']}–{o['ratio_spread']['p75']}, "
             f"{o['ratio_spread']['min']}–{o['ratio_spread']['max']}) |",
             f"| the median ratio's standard error; machine load (1-min load average, {o['cores']} cores) | "
             f"{o['median_error'] * 100:.1f} %; {o['load_average']} |",
             f"| llama-cpp-python loaded and sampling as the router (n_gpu_layers, flash attention, threads, "
             f"batch, sampling) | {_same(o)} |",
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
    if "fraction" in roof:
        lines.append(f"| decoding vs memory-bandwidth bound ({roof['device'].upper()}, {roof['memory_bandwidth_gb_s']} GB/s, "
                     f"{roof['bandwidth_source']}) | {roof['fraction']} of {roof['bound_tokens_per_s']} tokens/s |")
    else:
        lines.append(f"| roofline | not measured: {roof['note']} |")
    lines += ["", "| model | n_ctx | predicted MiB | llama.cpp allocated MiB | "
              "resident growth MiB | error |", "|---|---|---|---|---|---|"]
    for row in r["memory"]["models"]:
        lines.append(f"| {row['model']} | {row['n_ctx']} | {row['predicted_bytes'] / MiB:.1f} | "
                     f"{row['measured_bytes'] / MiB:.1f} | {row['resident_growth_bytes'] / MiB:.1f} | "
                     f"{row['error_percent']:+.1f} % |")
    from zeta_local.bench_gpu import gpu_markdown

    lines += ["", *_routing_markdown(r.get("routing") or {"note": "not run"})]
    lines += ["", *adaptive_markdown(r.get("adaptive") or {"note": "not run"})]
    lines += ["", *remote_markdown(r.get("remote") or {"note": "not run"})]
    lines += ["", *gpu_markdown(r.get("gpu") or {"note": "not run"})]
    return "\n".join(lines) + "\n"


def _routing_markdown(r: dict[str, Any]) -> list[str]:
    if "note" in r:
        return [f"Routing: not measured: {r['note']}"]
    lines = ["| routing | value |", "|---|---|"]
    c, sem, a = r["classifier"], r["semantic"], r["affinity"]
    if "note" in c:
        lines.append(f"| classifier | not measured: {c['note']} |")
    else:
        recall = ", ".join(f"{t} {v}" for t, v in c["recall"].items())
        long = ", ".join(f"{t} {v['p50']} / {v['p99']}" for t, v in c["decision_us_4000_chars"].items())
        lines += [f"| classifier accuracy on the {c['prompts']} held-out prompts (recall) | "
                  f"{c['accuracy'] * 100:.1f} % ({recall}) |",
                  f"| decisions at confidence ≥ 0.9 that are right; calibration error (ECE) | "
                  f"{c['confident_right']['right']} of {c['confident_right']['of']}; {c['ece']} |",
                  f"| decision time, held-out prompts (µs, p50 / p99) | "
                  f"{c['decision_us']['p50_us']} / {c['decision_us']['p99_us']} |",
                  f"| decision time, 4,000-character prompts (µs, p50 / p99) | {long} |"]
    if "note" in sem:
        lines.append(f"| semantic stage | not measured: {sem['note']} |")
    else:
        lines += [f"| semantic stage: uncertain prompts / decided by it / right before → after | "
                  f"{sem['uncertain']} / {sem['decided_by_semantic']} / {sem['of_those_right_classifier']} → "
                  f"{sem['of_those_right_semantic']} |",
                  f"| semantic stage: accuracy without → with; route time of an uncertain prompt "
                  f"(ms, p50 / p99) | {sem['accuracy_classifier'] * 100:.1f} % → {sem['accuracy_with_semantic'] * 100:.1f} %; "
                  f"{sem['route_ms_uncertain']['p50']} / {sem['route_ms_uncertain']['p99']} |"]
    if "note" in a:
        lines.append(f"| affinity | not measured: {a['note']} |")
    else:
        lines.append(f"| turn 2's first token with affinity / without ({a['turn2_prompt_tokens']}-token "
                     f"conversation; ms, median of {a['pairs']} pairs; ratio) | "
                     f"{a['ttft_ms_on_median']} / {a['ttft_ms_off_median']} ({a['ratio_off_over_on']}×) |")
    if "reliability" in c:
        lines += ["", "| confidence | held-out prompts | right | mean confidence |", "|---|---|---|---|"]
        lines += [f"| {b['bin']} | {b['count']} | {b['accuracy'] * 100:.1f} % | {b['mean_confidence']} |"
                  for b in c["reliability"] if b["count"]]
    return lines


def _same(o: dict[str, Any]) -> str:
    if o.get("same_settings") is None:
        return "not checked (llama.cpp's settings could not be read back)"
    if o["same_settings"]:
        return "yes, as llama.cpp reports them"
    return "NO: " + ", ".join(o.get("settings_differ", []))


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
