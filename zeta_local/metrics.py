"""Usage metrics that outlive the process: every attempt on every model, in a small SQLite file.

The chain walk records each attempt here and the adaptive order reads the recent ones back, so
both sides are on the request path: `record()` and `recent()` touch memory only. One daemon
thread writes what was recorded to the file in batches. Nothing that happens to the file (gone,
corrupt, locked by another process, on a read-only disk) reaches a request: it is a logged
warning, and at worst the metrics live in memory only.

Several processes (a server, CLI runs) may share one file: it is in WAL mode, every write is one
short transaction, and each process keeps its own in-memory window.

This module is the memory side (the window, the pending queue, the writer thread);
metrics_file.py is everything about the file itself.
"""

from __future__ import annotations

import atexit
import logging
import re
import statistics
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from zeta_local.bench_baseline import percentile
from zeta_local.config import RouterSettings
# AttemptRecord and SCHEMA_VERSION are part of this module's interface; they live with the file.
from zeta_local.metrics_file import SCHEMA_VERSION as SCHEMA_VERSION
from zeta_local.metrics_file import (BUSY_TIMEOUT_S, AttemptRecord, MetricsFile, from_row,
                                     to_row)
from zeta_local.results import OK
from zeta_local.sources import cache_dir

log = logging.getLogger(__name__)

FILE_NAME = "metrics.sqlite3"
WRITE_INTERVAL_S = 0.5  # the writer wakes this often, or sooner when BATCH_SIZE are waiting
BATCH_SIZE = 100
MAX_PENDING = 10_000  # a stuck disk drops the oldest unwritten attempts past this
READ_FLUSH_TIMEOUT_S = 2.0  # how long records() waits for this process's pending writes


class MetricsStore:
    """Attempts in memory (the newest `recent_per_model` per model) and, with a path, in an
    SQLite file holding the newest `keep_per_model` per model.

    `path` None keeps them in memory only (`[router] metrics = false`). With a path, the memory
    window is seeded from the file at start, so that it survives a restart."""

    def __init__(self, path: Path | None, keep_per_model: int = 1000, recent_per_model: int = 200):
        # Absolute: the writer may reopen it after the process has changed its directory.
        self.path = None if path is None else Path(path).expanduser().absolute()
        self.keep_per_model = max(1, int(keep_per_model))
        self.recent_per_model = max(1, int(recent_per_model))
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)  # the writer waits on it
        self._written = threading.Condition(self._lock)  # flush() waits on it
        self._recent: dict[str, deque[AttemptRecord]] = {}
        self._pending: deque[tuple[int, tuple]] = deque()  # (sequence number, row)
        self._seq = 0  # the last record's sequence number
        self._written_seq = 0  # every record up to this one is written (or given up)
        self._dropped = 0  # records given up: pending overflow, file unusable, closed
        self._overflow = 0  # of which the pending overflow, which the writer reports
        self._overflow_reported = 0
        self._flush_wanted = False
        self._stopping = False
        self._closed = False
        self._memory_only = self.path is None
        self._file: MetricsFile | None = None
        self._thread: threading.Thread | None = None
        if self.path is None:
            return
        self._file = MetricsFile(self.path, self.keep_per_model, self.recent_per_model,
                                 seed=self._seed, pending_limit=MAX_PENDING)
        # Opened here, not in the thread, so that recent() is seeded before the first request.
        self._file.open()
        if self._file.unusable:  # warned: nothing to write
            self._memory_only = True
        # The writer thread starts with the first record: a router only asked for routes
        # (`zeta-local route`) leaves no thread behind.

    # ---- the request path: memory only ------------------------------------------------

    def record(self, rec: AttemptRecord) -> None:
        """Keep one attempt. Never blocks on I/O and never raises."""
        try:
            row = to_row(rec)
        except (TypeError, ValueError) as exc:
            log.warning("metrics: ignoring an attempt record that cannot be stored (%s): %r", exc, rec)
            return
        try:
            rec = from_row(row)  # the normalised values, as a reader of the file will see them
            with self._lock:
                window = self._recent.get(rec.model)
                if window is None:
                    window = self._recent[rec.model] = deque(maxlen=self.recent_per_model)
                window.append(rec)
                if self._memory_only or self._stopping:
                    return
                if self._thread is None:
                    self._thread = threading.Thread(target=self._run, name="zeta-metrics-writer",
                                                    daemon=True)
                    self._thread.start()
                    # A process that exits without close() still writes its last attempts.
                    atexit.register(self._close_at_exit)
                self._seq += 1
                self._pending.append((self._seq, row))
                if len(self._pending) > MAX_PENDING:
                    self._pending.popleft()
                    self._dropped += 1
                    self._overflow += 1  # the writer logs it: no I/O here
                if len(self._pending) >= BATCH_SIZE:
                    self._wake.notify()
        except Exception:  # pragma: no cover - a bug here must not fail a request
            log.exception("metrics: could not record an attempt")

    def recent(self, model: str, limit: int, since: float | None = None) -> list[AttemptRecord]:
        """That model's newest `limit` attempts ending at or after `since`, oldest first.

        From memory: this process's attempts and what the file held when it started, not what
        other processes have recorded since."""
        if limit <= 0:
            return []
        with self._lock:
            window = list(self._recent.get(model, ()))
        if since is not None:
            window = [r for r in window if r.at >= since]
        return window[-limit:]

    def _seed(self, newest: dict[str, list[AttemptRecord]]) -> None:
        """The file's newest records go before what was recorded before it could be opened."""
        with self._lock:
            for model, old in newest.items():
                self._recent[model] = deque(old + list(self._recent.get(model, ())),
                                            maxlen=self.recent_per_model)

    # ---- reading everything, flushing, closing ------------------------------------------

    def records(self, since: float | None = None) -> list[AttemptRecord]:
        """Every attempt stored with `at` >= since, oldest first: the file's (other processes'
        included) after this process's pending writes, or memory's when there is no file."""
        if self._file is not None and not self._memory_only:
            self.flush(READ_FLUSH_TIMEOUT_S)
            stored = self._file.read(since)
            if stored is not None:
                return stored
        with self._lock:
            everything = [r for window in self._recent.values() for r in window]
        return sorted((r for r in everything if since is None or r.at >= since), key=lambda r: r.at)

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait (at most `timeout` seconds) for everything recorded so far to be written. True
        when it was: False after a timeout (a locked file), or when some attempts were given up
        (the pending queue overflowed, or the file became unusable and memory is all there is)."""
        if self.path is None:
            return True
        deadline = time.monotonic() + max(0.0, timeout)
        with self._lock:
            target = self._seq
            while self._written_seq < target and not self._memory_only:
                left = deadline - time.monotonic()
                if left <= 0 or self._thread is None or not self._thread.is_alive():
                    break
                self._flush_wanted = True
                self._wake.notify()
                self._written.wait(left)
            return self._written_seq >= target and self._dropped == 0 and not self._memory_only

    def close(self, timeout: float = 5.0) -> None:
        """Write what is pending (waiting at most `timeout` seconds), then stop the writer.
        Idempotent. Attempts recorded afterwards are kept in memory only."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        deadline = time.monotonic() + max(0.0, timeout)
        self.flush(timeout)
        with self._lock:
            self._stopping = True
            self._wake.notify()
        if self._thread is not None:
            self._thread.join(max(0.0, deadline - time.monotonic()) + BUSY_TIMEOUT_S * 2)
            atexit.unregister(self._close_at_exit)
            if self._thread.is_alive():
                log.warning("metrics: the writer of %s did not stop within %.1f s; %d attempts "
                            "may not be written", self.path, timeout, len(self._pending))
        elif self._file is not None:  # nothing was ever recorded: no writer to close it
            self._file.close()

    def _close_at_exit(self) -> None:
        self.close(timeout=2.0)

    def __enter__(self) -> MetricsStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # ---- the writer thread ----------------------------------------------------------------

    def _run(self) -> None:
        assert self._file is not None
        written = True
        try:
            while True:
                with self._lock:
                    # After a failed write (a lock, a full disk), a full batch waits for the
                    # next round too: retrying at once would only hammer the file.
                    self._wake.wait_for(lambda ok=written: self._stopping or self._flush_wanted or (
                        ok and len(self._pending) >= BATCH_SIZE), WRITE_INTERVAL_S)
                    self._flush_wanted = False
                    stopping = self._stopping
                    batch = list(self._pending)
                    overflow = self._overflow - self._overflow_reported
                    self._overflow_reported = self._overflow
                if overflow:
                    log.warning("metrics: %d attempts waited too long to be written to %s and were "
                                "dropped (more than %d pending)", overflow, self.path, MAX_PENDING)
                if batch and not self._memory_only:
                    written = self._write(batch)
                if stopping:
                    break
        except Exception:  # pragma: no cover - the writer must never take the process down
            log.exception("metrics: the writer of %s stopped; attempts are kept in memory only",
                          self.path)
            self._give_up()
        finally:
            self._file.close()
            with self._lock:
                left = len(self._pending)
                self._dropped += left
                self._pending.clear()
                self._written.notify_all()
            if left and not self._memory_only:
                log.warning("metrics: %d attempts were not written to %s (the file stayed "
                            "locked or unwritable until the store closed)", left, self.path)

    def _write(self, batch: list[tuple[int, tuple]]) -> bool:
        """Hand the batch to the file. On failure (False) it stays pending for the next round,
        unless the file can never be used again."""
        assert self._file is not None
        result = self._file.write([row for _, row in batch])
        if self._file.unusable:
            self._give_up()
            return False
        if result == "wait":
            return False
        with self._lock:
            if result == "refused":  # retrying cannot help: given up, and flush() says so
                self._dropped += len(batch)
            last = batch[-1][0]
            while self._pending and self._pending[0][0] <= last:
                self._pending.popleft()
            self._written_seq = max(self._written_seq, last)
            self._written.notify_all()
        return True

    def _give_up(self) -> None:
        """Memory only from now on: nothing pending will be written."""
        with self._lock:
            self._memory_only = True
            self._dropped += len(self._pending)
            self._pending.clear()
            self._written.notify_all()


def metrics_file(settings: RouterSettings) -> Path | None:
    """The file `[router]` names: `metrics_path`, else the cache's; None with `metrics = false`."""
    if not settings.metrics:
        return None
    return settings.metrics_path or cache_dir() / FILE_NAME


def store_for(settings: RouterSettings) -> MetricsStore:
    """The store `[router]` asks for: its metrics file, or memory only with `metrics = false`."""
    return MetricsStore(metrics_file(settings), keep_per_model=settings.metrics_keep)


# ---- summaries ----------------------------------------------------------------------------


@dataclass(frozen=True)
class UsageStats:
    """How one model did on one task."""

    model: str
    task: str
    requests: int  # attempts recorded
    ok: int
    failures: dict[str, int]  # outcome -> count, for outcomes other than ok, most frequent first
    first_token_p50: float | None  # seconds, over attempts with a first token
    first_token_p95: float | None
    tokens_per_s_p50: float | None
    as_fallback: int  # ok attempts with fallback=True: answered as a fallback

    @property
    def success_rate(self) -> float:
        return self.ok / self.requests if self.requests else 0.0


def summarize(records: Iterable[AttemptRecord]) -> list[UsageStats]:
    """Per (model, task), sorted by model then task."""
    groups: dict[tuple[str, str], list[AttemptRecord]] = {}
    for rec in records:
        groups.setdefault((rec.model, rec.task), []).append(rec)
    stats = []
    for (model, task), recs in sorted(groups.items()):
        failures: dict[str, int] = {}
        for r in recs:
            if r.outcome != OK:
                failures[r.outcome] = failures.get(r.outcome, 0) + 1
        first = [r.first_token_s for r in recs if r.first_token_s is not None]
        rates = [r.tokens_per_s for r in recs if r.tokens_per_s is not None]
        stats.append(UsageStats(
            model=model, task=task, requests=len(recs), ok=sum(r.outcome == OK for r in recs),
            failures=dict(sorted(failures.items(), key=lambda kv: (-kv[1], kv[0]))),
            # The median as the bench reports it (bench_baseline.spread): percentile() is
            # nearest-rank, which for p50 is one of the middle two, not their mean.
            first_token_p50=statistics.median(first) if first else None,
            first_token_p95=percentile(first, 0.95) if first else None,
            tokens_per_s_p50=statistics.median(rates) if rates else None,
            as_fallback=sum(r.outcome == OK and r.fallback for r in recs)))
    return stats


_UNIT_S = {"d": 86400.0, "h": 3600.0, "m": 60.0, "s": 1.0}
_PART = re.compile(r"(\d+(?:\.\d+)?)([dhms])")


def parse_duration(text: str) -> float:
    """"30s", "15m", "2h", "7d", "1h30m" (units largest first, each once) or "90" (seconds)."""
    s = text.strip().lower()
    problem = (f"{text!r} is not a duration; give seconds (90) or a number and a unit "
               f"(30s, 15m, 2h, 7d), units combined largest first (1h30m)")
    if re.fullmatch(r"\d+(?:\.\d+)?", s):
        seconds = float(s)
    else:
        parts = _PART.findall(s)
        units = [unit for _, unit in parts]
        if (not parts or "".join(n + u for n, u in parts) != s or len(set(units)) != len(units)
                or units != sorted(units, key=lambda u: -_UNIT_S[u])):
            raise ValueError(problem)
        seconds = sum(float(n) * _UNIT_S[u] for n, u in parts)
    if seconds <= 0:
        raise ValueError(f"{text!r}: a duration must be more than 0 seconds")
    return seconds
