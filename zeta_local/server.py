"""`zeta-local serve`: the router behind the OpenAI HTTP API, so that any local app can use it.

A translation layer (FastAPI + uvicorn): each endpoint checks its body, calls the router on a
thread of its own, and maps the router's results, stream events and errors onto OpenAI's
shapes (zeta_local.openai_api). It has no routing of its own.

Never left hanging over HTTP either: a client that goes away cancels its request through the
router's CancelToken, inside a prompt evaluation too; every wait is bounded by the router's
deadline; every request ends in one response or one OpenAI-style error, never a traceback.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import ipaddress
import json
import logging
import signal
import socket
import threading
import time
from dataclasses import asdict
from typing import Any, AsyncIterator, Callable, Iterable, Iterator

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.exceptions import HTTPException
from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from zeta_local.cancel import CancelToken
from zeta_local.errors import Cancelled, FallbackExhausted, InvalidRequest, UnknownModel, ZetaError
from zeta_local.openai_api import (AUTO, EMBED_TASK, GENERATION_TASKS, ChatRequest, CompletionRequest,
                                   EmbeddingRequest, RequestError, attempts_header, chunk_json,
                                   completion_json, embeddings_json, fallback_json, model_json,
                                   new_id, now, usage_chunk_json, validation_error, zeta_json)
from zeta_local.results import (BUSY, CONTEXT_OVERFLOW, COOLING_DOWN, DOES_NOT_FIT, INVALID_FILE, MISSING,
                                QUARANTINED, QUEUE_FULL, Done, Fallback, GenerationResult,
                                ReasoningChunk, TextChunk)
from zeta_local.router import ZetaDynamicRouter

log = logging.getLogger(__name__)

DEFAULT_HOST = "127.0.0.1"
DEFAULT_MAX_REQUEST_BYTES = 8 * 2**20  # far above any prompt that fits a local model's context
RETRY_AFTER_S = 1  # a full queue drains in about one answer's time
# Outcomes that mean a model was not available at all; a request whose every attempt is one of
# these, with at least one full queue (or busy remote engine), is told to come back (429) rather
# than that it failed.
_UNAVAILABLE = {QUEUE_FULL, BUSY, MISSING, INVALID_FILE, DOES_NOT_FIT, COOLING_DOWN, QUARANTINED}


def create_app(router: ZetaDynamicRouter, *, api_key: str | None = None,
               max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES,
               cors_origins: Iterable[str] = ()) -> FastAPI:
    """The OpenAI-compatible app over `router`. The caller owns the router and closes it
    after the server has stopped. With `api_key`, every request needs `Authorization: Bearer`."""
    service = _Service(router, api_key)
    app = FastAPI(title="zeta-local", version=_version(), lifespan=service.lifespan,
                  dependencies=[Depends(service.authorize)])
    app.add_middleware(_BodyLimit, max_bytes=max_request_bytes)
    origins = list(cors_origins)
    if origins:  # off unless asked for: a page on another origin may not call a local model
        app.add_middleware(CORSMiddleware, allow_origins=origins, allow_methods=["GET", "POST"],
                           allow_headers=["*"],
                           expose_headers=["x-zeta-model", "x-zeta-task", "x-zeta-attempts"])
    _add_error_handlers(app)

    @app.post("/v1/chat/completions")
    async def chat_completions(body: ChatRequest, request: Request) -> Response:
        return await service.generate(request, body, body.router_messages(), chat=True)

    @app.post("/v1/completions")
    async def completions(body: CompletionRequest, request: Request) -> Response:
        return await service.generate(request, body, body.text(), chat=False)

    @app.post("/v1/embeddings")
    async def embeddings(body: EmbeddingRequest, request: Request) -> Response:
        return await service.embed(request, body)

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        return {"object": "list", "data": await asyncio.to_thread(service.models)}

    @app.get("/v1/models/{name}")
    async def model(name: str) -> dict[str, Any]:
        found = [m for m in await asyncio.to_thread(service.models) if m["id"] == name]
        if not found:
            raise service.unknown_model(name)
        return found[0]

    @app.get("/health")
    async def health() -> dict[str, Any]:
        rows = await asyncio.to_thread(router.status)
        return {"status": "ok", "models": [asdict(r) for r in rows]}

    return app


class _Service:
    """The endpoints' shared state: the router, the key, and the calls in flight."""

    def __init__(self, router: ZetaDynamicRouter, api_key: str | None):
        self.router = router
        self._key = api_key.encode() if api_key else None
        self.calls: set[_Call] = set()
        settings = router.config.router
        # The router ends every request by its deadline; this bound only guards against a bug.
        self.bound_s = settings.deadline_s + settings.cancel_grace_s + 5
        self.started = now()

    @contextlib.asynccontextmanager
    async def lifespan(self, app: FastAPI) -> AsyncIterator[None]:
        yield
        calls = list(self.calls)  # still running at shutdown: stop them, and their threads
        for call in calls:
            call.token.cancel()
        for call in calls:
            call.thread.join(self.router.config.router.cancel_grace_s + 1)

    async def authorize(self, request: Request) -> None:
        if self._key is None:
            return
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not given.strip():
            raise RequestError(401, "missing API key: send the header `Authorization: Bearer KEY`",
                               code="invalid_api_key", headers={"WWW-Authenticate": "Bearer"})
        if not hmac.compare_digest(given.strip().encode(), self._key):
            raise RequestError(401, "incorrect API key", code="invalid_api_key",
                               headers={"WWW-Authenticate": "Bearer"})

    # ---- the `model` field -----------------------------------------------------------------

    def target(self, name: str, *, embeddings: bool) -> dict[str, str]:
        """The router's keyword arguments for a `model` field: {} (auto), task= or model=."""
        if name == AUTO or (embeddings and name == EMBED_TASK):
            return {}
        if name in GENERATION_TASKS or name == EMBED_TASK:
            if embeddings:
                raise RequestError(400, f"model {name!r} is a generation task; embeddings take "
                                   f"'auto', 'embed' or a model with the embed capability", param="model")
            if name == EMBED_TASK:
                raise RequestError(400, "model 'embed' is the embeddings task; POST /v1/embeddings",
                                   param="model")
            return {"task": name}
        if name in self.router.config.models:
            return {"model": name}
        raise self.unknown_model(name)

    def unknown_model(self, name: str) -> RequestError:
        return RequestError(404, f"the model {name!r} does not exist here; use 'auto', a task "
                            f"({', '.join(GENERATION_TASKS)}; '{EMBED_TASK}' for embeddings) or a "
                            f"model of models.toml ({', '.join(self.router.config.models)}); "
                            f"GET /v1/models lists them", param="model", code="model_not_found")

    def models(self) -> list[dict[str, Any]]:
        from zeta_local.inventory import describe_models

        config = self.router.config
        rows = [model_json(AUTO, self.started, {"kind": "router", "description":
                                                "the classifier picks the task, then its chain"})]
        for task, chain in config.routes.items():
            rows.append(model_json(task, self.started, {"kind": "task", "chain": list(chain)}))
        for row in describe_models(config):
            rows.append(model_json(row["name"], self.started, {
                "kind": "model", "file": row["file"], "file_present": row["file"] != "missing"
                and row["file"] != "invalid", "capabilities": row["capabilities"],
                "routes": row["routes"], "n_ctx": row["n_ctx"], "quantization": row["quantization"]}))
        return rows

    # ---- generation ------------------------------------------------------------------------

    async def generate(self, request: Request, body: ChatRequest | CompletionRequest,
                       payload: str | list[dict[str, str]], *, chat: bool) -> Response:
        target = self.target(body.model, embeddings=False)
        options = body.sampling()

        def run(token: CancelToken) -> Iterator[Any]:
            stream = self.router.stream(payload, cancel=token, **target, **options)
            yield stream.route  # known before any model runs: the headers need it
            yield from stream

        call = _Call(run, self, request)
        streaming = False
        try:
            decision = await call.next()
            # Headers go out with the first text, so that they can name the model giving it.
            fallbacks: list[Fallback] = []
            first = await call.next()
            while isinstance(first, Fallback):
                fallbacks.append(first)
                first = await call.next()
            if not body.stream:
                while not isinstance(first, Done):
                    first = await call.next()
                result = first.result
                return JSONResponse(completion_json(result, chat=chat, request_id=new_id(
                    "chatcmpl" if chat else "cmpl"), created=now()), headers=_headers(
                        result.model, result.task, [(a.model, a.outcome) for a in result.attempts]))
            # The answering model's attempt is still running: `streaming` in the header; the
            # last chunk carries every attempt, and a later fallback shows in the chunks.
            if isinstance(first, Done):  # an empty answer: it is over already
                answering = first.result.model
                tried = [(a.model, a.outcome) for a in first.result.attempts]
            else:
                answering = first.model
                tried = [(f.from_model, f.outcome) for f in fallbacks] + [(answering, "streaming")]
            events = _sse(call, [*fallbacks, first], chat=chat, include_usage=body.include_usage)
            streaming = True
            return StreamingResponse(events, media_type="text/event-stream", headers=_headers(
                answering, decision.task, tried) | {"cache-control": "no-cache"})
        finally:
            if not streaming:  # else the stream closes the call when it ends
                call.close()

    async def embed(self, request: Request, body: EmbeddingRequest) -> Response:
        target = self.target(body.model, embeddings=True)
        texts = body.texts()
        if body.dimensions is not None:
            raise RequestError(400, "dimensions is not supported: each model embeds in its own "
                               "dimension (see the response's zeta.dim)", param="dimensions",
                               code="unsupported_parameter")
        call = _Call(lambda token: [self.router.embed(texts, cancel=token, **target)], self, request)
        try:
            result = await call.next()
        finally:
            call.close()
        return JSONResponse(embeddings_json(result, body.encoding_format), headers=_headers(
            result.model, EMBED_TASK, [(a.model, a.outcome) for a in result.attempts]))


class _NoAnswer(Exception):
    """The router did not end a request within its own deadline: a bug, never a hang."""


class _Call:
    """One router call on a thread of its own. Its items reach the event loop through a queue;
    a client that disconnects cancels it through the router's CancelToken."""

    def __init__(self, run: Callable[[CancelToken], Iterable[Any]], service: _Service,
                 request: Request):
        self.token = CancelToken()
        self._service = service
        self._loop = asyncio.get_running_loop()
        self._items: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        # One timer for the whole call rather than a timeout on every wait: a token is a wait.
        self._bound = self._loop.call_later(service.bound_s, self._items.put_nowait,
                                            ("error", _NoAnswer()))
        self._watcher = asyncio.ensure_future(_cancel_on_disconnect(request, self.token))
        self.thread = threading.Thread(target=self._run, args=(run,), name="zeta-http-call",
                                       daemon=True)
        service.calls.add(self)
        self.thread.start()

    def _run(self, run: Callable[[CancelToken], Iterable[Any]]) -> None:
        try:
            for item in run(self.token):
                self._put(("item", item))
            self._put(("end", None))
        except BaseException as exc:  # handed to the event loop, which answers with it
            self._put(("error", exc))
        finally:
            self._service.calls.discard(self)

    def _put(self, item: tuple[str, Any]) -> None:
        try:
            self._loop.call_soon_threadsafe(self._items.put_nowait, item)
        except RuntimeError:  # the event loop has closed: nobody is waiting any more
            self.token.cancel()

    async def next(self) -> Any:
        """The next item; raises the call's error, or StopAsyncIteration at its end."""
        kind, item = await self._items.get()
        if kind == "error":
            raise item
        if kind == "end":
            raise StopAsyncIteration
        return item

    def close(self) -> None:
        """The response is done (or abandoned): stop what may still run, and stop watching."""
        self.token.cancel()
        self._watcher.cancel()
        self._bound.cancel()


async def _cancel_on_disconnect(request: Request, token: CancelToken) -> None:
    # uvicorn answers receive() with http.disconnect the moment the client's socket closes,
    # while the model may still be evaluating the prompt: nothing needs to be sent to notice.
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            token.cancel()
            return


async def _sse(call: _Call, first: list[Any], *, chat: bool, include_usage: bool) -> AsyncIterator[bytes]:
    """Server-sent events: a chunk per piece of text, named after the model that produced it;
    the first chunk of a new model's text carries `zeta.fallback` (from, to, outcome, detail);
    then the finish reason with every attempt, the usage when asked for, and [DONE]."""
    request_id, created = new_id("chatcmpl" if chat else "cmpl"), now()
    role = chat  # the first chunk of a chat stream says who speaks

    def chunk(model: str, **fields: Any) -> bytes:
        nonlocal role
        data = chunk_json(chat=chat, request_id=request_id, created=created, model=model,
                          role=role, include_usage=include_usage, **fields)
        role = False
        return _event(data)

    try:
        pending = list(first)
        hop: Fallback | None = None  # the last change of model, told with the new model's text
        while True:
            event = pending.pop(0) if pending else await call.next()
            if isinstance(event, Fallback):
                hop = event
            elif isinstance(event, (TextChunk, ReasoningChunk)):
                piece = {"text": event.text} if isinstance(event, TextChunk) else {"reasoning": event.text}
                yield chunk(event.model, **piece, zeta={"fallback": fallback_json(hop)} if hop else None)
                hop = None
            elif isinstance(event, Done):
                result: GenerationResult = event.result
                zeta = zeta_json(result) | ({"fallback": fallback_json(hop)} if hop else {})
                yield chunk(result.model, finish_reason=result.finish_reason, zeta=zeta)
                if include_usage:
                    yield _event(usage_chunk_json(result, chat=chat, request_id=request_id,
                                                  created=created))
                break
    except Exception as exc:  # an error after the headers went out: say it in the stream
        yield _event(_as_request_error(exc).body())
    finally:
        call.close()
    yield b"data: [DONE]\n\n"


def _event(data: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode() + b"\n\n"


def _headers(model: str, task: str, tried: list[tuple[str, str]]) -> dict[str, str]:
    """For clients that see only headers: who answered, for which task, after what."""
    return {"x-zeta-model": model, "x-zeta-task": task, "x-zeta-attempts": attempts_header(tried)}


# ---- errors --------------------------------------------------------------------------------


def _as_request_error(exc: BaseException) -> RequestError:
    """Every way a request can fail, as OpenAI's error with the right status."""
    if isinstance(exc, RequestError):
        return exc
    if isinstance(exc, UnknownModel):
        return RequestError(404, str(exc), param="model", code="model_not_found")
    if isinstance(exc, InvalidRequest):
        return RequestError(400, str(exc))
    if isinstance(exc, FallbackExhausted):
        outcomes = {a.outcome for a in exc.attempts}
        if outcomes & {QUEUE_FULL, BUSY} and outcomes <= _UNAVAILABLE:
            return RequestError(429, f"every model that could answer is busy: {exc}",
                                type="rate_limit_error", code="queue_full", attempts=tuple(exc.attempts),
                                headers={"Retry-After": str(RETRY_AFTER_S)})
        if CONTEXT_OVERFLOW in outcomes and outcomes <= _UNAVAILABLE | {CONTEXT_OVERFLOW}:
            return RequestError(400, f"the prompt does not fit any model's context: {exc}",
                                code="context_length_exceeded", attempts=tuple(exc.attempts))
        return RequestError(503, str(exc), type="server_error", code="no_model_available",
                            attempts=tuple(exc.attempts))
    if isinstance(exc, Cancelled):  # not by its client, who has gone and reads nothing
        return RequestError(503, "the request was cancelled: the server is shutting down",
                            type="server_error", code="cancelled", attempts=tuple(exc.attempts))
    if isinstance(exc, _NoAnswer):
        return RequestError(503, "no answer within the request's deadline (deadline_s)",
                            type="server_error", code="timeout")
    if isinstance(exc, ZetaError):
        return RequestError(500, str(exc), type="server_error", code="internal_error")
    log.error("unexpected error serving a request", exc_info=exc)
    return RequestError(500, f"internal error ({type(exc).__name__}); the server's log has the "
                        f"details", type="server_error", code="internal_error")


def _add_error_handlers(app: FastAPI) -> None:
    def respond(error: RequestError) -> Response:
        return JSONResponse(error.body(), status_code=error.status, headers=error.headers)

    async def on_validation(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        return respond(validation_error(list(exc.errors())))

    async def on_http(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        code = "not_found" if exc.status_code == 404 else None
        return respond(RequestError(exc.status_code, f"{request.method} {request.url.path}: "
                                    f"{exc.detail}", code=code))

    async def on_error(request: Request, exc: Exception) -> Response:
        return respond(_as_request_error(exc))

    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(HTTPException, on_http)
    # The expected failures are answered here; anything else also reaches uvicorn's log.
    for expected in (RequestError, ZetaError, _NoAnswer, Exception):
        app.add_exception_handler(expected, on_error)


class _BodyLimit:
    """Refuse a body over the limit with 413 before any of it is parsed or reaches a model."""

    def __init__(self, app: ASGIApp, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.max_bytes:
            await self._refuse(scope, receive, send)
            return
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client left before its body was in
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.max_bytes:
                await self._refuse(scope, receive, send)
                return
            more = message.get("more_body", False)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": b"".join(chunks), "more_body": False}

        await self.app(scope, replay, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        error = RequestError(413, f"the request body is over the server's limit of "
                             f"{self.max_bytes} bytes (--max-request-size)", code="request_too_large")
        await JSONResponse(error.body(), status_code=413)(scope, receive, send)


# ---- running -------------------------------------------------------------------------------


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def listen(host: str, port: int) -> socket.socket:
    """The server's listening socket, bound now, so that a taken port or a foreign address is
    an OSError for the caller rather than a log line from inside uvicorn."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto given explicitly: asyncio turns Nagle's algorithm off only on sockets that say they
    # are TCP, and with it on every response waits out the client's delayed ACK (40 ms).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(2048)
    except OSError:
        sock.close()
        raise
    return sock


class BackgroundServer:
    """The app served by uvicorn on a thread of this process, for applications that embed the
    router and for the tests and benchmarks. `port=0` takes a free port; `.url` says which.

        with BackgroundServer(router) as server:
            openai.OpenAI(base_url=server.url + "/v1", api_key="-")...
    """

    def __init__(self, router: ZetaDynamicRouter, host: str = DEFAULT_HOST, port: int = 0,
                 **app_options: Any):
        self._socket = listen(host, port)
        self.host, self.port = host, self._socket.getsockname()[1]
        self.url = f"http://{host}:{self.port}"
        self._server = _uvicorn(create_app(router, **app_options), "warning")
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [self._socket]},
                                        name="zeta-http-server", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 30
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.close()
                raise RuntimeError(f"the server on {self.url} did not start")
            time.sleep(0.01)

    def __enter__(self) -> BackgroundServer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self, timeout: float = 30) -> None:
        """Stop accepting, let running requests end (5 s at most), then stop the thread."""
        self._server.should_exit = True
        self._thread.join(timeout)
        self._socket.close()


def serve(router: ZetaDynamicRouter, sock: socket.socket, *, log_level: str = "warning",
          **app_options: Any) -> None:
    """Serve on `sock` (see listen()) until Ctrl-C or SIGTERM, then let running requests end
    (5 s at most) and return."""
    server = _uvicorn(create_app(router, **app_options), log_level)
    # uvicorn raises the signal that stopped it again once it has shut down; as an exception,
    # so that the caller still closes the router.
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        server.run(sockets=[sock])
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
        sock.close()


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def _uvicorn(app: FastAPI, log_level: str) -> Any:
    import uvicorn

    return uvicorn.Server(uvicorn.Config(app, log_level=log_level, timeout_graceful_shutdown=5,
                                         lifespan="on"))


def _version() -> str:
    from zeta_local import __version__

    return __version__
