"""The SQLite file behind the usage metrics: opening it, its schema, and what to do when it fails.

`MetricsFile` is used by one thread at a time (the store's constructor, then its writer);
`read()` opens a connection of its own and may be called from any thread. Nothing here raises to
the caller: every problem is a logged warning and an answer ("wait", "refused", None), and a file
that can never be used sets `unusable`, after which the store keeps its attempts in memory only.
"""

from __future__ import annotations

import logging
import math
import os
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Literal

# The store's logger, not this module's: `zeta-local stats` raises it to WARNING to show what is
# wrong with the file, and the file's problems are the ones it means.
log = logging.getLogger("zeta_local.metrics")

SCHEMA_VERSION = 1  # PRAGMA user_version; a file with another one is moved aside
# Short: the writer only ever waits for another process's one small transaction. A longer
# lock means the batch waits for the next round.
BUSY_TIMEOUT_S = 0.25
READ_TIMEOUT_S = 2.0  # a reader waits this long for another process's write

_COLUMNS = ("at", "model", "task", "outcome", "seconds", "first_token_s", "tokens_per_s",
            "prompt_tokens", "completion_tokens", "fallback")  # AttemptRecord's fields, in order
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

# sqlite3.Error.sqlite_errorcode (primary code, low byte) -> what the file does about it.
_BUSY = {5, 6}  # SQLITE_BUSY, SQLITE_LOCKED: another process; try again next round
_CORRUPT = {11, 26}  # SQLITE_CORRUPT, SQLITE_NOTADB: move the file aside, start a new one
_UNUSABLE = {8, 14, 23}  # SQLITE_READONLY, SQLITE_CANTOPEN, SQLITE_AUTH: memory only
_REFUSED = {18, 19, 20}  # SQLITE_TOOBIG, SQLITE_CONSTRAINT, SQLITE_MISMATCH: this batch never fits

# Python 3.10's sqlite3 errors carry no code: their messages, which are SQLite's own.
_MESSAGE_CODES = (("database is locked", 5), ("database table is locked", 6),
                  ("readonly database", 8), ("disk image is malformed", 11),
                  ("unable to open database", 14), ("constraint failed", 19),
                  ("file is not a database", 26))


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


def to_row(rec: AttemptRecord) -> tuple:
    """The record as the file stores it; raises on a record that could never be stored, so
    that a bad one is refused when it is recorded instead of failing every batch it is in."""
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


def from_row(row: tuple) -> AttemptRecord:
    return AttemptRecord(*row[:9], fallback=bool(row[9]))


def _code(exc: sqlite3.Error) -> int:
    code = getattr(exc, "sqlite_errorcode", None)  # Python 3.11+
    if code is not None:
        return code & 0xFF  # the primary code of an extended one
    text = str(exc)
    return next((c for message, c in _MESSAGE_CODES if message in text), 0)


class _SchemaMismatch(Exception):
    """The file is an SQLite database, but not one of ours (or not this version of ours)."""


WriteResult = Literal["written", "refused", "wait"]


class MetricsFile:
    """The attempts file at `path`, holding the newest `keep_per_model` rows per model.

    On the first open, `seed` is given the newest `seed_per_model` records of every model it
    holds. `pending_limit` is only said in a warning: how many attempts the store keeps waiting."""

    def __init__(self, path: Path, keep_per_model: int, seed_per_model: int,
                 seed: Callable[[dict[str, list[AttemptRecord]]], None], pending_limit: int):
        self.path = path
        self.keep_per_model = keep_per_model
        self.seed_per_model = seed_per_model
        self._seed = seed
        self._pending_limit = pending_limit
        self.unusable = False  # set once for good: the store keeps memory only from then on
        self._conn: sqlite3.Connection | None = None
        self._file_id: tuple[int, int] | None = None  # (st_dev, st_ino) of the file we opened
        self._seeded = False
        self._trouble: str | None = None  # the problem last warned about; once each

    def open(self) -> bool:
        """Open (or create) the file, check its schema, seed once. False when it could not be
        opened now: the caller tries again later, unless `unusable` says it never can."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            log.warning("metrics: cannot create %s (%s); attempts are kept in memory only",
                        self.path.parent, exc.strerror or exc)
            self._give_up()
            return False
        for moved_aside in (False, True):
            try:
                self._conn = self._connect()
                return True
            except OSError as exc:  # the file vanished between connect and stat: next round
                log.warning("metrics: cannot open %s (%s); trying again", self.path, exc)
                return False
            except _SchemaMismatch as exc:
                if moved_aside:
                    log.warning("metrics: %s is still not a usable metrics file after moving the "
                                "last one aside (%s); trying again", self.path, exc)
                    return False
                problem: Exception = exc
            except sqlite3.Error as exc:
                if moved_aside or _code(exc) not in _CORRUPT:
                    self._failed(exc, "open")
                    return False
                problem = exc
            if not self._move_aside(problem):
                return False
        return False  # pragma: no cover

    def write(self, rows: list[tuple]) -> WriteResult:
        """One transaction: insert the rows, trim their models. "refused" when the file can never
        take them (they are dropped, not retried); "wait" when they should be tried again."""
        if not self._check_file():
            return "wait"
        assert self._conn is not None
        result: WriteResult = "written"
        try:
            with self._conn:  # one transaction: commit, or roll back on an exception
                self._conn.executemany(_INSERT, rows)
                for model in sorted({row[1] for row in rows}):
                    self._conn.execute(_TRIM, (model, model, self.keep_per_model))
        except sqlite3.Error as exc:
            if _code(exc) not in _REFUSED:
                self._failed(exc, "write to")
                return "wait"
            log.warning("metrics: %s refused %d attempts (%s); they are dropped",
                        self.path, len(rows), exc)
            result = "refused"
        if self._trouble is not None:
            log.warning("metrics: %s is writable again", self.path)
            self._trouble = None
        return result

    def read(self, since: float | None) -> list[AttemptRecord] | None:
        """The file's records at or after `since`, oldest first; None when it cannot be read."""
        query = _SELECT + ("" if since is None else " WHERE at >= ?") + " ORDER BY at, id"
        try:
            conn = sqlite3.connect(f"{self.path.as_uri()}?mode=ro", uri=True, timeout=READ_TIMEOUT_S)
            try:
                rows = conn.execute(query, () if since is None else (since,)).fetchall()
            finally:
                conn.close()
        except sqlite3.Error as exc:
            log.warning("metrics: cannot read %s (%s); showing this process's attempts only",
                        self.path, exc)
            return None
        return [from_row(r) for r in rows]

    def close(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            except sqlite3.Error:  # pragma: no cover
                pass
            self._conn = None

    # ---- opening ---------------------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None,
                               check_same_thread=False)  # opened by the store, used by its writer
        try:
            self._prepare(conn)
            st = os.stat(self.path)
            self._file_id = (st.st_dev, st.st_ino)
            if not self._seeded:
                self._seeded = True
                self._seed(self._newest(conn))
        except BaseException:
            conn.close()
            raise
        # From here on, `with conn:` makes each batch one transaction.
        conn.isolation_level = "DEFERRED"
        return conn

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

    def _newest(self, conn: sqlite3.Connection) -> dict[str, list[AttemptRecord]]:
        """The newest `seed_per_model` records of every model, oldest first."""
        newest = {}
        for (model,) in conn.execute("SELECT DISTINCT model FROM attempts").fetchall():
            rows = conn.execute(f"{_SELECT} WHERE model = ? ORDER BY id DESC LIMIT ?",
                                (model, self.seed_per_model)).fetchall()
            newest[model] = [from_row(r) for r in reversed(rows)]
        return newest

    def _check_file(self) -> bool:
        """Connected to the file that is at `path` now: reconnect when it was deleted or
        replaced (another process moved a corrupt one aside)."""
        if self._conn is not None:
            try:
                st = os.stat(self.path)
                if (st.st_dev, st.st_ino) == self._file_id:
                    return True
            except OSError:
                pass
            log.warning("metrics: %s was removed or replaced; starting on the file there now",
                        self.path)
            self.close()
        return self.open()

    def _move_aside(self, why: Exception) -> bool:
        """Move a corrupt or foreign file (and its journal files) out of the way, keeping it
        for a person to look at."""
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
            try:
                os.replace(self.path.with_name(self.path.name + suffix),
                           aside.with_name(aside.name + suffix))
            except OSError:
                pass
        return True

    # ---- failing -----------------------------------------------------------------------------

    def _failed(self, exc: sqlite3.Error, doing: str) -> None:
        """A failed open or write: what it means for the attempts waiting to be written."""
        code = _code(exc)
        if code in _BUSY:
            if self._trouble != "locked":
                log.warning("metrics: %s is locked by another process; attempts wait in memory "
                            "and are written when it is free", self.path)
                self._trouble = "locked"
        elif code in _CORRUPT:
            # Found mid-run: the next round reopens it, which moves it aside.
            log.warning("metrics: %s became unreadable (%s); reopening it", self.path, exc)
            self.close()
        elif code in _UNUSABLE:
            log.warning("metrics: cannot %s %s (%s); attempts are kept in memory only",
                        doing, self.path, exc)
            self._give_up()
        elif self._trouble != str(exc):  # disk full, I/O error: may pass; the batch waits
            log.warning("metrics: cannot %s %s (%s); attempts wait in memory (at most %d) and "
                        "are written when it works again", doing, self.path, exc,
                        self._pending_limit)
            self._trouble = str(exc)

    def _give_up(self) -> None:
        self.close()
        self.unusable = True
