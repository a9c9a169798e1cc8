"""Usage metrics: the SQLite file survives restarts, and nothing that happens to it (corrupt,
wrong schema, locked, unwritable) reaches the caller. Real files in tmp_path, no mocks."""

from __future__ import annotations

import json
import logging
import re
import sqlite3
import threading
import time
from pathlib import Path
from typing import Callable

import pytest

from conftest import run_cli
from zeta_local.config import RouterSettings
from zeta_local.metrics import (AttemptRecord, MetricsStore, metrics_file, parse_duration,
                                store_for, summarize)

T0 = 1_700_000_000.0


def rec(at: float = T0, model: str = "m", task: str = "chat", outcome: str = "ok",
        first_token_s: float | None = 0.1, tokens_per_s: float | None = 30.0,
        fallback: bool = False) -> AttemptRecord:
    return AttemptRecord(at=at, model=model, task=task, outcome=outcome, seconds=1.0,
                         first_token_s=first_token_s, tokens_per_s=tokens_per_s,
                         prompt_tokens=5, completion_tokens=7, fallback=fallback)


def file_rows(path: Path) -> list[tuple]:
    conn = sqlite3.connect(path)
    try:
        return conn.execute("SELECT model, at FROM attempts ORDER BY id").fetchall()
    finally:
        conn.close()


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "sub" / "metrics.sqlite3"  # the parent does not exist yet


def test_records_survive_a_restart_and_seed_recent(db: Path):
    with MetricsStore(db) as store:
        for i in range(5):
            store.record(rec(at=T0 + i, model="a", outcome="ok" if i % 2 else "error"))
        store.record(rec(at=T0 + 10, model="b", fallback=True))
        assert store.flush()
    assert db.is_file()

    with MetricsStore(db, recent_per_model=3) as store:
        assert [r.at for r in store.recent("a", 10)] == [T0 + 2, T0 + 3, T0 + 4]  # seeded, newest 3
        assert store.recent("a", 10)[0] == rec(at=T0 + 2, model="a", outcome="error")
        assert store.recent("b", 10) == [rec(at=T0 + 10, model="b", fallback=True)]
        store.record(rec(at=T0 + 20, model="a"))
        assert [r.at for r in store.recent("a", 2)] == [T0 + 4, T0 + 20]
        everything = store.records()
    assert [(r.model, r.at) for r in everything] == (
        [("a", T0 + i) for i in range(5)] + [("b", T0 + 10), ("a", T0 + 20)])


def test_recent_and_records_filter_by_since(db: Path):
    with MetricsStore(db) as store:
        for i in range(6):
            store.record(rec(at=T0 + i))
        assert [r.at for r in store.recent("m", 10, since=T0 + 3)] == [T0 + 3, T0 + 4, T0 + 5]
        assert [r.at for r in store.recent("m", 2, since=T0 + 1)] == [T0 + 4, T0 + 5]
        assert store.recent("other", 10) == [] and store.recent("m", 0) == []
        assert [r.at for r in store.records(since=T0 + 4)] == [T0 + 4, T0 + 5]


def test_retention_keeps_the_newest_per_model(db: Path):
    with MetricsStore(db, keep_per_model=10) as store:
        for i in range(25):
            store.record(rec(at=T0 + i, model="a"))
        store.record(rec(at=T0, model="b"))
        assert store.flush()
    rows = file_rows(db)
    assert [at for model, at in rows if model == "a"] == [T0 + i for i in range(15, 25)]
    assert [model for model, _ in rows].count("b") == 1


def test_memory_only_store(tmp_path: Path):
    store = MetricsStore(None)
    store.record(rec(at=T0 + 1, model="b"))
    store.record(rec(at=T0, model="a"))
    assert [r.model for r in store.records()] == ["a", "b"]  # oldest first across models
    assert store.recent("a", 5) == [rec(at=T0, model="a")]
    assert store.flush() and store.path is None
    store.close()
    store.close()
    assert list(tmp_path.iterdir()) == []


def test_store_for_follows_the_router_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("ZETA_CACHE_DIR", str(tmp_path / "cache"))
    assert metrics_file(RouterSettings()) == tmp_path / "cache" / "metrics.sqlite3"
    assert metrics_file(RouterSettings(metrics=False)) is None
    with store_for(RouterSettings(metrics_path=tmp_path / "x.sqlite3", metrics_keep=10)) as store:
        assert store.path == tmp_path / "x.sqlite3" and store.keep_per_model == 10
    with store_for(RouterSettings(metrics=False)) as store:
        assert store.path is None


def test_corrupt_file_is_moved_aside(db: Path, caplog: pytest.LogCaptureFixture):
    db.parent.mkdir()
    garbage = b"this is not an sqlite database at all\x00\xff" * 100
    db.write_bytes(garbage)
    with caplog.at_level(logging.WARNING, logger="zeta_local.metrics"):
        store = MetricsStore(db)
    aside = [p for p in db.parent.iterdir() if p.name.startswith("metrics.sqlite3.corrupt-")]
    assert len(aside) == 1 and aside[0].read_bytes() == garbage
    assert str(aside[0]) in caplog.text and "not a usable metrics file" in caplog.text
    with store:
        store.record(rec())
        assert store.records() == [rec()]


def test_wrong_schema_version_is_moved_aside(db: Path, caplog: pytest.LogCaptureFixture):
    db.parent.mkdir()
    conn = sqlite3.connect(db)
    conn.execute("CREATE TABLE attempts (id INTEGER PRIMARY KEY, at REAL)")
    conn.execute("PRAGMA user_version = 99")
    conn.commit()
    conn.close()
    with caplog.at_level(logging.WARNING, logger="zeta_local.metrics"), MetricsStore(db) as store:
        store.record(rec())
        assert store.records() == [rec()]
    assert "schema version 99" in caplog.text
    aside = [p for p in db.parent.iterdir() if ".corrupt-" in p.name and p.name.count("-") == 1]
    assert len(aside) == 1
    kept = sqlite3.connect(aside[0])
    assert kept.execute("PRAGMA user_version").fetchone()[0] == 99
    kept.close()


def test_locked_file_does_not_block_record(db: Path, caplog: pytest.LogCaptureFixture):
    store = MetricsStore(db)
    locker = sqlite3.connect(db, isolation_level=None)
    locker.execute("BEGIN EXCLUSIVE")
    try:
        with caplog.at_level(logging.WARNING, logger="zeta_local.metrics"):
            started = time.monotonic()
            for i in range(150):  # more than a batch: the writer is woken at once
                store.record(rec(at=T0 + i))
            assert time.monotonic() - started < 0.5
            assert not store.flush(timeout=1.0)  # still locked: not written, no exception
            assert len(store.recent("m", 1000)) == 150
            assert "locked" in caplog.text
    finally:
        locker.execute("ROLLBACK")
        locker.close()
    assert store.flush(timeout=10.0)
    assert len(file_rows(db)) == 150
    store.close()


def test_pending_attempts_are_bounded(db: Path, caplog: pytest.LogCaptureFixture,
                                      monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr("zeta_local.metrics.MAX_PENDING", 5)
    store = MetricsStore(db)
    locker = sqlite3.connect(db, isolation_level=None)
    locker.execute("BEGIN EXCLUSIVE")
    try:
        with caplog.at_level(logging.WARNING, logger="zeta_local.metrics"):
            for i in range(20):
                store.record(rec(at=T0 + i))
            assert not store.flush(timeout=1.0)
        dropped = re.findall(r"(\d+) attempts waited too long", caplog.text)
        assert sum(map(int, dropped)) == 15  # reported by the writer, in one round or two
        assert len(store.recent("m", 100)) == 20  # memory keeps them all
    finally:
        locker.execute("ROLLBACK")
        locker.close()
    assert not store.flush(timeout=10.0)  # written, but not everything: 15 were dropped
    store.close()
    assert [at for _, at in file_rows(db)] == [T0 + i for i in range(15, 20)]


def test_unwritable_path_keeps_memory_only(tmp_path: Path, caplog: pytest.LogCaptureFixture):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with caplog.at_level(logging.WARNING, logger="zeta_local.metrics"):
        store = MetricsStore(blocker / "metrics.sqlite3")
    assert "memory only" in caplog.text
    with store:
        store.record(rec())
        assert store.recent("m", 5) == [rec()]
        assert store.records() == [rec()]
        assert not store.flush()  # nothing is written: a caller that asks is told so


def test_a_removed_file_is_started_again(db: Path, caplog: pytest.LogCaptureFixture):
    with MetricsStore(db) as store:
        store.record(rec(at=T0))
        assert store.flush()
        for suffix in ("", "-wal", "-shm"):
            db.with_name(db.name + suffix).unlink(missing_ok=True)
        with caplog.at_level(logging.WARNING, logger="zeta_local.metrics"):
            store.record(rec(at=T0 + 1))
            assert store.flush()
        assert "removed or replaced" in caplog.text
    assert [at for _, at in file_rows(db)] == [T0 + 1]


def test_two_stores_share_one_file(db: Path):
    first, second = MetricsStore(db), MetricsStore(db)
    threads = [threading.Thread(target=lambda s=s, m=m: [s.record(rec(at=T0 + i, model=m))
                                                         for i in range(50)])
               for s, m in ((first, "a"), (second, "b"))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert first.flush(10) and second.flush(10)
    assert {r.model for r in first.records()} == {"a", "b"} and len(first.records()) == 100
    assert [r.model for r in first.recent("b", 5)] == []  # memory: its own attempts only
    first.close()
    second.close()


def test_a_record_that_cannot_be_stored_is_refused(db: Path, caplog: pytest.LogCaptureFixture):
    with MetricsStore(db) as store:
        with caplog.at_level(logging.WARNING, logger="zeta_local.metrics"):
            store.record(rec(first_token_s="soon"))  # type: ignore[arg-type]
            store.record(rec(at=float("nan")))
            store.record(rec(model="\ud800"))
        store.record(rec(first_token_s=float("nan")))  # no first token, as the file will say
        assert store.flush() and store.records() == [rec(first_token_s=None)]
        assert store.recent("m", 5) == [rec(first_token_s=None)]
    assert caplog.text.count("cannot be stored") == 3


def test_summarize():
    records = [
        rec(model="b", task="code", first_token_s=0.1 * i, tokens_per_s=float(i)) for i in range(1, 21)
    ] + [
        rec(model="a", task="chat", outcome="error", first_token_s=None, tokens_per_s=None),
        rec(model="a", task="chat", outcome="stalled", first_token_s=0.5, tokens_per_s=None),
        rec(model="a", task="chat", outcome="error", first_token_s=None, tokens_per_s=None),
        rec(model="a", task="chat", outcome="ok", first_token_s=0.2, tokens_per_s=10.0, fallback=True),
        rec(model="a", task="chat", outcome="ok", first_token_s=0.4, tokens_per_s=20.0),
        rec(model="a", task="code", outcome="error", first_token_s=None, tokens_per_s=None,
            fallback=True),
    ]
    a_chat, a_code, b_code = summarize(records)
    assert (a_chat.model, a_chat.task, a_code.task, b_code.model) == ("a", "chat", "code", "b")
    assert (a_chat.requests, a_chat.ok, a_chat.success_rate) == (5, 2, 0.4)
    assert a_chat.failures == {"error": 2, "stalled": 1}
    assert list(a_chat.failures) == ["error", "stalled"]  # most frequent first
    assert a_chat.first_token_p50 == pytest.approx(0.4)  # of 0.5, 0.2, 0.4
    assert a_chat.first_token_p95 == pytest.approx(0.5)
    assert a_chat.tokens_per_s_p50 == pytest.approx(15.0)
    assert a_chat.as_fallback == 1
    assert a_code.as_fallback == 0 and a_code.success_rate == 0.0  # a failed fallback
    assert a_code.first_token_p50 is None and a_code.tokens_per_s_p50 is None
    assert (b_code.requests, b_code.success_rate, b_code.failures) == (20, 1.0, {})
    assert b_code.first_token_p50 == pytest.approx(1.05)  # median of 0.1 .. 2.0
    assert b_code.first_token_p95 == pytest.approx(1.9)  # nearest rank: the 19th of 20
    assert b_code.tokens_per_s_p50 == pytest.approx(10.5)
    assert summarize([]) == []


@pytest.mark.parametrize("text, seconds", [
    ("30s", 30), ("15m", 900), ("2h", 7200), ("7d", 604800), ("1h30m", 5400), ("90", 90),
    ("1.5h", 5400), (" 2D ", 172800), ("1d2h3m4s", 93784),
])
def test_parse_duration(text: str, seconds: float):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "h", "5x", "1h1h", "30m1h", "-5m", "1 h", "abc", "0", "0s",
                                  "1e3", "inf"])
def test_parse_duration_refuses(text: str):
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)


# ---- zeta-local stats ---------------------------------------------------------------------


def test_stats_command(write_config: Callable[..., Path], tmp_path: Path):
    config = write_config({"tiny": {"model": "tiny-a"}})
    proc = run_cli("stats", "--config", str(config))
    assert proc.returncode == 0, proc.stderr
    assert f"no attempts recorded yet in {tmp_path / 'metrics.sqlite3'}" in proc.stderr
    assert not (tmp_path / "metrics.sqlite3").exists()  # stats does not create it

    now = time.time()
    with MetricsStore(tmp_path / "metrics.sqlite3") as store:
        store.record(rec(at=now - 3600, model="old", task="code", outcome="error"))
        for outcome in ("ok", "ok", "error", "stalled", "error"):
            store.record(rec(at=now - 5, model="tiny", outcome=outcome, fallback=outcome == "ok"))

    proc = run_cli("stats", "--config", str(config))
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == f"metrics: {tmp_path / 'metrics.sqlite3'}"
    assert lines[1].split()[:4] == ["MODEL", "TASK", "REQUESTS", "SUCCESS"]
    assert lines[2].split()[:6] == ["old", "code", "1", "0.0%", "error", "1"]
    tiny = lines[3]
    assert tiny.split()[:4] == ["tiny", "chat", "5", "40.0%"] and "error 2, stalled 1" in tiny
    assert "0.10 s" in tiny and "30.0" in tiny and tiny.split()[-1] == "2"

    proc = run_cli("stats", "--json", "--since", "1m", "--config", str(config))
    assert proc.returncode == 0, proc.stderr
    (row,) = json.loads(proc.stdout)
    assert row["model"] == "tiny" and row["requests"] == 5 and row["success_rate"] == 0.4
    assert row["failures"] == {"error": 2, "stalled": 1} and row["as_fallback"] == 2

    proc = run_cli("stats", "--since", "1s", "--config", str(config))  # all are older
    assert proc.returncode == 0 and proc.stdout == ""
    assert "no attempts recorded in the last 1 s" in proc.stderr


def test_stats_refuses_a_bad_since(write_config: Callable[..., Path]):
    proc = run_cli("stats", "--since", "soon", "--config", str(write_config({"tiny": {"model": "tiny-a"}})))
    assert proc.returncode == 2
    assert "'soon' is not a duration" in proc.stderr


def test_stats_with_metrics_off(write_config: Callable[..., Path]):
    config = write_config({"tiny": {"model": "tiny-a"}}, router={"metrics": False})
    proc = run_cli("stats", "--config", str(config))
    assert proc.returncode == 0
    assert f"[router] metrics = false in {config}; nothing is recorded" in proc.stderr
    proc = run_cli("stats", "--json", "--config", str(config))
    assert json.loads(proc.stdout) == []


def test_stats_on_a_corrupt_file(write_config: Callable[..., Path], tmp_path: Path):
    config = write_config({"tiny": {"model": "tiny-a"}})
    (tmp_path / "metrics.sqlite3").write_bytes(b"garbage" * 200)
    proc = run_cli("stats", "--config", str(config))
    assert proc.returncode == 0
    assert "not a usable metrics file" in proc.stderr and "no attempts recorded yet" in proc.stderr


def test_a_store_that_records_nothing_starts_no_thread(tmp_path: Path):
    """A router asked only for routes (`zeta-local route`) must leave no thread behind."""
    before = {t.name for t in threading.enumerate()}
    store = MetricsStore(tmp_path / "m.sqlite3")
    assert "zeta-metrics-writer" not in {t.name for t in threading.enumerate()} - before
    store.close()
    assert (tmp_path / "m.sqlite3").exists()
