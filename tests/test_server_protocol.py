"""The server's HTTP protocol with a raw client (httpx): SSE framing, every error's status and
body, auth, size limits, a full queue, clients that disconnect, a soak of concurrent `openai`
clients with random faults, and `zeta-local serve` as a person runs it."""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable

import httpx
import openai
import psutil
import pytest

from conftest import ROOT, run_cli

HELLO = {"model": "auto", "messages": [{"role": "user", "content": "hello there"}], "max_tokens": 8}
MARGIN_S = 5.0  # generous: timings are measured in the benchmarks, not asserted here


def zeta_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("zeta-")]


def wait_for(condition: Callable[[], bool], timeout: float, step: float = 0.01) -> float:
    """Poll until `condition()` holds; returns how long it took, or fails after `timeout`."""
    started = time.monotonic()
    while not condition():
        assert time.monotonic() - started < timeout, "condition not met in time"
        time.sleep(step)
    return time.monotonic() - started


def model_state(server: Any, name: str) -> dict[str, Any]:
    rows = httpx.get(server.url + "/health", timeout=10).json()["models"]
    return next(r for r in rows if r["name"] == name)


@pytest.fixture
def one_model(serve: Callable[..., Any]) -> tuple[Any, Any]:
    return serve({"talker": {"model": "tiny-a"}}, max_request_bytes=4096)


def test_sse_framing_ends_with_done(one_model):
    server, _ = one_model
    with httpx.stream("POST", server.url + "/v1/chat/completions", json=HELLO | {"stream": True},
                      timeout=30) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        body = response.read().decode()
    events = body.split("\n\n")
    assert events[-1] == "" and events[-2] == "data: [DONE]"
    for event in events[:-2]:
        assert event.startswith("data: ") and "\n" not in event
        chunk = json.loads(event[len("data: "):])
        assert chunk["object"] == "chat.completion.chunk" and chunk["model"] == "talker"


def error_of(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert "Traceback" not in response.text
    error = response.json()["error"]
    assert {"message", "type", "param", "code"} <= set(error)
    return error


@pytest.mark.parametrize("body, param, words", [
    (HELLO | {"n": 2}, "n", "one choice"),
    (HELLO | {"tools": [{"type": "function", "function": {"name": "f"}}]}, "tools", "tool"),
    (HELLO | {"logprobs": True}, "logprobs", "log probabilities"),
    (HELLO | {"frequency_penalty": 0.5}, "frequency_penalty", "repeat_penalty"),
    (HELLO | {"mirostat": 2}, "mirostat", "unrecognized"),
    (HELLO | {"temperature": "hot"}, "temperature", "number"),
    ({"model": "auto"}, "messages", "required"),
    (HELLO | {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]},
     "messages[0].content", "text parts"),
    (HELLO | {"stream_options": {"include_usage": True}}, "stream_options", "stream=true"),
])
def test_unsupported_or_bad_parameters_are_400_naming_them(one_model, body, param, words):
    server, _ = one_model
    error = error_of(httpx.post(server.url + "/v1/chat/completions", json=body, timeout=30), 400)
    assert error["param"] == param and words in error["message"]
    assert error["type"] == "invalid_request_error"


@pytest.mark.parametrize("body, words", [
    (HELLO | {"temperature": -1}, "temperature"),
    (HELLO | {"messages": [{"role": "user", "content": "   "}]}, "no user text"),
    (HELLO | {"model": "embed"}, "/v1/embeddings"),
])
def test_requests_the_router_refuses_are_400(one_model, body, words):
    server, _ = one_model
    error = error_of(httpx.post(server.url + "/v1/chat/completions", json=body, timeout=30), 400)
    assert words in error["message"]


def test_malformed_json_unknown_paths_and_models(one_model):
    server, _ = one_model
    bad = httpx.post(server.url + "/v1/chat/completions", content=b"{not json",
                     headers={"content-type": "application/json"}, timeout=30)
    assert "not valid JSON" in error_of(bad, 400)["message"]
    assert error_of(httpx.post(server.url + "/v1/chat/completions", json=[1, 2], timeout=30), 400)
    assert error_of(httpx.get(server.url + "/v1/nothing", timeout=30), 404)["code"] == "not_found"
    error = error_of(httpx.post(server.url + "/v1/completions", json={"model": "gpt-4o", "prompt": "hi"},
                                timeout=30), 404)
    assert error["code"] == "model_not_found" and error["param"] == "model"
    error = error_of(httpx.post(server.url + "/v1/embeddings", json={"model": "code", "input": "hi"},
                                timeout=30), 400)
    assert "generation task" in error["message"]


def test_body_over_the_limit_is_413_before_any_model(one_model):
    server, router = one_model
    big = HELLO | {"messages": [{"role": "user", "content": "x" * 5000}]}
    assert error_of(httpx.post(server.url + "/v1/chat/completions", json=big, timeout=30),
                    413)["code"] == "request_too_large"
    # A chunked body has no Content-Length: counted as it arrives.
    chunked = (part for part in [json.dumps(big).encode()[:3000], json.dumps(big).encode()[3000:]])
    assert error_of(httpx.post(server.url + "/v1/chat/completions", content=chunked,
                               headers={"content-type": "application/json"}, timeout=30), 413)
    assert all(r.served == 0 and r.state == "unloaded" for r in router.status())


def test_prompt_over_every_context_is_400_context_length_exceeded(serve: Callable[..., Any]):
    server, _ = serve({"talker": {"model": "tiny-a", "n_ctx": 512}})
    long_prompt = HELLO | {"messages": [{"role": "user", "content": "word " * 2000}]}
    error = error_of(httpx.post(server.url + "/v1/chat/completions", json=long_prompt, timeout=60), 400)
    assert error["code"] == "context_length_exceeded"


def test_auth_missing_wrong_and_right(serve: Callable[..., Any]):
    server, _ = serve({"talker": {"model": "tiny-a"}}, api_key="s3cret")
    for headers in ({}, {"authorization": "Bearer nope"}, {"authorization": "s3cret"}):
        for method, path in (("POST", "/v1/chat/completions"), ("GET", "/v1/models"), ("GET", "/health")):
            response = httpx.request(method, server.url + path, json=HELLO, headers=headers, timeout=30)
            assert error_of(response, 401)["code"] == "invalid_api_key"
            assert response.headers["www-authenticate"] == "Bearer"
    ok = httpx.post(server.url + "/v1/chat/completions", json=HELLO,
                    headers={"authorization": "Bearer s3cret"}, timeout=30)
    assert ok.status_code == 200 and ok.json()["model"] == "talker"


def test_cors_is_off_unless_configured(serve: Callable[..., Any]):
    preflight = {"origin": "http://app.example", "access-control-request-method": "POST"}
    server, _ = serve({"talker": {"model": "tiny-a"}})
    assert "access-control-allow-origin" not in httpx.options(
        server.url + "/v1/chat/completions", headers=preflight, timeout=30).headers
    server, _ = serve({"talker": {"model": "tiny-a"}}, cors_origins=["http://app.example"])
    allowed = httpx.options(server.url + "/v1/chat/completions", headers=preflight, timeout=30)
    assert allowed.headers["access-control-allow-origin"] == "http://app.example"


def test_full_queue_is_429_with_retry_after(serve: Callable[..., Any]):
    server, _ = serve({"slow": {"model": "tiny-a", "first_token_timeout_s": 30}},
                      router={"queue_size": 1}, faults="slow=hang_prefill")
    # One request hangs in prompt evaluation, one waits in the queue; both leave after 2 s.
    holders = [threading.Thread(target=lambda: pytest.raises(httpx.ReadTimeout, httpx.post,
                                                             server.url + "/v1/chat/completions",
                                                             json=HELLO, timeout=2))
               for _ in range(2)]
    holders[0].start()
    wait_for(lambda: model_state(server, "slow")["state"] == "busy", 10)
    holders[1].start()
    wait_for(lambda: model_state(server, "slow")["queue_length"] == 1, 10)
    response = httpx.post(server.url + "/v1/chat/completions", json=HELLO, timeout=30)
    error = error_of(response, 429)
    assert response.headers["retry-after"] == "1"
    assert error["code"] == "queue_full" and error["zeta"]["attempts"][0]["outcome"] == "queue_full"
    for holder in holders:
        holder.join(10)
    wait_for(lambda: model_state(server, "slow")["state"] == "ready", MARGIN_S)


# ---- clients that go away ------------------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True])
def test_disconnect_during_prompt_evaluation_frees_the_worker(serve: Callable[..., Any], stream: bool):
    """A client that gives up while its prompt is evaluated (hung here inside llama_decode) is
    cancelled through the router's CancelToken: the worker is ready again within a second."""
    server, _ = serve({"slow": {"model": "tiny-a", "first_token_timeout_s": 60}},
                      faults="slow=hang_prefill")
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(server.url + "/v1/chat/completions", json=HELLO | {"stream": stream}, timeout=1)
    freed_in = wait_for(lambda: model_state(server, "slow")["state"] == "ready", 1.0)
    assert freed_in < 1.0
    row = model_state(server, "slow")
    assert row["queue_length"] == 0 and row["failed"] == 1


@pytest.mark.real_model
def test_closing_a_stream_during_a_long_prompt_frees_gemma_at_once(serve: Callable[..., Any], gemma_path: Path):
    """No fault: a real 2,000-token prompt evaluation on Gemma 3 270M (seconds on a CPU),
    stopped inside llama_decode when the client closes its stream; the next request answers."""
    server, _ = serve({"gemma": {"path": str(gemma_path), "n_ctx": 4096}})
    httpx.post(server.url + "/v1/completions", json={"model": "gemma", "prompt": "Hi", "max_tokens": 1},
               timeout=60)  # loaded
    long_prompt = {"model": "gemma", "prompt": "The quick brown fox jumps over the lazy dog. " * 200,
                   "max_tokens": 4, "stream": True}
    client = send_raw(server, "/v1/completions", long_prompt)
    wait_for(lambda: model_state(server, "gemma")["state"] == "busy", 30)
    time.sleep(0.3)
    client.close()  # mid prompt evaluation: nothing has been sent back yet
    freed_in = wait_for(lambda: model_state(server, "gemma")["state"] == "ready", 1.0)
    assert freed_in < 1.0
    answer = httpx.post(server.url + "/v1/completions",
                        json={"model": "gemma", "prompt": "Hello", "max_tokens": 4}, timeout=60)
    assert answer.status_code == 200 and answer.json()["model"] == "gemma"


def send_raw(server: Any, path: str, body: dict[str, Any]) -> socket.socket:
    """A POST written on a plain socket, whose close() is exactly a client going away."""
    data = json.dumps(body).encode()
    client = socket.create_connection((server.host, server.port), timeout=10)
    client.sendall(f"POST {path} HTTP/1.1\r\nHost: {server.host}\r\nContent-Type: application/json\r\n"
                   f"Content-Length: {len(data)}\r\n\r\n".encode() + data)
    return client


# ---- soak ----------------------------------------------------------------------------------


def test_soak_16_openai_clients_with_random_faults(serve: Callable[..., Any]):
    """16 concurrent clients, mixed tasks, streaming or not, embeddings, random faults, some
    requests pinned to a faulty model (so that some must fail): every
    request ends in a response or an OpenAI-style error; nothing lost or hung; after shutdown
    no thread and no socket of the server is left."""
    rng = random.Random(11)
    faults = ";".join(f"{m}={rng.choice(['hang_prefill', 'stall_after:2', 'raise_after:1'])}"
                      for m in ("a", "b")) + ";c=slow_token:5"
    fast = {"first_token_timeout_s": 0.5, "stall_timeout_s": 0.5}
    server, router = serve({"a": {"model": "tiny-a"} | fast, "b": {"model": "tiny-b"} | fast,
                            "c": {"model": "tiny-chatml"}},
                           routes={"code": ["a", "b", "c"], "reason": ["b", "c", "a"],
                                   "chat": ["c", "a", "b"], "embed": ["a", "c"]},
                           router={"max_tokens": 12, "allowed_fails": 10**6}, faults=faults)
    outcomes = {"response": 0, "error": 0, "lost": 0}
    lock = threading.Lock()

    def one_client(i: int) -> None:
        api = openai.OpenAI(base_url=server.url + "/v1", api_key="-", max_retries=0, timeout=60)
        for j in range(4):
            kind = (i + j) % 4
            model = ("auto", "code", "reason", "chat", "a", "b")[(i * 5 + j) % 6]  # a, b: pinned, faulty
            try:
                if kind == 0:
                    api.embeddings.create(model="auto", input=[f"text {i} {j}"])
                elif kind == 1:
                    api.completions.create(model=model, prompt=f"request {i} {j}")
                else:
                    response = api.chat.completions.create(
                        model=model, messages=[{"role": "user", "content": f"request {i} {j}"}],
                        stream=kind == 3)
                    if kind == 3:
                        assert list(response)
                outcome = "response"
            except openai.APIStatusError:
                outcome = "error"
            except openai.APIError:  # an error chunk inside a stream
                outcome = "error"
            except Exception:  # a timeout, a dropped connection, a bug: lost
                outcome = "lost"
            with lock:
                outcomes[outcome] += 1
        api.close()

    clients = [threading.Thread(target=one_client, args=(i,)) for i in range(16)]
    for c in clients:
        c.start()
    for c in clients:
        c.join(120)
    assert not any(c.is_alive() for c in clients), "a client hung"
    assert outcomes["lost"] == 0 and outcomes["response"] + outcomes["error"] == 64, outcomes
    assert outcomes["response"] > 0 and outcomes["error"] > 0
    server.close()
    router.close()
    wait_for(lambda: not zeta_threads(), MARGIN_S)
    mine = [c for c in psutil.Process().net_connections(kind="tcp")
            if server.port in (c.laddr.port if c.laddr else None, c.raddr.port if c.raddr else None)]
    assert mine == []


# ---- the command ---------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_zeta_local_serve_streams_to_the_openai_client(write_config: Callable[..., Path]):
    config = write_config({"talker": {"model": "tiny-a"}})
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("ZETA_")}
    proc = subprocess.Popen([sys.executable, "-m", "zeta_local", "--config", str(config), "serve",
                             "--port", str(port)], stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT)
    try:
        wait_for(lambda: _answers(f"http://127.0.0.1:{port}/health"), 60, step=0.1)
        api = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="-", max_retries=0, timeout=60)
        chunks = list(api.chat.completions.create(
            model="auto", messages=[{"role": "user", "content": "hi"}], stream=True, max_tokens=8))
        assert chunks and all(c.model == "talker" for c in chunks)
    finally:
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 0, stderr
    assert f"http://127.0.0.1:{port}/v1" in stderr and "Traceback" not in stderr


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def test_serve_refuses_a_missing_key_and_a_busy_port(write_config: Callable[..., Path]):
    config = write_config({"talker": {"model": "tiny-a"}})
    missing = run_cli("serve", "--config", str(config), "--api-key-env", "ZETA_TEST_NO_SUCH_VAR")
    assert missing.returncode == 1 and "ZETA_TEST_NO_SUCH_VAR" in missing.stderr
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = str(taken.getsockname()[1])
        busy = run_cli("serve", "--config", str(config), "--port", port, timeout=60)
    assert busy.returncode == 1 and f"cannot listen on 127.0.0.1:{port}" in busy.stderr
    assert "Traceback" not in busy.stderr


def test_serving_beyond_loopback_without_a_key_warns(write_config: Callable[..., Path]):
    config = write_config({"talker": {"model": "tiny-a"}})
    # 192.0.2.1 (TEST-NET-1) is no address of this machine: the bind fails after the warning,
    # so nothing is ever served beyond loopback.
    proc = run_cli("serve", "--config", str(config), "--host", "192.0.2.1", "--port", str(free_port()))
    assert "without an API key" in proc.stderr and proc.returncode == 1


def test_global_options_work_before_the_subcommand(write_config: Callable[..., Path]):
    config = write_config({"talker": {"model": "tiny-a"}})
    before = run_cli("--config", str(config), "models", "--json")
    after = run_cli("models", "--json", "--config", str(config))
    assert before.returncode == after.returncode == 0, before.stderr
    assert json.loads(before.stdout) == json.loads(after.stdout)
    assert [m["name"] for m in json.loads(before.stdout)["models"]] == ["talker"]
    assert run_cli("-v", "--config", str(config), "route", "def f(): pass").returncode == 0
    # -v counts on both sides: one before and one after make -vv, which shows llama.cpp's log.
    once = run_cli("-v", "--config", str(config), "embed", "hello")
    twice = run_cli("-v", "--config", str(config), "embed", "hello", "-v")
    assert once.returncode == twice.returncode == 0, twice.stderr
    assert "zeta_local.llama_cpp" not in once.stderr and "zeta_local.llama_cpp" in twice.stderr


def test_the_listening_socket_says_tcp_so_that_nagle_is_off():
    """asyncio disables Nagle's algorithm only on sockets whose proto is IPPROTO_TCP; with it
    on, every response waited out the client's delayed ACK: 44 ms instead of 0.5 ms here."""
    from zeta_local.server import listen

    with listen("127.0.0.1", 0) as sock:
        assert sock.proto == socket.IPPROTO_TCP
