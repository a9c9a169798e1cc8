"""`zeta-local bench`'s `remote` section: what a remote engine in a chain costs, on loopback.

- overhead: tokens/s through a remote chain member (llama-cpp-python's own OpenAI-compatible
  server, started here on a free loopback port with the model the router loads in process, the
  same n_ctx, n_batch and threads) ÷ the same model in process, in interleaved pairs, greedy,
  the same prompt and max_tokens. Both sides are whole requests through the router: prompt
  evaluation and decoding; the remote side adds HTTP, the server's own Python and SSE parsing.
  Quick mode uses a generated tiny model (seconds), where fixed costs weigh most.
- failover: a small HTTP engine that streams three chunks and then stalls, before a local tiny
  model: the engine's last chunk to the local model's first text, minus stall_timeout_s.

Without llama-cpp-python's server extra the section is a note.
"""

from __future__ import annotations

import json
import os
import select
import socket
import statistics
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from zeta_local.bench_baseline import (GREEDY, RecordingBackend, handover_excess, interleaved, median_error,
                                       percentile, ratio_spread, spread)

PROMPT = "The history of the Roman Empire is a long story. It began"
SERVER_START_S = 60.0  # llama_cpp.server's start-up (imports and model load), at most
STALL_S = 0.5
HOLD_S = 30.0  # the stalling engine holds a connection this long at most


def measure_remote(model_path: Path, tiny: dict[str, Path], work: Path, *, quick: bool) -> dict[str, Any]:
    import importlib.util

    missing = [m for m in ("sse_starlette", "starlette_context", "uvicorn", "fastapi")
               if importlib.util.find_spec(m) is None]
    if missing:
        return {"note": f"needs llama-cpp-python's server extra ({missing[0]} is not installed): "
                        f"pip install 'llama-cpp-python[server]'"}
    try:
        if quick:
            overhead = _overhead(tiny["a"], "generated tiny model", work, (6, 6), 16)
        else:
            overhead = _overhead(model_path, model_path.name, work, (12, 30), 64)
    except RuntimeError as exc:  # the server did not start: say why, and measure the rest
        overhead = {"note": str(exc)}
    return {"overhead": overhead, "failover": _failover(tiny, work, 5 if quick else 20)}


def _write(work: Path, name: str, models: dict[str, dict[str, Any]], route: str) -> Path:
    """Every generation task to the models in order; embeddings to `route` alone."""
    from zeta_local.bench import _config

    chain = list(models)
    return _config(work, name, models, {"code": chain, "reason": chain, "chat": chain, "embed": [route]},
                   router={"allowed_fails": 1000000})


def _overhead(path: Path, label: str, work: Path, pairs: tuple[int, int], max_tokens: int) -> dict[str, Any]:
    from zeta_local import ZetaDynamicRouter

    local = {"path": str(path), "n_ctx": 2048, "capabilities": ["generate", "embed"]}
    backend = RecordingBackend()
    # The router's own load arguments for the server; this router is closed before measuring,
    # so that only one router's threads share the cores with the server.
    with ZetaDynamicRouter.from_toml(_write(work, "remote-local", {"m": local}, "m"), backend=backend,
                                     faults="") as router:
        router.generate(PROMPT, model="m", max_tokens=4, **GREEDY)
    kwargs = backend.kwargs["m"]
    server_args = ["--model_alias", "m", "--n_ctx", str(kwargs["n_ctx"]), "--n_batch", str(kwargs["n_batch"]),
                   "--n_threads", str(kwargs["n_threads"]), "--n_threads_batch", str(kwargs["n_threads_batch"]),
                   "--flash_attn", str(bool(kwargs["flash_attn"]))]
    with LlamaServer(path, server_args, work / "llama-server.log") as server:
        remote = {"endpoint": server.url, "remote_model": "m", "capabilities": ["generate"]}
        config = _write(work, "remote-far", {"m": local, "r": remote}, "m")
        with ZetaDynamicRouter.from_toml(config, faults="") as both:
            texts: dict[str, str] = {}
            tokens: list[int] = []

            def seconds(model: str) -> float:
                started = time.perf_counter()
                result = both.generate(PROMPT, model=model, max_tokens=max_tokens, **GREEDY)
                elapsed = time.perf_counter() - started
                texts[model] = result.text.replace("\ufffd", "")
                if model == "m":
                    tokens.append(result.usage.completion_tokens)
                return elapsed

            seconds("m"), seconds("r")  # load and warm up both
            local_s, remote_s, ratios = interleaved(lambda: seconds("m"), lambda: seconds("r"), *pairs,
                                                    budget_s=120)
    # Greedy on the same weights: both decode the same tokens (checked by their text), so the
    # ratio of times is the ratio of tokens/s, counted with llama.cpp's own count in process.
    # (llama-cpp-python's server sends no usage in a stream, and drops pieces that are not
    # whole UTF-8, so counting its pieces would undercount.)
    n = statistics.median(tokens)
    return {"model": label, "max_tokens": max_tokens, "tokens": n,
            "tokens_per_s_ratio": round(statistics.median(ratios), 3),
            "ratio_spread": ratio_spread(ratios), "median_error": round(median_error(ratios), 4),
            "remote_tokens_per_s": spread([n / t for t in remote_s]),
            "local_tokens_per_s": spread([n / t for t in local_s]),
            "remote_ms_added": spread([far - near for far, near in zip(remote_s, local_s)], 1000),
            "same_text": texts["m"] == texts["r"],
            "server": f"llama_cpp.server on 127.0.0.1, n_ctx {kwargs['n_ctx']}, n_batch {kwargs['n_batch']}, "
                      f"n_threads {kwargs['n_threads']}, flash_attn {kwargs['flash_attn']}",
            "load_average": round(os.getloadavg()[0], 2), "cores": os.cpu_count()}


class LlamaServer:
    """llama-cpp-python's own server (`python -m llama_cpp.server`, its `server` extra) for
    `path` on a free loopback port, with `args` added (its own options: --n_ctx, ...); up
    within SERVER_START_S; stopped (terminate, then kill) on exit. The tests use it too."""

    def __init__(self, path: Path, args: list[str], log_path: Path):
        self._log_path = log_path  # a file, not a pipe: llama.cpp's load log would fill a pipe and block it
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{port}/v1"
        self._args = [sys.executable, "-m", "llama_cpp.server", "--model", str(path), "--host", "127.0.0.1",
                      "--port", str(port), *args]
        self._process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> LlamaServer:
        import httpx

        with self._log_path.open("wb") as log:
            self._process = subprocess.Popen(self._args, stdout=log, stderr=subprocess.STDOUT)
        give_up = time.monotonic() + SERVER_START_S
        while time.monotonic() < give_up:
            if self._process.poll() is not None:
                tail = self._log_path.read_bytes()[-500:].decode("utf-8", "replace")
                raise RuntimeError(f"llama_cpp.server exited at start ({self._process.returncode}); "
                                   f"its log ends: {tail}")
            try:
                if httpx.get(f"{self.url}/models", timeout=1, trust_env=False).status_code == 200:
                    return self
            except httpx.TransportError:
                time.sleep(0.1)
        self.__exit__()
        raise RuntimeError(f"llama_cpp.server did not answer on {self.url} within {SERVER_START_S:g} s")

    def __exit__(self, *exc_info: object) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


class StallingEngine:
    """An OpenAI-compatible engine on a loopback thread that streams three chunks of a
    completion, then says nothing until the client hangs up (HOLD_S at most)."""

    def __init__(self) -> None:
        stop = self._stop = threading.Event()

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                raw = json.dumps({"object": "list", "data": [{"id": "stall", "object": "model"}]}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("content-length", 0)))
                chat = self.path.endswith("/chat/completions")
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Connection", "close")
                self.end_headers()
                for word in ("Once", " upon", " a"):
                    choice = {"index": 0, "delta": {"content": word}} if chat else {"index": 0, "text": word}
                    self.wfile.write(b"data: " + json.dumps({"choices": [choice]}).encode() + b"\n\n")
                    self.wfile.flush()
                self.close_connection = True
                give_up = time.monotonic() + HOLD_S
                while not stop.is_set() and time.monotonic() < give_up:
                    readable, _, _ = select.select([self.connection], [], [], 0.05)
                    if readable and not self.connection.recv(1, socket.MSG_PEEK):
                        return  # the client hung up

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/v1"
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="zeta-bench-stalling-engine", daemon=True)

    def __enter__(self) -> StallingEngine:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)


def _failover(tiny: dict[str, Path], work: Path, runs: int) -> dict[str, Any]:
    from zeta_local import ZetaDynamicRouter

    with StallingEngine() as engine:
        models = {"far": {"endpoint": engine.url, "remote_model": "stall", "capabilities": ["generate"]},
                  "near": {"path": str(tiny["b"]), "n_ctx": 2048, "capabilities": ["generate", "embed"]}}
        config = _write(work, "remote-failover", models, "near")
        with ZetaDynamicRouter.from_toml(config, faults="") as router:
            router.generate("warm", model="near", max_tokens=4, **GREEDY)  # the fallback is loaded
            # The warm-up run also starts the remote's worker.
            excess = handover_excess(router, "far", runs, STALL_S, stall_timeout_s=STALL_S,
                                     max_tokens=24, **GREEDY)
    if not excess:
        return {"note": "the local model never took over from the stalled remote"}
    return {"excess_ms_p50": round(statistics.median(excess) * 1000, 1),
            "excess_ms_p95": round(percentile(excess, 0.95) * 1000, 1),
            "excess_ms": spread(excess, 1000), "stall_timeout_s": STALL_S}


def remote_markdown(r: dict[str, Any]) -> list[str]:
    if "note" in r:
        return [f"Remote engines: not measured: {r['note']}"]
    o, f = r["overhead"], r["failover"]
    lines = ["| remote engine (loopback) | value |", "|---|---|"]
    if "note" in o:
        lines.append(f"| remote overhead | not measured: {o['note']} |")
    else:
        s = o["ratio_spread"]
        lines += [
            f"| tokens/s through a remote chain member ÷ the same model in process ({o['model']}, "
            f"{o['tokens']:g} tokens, greedy; median of {s['pairs']} interleaved pairs; p25–p75, min–max) | "
            f"{o['tokens_per_s_ratio']} ({s['p25']}–{s['p75']}, {s['min']}–{s['max']}) |",
            f"| tokens/s remote / in process (p50) | {o['remote_tokens_per_s']['p50']} / "
            f"{o['local_tokens_per_s']['p50']} |",
            f"| time a request adds through the remote (ms, p50 / p95) | {o['remote_ms_added']['p50']} / "
            f"{o['remote_ms_added']['p95']} |",
            f"| same greedy text both ways | {'yes' if o['same_text'] else 'NO'} |"]
    if "note" in f:
        lines.append(f"| failover from a stalled remote | not measured: {f['note']} |")
    else:
        lines.append(f"| stalled remote's last chunk → local model's first text, minus the "
                     f"{f['stall_timeout_s']} s stall budget (ms, p50 / p95 of {f['excess_ms']['runs']}) | "
                     f"{f['excess_ms_p50']} / {f['excess_ms_p95']} |")
    return lines
