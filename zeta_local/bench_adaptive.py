"""`zeta-local bench`'s `adaptive` section: what ordering by measured use, and spreading load,
change, each measured against the static router in the same run, on generated tiny models.

- ordering: a flaky primary (`flaky:0.3`: 30 % of its requests fail) before a healthy
  fallback. Static order, adaptive with the default `demote_below` 0.5 (above the primary's
  0.7 success rate: it keeps its place) and adaptive with 0.8 (under it: it is demoted); and
  static with the circuit breaker on. Share of requests that hit the failing model first, and
  mean time to answer.
- spreading: two clients on a slow primary (`slow_token`) with an idle loaded fallback, with
  and without `max_queue_wait_s`: requests per second and where they were answered.
- metrics cost: a short request with the SQLite metrics on and off, interleaved pairs.
"""

from __future__ import annotations

import statistics
import threading
import time
from pathlib import Path
from typing import Any

from zeta_local.bench_baseline import GREEDY, interleaved, run_clients, spread
from zeta_local.results import BUSY_REROUTED, HEALTH_OUTCOMES

PROMPT = "write a python function that reverses a string"
FLAKY_SHARE = 0.3
SLOW_TOKEN_MS = 30


def measure_adaptive(tiny: dict[str, Path], work: Path, *, quick: bool) -> dict[str, Any]:
    return {"ordering": _ordering(tiny, work, 40 if quick else 100),
            "spreading": _spreading(tiny, work, 4 if quick else 8),
            "metrics_cost": _metrics_cost(tiny, work, 12 if quick else 30)}


def _write(work: Path, name: str, tiny: dict[str, Path], router: dict[str, Any]) -> Path:
    from zeta_local.bench import _config

    return _config(work, name, {"primary": tiny["a"], "fallback": tiny["b"]},
                   {"code": ["primary", "fallback"]}, router={"max_tokens": 16} | router)


def _ordering(tiny: dict[str, Path], work: Path, requests: int) -> dict[str, Any]:
    from zeta_local import ZetaDynamicRouter
    from zeta_local.backend import LlamaCppBackend
    from zeta_local.faults import FaultInjectingBackend, parse_faults

    # The bench sends its requests back to back, so the circuit breaker (3 failures within 60 s)
    # opens at once; spread over minutes, as a desktop's requests are, it would not. The ordering
    # is measured with the breaker out of the way, and static with the breaker on beside it.
    patient = {"allowed_fails": 10**6}
    variants = {"static": patient, "adaptive": patient | {"adaptive": True},
                "adaptive, demote_below 0.8": patient | {"adaptive": True, "demote_below": 0.8},
                "static, breaker at its defaults": {}}
    rows = {}
    for name, settings in variants.items():
        config = _write(work, f"ordering-{len(rows)}", tiny, settings)
        # The same draws for every variant: the same requests fail, as far as they reach it.
        backend = FaultInjectingBackend(LlamaCppBackend(), parse_faults(f"primary=flaky:{FLAKY_SHARE}"), seed=0)
        with ZetaDynamicRouter.from_toml(config, backend=backend) as router:
            router.preload("primary")
            router.preload("fallback")
            seconds, first_on_primary, first_failed, failed_s = [], 0, 0, 0.0
            for i in range(requests):
                started = time.monotonic()
                result = router.generate(f"{PROMPT} #{i}", task="code", **GREEDY)
                seconds.append(time.monotonic() - started)
                # Tried, not skipped: a circuit breaker's skip costs nothing and tells nothing.
                tried = [a for a in result.attempts if a.outcome in HEALTH_OUTCOMES]
                first_on_primary += tried[0].model == "primary"
                first_failed += tried[0].model == "primary" and not tried[0].ok
                failed_s += sum(a.seconds for a in tried if not a.ok)
        rows[name] = {"requests": requests,
                      "first_on_primary": round(first_on_primary / requests, 3),
                      "hit_failing_model_first": round(first_failed / requests, 3),
                      "answer_ms_mean": round(statistics.mean(seconds) * 1000, 1),
                      "answer_ms_p50": round(statistics.median(seconds) * 1000, 1),
                      "failed_attempts_ms_total": round(failed_s * 1000, 1)}
    return {"flaky_share": FLAKY_SHARE, "variants": rows}


def _spreading(tiny: dict[str, Path], work: Path, per_client: int) -> dict[str, Any]:
    from zeta_local import ZetaDynamicRouter

    rows = {}
    for name, settings in {"off": {}, "max_queue_wait_s=0.1": {"max_queue_wait_s": 0.1}}.items():
        config = _write(work, f"spreading-{name}", tiny, settings)
        with ZetaDynamicRouter.from_toml(config, faults=f"primary=slow_token:{SLOW_TOKEN_MS}") as router:
            router.preload("primary")
            router.preload("fallback")
            router.generate(PROMPT, task="code", **GREEDY)  # the primary's time per request, measured
            results: list[Any] = []
            lock = threading.Lock()

            def client(i: int) -> None:
                for j in range(per_client):
                    result = router.generate(f"{PROMPT} {i}.{j}", task="code", **GREEDY)
                    with lock:
                        results.append(result)

            elapsed = run_clients(client, 2)
        rows[name] = {"requests": len(results), "requests_per_s": round(len(results) / elapsed, 2),
                      "answered_by_fallback": sum(r.model == "fallback" for r in results),
                      "rerouted": sum(any(a.outcome == BUSY_REROUTED for a in r.attempts) for r in results)}
    off, on = rows["off"], rows["max_queue_wait_s=0.1"]
    return {"clients": 2, "slow_token_ms": SLOW_TOKEN_MS, "variants": rows,
            "throughput_ratio": round(on["requests_per_s"] / off["requests_per_s"], 2)}


def _metrics_cost(tiny: dict[str, Path], work: Path, pairs: int) -> dict[str, Any]:
    """What recording an attempt costs the request that makes it: record() alone, timed on a
    store writing to a file meanwhile; and a short request with metrics on and off. Which of
    two routers is built first shifts their speed by as much as 30 % here, so the pairs are
    measured twice, built in either order, and their ratios pooled."""
    from zeta_local import ZetaDynamicRouter
    from zeta_local.metrics import AttemptRecord, MetricsStore

    with MetricsStore(work / "record-cost.sqlite3") as store:
        costs = []
        for i in range(2000):
            rec = AttemptRecord(time.time(), f"m{i % 3}", "code", "ok", 0.1, 0.01, 50.0, 20, 16, False)
            started = time.perf_counter()
            store.record(rec)
            costs.append(time.perf_counter() - started)
    on = _write(work, "metrics-on", tiny, {"metrics": True, "metrics_path": str(work / "metrics.sqlite3")})
    off = _write(work, "metrics-off", tiny, {})
    with_metrics, without, ratios = [], [], []
    for first, second in ((on, off), (off, on)):
        with ZetaDynamicRouter.from_toml(first) as a, ZetaDynamicRouter.from_toml(second) as b:
            router_on, router_off = (a, b) if first == on else (b, a)

            def timed(router: Any) -> float:
                started = time.monotonic()
                router.generate(PROMPT, task="code", max_tokens=4, **GREEDY)
                return time.monotonic() - started

            for router in (router_on, router_off):
                timed(router)  # loads the model
            x, y, r = interleaved(lambda: timed(router_on), lambda: timed(router_off), pairs, pairs * 2)
            with_metrics, without, ratios = with_metrics + x, without + y, ratios + r
    return {"record_us": spread(costs, 1e6, 2), "pairs": len(ratios),
            "request_ms_metrics_on": spread(with_metrics, 1000),
            "request_ms_metrics_off": spread(without, 1000),
            "ratio_on_over_off": round(statistics.median(ratios), 3)}


def adaptive_markdown(r: dict[str, Any]) -> list[str]:
    if "note" in r:
        return [f"Adaptive order and spreading: not measured: {r['note']}"]
    o, s, m = r["ordering"], r["spreading"], r["metrics_cost"]
    lines = [f"| adaptive order: flaky primary ({o['flaky_share']:.0%} fail) before a healthy fallback | "
             "tried the primary first | hit the failing model first (it failed) | time to answer, mean / p50 (ms) "
             "| spent in failed attempts (ms, all requests) |", "|---|---|---|---|---|"]
    for name, v in o["variants"].items():
        lines.append(f"| {name} ({v['requests']} requests) | {v['first_on_primary'] * 100:.0f} % | "
                     f"{v['hit_failing_model_first'] * 100:.0f} % | {v['answer_ms_mean']} / {v['answer_ms_p50']} | "
                     f"{v['failed_attempts_ms_total']} |")
    lines += ["", f"| load spreading: 2 clients, primary at +{s['slow_token_ms']} ms a token, fallback idle | "
              "requests | requests/s | answered by the fallback |", "|---|---|---|---|"]
    for name, v in s["variants"].items():
        lines.append(f"| {name} | {v['requests']} | {v['requests_per_s']} | {v['answered_by_fallback']} |")
    lines += ["", f"Spreading's throughput ratio: {s['throughput_ratio']}×. Recording an attempt: "
              f"{m['record_us']['p50']} µs p50, {m['record_us']['p95']} µs p95. A 4-token request with "
              f"metrics on ÷ off (median of {m['pairs']} interleaved pairs): {m['ratio_on_over_off']} "
              f"({m['request_ms_metrics_on']['p50']} vs {m['request_ms_metrics_off']['p50']} ms)."]
    return lines
