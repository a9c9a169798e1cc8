"""The model pool: what outlives a request. One worker per model and kind, created on first
use; the memory ledger and admission, which must see the workers (a busy one is never evicted)
and the ledger under one lock; and the watchdog every attempt is watched by.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import replace
from typing import Any, Callable

from zeta_local.admission import Admission, MemoryLedger, footprint, gpu_offload_supported, memory_budgets
from zeta_local.backend import Backend, LoadedModel
from zeta_local.breaker import CircuitBreaker
from zeta_local.config import Config
from zeta_local.errors import InvalidModelFile, InvalidRequest, ModelFileMissing
from zeta_local.gguf_info import read_gguf_info
from zeta_local.memory import GPU_PROCESS_COST, MemoryEstimate, estimate_for, estimate_memory, flash_attn_on
from zeta_local.results import OK, OUT_OF_MEMORY, ModelStatus
from zeta_local.remote import connect
from zeta_local.sources import find_model_file
from zeta_local.watchdog import Watchdog
from zeta_local.worker import ModelWorker

log = logging.getLogger(__name__)

# (model name, embedding): a model's generation and embedding contexts have a worker each; they
# share the model's weights (one llama_model in the backend, counted once by the ledger).
Key = tuple[str, bool]


class ModelPool:
    """The workers of every model used so far, the memory they hold, and the watchdog.

    `workers`, `estimates`, `gpu_layers`, `ledger` and `n_threads` are read by tests and the
    benchmarks; only the pool changes them."""

    def __init__(self, config: Config, backend: Backend, breaker: CircuitBreaker):
        self.config = config
        self._backend = backend
        self._breaker = breaker  # read only: a cooling-down model is not healthy
        settings = config.router
        self.n_threads = settings.n_threads or _physical_cores()
        self.workers: dict[Key, ModelWorker] = {}
        self.estimates: dict[Key, MemoryEstimate] = {}
        self._gpu = gpu_offload_supported()
        self.ledger = MemoryLedger(*memory_budgets(settings.ram_budget, settings.vram_budget,
                                                   settings.memory_headroom, self._gpu),
                                   process_vram=GPU_PROCESS_COST if self._gpu else 0)
        self._headers: dict[Key, Any] = {}  # GGUFInfo of each model seen
        self.gpu_layers: dict[Key, int] = {}  # partial offloads chosen by admission
        self._admission_lock = threading.Lock()
        self._watchdog: Watchdog | None = None
        self._lock = threading.Lock()
        self._closed = False

    def close(self) -> None:
        """Cancel what runs, stop every thread and release every model. Safe to call twice."""
        with self._lock:
            self._closed = True
            workers, self.workers = list(self.workers.values()), {}
            watchdog, self._watchdog = self._watchdog, None
        grace = self.config.router.cancel_grace_s + 1
        stuck = [w.name for w in workers if not w.close(timeout=grace)]
        if watchdog is not None:
            watchdog.close(timeout=grace)
        if stuck:  # daemon threads: they cannot keep the process alive
            log.error("worker(s) of %s did not stop within %.1f s", ", ".join(stuck), grace)

    def check_open(self) -> None:
        if self._closed:
            raise InvalidRequest("this router has been closed; create a new one")

    # ---- workers ------------------------------------------------------------------------

    def worker(self, name: str, embedding: bool) -> ModelWorker:
        """The model's worker, created on first use after its file is found and checked. The
        worker loads the model itself, on its own thread, under the watchdog's load budget."""
        key = (name, embedding)
        with self._lock:
            self.check_open()
            worker = self.workers.get(key)
        if worker is not None:
            return worker
        spec = self.config.models[name]
        if spec.remote:
            return self._new_worker(key, self._remote_loader(name, embedding), None, None)
        path = find_model_file(spec)
        assert path is not None
        info = read_gguf_info(path)
        estimate = estimate_for(spec, info, gpu=self._gpu, embedding=embedding)

        def load(cancel: threading.Event) -> LoadedModel:
            started = time.monotonic()
            layers = self.gpu_layers.get(key)
            model = self._backend.load(spec if layers is None else replace(spec, n_gpu_layers=layers),
                                       path, info, embedding=embedding, n_threads=self.n_threads,
                                       cancel=cancel)
            log.info("loaded %s%s from %s in %.2f s", name, " (embedding)" if embedding else "",
                     path, time.monotonic() - started)
            return model

        return self._new_worker(key, load, estimate, info)

    def _new_worker(self, key: Key, load: Callable[[threading.Event], LoadedModel],
                    estimate: MemoryEstimate | None, info: Any) -> ModelWorker:
        name, embedding = key
        spec = self.config.models[name]
        with self._lock:
            self.check_open()
            worker = self.workers.get(key)
            if worker is None:  # another thread may have created it meanwhile
                if estimate is not None:  # a remote model has none: it takes no local memory
                    self.estimates[key], self._headers[key] = estimate, info
                worker = self.workers[key] = ModelWorker(
                    f"{name}{'-embed' if embedding else ''}", load, self.config.router.queue_size,
                    keep_alive_s=None if spec.pinned else spec.keep_alive_s,
                    on_release=lambda: self.ledger.release(key))
            return worker

    def _remote_loader(self, name: str, embedding: bool) -> Callable[[threading.Event], LoadedModel]:
        """A remote model's "load": a client and one GET /models (remote.connect), under the
        watchdog's load budget like any load. Its connect timeout is at most its first-token
        budget, its read timeout the request deadline: backstops, the watchdog trips first."""
        spec, settings = self.config.models[name], self.config.router

        def load(cancel: threading.Event) -> LoadedModel:
            started = time.monotonic()
            model = connect(spec, cancel,
                            connect_timeout_s=spec.first_token_timeout_s or settings.first_token_timeout_s,
                            read_timeout_s=settings.deadline_s)
            log.info("%s%s: %s answers (%.2f s)", name, " (embedding)" if embedding else "",
                     spec.endpoint, time.monotonic() - started)
            return model

        return load

    def watchdog(self) -> Watchdog:
        with self._lock:
            if self._watchdog is None:
                self._watchdog = Watchdog()
            return self._watchdog

    def loaded_and_healthy(self, name: str, embedding: bool) -> bool:
        worker = self.workers.get((name, embedding))
        return worker is not None and worker.model is not None and not worker.quarantined \
            and self._breaker.cooling_until(name) is None

    def healthy(self, name: str) -> bool:
        """Not cooling down in the circuit breaker, and its generation worker not quarantined
        (loaded or not)."""
        worker = self.workers.get((name, False))
        return not (worker is not None and worker.quarantined) and self._breaker.cooling_until(name) is None

    def jobs(self, name: str, embedding: bool) -> tuple[int, int]:
        """(running, queued) requests of the model's worker; (0, 0) when it has none."""
        worker = self.workers.get((name, embedding))
        if worker is None:
            return 0, 0
        return int(worker.current is not None), worker.queue_length()

    def any_loaded(self, names: list[str], embedding: bool) -> bool:
        return any(self.loaded_and_healthy(n, embedding) for n in names)

    def unload(self, name: str) -> None:
        """Release the model (after the requests already queued for it)."""
        with self._lock:
            workers = [w for (n, _), w in self.workers.items() if n == name]
        for worker in workers:
            worker.unload()

    def loaded_models(self) -> list[str]:
        with self._lock:
            return sorted({name for (name, _), w in self.workers.items() if w.model is not None})

    # ---- memory -------------------------------------------------------------------------

    def admit(self, name: str, embedding: bool, later_loaded: bool) -> str | None:
        """Reserve the model's predicted memory before it loads; None when admitted (or already
        loaded), else why not, with the numbers. Idle models are evicted to make room, least
        recently used first, but not when a model later in the chain is loaded already: that
        one answers sooner than an eviction and a cold load would."""
        key = (name, embedding)
        if self.config.models[name].remote:
            return None  # its engine's memory is not this machine's: admitted at no cost
        with self._admission_lock:
            # Loaded, loading or queued models hold a reservation already. (An evicted model
            # whose unload is still queued does not, and is admitted again like any other.)
            if key in self.ledger.held():
                return None
            busy = {k for k, w in self.workers.items() if w.busy}
            admission = self.ledger.consider(key, self.estimates[key], busy)
            if not admission.fits and self.config.models[name].allow_partial_offload:
                admission = self._partial_offload(key, busy) or admission
            if not admission.fits:
                return admission.detail
            if admission.evict and later_loaded:
                return (f"{admission.detail}; it would take evicting "
                        f"{', '.join(k[0] for k in admission.evict)}, and a model later in the "
                        f"chain is loaded already")
            for victim in admission.evict:
                log.info("evicting %s (least recently used) to make room for %s", victim[0], name)
                self.ledger.release(victim)
                self.workers[victim].unload()
            self.ledger.take(key, self.estimates[key], self.config.models[name].pinned)
            return None

    def _partial_offload(self, key: Key, busy: set[Key]) -> Admission | None:
        """The most GPU layers that fit (allow_partial_offload); None if none do. The choice is
        kept for the load and the ledger."""
        info = self._headers[key]
        estimate = self.estimates[key]
        layers = info.arch_value("block_count")
        if not (self._gpu and estimate.vram and isinstance(layers, int)):
            return None
        spec = self.config.models[key[0]]
        for on_gpu in range(layers - 1, -1, -1):
            partial = estimate_memory(info, n_ctx=estimate.n_ctx, n_gpu_layers=on_gpu, embedding=key[1],
                                      flash_attn=flash_attn_on(replace(spec, n_gpu_layers=on_gpu), gpu=True))
            admission = self.ledger.consider(key, partial, busy)
            if admission.fits:
                log.info("%s: %d of %d layers on the GPU (allow_partial_offload)", key[0], on_gpu, layers)
                self.estimates[key], self.gpu_layers[key] = partial, on_gpu
                return admission
        return None

    def fits_without_eviction(self, name: str, embedding: bool) -> bool:
        """Whether the model would be admitted now as things are; False when it was never seen
        (its file may not even be here)."""
        if self.config.models[name].remote:
            return True  # it takes no local memory
        estimate = self.estimates.get((name, embedding))
        if estimate is None:
            return False
        admission = self.ledger.consider((name, embedding), estimate, set())
        return admission.fits and not admission.evict

    def learn(self, name: str, embedding: bool, outcome: str) -> None:
        """What an attempt's outcome tells the ledger."""
        if self.config.models[name].remote:
            return  # the ledger holds no remote model
        if outcome == OUT_OF_MEMORY:  # the estimate was too low: never trust it again as is
            self.ledger.correct_upward((name, embedding))
        elif outcome == OK:
            self.ledger.touch((name, embedding))

    # ---- status -------------------------------------------------------------------------

    def status(self) -> list[ModelStatus]:
        """Every model's state, queue and counts, as the router sees it now."""
        rows = []
        with self._lock:
            workers = dict(self.workers)
        held = self.ledger.held()  # one consistent snapshot for every row
        for name, spec in self.config.models.items():
            mine = [w for (n, _), w in workers.items() if n == name]
            states = {w.state for w in mine}
            cooling = self._breaker.cooling_until(name)
            detail = ""
            if "quarantined" in states:
                state, detail = "quarantined", "its worker did not come back from a cancel"
            elif cooling is not None:
                state = "cooling_down"
                detail = f"skipped for another {cooling - time.monotonic():.1f} s"
            else:
                state = next((s for s in ("loading", "busy", "ready") if s in states), "unloaded")
                if spec.remote:
                    detail = f"remote: {spec.endpoint} ({spec.remote_model}); no local memory"
                elif state == "unloaded":
                    try:
                        path = find_model_file(spec, materialize=False)
                        if path is not None:
                            read_gguf_info(path)
                    except (ModelFileMissing, InvalidModelFile) as exc:
                        state, detail = "unavailable", str(exc)
            layers = self.gpu_layers.get((name, False), self.gpu_layers.get((name, True), spec.n_gpu_layers))
            rows.append(ModelStatus(name, state, detail, sum(w.queue_length() for w in mine),
                                    sum(w.served for w in mine), sum(w.failed for w in mine),
                                    sum(footprint({k: h for k, h in held.items() if k[0] == name})),
                                    not spec.remote and
                                    flash_attn_on(replace(spec, n_gpu_layers=layers), gpu=self._gpu)))
        return rows


def _physical_cores() -> int:
    import psutil

    return psutil.cpu_count(logical=False) or os.cpu_count() or 1
