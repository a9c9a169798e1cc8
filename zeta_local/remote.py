"""Remote engines: an OpenAI-compatible server elsewhere (vLLM, llama.cpp's server, Ollama,
another `zeta-local serve`) as a model of the chain, behind the same worker, watchdog, circuit
breaker and results as a local GGUF.

- Loading is cheap: a client, and one GET {endpoint}/models (bounded by load_timeout_s like any
  load) to learn now, not at the first request, whether the engine is there and takes the key.
- A request streams. Text arriving moves the job from prefill to decoding, so the watchdog's
  first-token, stall and deadline budgets hold the stream as they hold llama.cpp; keep-alive
  comments are not text and never hide a stall.
- A trip or a cancel shuts the request's socket down at once (remote_http.CancelWatch): the
  worker comes back within milliseconds, and the engine sees the client go away.
- Its worker runs one request at a time, as for a local model: at most one connection per
  remote model and purpose (generation, embeddings); more requests wait in the worker's queue.
  Connections are not kept alive between requests, so that each request's socket is its own.
- Continuing another model's text: a plain prompt gets it appended; a chat gets it as a trailing
  assistant message. vLLM, llama.cpp's server and zeta-local continue such a message only if
  their template does so; an engine that starts a new turn after it may repeat the text.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import httpx
import numpy as np

from zeta_local.backend import Aborted, GenerationEnd, end_of
from zeta_local.config import ModelSpec
from zeta_local.errors import EngineBusy, EngineUnreachable, GenerationError, ModelLoadError
from zeta_local.prompt_format import RenderedPrompt
from zeta_local.reasoning import ThinkSplitter, Thought
from zeta_local.remote_http import CancelWatch, check_response, read_json, sse_events
from zeta_local.sampling import SamplingParams
from zeta_local.thinking import TEMPLATE_SWITCH

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 10.0  # at most; a shorter first-token budget makes it shorter


def _key_headers(spec: ModelSpec) -> dict[str, str]:
    """The Authorization header, the key read from the environment now; an unset variable is a
    ModelLoadError naming it (never the key)."""
    if spec.api_key_env is None:
        return {}
    key = os.environ.get(spec.api_key_env)
    if not key:
        raise ModelLoadError(f"{spec.name}: api_key_env names ${spec.api_key_env}, which is not set "
                             f"(or empty); export {spec.api_key_env}=YOUR_KEY before starting, or "
                             f"remove api_key_env from [models.{spec.name}] if the engine needs none")
    return {"Authorization": f"Bearer {key}"}


def connect(spec: ModelSpec, cancel: threading.Event | None, *, connect_timeout_s: float,
            read_timeout_s: float) -> RemoteModel:
    """"Load" a remote model: its client, checked with one GET /models. The key is read from
    the environment now (an unset variable is a load failure naming it), never stored
    elsewhere than in the client's headers."""
    headers = _key_headers(spec)
    timeout = httpx.Timeout(connect=min(CONNECT_TIMEOUT_S, connect_timeout_s), read=read_timeout_s,
                            write=read_timeout_s, pool=connect_timeout_s)
    # trust_env=False: no proxy or .netrc from the environment; the endpoint is reached directly.
    client = httpx.Client(base_url=f"{spec.endpoint}/", headers=headers, timeout=timeout,
                          limits=httpx.Limits(max_connections=1, max_keepalive_connections=0),
                          trust_env=False)
    model = RemoteModel(spec, client)
    model.cancel = cancel or threading.Event()
    try:
        model.check()
    except BaseException:
        client.close()
        raise
    return model


@dataclass(frozen=True)
class Probe:
    """What `zeta-local doctor` learns of a remote engine with one GET {endpoint}/models."""
    status: str  # ok, not_listed, unreachable, busy, error, no_key
    detail: str
    round_trip_s: float | None = None
    listed: tuple[str, ...] = ()

    @property
    def can_serve(self) -> bool:
        # not_listed still counts: some engines (llama-cpp-python's server) answer to any name,
        # and the router tries it anyway, as connect() does.
        return self.status in ("ok", "not_listed")


def probe(spec: ModelSpec, timeout_s: float) -> Probe:
    """Is the engine there now, does it list `remote_model`, and how long does the round trip
    take? Every step (connect, send, each read) is bounded by `timeout_s`. Never raises for
    the engine's sake; the detail never holds the key."""
    assert spec.endpoint is not None
    what = f"{spec.endpoint}/models"
    try:
        headers = _key_headers(spec)
    except ModelLoadError as exc:
        return Probe("no_key", str(exc).removeprefix(f"{spec.name}: "))
    started = time.monotonic()
    try:
        with httpx.Client(headers=headers, timeout=timeout_s, trust_env=False) as client:
            response = client.get(what)
            check_response(response, spec.name, what, "json")
            body = read_json(response, spec.name, what)
    except httpx.TimeoutException as exc:
        return Probe("unreachable", f"{what}: no answer within {timeout_s:g} s ({type(exc).__name__})")
    except httpx.TransportError as exc:
        return Probe("unreachable", f"cannot connect to {what}: {exc or type(exc).__name__}")
    except EngineBusy as exc:
        return Probe("busy", str(exc).removeprefix(f"{spec.name}: "), time.monotonic() - started)
    except GenerationError as exc:
        return Probe("error", str(exc).removeprefix(f"{spec.name}: "), time.monotonic() - started)
    round_trip = time.monotonic() - started
    data = body.get("data") if isinstance(body, dict) else None
    if not isinstance(data, list):
        return Probe("error", f"{what} did not list models as an OpenAI-compatible engine does "
                              f"({{\"data\": [...]}}); is `endpoint` its /v1 URL?", round_trip)
    ids = tuple(str(m.get("id")) for m in data if isinstance(m, dict))
    timing = f"round trip {round_trip * 1000:.1f} ms"
    if spec.remote_model in ids:
        return Probe("ok", f"{spec.endpoint} lists {spec.remote_model!r}; {timing}", round_trip, ids)
    return Probe("not_listed", f"{spec.endpoint} does not list {spec.remote_model!r} (it lists "
                               f"{', '.join(map(repr, ids[:5])) or 'nothing'}); requests will name it "
                               f"anyway (some engines serve any name); {timing}", round_trip, ids)


class RemoteModel:
    """One remote model, as a worker sees a loaded one (backend.LoadedModel). Not thread-safe:
    its worker is its only user."""

    def __init__(self, spec: ModelSpec, client: httpx.Client):
        assert spec.endpoint is not None and spec.remote_model is not None
        self.name, self.spec = spec.name, spec
        self.endpoint, self.remote_model = spec.endpoint, spec.remote_model
        self.n_ctx = 0  # unknown here: the engine decides, and says so with a 400
        self.cancel = threading.Event()  # swapped for each request's own event
        self.decode_hook: Callable[[], None] | None = None  # unused: nothing decodes here
        # Its engine renders chats; the choice is sent as chat_template_kwargs (generate_chat).
        self.thinking_switch = True
        self._client: httpx.Client | None = client

    def __repr__(self) -> str:  # never the client's headers (the key)
        return f"RemoteModel({self.name!r}, {self.endpoint!r}, {self.remote_model!r})"

    def check(self) -> None:
        what = f"{self.endpoint}/models"
        body = self._call("GET", "models", None, what)
        ids = [m.get("id") for m in body.get("data", []) if isinstance(m, dict)] \
            if isinstance(body, dict) and isinstance(body.get("data"), list) else None
        if ids is None:
            raise GenerationError(f"{self.name}: {what} did not list models as an OpenAI-compatible "
                                  f"engine does ({{\"data\": [...]}}); is `endpoint` its /v1 URL?")
        if self.remote_model not in ids:  # some engines serve any name; say it, do not refuse
            log.info("%s: %s does not list %r (it lists %s); trying it anyway", self.name, what,
                     self.remote_model, ", ".join(map(str, ids[:10])) or "nothing")

    # ---- generation ---------------------------------------------------------------------

    def render_chat(self, messages: list[dict[str, str]], template_vars: Any = None) -> RenderedPrompt:
        raise GenerationError(f"{self.name} is remote: its engine renders chats (generate_chat)")

    def generate(self, prompt: str, params: SamplingParams) -> Iterator[str | Thought | GenerationEnd]:
        """A plain prompt through /completions (text another model began is already appended)."""
        body = {"prompt": prompt} | self._sampling(params)
        return self._stream("completions", body, len(prompt), chat=False, split=False)

    def generate_chat(self, messages: list[dict[str, str]], prefix: str, params: SamplingParams,
                      thinking: bool | None = None) -> Iterator[str | Thought | GenerationEnd]:
        """A chat through /chat/completions, the messages as they are (the engine renders them);
        `prefix`, text another model began, goes as a trailing assistant message to continue.
        `thinking` goes as chat_template_kwargs {"enable_thinking": ...}, the field vLLM,
        llama.cpp's server and zeta-local take for the template's own switch; a template
        without the switch ignores it."""
        messages = list(messages) + ([{"role": "assistant", "content": prefix}] if prefix else [])
        body = {"messages": messages} | self._sampling(params)
        if thinking is not None:
            body["chat_template_kwargs"] = {TEMPLATE_SWITCH: thinking}
        return self._stream("chat/completions", body, sum(len(m["content"]) for m in messages), chat=True,
                            split=params.split_thinking)

    def _sampling(self, params: SamplingParams) -> dict[str, Any]:
        body: dict[str, Any] = {"stream": True, "stream_options": {"include_usage": True},
                                "max_tokens": params.max_tokens, "temperature": params.temperature,
                                "top_p": params.top_p, "top_k": params.top_k,
                                # llama.cpp's name. Always sent, 1.0 too: llama-cpp-python's
                                # server defaults to 1.1, which changes the text and costs every
                                # token a pass over the vocabulary; vLLM and Ollama ignore it.
                                "repeat_penalty": params.repeat_penalty}
        if params.seed is not None:
            body["seed"] = params.seed
        if params.stop:
            body["stop"] = list(params.stop)
        return body

    def _stream(self, path: str, body: dict[str, Any], prompt_chars: int, *,
                chat: bool, split: bool) -> Iterator[str | Thought | GenerationEnd]:
        """The engine's stream as pieces. A chat's thinking comes apart from its answer either
        way an engine sends it: in `reasoning_content` (llama.cpp's server, DeepSeek; vLLM's
        `reasoning`), or as a `<think>` block at the start of the content (an engine that
        does not parse it), which the splitter cuts out as the local backend does."""
        what = f"{self.endpoint}/{path}"
        client = self._open()
        splitter = ThinkSplitter() if split else None
        finish, usage, pieces, thoughts = "stop", None, 0, 0
        with CancelWatch(self.cancel, self.name) as watch:
            try:
                with client.stream("POST", path, json={"model": self.remote_model} | body,
                                   extensions=watch.extensions) as response:
                    check_response(response, self.name, what, "event-stream")
                    events = sse_events(response, self.name, what) \
                        if response.headers.get("content-type", "").startswith("text/event-stream") \
                        else iter([read_json(response, self.name, what)])  # it ignored stream=True
                    for event in events:
                        if isinstance(event.get("usage"), dict):
                            usage = event["usage"]
                        for choice in event.get("choices") or []:
                            thought, text = _text_of(choice, chat)
                            if thought:
                                thoughts += 1
                                yield Thought(thought)
                            if text:
                                pieces += 1
                                yield from splitter.feed(text) if splitter else [text]
                            if choice.get("finish_reason"):
                                finish = "length" if choice["finish_reason"] == "length" else "stop"
            except httpx.TransportError as exc:
                raise self._transport_error(exc, what) from None
            except GenerationError:
                if self.cancel.is_set():  # the stream was cut by our own shutdown
                    raise Aborted(f"{self.name}: request cancelled") from None
                raise
        if self.cancel.is_set():
            raise Aborted(f"{self.name}: request cancelled")
        if splitter is not None:
            yield from splitter.flush()
        details = (usage or {}).get("completion_tokens_details") or {}
        reasoning = details.get("reasoning_tokens") if isinstance(details, dict) else None
        if not isinstance(reasoning, int):  # one piece a token, as below
            reasoning = thoughts
        if usage and isinstance(usage.get("prompt_tokens"), int) and isinstance(usage.get("completion_tokens"), int):
            yield end_of(splitter, finish, usage["prompt_tokens"], usage["completion_tokens"], reasoning)
        else:  # the engine gave no usage: about 4 characters a token, one piece a token
            yield end_of(splitter, finish, prompt_chars // 4, pieces + thoughts, reasoning, usage_estimated=True)

    # ---- embeddings ---------------------------------------------------------------------

    def embed(self, texts: list[str]) -> np.ndarray:
        what = f"{self.endpoint}/embeddings"
        body = self._call("POST", "embeddings", {"model": self.remote_model, "input": texts,
                                                 "encoding_format": "float"}, what)
        try:
            rows = sorted(body["data"], key=lambda row: row["index"])
            # One vector per token (llama-cpp-python's server on a model without pooling): pooled
            # by their mean, as this router's own embedder pools.
            vectors = np.array([np.asarray(row["embedding"], dtype=np.float32).reshape(
                -1, np.shape(row["embedding"])[-1]).mean(axis=0) for row in rows], dtype=np.float32)
        except (KeyError, TypeError, ValueError, IndexError):
            raise GenerationError(f"{self.name}: {what} did not answer with embeddings "
                                  f"({{\"data\": [{{\"index\", \"embedding\"}}]}})") from None
        if vectors.ndim != 2 or len(vectors) != len(texts):
            raise GenerationError(f"{self.name}: {what} returned {len(vectors)} embeddings for "
                                  f"{len(texts)} texts")
        return vectors

    # ---- plumbing -----------------------------------------------------------------------

    def _call(self, method: str, path: str, body: dict[str, Any] | None, what: str) -> Any:
        """One non-streamed request, cancellable like a stream."""
        client = self._open()
        with CancelWatch(self.cancel, self.name) as watch:
            try:
                response = client.request(method, path, json=body, extensions=watch.extensions)
            except httpx.TransportError as exc:
                raise self._transport_error(exc, what) from None
        if self.cancel.is_set():
            raise Aborted(f"{self.name}: request cancelled")
        check_response(response, self.name, what, "json")
        return read_json(response, self.name, what)

    def _transport_error(self, exc: httpx.TransportError, what: str) -> Exception:
        if self.cancel.is_set():  # our own shutdown of the socket, not the engine's fault
            return Aborted(f"{self.name}: request cancelled")
        if isinstance(exc, (httpx.ConnectError, httpx.ConnectTimeout)):
            return EngineUnreachable(f"{self.name}: cannot connect to {what}: {exc or type(exc).__name__}")
        if isinstance(exc, httpx.TimeoutException):
            return EngineUnreachable(f"{self.name}: {what} sent nothing for {exc or 'too long'} "
                                     f"({type(exc).__name__})")
        return EngineUnreachable(f"{self.name}: the connection to {what} broke: "
                                 f"{exc or type(exc).__name__}")

    def _open(self) -> httpx.Client:
        if self._client is None:
            raise GenerationError(f"{self.name}: closed")
        return self._client

    def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            client.close()


def _text_of(choice: dict[str, Any], chat: bool) -> tuple[str, str]:
    """A chunk's (thinking, text): a chat delta's reasoning_content (or reasoning) and content,
    or a completion's text (a full message when the engine answered without streaming)."""
    if not chat:
        text = choice.get("text")
        return "", text if isinstance(text, str) else ""
    part = choice.get("delta") or choice.get("message") or {}
    if not isinstance(part, dict):
        return "", ""
    thought = part.get("reasoning_content") or part.get("reasoning")
    text = part.get("content")
    return (thought if isinstance(thought, str) else "", text if isinstance(text, str) else "")
