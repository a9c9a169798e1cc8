"""Remote OpenAI-compatible engines as members of a chain: llama-cpp-python's own server and
`zeta-local serve` as real engines, and small misbehaving HTTP servers for what real engines do
on a bad day. Everything listens on 127.0.0.1; every wait is bounded."""

from __future__ import annotations

import json
import select
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable, Iterator

import httpx
import numpy as np
import pytest

from conftest import run_cli
from zeta_local import ZetaDynamicRouter
from zeta_local.bench_remote import LlamaServer
from zeta_local.cancel import CancelToken
from zeta_local.config import load_config
from zeta_local.errors import Cancelled, ConfigError, FallbackExhausted
from zeta_local.results import Fallback, TextChunk

MARGIN_S = 5.0  # generous: the machine may be busy; behaviour is asserted, not speed
RETRY_AFTER_S = 6  # long enough for two tiny requests on a busy machine to fall within it
SECRET = "sk-SECRET-123"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---- a small engine that misbehaves on cue ------------------------------------------------


class FakeEngine:
    """An OpenAI-compatible engine on a thread. `mode` says how it answers the next requests:
    ok (streams WORDS), hang (accepts, never answers), stall (three chunks, then silence),
    error500, busy429 (Retry-After: 3), html, cut (three chunks, then the body ends), think (a
    `<think>` block in the content, as an engine that does not parse thinking sends it, then
    WORDS). It records each request's path, body and Authorization header, and when a client
    hung up on a request it held open."""

    WORDS = ["Once", " upon", " a", " time", " there", " was", " a", " router", "."]
    THINKING = ["<th", "ink>\nA story", ", then.\n</th", "ink>\n\n"]

    def __init__(self) -> None:
        self.mode = "ok"
        self.requests: list[dict[str, Any]] = []
        self.client_closed: list[float] = []
        self.stop = threading.Event()
        engine = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                self._json(200, {"object": "list", "data": [{"id": "fake", "object": "model"}]})

            def do_POST(self) -> None:
                try:
                    self._answer()
                except (BrokenPipeError, ConnectionResetError):  # the client hung up mid-answer
                    engine.client_closed.append(time.monotonic())

            def _answer(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("content-length", 0))))
                engine.requests.append({"path": self.path, "body": body,
                                        "auth": self.headers.get("authorization")})
                mode = engine.mode
                if mode == "hang":
                    return self._hold_open()
                if mode == "error500":
                    return self._json(500, {"error": {"message": "engine exploded: CUDA error 700",
                                                      "type": "server_error"}})
                if mode == "busy429":
                    return self._json(429, {"error": {"message": "too many requests"}},
                                      {"Retry-After": str(RETRY_AFTER_S)})
                if mode == "html":
                    page = b"<html><body><h1>502 Bad Gateway</h1></body></html>"
                    self.send_response(200)
                    self.send_header("Content-Type", "text/html")
                    self.send_header("Content-Length", str(len(page)))
                    self.end_headers()
                    self.wfile.write(page)
                    return
                if self.path.endswith("/embeddings"):
                    data = [{"index": i, "embedding": [1.0, float(i), 2.0]} for i in range(len(body["input"]))]
                    return self._json(200, {"object": "list", "data": data})
                chat = self.path.endswith("/chat/completions")
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Connection", "close")
                self.end_headers()
                words = engine.WORDS[:3] if mode in ("stall", "cut") else \
                    engine.THINKING + engine.WORDS if mode == "think" else engine.WORDS
                for word in words:
                    choice = {"index": 0, "delta": {"content": word}} if chat else {"index": 0, "text": word}
                    self._event({"choices": [choice]})
                if mode == "cut":  # the body just ends: no finish_reason, no [DONE]
                    self.close_connection = True
                    return
                if mode == "stall":
                    self.wfile.write(b": keep-alive\n\n")  # a comment is not text: still a stall
                    self.wfile.flush()
                    return self._hold_open()
                self._event({"choices": [{"index": 0, "finish_reason": "length",
                                          **({"delta": {}} if chat else {"text": ""})}]})
                self._event({"choices": [], "usage": {"prompt_tokens": 11, "completion_tokens": len(words)}})
                self.wfile.write(b"data: [DONE]\n\n")
                self.wfile.flush()
                self.close_connection = True

            def _event(self, data: dict[str, Any]) -> None:
                self.wfile.write(b"data: " + json.dumps(data).encode() + b"\n\n")
                self.wfile.flush()

            def _json(self, status: int, data: Any, headers: dict[str, str] | None = None) -> None:
                raw = json.dumps(data).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(raw)

            def _hold_open(self) -> None:
                """Say nothing more until the client hangs up (or the test ends, 30 s at most)."""
                self.close_connection = True
                give_up = time.monotonic() + 30
                while not engine.stop.is_set() and time.monotonic() < give_up:
                    readable, _, _ = select.select([self.connection], [], [], 0.05)
                    if readable and not self.connection.recv(1, socket.MSG_PEEK):
                        engine.client_closed.append(time.monotonic())
                        return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        self._thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True)
        self._thread.start()

    def close(self) -> None:
        self.stop.set()
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(5)


@pytest.fixture
def engine() -> Iterator[FakeEngine]:
    fake = FakeEngine()
    yield fake
    fake.close()


def _remote(url: str, **extra: Any) -> dict[str, Any]:
    return {"endpoint": url, "remote_model": "fake", "capabilities": ["generate", "embed"]} | extra


@pytest.fixture
def remote_router(write_config: Callable[..., Path], engine: FakeEngine):
    """remote_router(router={...}, faults="", first="far") -> a router over chain [far, near]
    (or [near, far]): `far` the fake engine, `near` the tiny local model."""
    made: list[ZetaDynamicRouter] = []

    def make(router: dict[str, Any] | None = None, faults: str = "", first: str = "far",
             **remote_extra: Any) -> ZetaDynamicRouter:
        chain = ["far", "near"] if first == "far" else ["near", "far"]
        zeta = ZetaDynamicRouter.from_toml(write_config(
            {"far": _remote(engine.url, **remote_extra), "near": {"model": "tiny-a"}},
            default_chain=chain, router=router), faults=faults)
        made.append(zeta)
        return zeta

    yield make
    for zeta in made:
        zeta.close()


def _outcomes(result_or_error: Any) -> list[tuple[str, str]]:
    return [(a.model, a.outcome) for a in result_or_error.attempts]


# ---- misbehaving engines --------------------------------------------------------------


def test_an_engine_that_never_answers_times_out_and_its_connection_is_closed(remote_router, engine):
    engine.mode = "hang"
    zeta = remote_router(first_token_timeout_s=1.0)  # its own budget: the local one may be slow here
    started = time.monotonic()
    result = zeta.generate("Tell me a story", task="chat")
    assert _outcomes(result) == [("far", "timeout_first_token"), ("near", "ok")]
    assert result.attempts[0].seconds < 1.0 + MARGIN_S  # the trip, not the fallback's own time
    deadline = time.monotonic() + MARGIN_S  # the engine sees the client hang up at once
    while not engine.client_closed and time.monotonic() < deadline:
        time.sleep(0.02)
    assert engine.client_closed and engine.client_closed[0] - started < 1.0 + MARGIN_S
    # The worker came back: the engine answers the next request.
    engine.mode = "ok"
    assert zeta.generate("Tell me a story", task="chat", model="far").text == "".join(engine.WORDS)


def test_a_stream_that_stalls_is_stopped_and_the_next_model_continues_its_text(remote_router, engine):
    engine.mode = "stall"
    zeta = remote_router(stall_timeout_s=1.0)  # its own budget: the local one may be slow here
    events = list(zeta.stream("Tell me a story", task="chat"))
    fallback = next(e for e in events if isinstance(e, Fallback))
    result = events[-1].result
    assert (fallback.from_model, fallback.to_model, fallback.outcome) == ("far", "near", "stalled")
    assert fallback.text_so_far == "Once upon a"
    assert _outcomes(result) == [("far", "stalled"), ("near", "ok")]
    assert result.text.startswith("Once upon a") and result.model == "near"
    assert [e.model for e in events if isinstance(e, TextChunk)][:3] == ["far"] * 3


def test_a_server_error_is_an_error_with_the_engines_message(remote_router, engine):
    engine.mode = "error500"
    result = remote_router().generate("Tell me a story", task="chat")
    assert _outcomes(result) == [("far", "error"), ("near", "ok")]
    assert "HTTP 500" in result.attempts[0].detail
    assert "engine exploded: CUDA error 700" in result.attempts[0].detail


def test_html_instead_of_an_event_stream_is_a_clear_error(remote_router, engine):
    engine.mode = "html"
    result = remote_router().generate("Tell me a story", task="chat")
    assert _outcomes(result) == [("far", "error"), ("near", "ok")]
    detail = result.attempts[0].detail
    assert "text/html" in detail and "text/event-stream" in detail and "502 Bad Gateway" in detail


def test_a_stream_cut_short_is_an_error_and_the_next_model_continues(remote_router, engine):
    engine.mode = "cut"
    result = remote_router().generate("Tell me a story", task="chat")
    assert _outcomes(result) == [("far", "error"), ("near", "ok")]
    assert "before the answer ended" in result.attempts[0].detail
    assert result.text.startswith("Once upon a")


def test_busy_with_retry_after_skips_the_engine_that_long_then_tries_it_again(remote_router, engine):
    engine.mode = "busy429"
    zeta = remote_router()
    zeta.preload("near")  # so that the fallback's load does not eat into the Retry-After
    asked_at = time.monotonic()
    first = zeta.generate("Tell me a story", task="chat")
    assert _outcomes(first) == [("far", "busy"), ("near", "ok")]
    assert "429" in first.attempts[0].detail and "too many requests" in first.attempts[0].detail
    second = zeta.generate("Tell me a story", task="chat")
    assert time.monotonic() - asked_at < RETRY_AFTER_S, "two tiny requests took longer than the Retry-After"
    assert _outcomes(second) == [("far", "cooling_down"), ("near", "ok")]
    assert "Retry-After" in second.attempts[0].detail
    assert len(engine.requests) == 1  # skipped, not asked
    assert {s.name: s.state for s in zeta.status()}["far"] == "cooling_down"
    time.sleep(max(0.0, asked_at + RETRY_AFTER_S + 0.5 - time.monotonic()))
    engine.mode = "ok"
    third = zeta.generate("Tell me a story", task="chat")
    assert _outcomes(third) == [("far", "ok")] and len(engine.requests) == 2


def test_a_caller_cancel_closes_the_connection_at_once(remote_router, engine):
    engine.mode = "stall"
    zeta = remote_router(router={"stall_timeout_s": 60.0})
    token = CancelToken()
    stream = zeta.stream("Tell me a story", task="chat", cancel=token)
    first = next(stream)
    assert isinstance(first, TextChunk) and first.model == "far"
    cancelled_at = time.monotonic()
    token.cancel()
    with pytest.raises(Cancelled):
        list(stream)
    deadline = time.monotonic() + MARGIN_S
    while not engine.client_closed and time.monotonic() < deadline:
        time.sleep(0.02)
    assert engine.client_closed and engine.client_closed[0] - cancelled_at < MARGIN_S


# ---- what is sent --------------------------------------------------------------------


def test_chat_goes_as_messages_and_sampling_is_passed_on(remote_router, engine):
    zeta = remote_router()
    result = zeta.chat([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}],
                       task="chat", temperature=0.5, top_p=0.9, top_k=7, seed=3, stop=["\n\n"], max_tokens=9)
    assert result.model == "far" and result.text == "".join(engine.WORDS)
    assert (result.usage.prompt_tokens, result.usage.completion_tokens) == (11, len(engine.WORDS))
    sent = engine.requests[0]
    assert sent["path"] == "/v1/chat/completions"
    body = sent["body"]
    assert body["messages"] == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    assert body["model"] == "fake" and body["stream"] is True
    assert body["stream_options"] == {"include_usage": True}
    assert (body["temperature"], body["top_p"], body["top_k"], body["seed"], body["stop"], body["max_tokens"]) \
        == (0.5, 0.9, 7, 3, ["\n\n"], 9)
    assert body["repeat_penalty"] == 1.0  # sent even at 1.0: llama-cpp-python's server defaults to 1.1
    # Thinking goes through the engine's template switch: "auto" is off for chat.
    assert body["chat_template_kwargs"] == {"enable_thinking": False}
    assert result.route.thinking == "thinking off (auto: chat)"
    assert result.attempts[0].detail.endswith("; thinking off (auto: chat)")
    zeta.generate("Complete this", task="chat", thinking=True)
    assert engine.requests[1]["path"] == "/v1/completions"
    assert engine.requests[1]["body"]["prompt"] == "Complete this"
    assert "chat_template_kwargs" not in engine.requests[1]["body"]  # no template renders a prompt
    zeta.chat([{"role": "user", "content": "Why?"}], task="chat", thinking=True)
    assert engine.requests[2]["body"]["chat_template_kwargs"] == {"enable_thinking": True}


def test_a_think_block_in_an_engines_content_is_cut_out_as_thinking(remote_router, engine):
    """An engine that does not parse thinking (no --reasoning-format) sends it as content: the
    chat's answer is still the answer alone. A plain completion is left as it came."""
    engine.mode = "think"
    zeta = remote_router()
    result = zeta.chat([{"role": "user", "content": "Tell me a story"}], task="chat")
    assert (result.reasoning, result.text) == ("A story, then.", "".join(engine.WORDS))
    assert zeta.generate("Tell me a story", task="chat").text == "".join(engine.THINKING + engine.WORDS)


@pytest.mark.parametrize("chat", [True, False], ids=["chat", "prompt"])
def test_a_remote_continues_the_text_a_local_model_began(remote_router, engine, chat):
    zeta = remote_router(router={"stall_timeout_s": 1.0}, faults="near=stall_after:3", first="near")
    request: Any = [{"role": "user", "content": "Tell me a story"}] if chat else "Tell me a story"
    events = list(zeta.stream(request, task="chat"))
    fallback = next(e for e in events if isinstance(e, Fallback))
    result = events[-1].result
    assert _outcomes(result) == [("near", "stalled"), ("far", "ok")]
    assert fallback.text_so_far
    assert result.text == fallback.text_so_far + "".join(engine.WORDS)
    body = engine.requests[0]["body"]
    if chat:
        assert body["messages"][-1] == {"role": "assistant", "content": fallback.text_so_far}
    else:
        assert body["prompt"] == "Tell me a story" + fallback.text_so_far


def test_remote_embeddings_and_no_local_memory(remote_router, engine):
    zeta = remote_router()
    result = zeta.embed(["one", "two"], model="far")
    assert result.model == "far" and result.vectors.shape == (2, 3)
    assert np.allclose(np.linalg.norm(result.vectors, axis=1), 1.0)
    assert engine.requests[0]["path"] == "/v1/embeddings"
    zeta.generate("Tell me a story", task="chat")
    status = {s.name: s for s in zeta.status()}["far"]
    assert status.memory_bytes == 0 and "remote" in status.detail and status.state == "ready"
    assert not any(key[0] == "far" for key in zeta._pool.ledger.held())


def test_the_key_is_sent_but_never_shown(remote_router, engine, write_config, monkeypatch, caplog, tmp_path):
    import logging

    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("ZETA_TEST_REMOTE_KEY", SECRET)
    zeta = remote_router(api_key_env="ZETA_TEST_REMOTE_KEY")
    assert zeta.generate("Tell me a story", task="chat").model == "far"
    assert engine.requests[0]["auth"] == f"Bearer {SECRET}"
    engine.mode = "error500"
    with pytest.raises(FallbackExhausted) as failed:
        zeta.generate("Tell me a story", task="chat", model="far")
    shown = [caplog.text, str(failed.value), repr(zeta._pool.workers[("far", False)].model),
             repr(zeta.config.models["far"]), repr(zeta.status())]
    engine.mode = "ok"
    config = write_config({"far": _remote(engine.url, api_key_env="ZETA_TEST_REMOTE_KEY"),
                           "near": {"model": "tiny-a"}}, name="cli.toml")
    env = {"ZETA_TEST_REMOTE_KEY": SECRET}
    for args in (["models", "--json"], ["plan", "--json"], ["route", "--json", "hello"],
                 ["ask", "--json", "hello"], ["status", "--json"]):
        done = run_cli(*args, "--config", str(config), env=env, timeout=120)
        assert done.returncode == 0, done.stderr
        shown += [done.stdout, done.stderr]
    assert engine.requests[-1]["auth"] == f"Bearer {SECRET}"  # ask went to the engine with the key
    assert all(SECRET not in text for text in shown)


def test_an_unset_key_variable_is_a_load_failure_naming_it(remote_router, engine, monkeypatch):
    monkeypatch.delenv("ZETA_TEST_UNSET_KEY", raising=False)
    result = remote_router(api_key_env="ZETA_TEST_UNSET_KEY").generate("Tell me a story", task="chat")
    assert _outcomes(result) == [("far", "load_failed"), ("near", "ok")]
    assert "ZETA_TEST_UNSET_KEY" in result.attempts[0].detail and "not set" in result.attempts[0].detail
    assert engine.requests == []


def test_nothing_listening_is_unreachable(write_config):
    port = _free_port()  # closed again: nothing listens there
    with ZetaDynamicRouter.from_toml(write_config(
            {"far": _remote(f"http://127.0.0.1:{port}/v1"), "near": {"model": "tiny-a"}})) as zeta:
        result = zeta.generate("Tell me a story", task="chat")
    assert _outcomes(result) == [("far", "unreachable"), ("near", "ok")]
    assert str(port) in result.attempts[0].detail


def test_plan_and_models_show_a_remote_without_crashing(write_config, engine):
    from zeta_local.inventory import describe_models, plan_models

    config = load_config(write_config({"far": _remote(engine.url), "near": {"model": "tiny-a"}}))
    row = {r["name"]: r for r in describe_models(config)}["far"]
    assert row["file"] == "remote" and row["source"] == f"remote:{engine.url}"
    plan = {r["name"]: r for r in plan_models(config)["models"]}["far"]
    assert plan["remote"] == "remote: no local memory" and plan["fits"] is True


# ---- real engines ----------------------------------------------------------------------


@pytest.fixture
def llama_server(tiny_models: dict[str, Path], tmp_path: Path):
    """llama_server(role="tiny-a", embedding=False) -> (url, server): llama-cpp-python's own
    OpenAI-compatible server on a free loopback port (the bench's LlamaServer), up within 60 s;
    stopped after the test."""
    pytest.importorskip("sse_starlette", reason="needs llama-cpp-python[server] (the test extra)")
    started: list[LlamaServer] = []

    def start(role: str = "tiny-a", embedding: bool = False) -> tuple[str, LlamaServer]:
        server = LlamaServer(tiny_models[role], ["--n_ctx", "256", "--embedding", str(embedding)],
                             tmp_path / f"llama-server-{len(started)}.log")
        started.append(server.__enter__())
        return server.url, server

    yield start
    for server in started:
        server.__exit__()


def test_llama_cpp_server_answers_first_and_the_local_model_when_it_dies(llama_server, write_config):
    url, server = llama_server()
    config = write_config({"far": _remote(url, remote_model="tiny", capabilities=["generate"]),
                           "near": {"model": "tiny-b"}}, default_chain=["far", "near"],
                          routes={"embed": ["near"]})
    with ZetaDynamicRouter.from_toml(config) as zeta:
        result = zeta.chat([{"role": "user", "content": "Hello"}], task="chat")
        assert _outcomes(result) == [("far", "ok")] and result.model == "far"
        assert result.usage.completion_tokens > 0
        assert _outcomes(zeta.generate("Hello", task="chat")) == [("far", "ok")]
        server.__exit__()  # the server dies (__exit__ is safe to call twice)
        result = zeta.generate("Hello", task="chat")
        assert _outcomes(result) == [("far", "unreachable"), ("near", "ok")]
        assert result.model == "near"


def test_llama_cpp_server_embeds(llama_server, write_config):
    url, _ = llama_server(embedding=True)
    config = write_config({"far": _remote(url, remote_model="tiny", capabilities=["embed"]),
                           "near": {"model": "tiny-b"}}, default_chain=["near"],
                          routes={"embed": ["far", "near"]})
    with ZetaDynamicRouter.from_toml(config) as zeta:
        result = zeta.embed(["one text", "another"])
    assert _outcomes(result) == [("far", "ok")]
    assert result.vectors.shape[0] == 2 and np.allclose(np.linalg.norm(result.vectors, axis=1), 1.0)


def test_zeta_local_serve_as_the_remote(serve, write_config):
    server, _ = serve({"tiny": {"model": "tiny-a"}})
    config = write_config({"other-box": _remote(f"{server.url}/v1", remote_model="auto"),
                           "near": {"model": "tiny-b"}}, default_chain=["other-box", "near"], name="front.toml")
    with ZetaDynamicRouter.from_toml(config) as zeta:
        chat = zeta.chat([{"role": "user", "content": "Hello"}], task="chat")
        assert _outcomes(chat) == [("other-box", "ok")] and chat.text
        # zeta-local takes the thinking switch as vLLM sends it (chat_template_kwargs).
        assert _outcomes(zeta.chat([{"role": "user", "content": "Why?"}], task="reason")) == [("other-box", "ok")]
        assert "estimated" not in chat.attempts[0].detail  # zeta-local streams its usage
        plain = zeta.generate("Hello", task="chat")
        assert _outcomes(plain) == [("other-box", "ok")]
        vectors = zeta.embed(["a text"])
        assert _outcomes(vectors) == [("other-box", "ok")]


# ---- models.toml -----------------------------------------------------------------------


def _config_error(write_config: Callable[..., Path], table: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as error:
        load_config(write_config({"far": table, "near": {"model": "tiny-a"}}))
    return str(error.value)


def test_a_remote_model_needs_exactly_one_source(write_config):
    message = _config_error(write_config, _remote("http://127.0.0.1:9/v1", path="/x.gguf"))
    assert "exactly one source" in message and "endpoint" in message


@pytest.mark.parametrize("key, value", [("n_gpu_layers", 0), ("n_ctx", 2048), ("n_batch", 64),
                                        ("chat_format", "plain"), ("flash_attn", True),
                                        ("allow_partial_offload", True), ("sha256", "0" * 64),
                                        ("hf_revision", "main"), ("pinned", True), ("keep_alive_s", 5)])
def test_local_only_keys_are_errors_on_a_remote_model(write_config, key, value):
    message = _config_error(write_config, _remote("http://127.0.0.1:9/v1", **{key: value}))
    assert f"[models.far] {key}" in message and "local GGUF" in message


@pytest.mark.parametrize("url, why", [("ftp://host/v1", "http:// or https://"), ("http:///v1", "no host"),
                                      ("localhost:8000/v1", "http:// or https://"),
                                      ("http://host:port/v1", "not a URL"),
                                      ("http://user:sk-SECRET-123@host/v1", "credentials")])
def test_bad_endpoints_are_refused(write_config, url, why):
    message = _config_error(write_config, _remote(url))
    assert "[models.far] endpoint" in message and why in message
    assert SECRET not in message


def test_remote_keys_need_an_endpoint_and_a_model_name(write_config):
    assert "remote_model" in _config_error(write_config, {"endpoint": "http://127.0.0.1:9/v1"})
    assert "add `endpoint`" in _config_error(write_config, {"model": "tiny-a", "remote_model": "x"})
    message = _config_error(write_config, _remote("http://127.0.0.1:9/v1", api_key_env=SECRET))
    assert "NAME of an environment variable" in message


def test_a_remote_model_reads_back(write_config):
    spec = load_config(write_config({"far": _remote("https://gpu-box:8000/v1/", api_key_env="BOX_KEY"),
                                     "near": {"model": "tiny-a"}})).models["far"]
    assert (spec.endpoint, spec.remote_model, spec.api_key_env, spec.remote) == \
        ("https://gpu-box:8000/v1", "fake", "BOX_KEY", True)
    assert spec.source == "remote:https://gpu-box:8000/v1"


def test_zeta_local_serve_over_a_busy_engine_says_come_back(serve, engine):
    engine.mode = "busy429"
    server, _ = serve({"far": _remote(engine.url)})
    response = httpx.post(f"{server.url}/v1/chat/completions", trust_env=False, timeout=30,
                          json={"model": "far", "messages": [{"role": "user", "content": "Hi"}]})
    assert response.status_code == 429 and "Retry-After" in response.headers
    assert "busy" in response.json()["error"]["message"]


# ---- doctor and models -------------------------------------------------------------------


def _doctor_line(stdout: str, name: str) -> str:
    return next(line for line in stdout.splitlines() if line.strip().startswith(f"{name} "))


def test_doctor_checks_a_running_llama_cpp_server(llama_server, write_config, tiny_models):
    url, _ = llama_server()
    listed = str(tiny_models["tiny-a"])  # llama-cpp-python's server lists its model by path
    config = write_config({"far": _remote(url, remote_model=listed, capabilities=["generate"]),
                           "other": _remote(url, remote_model="not-there", capabilities=["generate"]),
                           "near": {"model": "tiny-b"}}, default_chain=["far", "near"],
                          routes={"embed": ["near"]})
    done = run_cli("doctor", "--config", str(config), timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    line = _doctor_line(done.stdout, "far")
    assert " ok " in line and f"{url} lists" in line and "round trip" in line and " ms" in line
    other = _doctor_line(done.stdout, "other")
    assert " not_listed " in other and "'not-there'" in other and listed in other


def test_doctor_reports_a_dead_remote_and_fails_only_when_nothing_else_can_serve(write_config):
    dead = f"http://127.0.0.1:{_free_port()}/v1"  # closed again: nothing listens there
    config = write_config({"far": _remote(dead), "near": {"model": "tiny-a"}}, default_chain=["far", "near"])
    started = time.monotonic()
    done = run_cli("doctor", "--config", str(config), timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr  # near serves every task
    line = _doctor_line(done.stdout, "far")
    assert " unreachable " in line and "cannot connect" in line and dead in line
    assert "chat    far, near*  -> answered by near" in done.stdout
    alone = write_config({"far": _remote(dead), "near": {"model": "tiny-a"}}, default_chain=["far", "near"],
                         routes={"code": ["far"]}, name="alone.toml")
    done = run_cli("doctor", "--config", str(alone), timeout=120)
    assert done.returncode == 1 and "code    far  -> NO MODEL CAN SERVE IT" in done.stdout
    assert time.monotonic() - started < 60  # bounded: a refused connection is not waited out


def test_models_and_doctor_show_the_endpoint_and_the_key_name_never_the_key(write_config, engine):
    config = write_config({"far": _remote(engine.url, api_key_env="ZETA_TEST_REMOTE_KEY"),
                           "near": {"model": "tiny-a"}})
    env = {"ZETA_TEST_REMOTE_KEY": SECRET}
    models = run_cli("models", "--config", str(config), env=env, timeout=120)
    assert models.returncode == 0, models.stderr
    assert f"remote {engine.url} (model fake, key $ZETA_TEST_REMOTE_KEY)" in models.stdout
    doctor = run_cli("doctor", "--config", str(config), env=env, timeout=120)
    assert doctor.returncode == 0, doctor.stdout + doctor.stderr
    line = _doctor_line(doctor.stdout, "far")
    assert " ok " in line and "key from $ZETA_TEST_REMOTE_KEY" in line
    assert engine.requests == []  # GET only: doctor generates nothing
    unset = run_cli("doctor", "--config", str(config), timeout=120)
    assert " no_key " in _doctor_line(unset.stdout, "far") and "ZETA_TEST_REMOTE_KEY" in unset.stdout
    assert all(SECRET not in text for text in (models.stdout, models.stderr, doctor.stdout, doctor.stderr))
