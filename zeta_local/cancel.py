"""Cancelling a request from another thread (a UI's stop button, a client that went away)."""

from __future__ import annotations

import threading
from typing import Protocol


class _Stoppable(Protocol):
    def stop(self, outcome: str, detail: str) -> bool: ...


class CancelToken:
    """Pass as `cancel=` to generate/chat/stream/embed; call cancel() from any thread.

    The attempt running at that moment is stopped inside llama.cpp (even in the middle of a
    long prompt evaluation) and the call raises Cancelled with the attempts made so far."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self._lock = threading.Lock()
        self._attached: set[_Stoppable] = set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    def cancel(self) -> None:
        with self._lock:
            self._event.set()
            attached = list(self._attached)
        for job in attached:
            job.stop("cancelled", "cancelled by the caller")

    def attach(self, job: _Stoppable) -> None:
        with self._lock:
            self._attached.add(job)
            cancelled = self._event.is_set()
        if cancelled:
            job.stop("cancelled", "cancelled by the caller")

    def detach(self, job: _Stoppable) -> None:
        with self._lock:
            self._attached.discard(job)
