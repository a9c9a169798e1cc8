"""zeta-local bench runs and writes valid JSON and markdown. Its figures are not asserted:
benchmarks measure, tests check behaviour (apart from `lost`, which must be 0)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

from conftest import run_cli


def test_quick_bench_on_the_tiny_models(tmp_path: Path, write_config: Callable[..., Path]):
    config = write_config({"t": {"model": "tiny-a"}})
    out, md = tmp_path / "out.json", tmp_path / "out.md"
    plots = tmp_path / "plots"
    proc = run_cli("bench", "--quick", "--json", str(out), "--markdown", str(md), "--plots", str(plots),
                   "--config", str(config), timeout=280)
    assert proc.returncode == 0, proc.stderr
    data = json.loads(out.read_text())
    for key in ("machine", "overhead", "failover", "cancel", "memory", "concurrency", "server", "roofline"):
        assert key in data, key
    assert data["overhead"]["tokens_per_s_ratio"] > 0 and "latency_ms_added" in data["overhead"]
    assert {"excess_ms_p50", "excess_ms_p95", "baseline_s"} <= set(data["failover"])
    assert data["concurrency"]["lost"] == 0
    assert data["concurrency"]["results"] + data["concurrency"]["typed_errors"] == data["concurrency"]["requests"]
    assert data["memory"]["models"][0]["measured_bytes"] > 0
    assert 0 < data["roofline"]["fraction"]
    assert data["server"]["tokens_per_s_ratio"] > 0 and "latency_ms_added_p50" in data["server"]
    assert "[1/8] machine" in proc.stderr
    assert md.read_text().startswith("# zeta_local benchmark (quick)")
    assert sorted(p.name for p in plots.iterdir()) == ["failover.png", "overhead.png"]
    assert all(p.read_bytes().startswith(b"\x89PNG") for p in plots.iterdir())
