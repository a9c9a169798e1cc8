"""The `gpu` section of `zeta-local bench`: the router on a GPU, on models with the real shapes
of models.toml's 7B, 4B and 14B (synth_models.py: zero weights in sparse files, loaded by
llama.cpp like the real ones), at n_ctx 8192.

    vram           per model, after a full micro-batch: the estimate the ledger holds against
                   llama.cpp's CUDA buffers (its log) and against NVML (the device's and this
                   process's use); for the 4B, the same again with its embedding context loaded
    decode         tokens/s through the router / raw llama-cpp-python loaded and sampling alike
                   (bench.compare_decoding), per model
    cancel         a cancel during a ~7,600-token prompt evaluation of the 14B, until its worker
                   is free (on a GPU llama.cpp polls the abort callback once per micro-batch)
    cycles         the 14B loaded and unloaded five times: does the device's use come back to
                   where it was?
    out_of_memory  another process holds all of the card but room for the 4B: a router started
                   before it meets a real CUDA out-of-memory on the 14B and falls back; a router
                   started after it plans around it (does_not_fit)

Each step is independent: one that fails is reported as {"error": ...} and the others still run.
On a build that cannot offload the section is only a note.
"""

from __future__ import annotations

import logging
import re
import shutil
import statistics
import threading
import time
from pathlib import Path
from typing import Any, Callable

from zeta_local.bench import (GREEDY, MiB, RecordingBackend, _config, captured_llama_log, compare_decoding,
                              fraction_of_bound, gpu_bandwidth, percentile, roofline_bound, spread,
                              weights_read_per_token)

log = logging.getLogger(__name__)

NAMES = ("general-4b", "coder-7b", "reason-14b")  # smallest first
N_CTX = 8192
MICRO_BATCH_PROMPT = 600  # tokens: more than one 512-token micro-batch, so the compute buffer is used
LONG_PROMPT_TOKENS = 7600  # the cancel step's prompt, as in the measurement
EMBED_PROMPT = 500  # tokens: one text as long as the embedding context takes (512)
CYCLES = 5
BACK_TOLERANCE = 64 * MiB  # "back to baseline": within this of the use before the first load
_BUFFER = re.compile(r"(\S+)\s+(model|KV|RS|compute|output)\s+buffer size\s*=\s*([\d.]+)\s*MiB")
_CUDA_DEVICE = re.compile(r"^CUDA\d+$")


def buffers_from_log(lines: list[str]) -> dict[str, dict[str, int]]:
    """llama.cpp's buffer lines ("CUDA0 model buffer size = 2259.58 MiB", ...) -> bytes by
    device and kind: {"CUDA0": {"model": ..., "KV": ..., "compute": ...}, "CPU_Mapped": ...}."""
    found: dict[str, dict[str, int]] = {}
    for line in lines:
        for device, kind, size in _BUFFER.findall(line):
            kinds = found.setdefault(device, {})
            kinds[kind] = kinds.get(kind, 0) + int(float(size) * MiB)
    return found


def on_gpu(buffers: dict[str, dict[str, int]]) -> dict[str, int]:
    """The buffers on CUDA devices (not CUDA_Host, which is pinned host memory), by kind."""
    total: dict[str, int] = {}
    for device, kinds in buffers.items():
        if _CUDA_DEVICE.match(device):
            for kind, size in kinds.items():
                total[kind] = total.get(kind, 0) + size
    return total


def error_percent(predicted: int | None, measured: int | None) -> float | None:
    if not predicted or not measured:
        return None
    return round((predicted - measured) / measured * 100, 1)


def measure_gpu(work: Path, *, quick: bool, progress: Callable[[str], None]) -> dict[str, Any]:
    from zeta_local import gpu_probe
    from zeta_local.admission import gpu_offload_supported
    from zeta_local.synth_models import write_synth_model

    if not gpu_offload_supported():
        return {"note": "this llama.cpp build cannot offload to a GPU (llama_supports_gpu_offload() "
                        "is False), so there is nothing to measure; scripts/gpu_check.sh runs this "
                        "section on a GPU machine"}
    paths = {name: write_synth_model(work / "synth" / f"{name}.gguf", name) for name in NAMES}
    bandwidth, source = gpu_bandwidth()  # before any model holds the card
    results: dict[str, Any] = {"device": gpu_probe.gpu_facts(), "n_ctx": N_CTX,
                               "models": "synthetic, real shapes and Q4_K_M types (zeta_local.synth_models)",
                               "memory_bandwidth": {"gb_s": bandwidth and round(bandwidth / 1e9, 1),
                                                    "source": source}}
    steps: list[tuple[str, Callable[[], Any]]] = [
        ("vram", lambda: _vram(paths, work)),
        ("decode", lambda: _decode(paths, work, pairs=(4, 12) if quick else (8, 24), max_tokens=128,
                                   bandwidth=bandwidth)),
        ("cancel", lambda: _cancel(paths["reason-14b"], work, runs=3 if quick else 5)),
        ("cycles", lambda: _cycles(paths["reason-14b"], work)),
        ("out_of_memory", lambda: _out_of_memory(paths, work, results.get("vram"))),
    ]
    for name, step in steps:
        progress(f"      gpu: {name}")
        started = time.monotonic()
        try:
            results[name] = step()
        except Exception as exc:  # one failed step must not lose the others' figures
            log.exception("gpu step %s failed", name)
            results[name] = {"error": f"{type(exc).__name__}: {exc}"}
        progress(f"      gpu: {name} done in {time.monotonic() - started:.1f} s")
    shutil.rmtree(work / "synth", ignore_errors=True)  # 15 GiB of zeros in the page cache otherwise
    return results


def _wait_unloaded(router: Any, name: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while any(w.model is not None for (n, _), w in list(router._pool.workers.items()) if n == name):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{name} was not unloaded within {timeout:g} s")
        time.sleep(0.01)


def _vram(paths: dict[str, Path], work: Path) -> list[dict[str, Any]]:
    from zeta_local import ZetaDynamicRouter, gpu_probe
    from zeta_local.synth_models import words_prompt

    config = _config(work, "gpu-vram", dict(paths), {}, n_ctx=N_CTX)
    rows = []
    with ZetaDynamicRouter.from_toml(config, faults="") as router:
        for name in NAMES:
            before = gpu_probe.device_used()
            with captured_llama_log() as lines:
                router.preload(name)
                router.generate(words_prompt(MICRO_BATCH_PROMPT), model=name, max_tokens=1, **GREEDY)
            after, process = gpu_probe.device_used(), gpu_probe.process_used()
            estimate = router._pool.estimates[(name, False)]
            cuda = on_gpu(buffers_from_log(lines))
            cuda_total = sum(cuda.values())
            delta = after - before if after is not None and before is not None else None
            row: dict[str, Any] = {
                "model": name, "predicted_vram_bytes": estimate.vram, "estimate": estimate.to_dict(),
                "cuda_buffers": cuda, "cuda_total_bytes": cuda_total,
                "all_buffers": buffers_from_log(lines),
                "device_used_before_bytes": before, "device_used_after_bytes": after,
                "device_used_delta_bytes": delta, "process_bytes": process,
                "error_vs_cuda_percent": error_percent(estimate.vram, cuda_total),
                "error_vs_device_delta_percent": error_percent(estimate.vram, delta)}
            if name == "general-4b":  # it serves embeddings too: what does the second context add?
                with captured_llama_log() as lines:
                    router.embed([words_prompt(EMBED_PROMPT)], model=name)
                with_embed = gpu_probe.device_used()
                embed_estimate = router._pool.estimates.get((name, True))
                both = with_embed - before if with_embed is not None and before is not None else None
                row["with_embedding_context"] = {
                    "cuda_buffers": on_gpu(buffers_from_log(lines)),
                    "predicted_vram_bytes": getattr(embed_estimate, "vram", None),
                    "device_used_delta_bytes": both, "process_bytes": gpu_probe.process_used(),
                    "both_over_generation_alone": round(both / delta, 3) if both and delta else None}
            rows.append(row)
            router.unload(name)
            _wait_unloaded(router, name)
            # The next model's growth is measured from here: wait until the device's use is back
            # where it was (on an H200 the 7B once started while the 4B's 4 GiB were still held).
            row["back_to_before_s"] = None  # every row has the key, read or not
            if before is not None:
                waited, used = _wait_device_back(before)
                row["back_to_before_s"] = waited if used <= before + BACK_TOLERANCE else None
    return rows


def _wait_device_back(before: int, timeout: float = 10.0) -> tuple[float, int]:
    """Poll the device's use until it is within BACK_TOLERANCE of `before` or `timeout` has
    passed: (seconds waited, the use last read; 0 where it cannot be read)."""
    from zeta_local import gpu_probe

    started, used = time.monotonic(), gpu_probe.device_used() or 0
    while used > before + BACK_TOLERANCE and time.monotonic() - started < timeout:
        time.sleep(0.05)
        used = gpu_probe.device_used() or 0
    return round(time.monotonic() - started, 3), used


def _decode(paths: dict[str, Path], work: Path, *, pairs: tuple[int, int], max_tokens: int,
            bandwidth: float | None) -> list[dict[str, Any]]:
    """Router vs raw per model, and each against its roofline: the GPU's bandwidth over the
    bytes of weights a token reads (every layer is offloaded)."""
    from zeta_local import ZetaDynamicRouter
    from zeta_local.gguf_info import read_gguf_info
    from zeta_local.synth_models import words_prompt

    rows = []
    prompt = words_prompt(32)
    for name in NAMES:
        config = _config(work, f"gpu-decode-{name}", {name: paths[name]}, {}, n_ctx=N_CTX)
        backend = RecordingBackend()
        with ZetaDynamicRouter.from_toml(config, backend=backend, faults="") as router:
            router.generate(prompt, model=name, max_tokens=8, **GREEDY)  # load and warm up
            row = {"model": name} | compare_decoding(router, backend, name, prompt, pairs, max_tokens)
        on_gpu_bytes, on_cpu_bytes = weights_read_per_token(read_gguf_info(paths[name]), -1)
        row["bytes_per_token"] = on_gpu_bytes + on_cpu_bytes
        if bandwidth and not on_cpu_bytes:
            bound = roofline_bound(on_gpu_bytes, 0, bandwidth, None)
            row["bound_tokens_per_s"] = round(bound, 1)
            row["fraction_of_bound"] = fraction_of_bound(row["router_tokens_per_s"]["p50"], bound)
        rows.append(row)
    return rows


def _cancel(path: Path, work: Path, *, runs: int) -> dict[str, Any]:
    from zeta_local import CancelToken, Cancelled, ZetaDynamicRouter
    from zeta_local.synth_models import words_prompt

    name = "reason-14b"
    config = _config(work, "gpu-cancel", {name: path}, {}, n_ctx=N_CTX)
    with ZetaDynamicRouter.from_toml(config, faults="") as router:
        router.generate("w1 w2", model=name, max_tokens=1)  # load outside the measured part
        worker = router._pool.workers[(name, False)]
        started = time.monotonic()  # one whole evaluation, to know when "during" is
        router.generate(words_prompt(LONG_PROMPT_TOKENS, start=100_000), model=name, max_tokens=1)
        prefill_s = time.monotonic() - started
        cancel_after = prefill_s * 0.4
        times: list[float] = []
        for i in range(runs):
            token = CancelToken()
            timer = threading.Timer(cancel_after, token.cancel)
            timer.start()
            try:  # a new prompt each time: no cached prefix
                router.generate(words_prompt(LONG_PROMPT_TOKENS, start=10_000 * (i + 1)), model=name,
                                cancel=token, max_tokens=1)
                continue  # finished before the cancel: nothing to measure
            except Cancelled:
                cancelled_at = time.monotonic()
            finally:
                timer.cancel()
            deadline = cancelled_at + 30
            while worker.current is not None and time.monotonic() < deadline:
                time.sleep(0.0002)
            times.append(time.monotonic() - cancelled_at)
    result: dict[str, Any] = {"model": name, "prompt_tokens": LONG_PROMPT_TOKENS,
                              "prefill_s": round(prefill_s, 3), "cancelled_after_s": round(cancel_after, 3)}
    if not times:
        return result | {"note": "every evaluation finished before its cancel"}
    return result | {"ms_p50": round(statistics.median(times) * 1000, 1),
                     "ms_p95": round(percentile(times, 0.95) * 1000, 1), "ms": spread(times, 1000)}


def _cycles(path: Path, work: Path) -> dict[str, Any]:
    from zeta_local import ZetaDynamicRouter, gpu_probe

    name = "reason-14b"
    config = _config(work, "gpu-cycles", {name: path}, {}, n_ctx=N_CTX)
    with ZetaDynamicRouter.from_toml(config, faults="") as router:
        baseline, idle_process = gpu_probe.device_used(), gpu_probe.process_used()
        if baseline is None:
            return {"note": "the device's memory use cannot be read (neither NVML nor the CUDA driver)"}
        rows = []
        for _ in range(CYCLES):
            router.preload(name)
            loaded = gpu_probe.device_used() or 0
            router.unload(name)
            _wait_unloaded(router, name)
            back_in_s, after = _wait_device_back(baseline)
            rows.append({"loaded_mib": round(loaded / MiB), "after_unload_mib": round(after / MiB),
                         "back_in_s": back_in_s})
    excess = max(r["after_unload_mib"] for r in rows) - round(baseline / MiB)
    return {"model": name, "baseline_mib": round(baseline / MiB),
            "process_idle_mib": None if idle_process is None else round(idle_process / MiB),
            "cycles": rows, "max_excess_mib": excess,
            "back_to_baseline": excess * MiB <= BACK_TOLERANCE,
            "tolerance_mib": BACK_TOLERANCE // MiB}


def _out_of_memory(paths: dict[str, Path], work: Path, vram: Any) -> dict[str, Any]:
    from zeta_local import FallbackExhausted, ZetaDynamicRouter, gpu_probe

    need = {}  # what each model really took on the device, else what the estimate says
    for row in vram if isinstance(vram, list) else []:
        need[row["model"]] = row.get("device_used_delta_bytes") or row.get("predicted_vram_bytes")
    small, big = need.get("general-4b") or 5 * 2**30, need.get("reason-14b") or 11 * 2**30
    leave = (small + big) // 2  # room for the 4B, not for the 14B
    models = {"reason-14b": paths["reason-14b"], "general-4b": paths["general-4b"]}
    config = _config(work, "gpu-oom", models, {"chat": ["reason-14b", "general-4b"]},
                     router={"max_tokens": 8}, n_ctx=N_CTX)

    def ask(router: Any) -> dict[str, Any]:
        started = time.monotonic()
        try:
            result = router.generate("w1 w2 w3", task="chat", **GREEDY)
            attempts, answered = result.attempts, result.model
        except FallbackExhausted as exc:
            attempts, answered = exc.attempts, None
        return {"answered_by": answered, "seconds": round(time.monotonic() - started, 2),
                "attempts": [{"model": a.model, "outcome": a.outcome, "detail": a.detail} for a in attempts]}

    before_holder = ZetaDynamicRouter.from_toml(config, faults="")  # plans with the whole card
    try:
        with gpu_probe.hold_vram(leave) as holder:
            during = ask(before_holder)  # a real CUDA out-of-memory on the 14B
            before_holder.unload("general-4b")  # the room is the next router's to plan with
            _wait_unloaded(before_holder, "general-4b")
            with ZetaDynamicRouter.from_toml(config, faults="") as after_holder:
                planned = ask(after_holder)  # admission sees the free VRAM: does_not_fit
            alive = before_holder.generate("w4 w5", model="general-4b", max_tokens=2).model
    finally:
        before_holder.close()
    return {"left_free_bytes": leave, "holder": holder, "started_before_the_holder": during,
            "started_after_the_holder": planned, "process_lived_on": alive == "general-4b"}


# ---- markdown --------------------------------------------------------------------------------


def _mib(n: int | None) -> str:
    return "–" if n is None else f"{n / MiB:,.0f}"


def gpu_markdown(g: dict[str, Any]) -> list[str]:
    """The section as markdown lines; a note where it was not run."""
    lines = ["## GPU", ""]
    if "device" not in g:
        return lines + [f"Not measured: {g.get('note', 'no figures')}."]
    d = g["device"]
    lines.append(f"Device: {d.get('name', '?')}, {_mib(d.get('memory_total_bytes'))} MiB, driver "
                 f"{d.get('driver', '?')}; synthetic real-shape Q4_K_M models at n_ctx {g['n_ctx']}."
                 if "name" in d else f"Device: {d.get('note')}.")
    vram = g.get("vram")
    lines += ["", "| model | predicted VRAM MiB | CUDA buffers MiB (model / KV / compute) | error vs CUDA | "
              "device use grew MiB | this process (NVML) MiB | error vs device |", "|---|---|---|---|---|---|---|"]
    if isinstance(vram, list):
        for r in vram:
            c = r["cuda_buffers"]
            lines.append(f"| {r['model']} | {_mib(r['predicted_vram_bytes'])} | {_mib(r['cuda_total_bytes'])} "
                         f"({_mib(c.get('model'))} / {_mib(c.get('KV'))} / {_mib(c.get('compute'))}) | "
                         f"{_pct(r['error_vs_cuda_percent'])} | {_mib(r['device_used_delta_bytes'])} | "
                         f"{_mib(r['process_bytes'])} | {_pct(r['error_vs_device_delta_percent'])} |")
            e = r.get("with_embedding_context")
            if e:
                lines.append(f"| {r['model']} + embedding context | {_mib(e['predicted_vram_bytes'])} (embedding) | "
                             f"{_mib(sum(e['cuda_buffers'].values()))} (embedding) | | "
                             f"{_mib(e['device_used_delta_bytes'])} ({e['both_over_generation_alone']}× "
                             f"generation alone) | {_mib(e['process_bytes'])} | |")
    else:
        lines.append(f"| vram | {_failed(vram)} | | | | | |")
    decode = g.get("decode")
    bw = g.get("memory_bandwidth") or {}
    lines += ["", f"Decoding {'128' if not isinstance(decode, list) else decode[0]['max_tokens']} tokens, greedy; "
              f"the bound is the memory bandwidth ({bw.get('gb_s')} GB/s, {bw.get('source')}) over the bytes of "
              "weights a token reads.", "",
              "| model | tokens/s router | tokens/s llama-cpp-python | router ÷ raw (p25–p75) | same settings | "
              "bound tokens/s | fraction of the bound |", "|---|---|---|---|---|---|---|"]
    if isinstance(decode, list):
        for r in decode:
            s = r["ratio_spread"]
            lines.append(f"| {r['model']} | {r['router_tokens_per_s']['p50']} | {r['raw_tokens_per_s']['p50']} | "
                         f"{r['tokens_per_s_ratio']} ({s['p25']}–{s['p75']}) | {r['same_settings']} | "
                         f"{r.get('bound_tokens_per_s', '–')} | {r.get('fraction_of_bound', '–')} |")
    else:
        lines.append(f"| decode | {_failed(decode)} | | | | | |")
    lines += ["", "| measure | value |", "|---|---|"]
    c = g.get("cancel") or {}
    if "ms_p50" in c:
        lines.append(f"| cancel during a {c['prompt_tokens']:,}-token prompt evaluation of the 14B ({c['prefill_s']} s "
                     f"whole), {c['cancelled_after_s']} s in → worker free (ms, p50 / p95) | {c['ms_p50']} / {c['ms_p95']} |")
    else:
        lines.append(f"| cancel | {c.get('note') or _failed(c)} |")
    y = g.get("cycles") or {}
    if "cycles" in y:
        lines.append(f"| {len(y['cycles'])} load/unload cycles of the 14B: device use after each unload (MiB; "
                     f"baseline {y['baseline_mib']}) | {', '.join(str(r['after_unload_mib']) for r in y['cycles'])} "
                     f"({'back' if y['back_to_baseline'] else 'NOT back'} within {y['tolerance_mib']} MiB) |")
        if y.get("process_idle_mib") is not None:
            lines.append(f"| this process's GPU memory with no model loaded (NVML, MiB) | {y['process_idle_mib']} |")
    else:
        lines.append(f"| load/unload cycles | {y.get('note') or _failed(y)} |")
    o = g.get("out_of_memory") or {}
    if "started_before_the_holder" in o:
        for label, key in (("router started before", "started_before_the_holder"),
                           ("router started after", "started_after_the_holder")):
            a = o[key]
            tried = "; ".join(f"{t['model']} {t['outcome']}" for t in a["attempts"])
            lines.append(f"| another process holds all but {_mib(o['left_free_bytes'])} MiB; {label} it | "
                         f"{tried} → answered by {a['answered_by']} in {a['seconds']} s |")
        lines.append(f"| the process lived on (the 4B answered again) | {o['process_lived_on']} |")
    else:
        lines.append(f"| out-of-memory | {_failed(o)} |")
    return lines


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{value:+.1f} %"


def _failed(step: Any) -> str:
    if isinstance(step, dict) and "error" in step:
        return "failed: " + " ".join(str(step["error"]).split())[-300:].replace("|", "/")
    return "not measured"

