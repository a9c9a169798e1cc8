"""The `server` section of `zeta-local bench`: what the HTTP layer costs, measured interleaved
with the in-process path on the same router and model.

    tokens/s     streamed over HTTP (SSE, parsed by the client) / in-process router.stream()
    latency      a short non-streaming request over HTTP minus the same request in-process
    disconnect   a client closing its socket during a long prompt evaluation, until the
                 model's worker is free again
"""

from __future__ import annotations

import json
import socket
import statistics
import time
from pathlib import Path
from typing import Any

from zeta_local.bench import GREEDY, LONG_PROMPT, STORY_PROMPT, _config, percentile, spread


def measure_server(model_path: Path, tiny: dict[str, Path], work: Path, runs: int,
                   max_tokens: int) -> dict[str, Any]:
    from zeta_local import Done, ZetaDynamicRouter
    from zeta_local.server import BackgroundServer

    config = _config(work, "server", {"m": model_path}, {}, n_ctx=4096)
    body = {"model": "m", "prompt": STORY_PROMPT, "max_tokens": max_tokens, "stream": True,
            "stream_options": {"include_usage": True}} | GREEDY
    with ZetaDynamicRouter.from_toml(config, faults="") as router, BackgroundServer(router) as server:
        http = _Client(server)

        def in_process() -> float:
            started = time.perf_counter()
            done = [e for e in router.stream(STORY_PROMPT, model="m", max_tokens=max_tokens, **GREEDY)
                    if isinstance(e, Done)][0]
            return done.result.usage.completion_tokens / (time.perf_counter() - started)

        def over_http() -> float:
            started = time.perf_counter()
            tokens = 0
            for line in http.post("/v1/completions", body):
                if line.startswith(b"data: {") and b'"usage":{' in line:
                    tokens = json.loads(line[6:])["usage"]["completion_tokens"]
            return tokens / (time.perf_counter() - started)

        in_process(), over_http()  # load and warm up
        ours, http_tps, ratios = [], [], []
        for i in range(runs):  # alternate which goes first, so that drift favours neither
            if i % 2:
                b, a = over_http(), in_process()
            else:
                a, b = in_process(), over_http()
            ours.append(a)
            http_tps.append(b)
            ratios.append(b / a)
        disconnect = _disconnect(router, server, runs)
        http.close()

    small = _config(work, "server-latency", {"t": tiny["a"]}, {})
    short = {"model": "t", "prompt": "hi", "max_tokens": 4} | GREEDY
    with ZetaDynamicRouter.from_toml(small, faults="") as router, BackgroundServer(router) as server:
        http = _Client(server)
        router.generate("hi", model="t", max_tokens=4, **GREEDY)
        http.post("/v1/completions", short).read()
        added = []
        for _ in range(runs * 10):
            started = time.perf_counter()
            router.generate("hi", model="t", max_tokens=4, **GREEDY)
            a = time.perf_counter() - started
            started = time.perf_counter()
            http.post("/v1/completions", short).read()
            added.append(time.perf_counter() - started - a)
        http.close()
    return {"tokens_per_s_ratio": round(statistics.median(ratios), 3),
            "http_tokens_per_s": spread(http_tps), "in_process_tokens_per_s": spread(ours),
            "max_tokens": max_tokens, "client": "http.client (Python's own), one kept-alive connection",
            "latency_ms_added_p50": round(statistics.median(added) * 1000, 2),
            "latency_ms_added": spread(added, 1000, 2), "disconnect": disconnect}


class _Client:
    """The lightest HTTP client at hand (the standard library's), so that the figures are the
    server's: on 2 cores, a client's own parsing takes its CPU from llama.cpp's threads too."""

    def __init__(self, server: Any):
        import http.client

        self._conn = http.client.HTTPConnection(server.host, server.port, timeout=600)

    def post(self, path: str, body: dict[str, Any]) -> Any:
        """The response, to read() whole or to iterate by line as the lines arrive."""
        self._conn.request("POST", path, json.dumps(body), {"Content-Type": "application/json"})
        response = self._conn.getresponse()
        if response.status != 200:
            raise RuntimeError(f"POST {path}: {response.status} {response.read()[:200]!r}")
        return response

    def close(self) -> None:
        self._conn.close()


def _disconnect(router: Any, server: Any, runs: int) -> dict[str, Any]:
    """A streaming request over a plain socket, closed 0.3 s into its prompt evaluation."""
    worker = router._pool.workers[("m", False)]
    times = []
    for i in range(runs):
        data = json.dumps({"model": "m", "prompt": f"{i} {LONG_PROMPT}", "max_tokens": 1,
                           "stream": True}).encode()
        client = socket.create_connection((server.host, server.port), timeout=30)
        client.sendall(f"POST /v1/completions HTTP/1.1\r\nHost: {server.host}\r\nContent-Type: "
                       f"application/json\r\nContent-Length: {len(data)}\r\n\r\n".encode() + data)
        deadline = time.monotonic() + 30
        while worker.current is None and time.monotonic() < deadline:
            time.sleep(0.001)
        time.sleep(0.3)
        if worker.current is None:  # already done: this machine evaluates it in under 0.3 s
            client.close()
            continue
        closed_at = time.monotonic()
        client.close()
        while worker.current is not None:
            time.sleep(0.0002)
        times.append(time.monotonic() - closed_at)
    if not times:
        return {"note": "the prompt evaluation ended within 0.3 s on this machine: nothing to cut"}
    return {"ms_p50": round(statistics.median(times) * 1000, 1),
            "ms_p95": round(percentile(times, 0.95) * 1000, 1), "ms": spread(times, 1000),
            "prompt": "about 2,000 tokens, the client closing its socket 0.3 s into the evaluation"}
