"""One worker thread per loaded model: a llama.cpp context is not thread-safe, so every request
for a model runs on that model's own thread, in order, from a bounded queue.

A Job is one attempt on one model. The worker reports what happens to it through the job's
event queue (text pieces, the end, an error); the caller reads that queue, and the watchdog
reads the job's phase and heartbeat to decide when it has taken too long.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from zeta_local.backend import Aborted, GenerationEnd, LoadedModel
from zeta_local.errors import ModelLoadError, OutOfMemory
from zeta_local.reasoning import Thought
from zeta_local.sampling import SamplingParams
from zeta_local.thinking import TEMPLATE_SWITCH

log = logging.getLogger(__name__)

_UNLOAD = "unload"  # a queue item: release the model when its turn comes

# Phases of a job, in order. The watchdog applies a different budget to each.
QUEUED, LOADING, PREFILL, DECODING, FINISHED = "queued", "loading", "prefill", "decoding", "finished"


@dataclass(eq=False)
class Job:
    """One attempt on one model: a generation (prompt or messages) or an embedding (texts)."""

    model: str
    prompt: str | None = None
    messages: list[dict[str, str]] | None = None
    prefix: str = ""  # text already produced by a failed model, which this one continues
    params: SamplingParams | None = None
    texts: list[str] | None = None
    # For a chat: whether the model is asked to think (thinking.py); None for a plain prompt,
    # which no template renders. The worker sets thinking_switch when it renders or sends the
    # chat: whether the model's template (or engine) took the choice.
    thinking: bool | None = None
    thinking_switch: bool | None = None
    events: queue.Queue[tuple[Any, ...]] = field(default_factory=queue.Queue)
    cancel: threading.Event = field(default_factory=threading.Event)
    done: threading.Event = field(default_factory=threading.Event)
    phase: str = QUEUED
    phase_since: float = field(default_factory=time.monotonic)
    last_token_at: float = 0.0
    prompt_tokens: int = 0
    trip: str | None = None  # the outcome the watchdog (or the caller) stopped it with
    tripped_at: float = 0.0
    tripped_in: str = ""  # the phase it was in then
    generating_since: float = 0.0
    on_phase: Callable[[], None] | None = None  # the watchdog's wake-up: a new phase, a new budget

    def enter(self, phase: str) -> None:
        # The clock first: the watchdog may read in between, and must never see the new phase
        # with the old phase's start time.
        self.phase_since = time.monotonic()
        self.phase = phase
        if self.on_phase is not None:
            self.on_phase()

    def stop(self, outcome: str, detail: str) -> bool:
        """Stop the job (watchdog trip or caller cancel); the caller hears of it at once.
        Returns False if it had already finished or been stopped."""
        if self.trip is not None or self.done.is_set():
            return False
        self.trip, self.tripped_at, self.tripped_in = outcome, time.monotonic(), self.phase
        self.cancel.set()
        self.events.put(("tripped", outcome, detail))
        return True


class ModelWorker:
    """Owns one model (loaded lazily by its first job) and runs its jobs one at a time."""

    def __init__(self, name: str, loader: Callable[[threading.Event], LoadedModel], queue_size: int,
                 keep_alive_s: float | None = None, on_release: Callable[[], None] | None = None):
        self.name = name
        self.keep_alive_s = keep_alive_s
        self._on_release = on_release
        self.model: LoadedModel | None = None
        self.current: Job | None = None
        self.quarantined = False
        self.served = 0
        self.failed = 0
        self._loader = loader
        self._jobs: queue.Queue[Job | str | None] = queue.Queue(maxsize=queue_size)
        self._thread = threading.Thread(target=self._run, name=f"zeta-worker-{name}", daemon=True)
        self._thread.start()

    @property
    def state(self) -> str:
        if self.quarantined:
            return "quarantined"
        job = self.current
        if job is not None:
            return "loading" if job.phase == LOADING else "busy"
        return "ready" if self.model is not None else "unloaded"

    def queue_length(self) -> int:
        return self._jobs.qsize()

    @property
    def busy(self) -> bool:
        return self.current is not None or not self._jobs.empty()

    def unload(self) -> None:
        """Release the model once the work queued before this call is done."""
        self._jobs.put(_UNLOAD)

    def submit(self, job: Job) -> bool:
        """Queue the job; False when the queue is full (the caller moves on)."""
        try:
            self._jobs.put_nowait(job)
            return True
        except queue.Full:
            return False

    def close(self, timeout: float) -> bool:
        """Stop after cancelling what runs and what waits; True if the thread has ended."""
        while True:  # drain: queued jobs are told they will not run
            try:
                job = self._jobs.get_nowait()
            except queue.Empty:
                break
            if isinstance(job, Job):
                job.stop("cancelled", "the router was closed")
                job.done.set()
        current = self.current
        if current is not None:
            current.stop("cancelled", "the router was closed")
        try:
            self._jobs.put(None, timeout=timeout)
        except queue.Full:
            pass
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def _run(self) -> None:
        while True:
            idle_for = self.keep_alive_s if self.model is not None else None
            try:
                job = self._jobs.get(timeout=idle_for)
            except queue.Empty:  # idle for keep_alive_s: give the memory back
                log.info("%s idle for %g s (keep_alive_s); unloading it", self.name, idle_for)
                self._release()
                continue
            if job is None:
                break
            if job == _UNLOAD:
                self._release()
                continue
            assert isinstance(job, Job)
            if job.cancel.is_set():  # stopped while it waited in the queue
                job.done.set()
                continue
            self.current = job
            try:
                self._serve(job)
                self.served += 1
            except BaseException as exc:  # reported to the caller; the worker lives on
                self.failed += 1
                job.events.put(("error", exc))
                if isinstance(exc, (OutOfMemory, ModelLoadError)) or \
                        isinstance(exc, Aborted) and self.model is None:
                    self._release()
            finally:
                self.current = None
                job.enter(FINISHED)
                job.done.set()
                if self.quarantined:
                    log.warning("%s came back after its cancel; it serves again", self.name)
                    self.quarantined = False
        self._release()

    def _serve(self, job: Job) -> None:
        if self.model is None:
            job.enter(LOADING)
            self.model = self._loader(job.cancel)
        model = self.model
        model.cancel = job.cancel
        if job.texts is None and job.prompt is None and job.messages is None:  # preload only
            job.events.put(("loaded",))
            return
        if job.texts is not None:
            self._start(job, sum(len(t) for t in job.texts))
            job.events.put(("vectors", model.embed(job.texts)))
            return
        assert job.params is not None
        generate_chat = getattr(model, "generate_chat", None)  # a remote engine takes the messages
        if job.messages is not None and generate_chat is not None:
            self._start(job, sum(len(m["content"]) for m in job.messages) + len(job.prefix))
            job.thinking_switch = job.thinking is not None
            pieces = generate_chat(job.messages, job.prefix, job.params, job.thinking)
        else:
            if job.messages is not None:
                # Only a template with the switch is given it: one without has no thinking mode.
                job.thinking_switch = model.thinking_switch
                switch = {TEMPLATE_SWITCH: job.thinking} \
                    if job.thinking is not None and model.thinking_switch else None
                rendered = model.render_chat(job.messages, switch)
                prompt, params = rendered.text + job.prefix, job.params.with_stop(rendered.stop)
            else:
                prompt, params = (job.prompt or "") + job.prefix, job.params
            self._start(job, len(prompt))
            pieces = model.generate(prompt, params)
        for piece in pieces:
            if isinstance(piece, GenerationEnd):
                job.events.put(("end", piece))
            else:
                job.last_token_at = time.monotonic()
                if job.phase != DECODING:  # thinking is progress too: its budgets are the answer's
                    job.enter(DECODING)
                job.events.put(("reasoning", piece.text) if isinstance(piece, Thought) else ("text", piece))

    @staticmethod
    def _start(job: Job, prompt_chars: int) -> None:
        # A generous token estimate (3 characters a token) sizes the first-token budget.
        job.prompt_tokens = prompt_chars // 3
        job.enter(PREFILL)
        job.generating_since = job.phase_since

    def _release(self) -> None:
        model, self.model = self.model, None
        if model is not None:
            try:
                model.close()
            except Exception:
                log.exception("closing %s failed", self.name)
        # Requests already queued will load the model again under the reservation they were
        # admitted with: only an idle worker gives its reservation back.
        if self._on_release is not None and self._jobs.empty():
            self._on_release()
