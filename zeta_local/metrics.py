"""Usage metrics that outlive the process: every attempt on every model, in a small SQLite file.

The chain walk records each attempt here and the adaptive order reads the recent ones back, so
both sides are on the request path: `record()` and `recent()` touch memory only. One daemon
thread writes what was recorded to the file in batches. Nothing that happens to the file (gone,
corrupt, locked by another process, on a read-only disk) reaches a request: it is a logged
warning, and at worst the metrics live in memory only.

Several processes (a server, CLI runs) may share one file: it is in WAL mode, every write is one
short transaction, and each process keeps its own in-memory window.
"""

from __future__ import annotations

import atexit
import logging
import math
import os
import re
import sqlite3
import statistics
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from zeta_local.bench_baseline import percentile
from zeta_local.config import RouterSettings
from zeta_local.results import OK
from zeta_local.sources import cache_dir

log = logging.getLogger(__name__)

FILE_NAME = "metrics.sqlite3"
SCHEMA_VERSION = 1  # PRAGMA user_version; a file with another one is moved aside
WRITE_INTERVAL_S = 0.5  # the writer wakes this often, or sooner when BATCH_SIZE are waiting
BATCH_SIZE = 100
MAX_PENDING = 10_000  # a stuck disk drops the oldest unwritten attempts past this
# Short: the writer only ever waits for another process's one small transaction. A longer
# lock means the batch waits for the next round.
BUSY_TIMEOUT_S = 0.25
READ_FLUSH_TIMEOUT_S = 2.0  # how long records() waits for this process's pending writes

_COLUMNS = ("at", "model", "task", "outcome", "seconds", "first_token_s", "tokens_per_s",
            "prompt_tokens", "completion_tokens", "fallback")
_SCHEMA = (
    ("CREATE TABLE attempts (id INTEGER PRIMARY KEY, at REAL NOT NULL, model TEXT NOT NULL, "
     "task TEXT NOT NULL, outcome TEXT NOT NULL, seconds REAL NOT NULL, first_token_s REAL, "
     "tokens_per_s REAL, prompt_tokens INTEGER NOT NULL, completion_tokens INTEGER NOT NULL, "
     "fallback INTEGER NOT NULL)"),
    "CREATE INDEX attempts_model_id ON attempts (model, id)",  # the per-model trim and seed
    "CREATE INDEX attempts_at ON attempts (at)",  # `since`
    f"PRAGMA user_version = {SCHEMA_VERSION}",
)
_INSERT = f"INSERT INTO attempts ({', '.join(_COLUMNS)}) VALUES ({', '.join('?' * len(_COLUMNS))})"
_SELECT = f"SELECT {', '.join(_COLUMNS)} FROM attempts"
# Everything of one model older than its newest `keep` rows.
_TRIM = ("DELETE FROM attempts WHERE model = ? AND id <= "
         "(SELECT id FROM attempts WHERE model = ? ORDER BY id DESC LIMIT 1 OFFSET ?)")

# sqlite3.Error.sqlite_errorcode (primary code, low byte) -> what the store does about it.
_BUSY = {5, 6}  # SQLITE_BUSY, SQLITE_LOCKED: another process; try again next round
_CORRUPT = {11, 26}  # SQLITE_CORRUPT, SQLITE_NOTADB: move the file aside, start a new one
_UNUSABLE = {8, 14, 23}  # SQLITE_READONLY, SQLITE_CANTOPEN, SQLITE_AUTH: memory only
_REFUSED = {18, 19, 20}  # SQLITE_TOOBIG, SQLITE_CONSTRAINT, SQLITE_MISMATCH: this batch never fits


@dataclass(frozen=True)
class AttemptRecord:
    """One attempt on one model, as the metrics keep it."""

    at: float  # time.time() when the attempt ended (wall clock: meaningful across restarts)
    model: str
    task: str  # "code" | "reason" | "chat" | "embed"
    outcome: str  # one of results.py's outcome constants
    seconds: float  # the whole attempt, queue wait and load included
    first_token_s: float | None  # attempt start -> first text; None when no text came
    tokens_per_s: float | None  # decode rate after the first token; None when unknown
    prompt_tokens: int
    completion_tokens: int
    fallback: bool  # True when this was not the request's first attempt


class _SchemaMismatch(Exception):
    """The file is an SQLite database, but not one of ours (or not this version of ours)."""


def _row(rec: AttemptRecord) -> tuple:
    """The record as the file stores it; raises on a record that could never be stored, so
    that a bad one is refused in record() instead of failing every batch it is in."""
    at, seconds = float(rec.at), float(rec.seconds)
    if not (math.isfinite(at) and math.isfinite(seconds)):
        raise ValueError("`at` and `seconds` must be finite")
    names = tuple(str(v) for v in (rec.model, rec.task, rec.outcome))
    for name in names:
        name.encode("utf-8")  # a lone surrogate cannot be bound: UnicodeEncodeError here
    return (at, *names, seconds, _optional(rec.first_token_s), _optional(rec.tokens_per_s),
            int(rec.prompt_tokens), int(rec.completion_tokens), int(bool(rec.fallback)))


def _optional(value: float | None) -> float | None:
    """NaN is stored as NULL by SQLite: say None in memory too."""
    return None if value is None or math.isnan(float(value)) else float(value)


def _record(row: tuple) -> AttemptRecord:
    return AttemptRecord(*row[:9], fallback=bool(row[9]))


# Python 3.10's sqlite3 errors carry no code: their messages, which are SQLite's own.
_MESSAGE_CODES = (("database is locked", 5), ("database table is locked", 6),
                  ("readonly database", 8), ("disk image is malformed", 11),
                  ("unable to open database", 14), ("constraint failed", 19),
                  ("file is not a database", 26))


def _code(exc: sqlite3.Error) -> int:
    code = getattr(exc, "sqlite_errorcode", None)  # Python 3.11+
    if code is not None:
        return code & 0xFF  # the primary code of an extended one
    text = str(exc)
    return next((c for message, c in _MESSAGE_CODES if message in text), 0)


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
        self._conn: sqlite3.Connection | None = None
        self._file_id: tuple[int, int] | None = None  # (st_dev, st_ino) of the file we opened
        self._seeded = False
        self._trouble: str | None = None  # the file problem last warned about; once each
        self._thread: threading.Thread | None = None
        if self.path is None:
            return
        # Opened here, not in the thread, so that recent() is seeded before the first request.
        self._connect()
        if self._memory_only:  # the file cannot be used (warned): nothing to write
            return
        self._thread = threading.Thread(target=self._run, name="zeta-metrics-writer", daemon=True)
        self._thread.start()
        # A process that exits without close() still writes its last half second of attempts.
        atexit.register(self._close_at_exit)

    # ---- the request path: memory only ------------------------------------------------

    def record(self, rec: AttemptRecord) -> None:
        """Keep one attempt. Never blocks on I/O and never raises."""
        try:
            row = _row(rec)
        except (TypeError, ValueError) as exc:
            log.warning("metrics: ignoring an attempt record that cannot be stored (%s): %r", exc, rec)
            return
        try:
            rec = _record(row)  # the normalised values, as a reader of the file will see them
            with self._lock:
                window = self._recent.get(rec.model)
                if window is None:
                    window = self._recent[rec.model] = deque(maxlen=self.recent_per_model)
                window.append(rec)
                if self._memory_only or self._stopping:
                    return
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

    # ---- reading everything, flushing, closing ------------------------------------------

    def records(self, since: float | None = None) -> list[AttemptRecord]:
        """Every attempt stored with `at` >= since, oldest first: the file's (other processes'
        included) after this process's pending writes, or memory's when there is no file."""
        if self.path is not None and not self._memory_only:
            self.flush(READ_FLUSH_TIMEOUT_S)
            rows = self._read_file(since)
            if rows is not None:
                return [_record(r) for r in rows]
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

    def _close_at_exit(self) -> None:
        self.close(timeout=2.0)

    def __enter__(self) -> MetricsStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # ---- the writer thread ----------------------------------------------------------------

    def _run(self) -> None:
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
            self._disconnect()
            with self._lock:
                left = len(self._pending)
                self._dropped += left
                self._pending.clear()
                self._written.notify_all()
            if left and not self._memory_only:
                log.warning("metrics: %d attempts were not written to %s (the file stayed "
                            "locked or unwritable until the store closed)", left, self.path)

    def _write(self, batch: list[tuple[int, tuple]]) -> bool:
        """One transaction: insert the batch, trim its models. On failure (False) the batch
        stays pending for the next round, except where the file can never take it."""
        if not self._check_file():
            return False
        assert self._conn is not None
        rows = [row for _, row in batch]
        try:
            with self._conn:  # one transaction: commit, or roll back on an exception
                self._conn.executemany(_INSERT, rows)
                for model in sorted({row[1] for row in rows}):
                    self._conn.execute(_TRIM, (model, model, self.keep_per_model))
        except sqlite3.Error as exc:
            if _code(exc) not in _REFUSED:
                self._failed(exc, "write to")
                return False
            # Retrying cannot help: drop the batch rather than fail every round with it.
            log.warning("metrics: %s refused %d attempts (%s); they are dropped",
                        self.path, len(rows), exc)
            with self._lock:
                self._dropped += len(rows)
        if self._trouble is not None:
            log.warning("metrics: %s is writable again", self.path)
            self._trouble = None
        with self._lock:
            last = batch[-1][0]
            while self._pending and self._pending[0][0] <= last:
                self._pending.popleft()
            self._written_seq = max(self._written_seq, last)
            self._written.notify_all()
        return True

    def _check_file(self) -> bool:
        """Connected to the file that is at `path` now: reconnect when it was deleted or
        replaced (another process moved a corrupt one aside)."""
        if self._conn is not None:
            try:
                st = os.stat(self.path)  # type: ignore[arg-type]
                if (st.st_dev, st.st_ino) == self._file_id:
                    return True
            except OSError:
                pass
            log.warning("metrics: %s was removed or replaced; starting on the file there now",
                        self.path)
            self._disconnect()
        return self._connect()

    # ---- opening the file ----------------------------------------------------------------

    def _connect(self) -> bool:
        """Open (or create) the file, check its schema, seed the memory window once. False when
        it could not be opened now; the writer tries again next round unless it never can."""
        assert self.path is not None
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            log.warning("metrics: cannot create %s (%s); attempts are kept in memory only",
                        self.path.parent, exc.strerror or exc)
            self._give_up()
            return False
        for moved_aside in (False, True):
            conn = None
            try:
                conn = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None,
                                       check_same_thread=False)  # opened here, used by the writer
                self._prepare(conn)
                st = os.stat(self.path)
                self._conn, self._file_id = conn, (st.st_dev, st.st_ino)
                self._seed(conn)
                # From here on, `with conn:` makes each batch one transaction.
                conn.isolation_level = "DEFERRED"
                return True
            except (sqlite3.Error, _SchemaMismatch) as exc:
                if conn is not None:
                    conn.close()
                self._conn = None
                if isinstance(exc, _SchemaMismatch) and moved_aside:
                    log.warning("metrics: %s is still not a usable metrics file after moving the "
                                "last one aside (%s); trying again", self.path, exc)
                    return False
                if moved_aside or not self._corrupt(exc):
                    self._failed(exc, "open")  # type: ignore[arg-type]
                    return False
                if not self._move_aside(exc):
                    return False
            except OSError as exc:  # the file vanished between connect and stat: next round
                if conn is not None:
                    conn.close()
                self._conn = None
                log.warning("metrics: cannot open %s (%s); trying again", self.path, exc)
                return False
        return False  # pragma: no cover

    def _prepare(self, conn: sqlite3.Connection) -> None:
        """Create the schema in a new file; raise _SchemaMismatch for a file that is not ours."""
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version == 0:
            tables = conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
            if tables:
                raise _SchemaMismatch("an SQLite database with other tables and no zeta_local "
                                      "schema version")
            conn.execute("BEGIN IMMEDIATE")
            try:
                # Another process may have created it while we waited for the lock.
                if conn.execute("PRAGMA user_version").fetchone()[0] == 0:
                    for statement in _SCHEMA:
                        conn.execute(statement)
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version != SCHEMA_VERSION:
            raise _SchemaMismatch(f"schema version {version}, this zeta_local writes {SCHEMA_VERSION}")
        columns = {row[1] for row in conn.execute("PRAGMA table_info(attempts)")}
        if not set(_COLUMNS) <= columns:
            raise _SchemaMismatch("its attempts table lacks columns "
                                  + ", ".join(sorted(set(_COLUMNS) - columns)))
        # WAL: a reader (`zeta-local stats`) and a writer in another process do not wait for
        # each other. NORMAL: a power cut may lose the last batch, not the file.
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = NORMAL")

    def _seed(self, conn: sqlite3.Connection) -> None:
        """The newest `recent_per_model` rows of every model into memory, once, merged with what
        was recorded before the file could be opened."""
        if self._seeded:
            return
        self._seeded = True
        models = [row[0] for row in conn.execute("SELECT DISTINCT model FROM attempts")]
        seeded = {}
        for model in models:
            rows = conn.execute(f"{_SELECT} WHERE model = ? ORDER BY id DESC LIMIT ?",
                                (model, self.recent_per_model)).fetchall()
            seeded[model] = [_record(r) for r in reversed(rows)]
        with self._lock:
            for model, old in seeded.items():
                window = deque(old + list(self._recent.get(model, ())), maxlen=self.recent_per_model)
                self._recent[model] = window

    def _corrupt(self, exc: Exception) -> bool:
        return isinstance(exc, _SchemaMismatch) or (
            isinstance(exc, sqlite3.DatabaseError) and _code(exc) in _CORRUPT)

    def _move_aside(self, why: Exception) -> bool:
        """Move a corrupt or foreign file (and its journal files) out of the way, keeping it
        for a person to look at."""
        assert self.path is not None
        aside = self.path.with_name(f"{self.path.name}.corrupt-{int(time.time())}")
        n = 1
        while aside.exists():
            aside = self.path.with_name(f"{self.path.name}.corrupt-{int(time.time())}-{n}")
            n += 1
        try:
            os.replace(self.path, aside)
        except FileNotFoundError:
            pass  # another process moved it first
        except OSError as exc:
            log.warning("metrics: %s is not a usable metrics file (%s) and cannot be moved aside "
                        "(%s); attempts are kept in memory only", self.path, why, exc.strerror or exc)
            self._give_up()
            return False
        else:
            log.warning("metrics: %s is not a usable metrics file (%s); moved it to %s and started "
                        "a new one", self.path, why, aside)
        # A stale journal next to the new file would be replayed into it.
        for suffix in ("-wal", "-shm", "-journal"):
            journal = self.path.with_name(self.path.name + suffix)
            try:
                os.replace(journal, aside.with_name(aside.name + suffix))
            except OSError:
                pass
        return True

    def _failed(self, exc: sqlite3.Error, doing: str) -> None:
        """A failed open or write: what it means for the attempts pending."""
        code = _code(exc)
        if code in _BUSY:
            if self._trouble != "locked":
                log.warning("metrics: %s is locked by another process; attempts wait in memory "
                            "and are written when it is free", self.path)
                self._trouble = "locked"
        elif code in _CORRUPT:
            # Found mid-run: the next round reopens it, which moves it aside.
            log.warning("metrics: %s became unreadable (%s); reopening it", self.path, exc)
            self._disconnect(forget_file=True)
        elif code in _UNUSABLE:
            log.warning("metrics: cannot %s %s (%s); attempts are kept in memory only",
                        doing, self.path, exc)
            self._give_up()
        elif self._trouble != str(exc):  # disk full, I/O error: may pass; the batch waits
            log.warning("metrics: cannot %s %s (%s); attempts wait in memory (at most %d) and "
                        "are written when it works again", doing, self.path, exc, MAX_PENDING)
            self._trouble = str(exc)

    def _disconnect(self, forget_file: bool = False) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            except sqlite3.Error:  # pragma: no cover
                pass
            self._conn = None
        if forget_file:
            self._file_id = None

    def _give_up(self) -> None:
        """Memory only from now on: nothing pending will be written."""
        self._disconnect()
        with self._lock:
            self._memory_only = True
            self._dropped += len(self._pending)
            self._pending.clear()
            self._written.notify_all()

    def _read_file(self, since: float | None) -> list[tuple] | None:
        """The file's rows at or after `since`, oldest first; None when it cannot be read."""
        query = _SELECT + ("" if since is None else " WHERE at >= ?") + " ORDER BY at, id"
        try:
            uri = f"{self.path.absolute().as_uri()}?mode=ro"  # type: ignore[union-attr]
            conn = sqlite3.connect(uri, uri=True, timeout=READ_FLUSH_TIMEOUT_S)
            try:
                return conn.execute(query, () if since is None else (since,)).fetchall()
            finally:
                conn.close()
        except sqlite3.Error as exc:
            log.warning("metrics: cannot read %s (%s); showing this process's attempts only",
                        self.path, exc)
            return None


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
