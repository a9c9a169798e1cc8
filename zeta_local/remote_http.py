"""The HTTP side of a remote engine: closing a request's connection when it is cancelled, and
reading an engine's answers (status, errors, Retry-After, Server-Sent Events) into typed errors.

A worker thread blocked in a socket read cannot be interrupted by Python; closing the socket
from another thread does not wake it on Linux either. Shutting the socket down does: the read
returns at once and httpx raises, which remote.py turns into Aborted when the job was cancelled.
"""

from __future__ import annotations

import email.utils
import json
import logging
import socket
import threading
import time
from typing import Any, Iterator

import httpx

from zeta_local.errors import ContextOverflow, EngineBusy, GenerationError

log = logging.getLogger(__name__)

_WATCH_POLL_S = 0.01  # how often a request's watcher looks at its cancel flag (and its end)
_MAX_RETRY_AFTER_S = 3600.0  # a Retry-After beyond this is taken as this: a skip stays bounded
_SNIPPET = 200  # characters of an unexpected body quoted in an error


class CancelWatch:
    """For the length of one request: a small thread that shuts the request's socket down as
    soon as `cancel` is set (a watchdog trip or the caller's cancel), so that the worker blocked
    reading it comes back at once. The sockets are learnt through httpcore's `trace` extension,
    when each connection is made; connections are never reused (remote.py), so every request
    makes its own and is seen here, even one still waiting for its response headers."""

    def __init__(self, cancel: threading.Event, name: str):
        self._cancel = cancel
        self._ended = threading.Event()
        self._lock = threading.Lock()
        self._streams: list[Any] = []
        self._thread = threading.Thread(target=self._run, name=f"zeta-remote-watch-{name}", daemon=True)

    def __enter__(self) -> CancelWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._ended.set()
        self._thread.join(timeout=1.0)

    @property
    def extensions(self) -> dict[str, Any]:
        return {"trace": self._trace}

    def _trace(self, event: str, info: dict[str, Any]) -> None:
        if event.endswith("connect_tcp.complete") and info.get("return_value") is not None:
            with self._lock:
                self._streams.append(info["return_value"])
            if self._cancel.is_set():  # cancelled while connecting
                self._shut()

    def _run(self) -> None:
        while not self._ended.is_set():
            if self._cancel.wait(_WATCH_POLL_S):
                self._shut()
                return

    def _shut(self) -> None:
        with self._lock:
            streams = list(self._streams)
        for stream in streams:
            sock = stream.get_extra_info("socket")
            if isinstance(sock, socket.socket):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:  # closed already
                    pass


def check_response(response: httpx.Response, name: str, what: str, expect: str) -> None:
    """Raise the typed error an engine's unhappy answer means: 429/503 EngineBusy (with its
    Retry-After), a 400 about the context ContextOverflow, any other status GenerationError with
    the engine's own message; a body of another type than `expect` ("json" or "event-stream",
    HTML from a proxy, say) GenerationError saying what came instead."""
    status = response.status_code
    if status >= 400:
        message = _error_message(response)
        if status in (429, 503):
            retry_after = retry_after_s(response.headers.get("retry-after"))
            asked = f"; it asked to retry after {retry_after:g} s" if retry_after is not None else ""
            raise EngineBusy(f"{name}: {what} answered HTTP {status} (busy): {message}{asked}", retry_after)
        if status == 400 and "context" in message.lower():
            raise ContextOverflow(f"{name}: {what}: {message}")
        hint = " (check the key in the variable named by api_key_env)" if status in (401, 403) else ""
        raise GenerationError(f"{name}: {what} answered HTTP {status}{hint}: {message}")
    kind = response.headers.get("content-type", "").split(";")[0].strip().lower()
    wanted = "application/json" if expect == "json" else "text/event-stream"
    if kind != wanted and not (expect == "event-stream" and kind == "application/json"):
        body = _snippet(response)
        raise GenerationError(f"{name}: {what} answered with {kind or 'no content type'} instead of "
                              f"{wanted}; is `endpoint` the engine's OpenAI-compatible /v1 URL? "
                              f"The body began: {body!r}")


def read_json(response: httpx.Response, name: str, what: str) -> Any:
    try:
        return json.loads(response.read())
    except (ValueError, UnicodeDecodeError):
        raise GenerationError(f"{name}: {what} answered with a body that is not JSON: "
                              f"{_snippet(response)!r}") from None


def sse_events(response: httpx.Response, name: str, what: str) -> Iterator[dict[str, Any]]:
    """The JSON objects of a Server-Sent Events stream, until `data: [DONE]` (or its end).
    Comments (keep-alives) and other fields are skipped: they are not text, so they never hide
    a stall from the watchdog. An `error` event raises with the engine's message, and so does a
    stream that ends with neither `[DONE]` nor a finish_reason: the answer was cut off."""
    finished = False
    for line in response.iter_lines():
        if not line.startswith("data:"):
            continue
        payload = line[5:].strip()
        if payload == "[DONE]":
            return
        try:
            event = json.loads(payload)
        except ValueError:
            raise GenerationError(f"{name}: {what} sent an event that is not JSON: "
                                  f"{payload[:_SNIPPET]!r}") from None
        if not isinstance(event, dict):
            raise GenerationError(f"{name}: {what} sent an event that is not a JSON object: "
                                  f"{payload[:_SNIPPET]!r}")
        if event.get("error") is not None:
            raise GenerationError(f"{name}: {what} failed mid-answer: {_message_of(event)}")
        choices = event.get("choices")
        finished = finished or isinstance(choices, list) and any(
            isinstance(c, dict) and c.get("finish_reason") for c in choices)
        yield event
    if not finished:
        raise GenerationError(f"{name}: {what} ended its event stream before the answer ended "
                              f"(no finish_reason, no [DONE])")


def retry_after_s(value: str | None) -> float | None:
    """Retry-After as seconds from now: a number of seconds or an HTTP date; None if absent or
    unreadable."""
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            seconds = email.utils.parsedate_to_datetime(value).timestamp() - time.time()
        except (TypeError, ValueError):
            log.info("ignoring an unreadable Retry-After header %r", value[:_SNIPPET])
            return None
    if seconds != seconds:  # NaN
        return None
    return min(max(seconds, 0.0), _MAX_RETRY_AFTER_S)


def _error_message(response: httpx.Response) -> str:
    """The engine's own message: OpenAI's {"error": {"message"}}, FastAPI's {"detail"}, a plain
    {"error": "..."}, else the start of the body."""
    try:
        body = json.loads(response.read())
    except (ValueError, UnicodeDecodeError):
        return _snippet(response) or response.reason_phrase or "no message"
    return _message_of(body) if isinstance(body, dict) else str(body)[:_SNIPPET]


def _message_of(body: dict[str, Any]) -> str:
    error = body.get("error", body)
    if isinstance(error, dict):
        found = error.get("message") or error.get("detail")
        if found is not None:
            return str(found)[:1000]
    elif isinstance(error, str):
        return error[:1000]
    if "detail" in body:
        return str(body["detail"])[:1000]
    return json.dumps(body)[:_SNIPPET]


def _snippet(response: httpx.Response) -> str:
    try:
        text = response.read().decode("utf-8", "replace")
    except httpx.HTTPError:
        return ""
    return " ".join(text.split())[:_SNIPPET]
