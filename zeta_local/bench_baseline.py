"""The raw llama-cpp-python baseline of `zeta-local bench`, and the way two things are compared
on a shared, noisy machine.

The baseline must differ from the router in nothing but the router: the same load arguments
(`backend.llama_kwargs`, recorded when the router loaded the model, so n_gpu_layers and whatever
else the backend decides), the same sampling (what the router's model was given, its per-model
and [router] defaults included), and llama.cpp's own report of both settings compared. Tokens/s
are compared in many short interleaved pairs, alternating which side goes first, and the
median of the per-pair ratios is reported with its spread.
"""

from __future__ import annotations

import math
import os
import statistics
import threading
import time
from pathlib import Path
from typing import Any, Callable

STEADY = 0.005  # the median ratio's relative standard error to reach before stopping early
# Greedy, so that both sides decode the same tokens; every other sampling setting is the
# router's own default for the model, and the raw baseline is handed the same values.
GREEDY = dict(temperature=0.0)


def percentile(values: list[float], q: float) -> float:
    """The nearest-rank percentile: the smallest value with at least a share q of them at or
    below it (ceil, not round: round(2.5) is 2, which made the p50 of 5 values the 2nd)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered) - 1e-9) - 1))]


def spread(values: list[float], scale: float = 1.0, digits: int = 1) -> dict[str, float]:
    v = [x * scale for x in values]
    return {"p50": round(statistics.median(v), digits), "p95": round(percentile(v, 0.95), digits),
            "min": round(min(v), digits), "max": round(max(v), digits), "runs": len(v)}


def interleaved(first: Callable[[], float], second: Callable[[], float], min_pairs: int,
                max_pairs: int | None = None, *, steady: float = STEADY, budget_s: float = 600.0,
                ) -> tuple[list[float], list[float], list[float]]:
    """Measure A and B side by side in pairs, alternating which goes first (AB, BA, AB, ...) so
    that drift and a warm cache favour neither. Returns A's figures, B's figures and the
    per-pair ratios A/B: a pair's two runs see the same machine, so its ratio cancels most of
    the load other processes put on a shared one.

    After `min_pairs`, more pairs are measured (up to `max_pairs`, within `budget_s`) until the
    median ratio is known to within `steady` (its standard error, estimated from the ratios'
    interquartile range): a quiet machine stops early, a busy one measures longer."""
    max_pairs = max(min_pairs, max_pairs or min_pairs)
    started = time.monotonic()
    a_values, b_values, ratios = [], [], []
    for i in range(max_pairs):
        if i >= min_pairs and i % 2 == 0 and (median_error(ratios) <= steady
                                               or time.monotonic() - started > budget_s):
            break
        if i % 2:
            b = second()
            a = first()
        else:
            a = first()
            b = second()
        a_values.append(a)
        b_values.append(b)
        ratios.append(a / b)
    return a_values, b_values, ratios


def median_error(values: list[float]) -> float:
    """The relative standard error of the median of `values`, from their interquartile range
    (for a normal sample: 1.2533 x sigma / sqrt(n), sigma = IQR / 1.349)."""
    iqr = percentile(values, 0.75) - percentile(values, 0.25)
    return 0.929 * iqr / len(values) ** 0.5 / abs(statistics.median(values))


def ratio_spread(ratios: list[float]) -> dict[str, float]:
    """The per-pair ratios' median, quartiles and extremes."""
    return {"p50": round(statistics.median(ratios), 3), "p25": round(percentile(ratios, 0.25), 3),
            "p75": round(percentile(ratios, 0.75), 3), "min": round(min(ratios), 3),
            "max": round(max(ratios), 3), "pairs": len(ratios)}


class RecordingBackend:
    """The real backend, remembering how it loaded each model (the arguments of its `Llama`)
    and the sampling parameters each generation was given, so that a raw llama-cpp-python
    baseline can be set up exactly alike. Recording costs one call per request, not per token."""

    def __init__(self) -> None:
        from zeta_local.backend import LlamaCppBackend

        self._inner = LlamaCppBackend()
        self.kwargs: dict[str, dict[str, Any]] = {}
        self.models: dict[str, Any] = {}
        self.sampling: dict[str, Any] = {}

    def load(self, spec: Any, path: Path, info: Any, **options: Any) -> Any:
        """The real load, passed every option the pool gives (embedding, n_threads, cancel, ...)."""
        from zeta_local.backend import llama_kwargs

        model = self._inner.load(spec, path, info, **options)
        if not options.get("embedding"):
            self.kwargs[spec.name] = llama_kwargs(spec, path, info, n_threads=options["n_threads"])
            self.models[spec.name] = model
            generate = model.generate

            def recorded(prompt: str, params: Any) -> Any:
                self.sampling[spec.name] = params
                return generate(prompt, params)

            model.generate = recorded
        return model

    def raw_twin(self, name: str) -> tuple[Any, dict[str, Any]]:
        """A llama-cpp-python `Llama` loaded as the router loaded `name`, and the keyword
        arguments that make `create_completion` sample as the router's last request did."""
        import inspect

        import llama_cpp

        raw = llama_cpp.Llama(**self.kwargs[name])
        accepted = inspect.signature(raw.create_completion).parameters
        params = self.sampling[name]
        fields = {k: getattr(params, k) for k in getattr(params, "__dataclass_fields__", {})}
        sampling = {k: v for k, v in fields.items() if k in accepted and k != "max_tokens"}
        sampling["stop"] = list(fields.get("stop") or ()) or None
        return raw, sampling


def llama_settings(llm: Any) -> dict[str, Any] | None:
    """What llama.cpp was really given for a loaded `Llama`: the settings that decide its speed."""
    try:
        m, c = llm.model_params, llm.context_params
        return {"n_gpu_layers": m.n_gpu_layers, "split_mode": m.split_mode, "n_ctx": llm.n_ctx(),
                "n_batch": c.n_batch, "n_ubatch": c.n_ubatch, "n_threads": c.n_threads,
                "n_threads_batch": c.n_threads_batch, "flash_attn_type": c.flash_attn_type,
                "type_k": c.type_k, "type_v": c.type_v, "offload_kqv": c.offload_kqv,
                "op_offload": c.op_offload, "embeddings": c.embeddings}
    except AttributeError:
        return None


def compare_decoding(router: Any, backend: RecordingBackend, name: str, prompt: str,
                     pairs: tuple[int, int], max_tokens: int) -> dict[str, Any]:
    """Tokens/s through the router against llama-cpp-python loaded and sampling alike, measured
    in interleaved pairs. The router's model must be loaded (and have served once) already."""
    raw, sampling = backend.raw_twin(name)
    try:
        ours_settings = llama_settings(getattr(backend.models[name], "_llm", None))
        raw_settings = llama_settings(raw)
        raw.create_completion(prompt, max_tokens=8, **sampling)  # warm-up

        def through_router() -> float:
            t = time.perf_counter()
            result = router.generate(prompt, model=name, max_tokens=max_tokens, **GREEDY)
            return result.usage.completion_tokens / (time.perf_counter() - t)

        def through_raw() -> float:
            t = time.perf_counter()
            ref = raw.create_completion(prompt, max_tokens=max_tokens, **sampling)
            return ref["usage"]["completion_tokens"] / (time.perf_counter() - t)

        load = _load_average()
        ours, theirs, ratios = interleaved(through_router, through_raw, *pairs)
    finally:
        raw.close()
    differ = sorted(k for k in (ours_settings or {}) if (raw_settings or {}).get(k) != ours_settings[k]) \
        if ours_settings and raw_settings else None
    return {"tokens_per_s_ratio": round(statistics.median(ratios), 3), "ratio_spread": ratio_spread(ratios),
            "router_tokens_per_s": spread(ours), "raw_tokens_per_s": spread(theirs),
            "max_tokens": max_tokens, "median_error": round(median_error(ratios), 4),
            "load_average": load, "cores": os.cpu_count(),
            "same_settings": None if differ is None else not differ,
            **({"settings_differ": differ} if differ else {}),
            "settings": ours_settings,
            "sampling": {k: v for k, v in sampling.items() if v is not None}}


def _load_average() -> float | None:
    """The machine's 1-minute load average, to say how busy it was (None where unknown)."""
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return None




def handover_excess(router: Any, stalling: str, runs: int, stall_s: float, **options: Any) -> list[float]:
    """Seconds from the stalling model's last text to the next model's first, minus the stall
    budget, over `runs` chat requests (one more first, as a warm-up, not counted)."""
    from zeta_local.results import TextChunk

    excess: list[float] = []
    for i in range(runs + 1):
        last_text = time.monotonic()
        for event in router.stream(f"story {i}", task="chat", **options):
            if isinstance(event, TextChunk):
                if event.model == stalling:
                    last_text = time.monotonic()
                else:
                    if i:
                        excess.append(time.monotonic() - last_text - stall_s)
                    break
    return excess


def run_clients(client: Callable[[int], None], count: int, timeout_s: float = 300.0) -> float:
    """Run client(0) ... client(count - 1) on threads at once; the seconds until all are done
    (each waited for at most timeout_s)."""
    threads = [threading.Thread(target=client, args=(i,)) for i in range(count)]
    started = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=timeout_s)
    return time.monotonic() - started
