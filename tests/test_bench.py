"""zeta-local bench runs and writes valid JSON and markdown. Its figures are not asserted:
benchmarks measure, tests check behaviour (apart from `lost`, which must be 0). The pieces the
GPU section is made of are checked here on what a CPU machine can give them: crafted llama.cpp
log lines, published bandwidths, synthetic model headers, a result rendered to markdown."""

from __future__ import annotations

import ctypes.util
import importlib.util
import json
from pathlib import Path
from typing import Any, Callable

import pytest

from conftest import GPU_BUILD, run_cli
from zeta_local.bench import (RecordingBackend, compare_decoding, fraction_of_bound, interleaved, llama_settings,
                              median_error, ratio_spread, roofline_bound, weights_read_per_token)
from zeta_local.bench_gpu import buffers_from_log, gpu_markdown, measure_gpu, on_gpu
from zeta_local.gguf_info import read_gguf_info
from zeta_local.gpu_probe import hold_vram, peak_bandwidth

MiB = 2**20


def test_quick_bench_on_the_tiny_models(tmp_path: Path, write_config: Callable[..., Path]):
    """The whole --quick run. On a CUDA build the GPU section is left out here (it takes
    minutes; scripts/gpu_check.sh runs it); on a CPU build it is a note, and says so."""
    config = write_config({"t": {"model": "tiny-a"}})
    out, md = tmp_path / "out.json", tmp_path / "out.md"
    plots = tmp_path / "plots"
    plotting = importlib.util.find_spec("matplotlib") is not None  # the bench extra (the GPU image lacks it)
    proc = run_cli("bench", "--quick", "--json", str(out), "--markdown", str(md),
                   *(["--plots", str(plots)] if plotting else []),
                   "--config", str(config), *(["--skip", "gpu"] if GPU_BUILD else []), timeout=280)
    assert proc.returncode == 0, proc.stderr
    data = json.loads(out.read_text())
    for key in ("machine", "overhead", "failover", "cancel", "memory", "concurrency", "server", "routing",
                "adaptive", "remote", "gpu", "roofline"):
        assert key in data, key
    routing = data["routing"]
    assert routing["classifier"]["prompts"] >= 300 and 0 < routing["classifier"]["accuracy"] <= 1
    assert sum(b["count"] for b in routing["classifier"]["reliability"]) == routing["classifier"]["prompts"]
    assert routing["classifier"]["decision_us_4000_chars"].keys() == {"code", "reason", "chat"}
    assert "--quick" in routing["semantic"]["note"]
    affinity = routing["affinity"]
    assert affinity["answered_by"] == {"on": ["a"], "off": ["b"]}, affinity
    assert affinity["same_answer_on_off"] == affinity["pairs"]
    assert "held-out prompts" in md.read_text() and "turn 2's first token" in md.read_text()
    adaptive = data["adaptive"]
    ordering = adaptive["ordering"]["variants"]
    assert ordering["static"]["first_on_primary"] == 1.0  # the same draws fail in every variant
    assert ordering["adaptive, demote_below 0.8"]["first_on_primary"] < 1.0
    assert ordering["static"]["hit_failing_model_first"] > 0
    spreading = adaptive["spreading"]["variants"]
    assert spreading["off"]["answered_by_fallback"] == 0 and spreading["off"]["requests"] == 8
    assert spreading["max_queue_wait_s=0.1"]["requests"] == 8
    assert adaptive["metrics_cost"]["pairs"] >= 12 and "tried the primary first" in md.read_text()
    overhead = data["overhead"]
    assert overhead["tokens_per_s_ratio"] > 0 and "latency_ms_added" in overhead
    assert overhead["ratio_spread"]["pairs"] >= 12 and overhead["ratio_spread"]["p25"] <= overhead["ratio_spread"]["p75"]
    assert overhead["same_settings"] is True, overhead.get("settings_differ")
    assert overhead["sampling"]["temperature"] == 0.0 and "repeat_penalty" in overhead["sampling"]
    assert data["gpu"] == {"note": "skipped (--skip)"} if GPU_BUILD else "cannot offload" in data["gpu"]["note"]
    assert "## GPU" in md.read_text() and "Not measured" in md.read_text()
    assert data["roofline"]["bandwidth_source"] or "unknown" in data["roofline"]["note"]
    assert {"excess_ms_p50", "excess_ms_p95", "baseline_s"} <= set(data["failover"])
    assert data["concurrency"]["lost"] == 0
    assert data["concurrency"]["results"] + data["concurrency"]["typed_errors"] == data["concurrency"]["requests"]
    assert data["memory"]["models"][0]["measured_bytes"] > 0
    assert 0 < data["roofline"]["fraction"]
    if all(importlib.util.find_spec(m) for m in ("fastapi", "uvicorn")):  # the serve extra
        assert data["server"]["tokens_per_s_ratio"] > 0 and "latency_ms_added_p50" in data["server"]
    else:
        assert "needs the serve extra" in data["server"]["note"]
    if importlib.util.find_spec("sse_starlette"):  # llama-cpp-python's server extra
        remote = data["remote"]
        assert remote["overhead"]["tokens_per_s_ratio"] > 0 and remote["overhead"]["same_text"] is True
        assert remote["overhead"]["ratio_spread"]["pairs"] >= 6 and remote["failover"]["excess_ms"]["runs"] == 5
        assert "stalled remote's last chunk" in md.read_text()
    else:
        assert "server extra" in data["remote"]["note"]
    assert "[1/12] machine" in proc.stderr
    assert md.read_text().startswith("# zeta_local benchmark (quick)")
    if plotting:
        assert sorted(p.name for p in plots.iterdir()) == ["failover.png", "overhead.png"]
        assert all(p.read_bytes().startswith(b"\x89PNG") for p in plots.iterdir())


def test_pairs_alternate_which_side_goes_first():
    """AB, BA, AB, BA: drift within the run favours neither side."""
    order: list[str] = []
    a_values, b_values, ratios = interleaved(lambda: order.append("a") or 3.0,
                                             lambda: order.append("b") or 2.0, 4)
    assert "".join(order) == "abbaabba"
    assert (a_values, b_values, ratios) == ([3.0] * 4, [2.0] * 4, [1.5] * 4)


def test_a_steady_ratio_stops_early_and_a_noisy_one_measures_longer():
    """Past the minimum, pairs are added until the median is known to STEADY, or the maximum."""
    assert len(interleaved(lambda: 1.0, lambda: 1.0, 6, 40)[2]) == 6
    flip = iter([0.8, 1.2] * 100)
    assert len(interleaved(lambda: next(flip), lambda: 1.0, 6, 20)[2]) == 20


def test_median_error_and_spread():
    """The standard error of the median from the interquartile range (0.929 x IQR / sqrt(n))."""
    ratios = [0.98, 0.99, 1.0, 1.0, 1.01, 1.02, 0.97, 1.03]
    assert median_error(ratios) == pytest.approx(0.929 * (1.01 - 0.98) / 8 ** 0.5, rel=1e-6)
    assert ratio_spread(ratios) == {"p50": 1.0, "p25": 0.98, "p75": 1.01, "min": 0.97, "max": 1.03, "pairs": 8}


def test_the_baseline_loads_and_samples_as_the_router(write_config: Callable[..., Path]):
    """The raw llama-cpp-python twin gets the router's load arguments (backend.llama_kwargs)
    and the sampling the router's model was given, [router] defaults included: llama.cpp
    reports the same settings for both, and greedy decoding writes the same text."""
    from zeta_local import ZetaDynamicRouter

    path = write_config({"a": {"model": "tiny-a", "n_ctx": 1024, "n_batch": 256}},
                        router={"repeat_penalty": 1.3, "top_k": 7, "top_p": 0.9})
    backend = RecordingBackend()
    with ZetaDynamicRouter.from_toml(path, backend=backend, faults="") as router:
        ours = router.generate("hello", model="a", max_tokens=12, temperature=0.0)
        raw, sampling = backend.raw_twin("a")
        try:
            assert {k: sampling[k] for k in ("temperature", "top_k", "top_p", "repeat_penalty")} == \
                {"temperature": 0.0, "top_k": 7, "top_p": 0.9, "repeat_penalty": 1.3}
            assert llama_settings(raw) == llama_settings(backend.models["a"]._llm)
            assert llama_settings(raw)["n_batch"] == 256 and llama_settings(raw)["n_ctx"] == 1024
            theirs = raw.create_completion("hello", max_tokens=12, **sampling)
            assert theirs["usage"]["completion_tokens"] == ours.usage.completion_tokens
            # The tiny model writes stray bytes: the router shows them as U+FFFD, llama-cpp-python drops them.
            assert theirs["choices"][0]["text"] == ours.text.replace("\ufffd", "")
        finally:
            raw.close()
        compared = compare_decoding(router, backend, "a", "hello", (2, 2), 8)
    assert compared["same_settings"] is True and compared["ratio_spread"]["pairs"] == 2


# The log lines of llama.cpp 0.3.36's CUDA build (formats from its source), with the H200's
# figures for the 14B at n_ctx 8192 with flash attention.
CUDA_LOG = [
    "load_tensors: offloaded 41/41 layers to GPU",
    "load_tensors:        CUDA0 model buffer size =  8148.38 MiB",
    "load_tensors:   CPU_Mapped model buffer size =   417.30 MiB",
    "llama_kv_cache:      CUDA0 KV buffer size =  1280.00 MiB",
    "llama_context:  CUDA_Host  output buffer size =     0.58 MiB",
    "llama_context:      CUDA0 compute buffer size =   307.00 MiB",
    "llama_context:  CUDA_Host compute buffer size =    26.01 MiB",
    "llama_context: CUDA0 compute buffer size is 307.0000 MiB, matches expectation of 307.0000 MiB",
]


def test_cuda_buffers_are_read_from_llama_cpps_log():
    """By device and kind; CUDA_Host (pinned host memory) and the CPU are not VRAM."""
    found = buffers_from_log(CUDA_LOG)
    assert set(found) == {"CUDA0", "CPU_Mapped", "CUDA_Host"}
    assert on_gpu(found) == {"model": int(8148.38 * MiB), "KV": 1280 * MiB, "compute": 307 * MiB}
    assert found["CUDA_Host"] == {"output": int(0.58 * MiB), "compute": int(26.01 * MiB)}


def test_peak_bandwidth_from_nvmls_memory_clock_and_bus_width():
    """Published peaks: H100 SXM 3.35 TB/s (2,619 MHz, 5,120 bits); H200 4.8 TB/s (3,201 MHz,
    6,144 bits, which the formula puts at 4.9)."""
    assert peak_bandwidth(2619, 5120) == pytest.approx(3.35e12, rel=0.01)
    assert peak_bandwidth(3201, 6144) == pytest.approx(4.8e12, rel=0.03)


def test_waiting_for_the_device_to_give_memory_back_is_bounded(monkeypatch: pytest.MonkeyPatch):
    """The GPU section's wait after an unload: it returns once the use is back within the
    tolerance, and gives up at its timeout with the last use it read."""
    from zeta_local import bench_gpu, gpu_probe

    readings = iter([5000 * MiB, 3000 * MiB, 1230 * MiB])
    monkeypatch.setattr(gpu_probe, "device_used", lambda: next(readings))
    waited, used = bench_gpu._wait_device_back(1216 * MiB)
    assert used == 1230 * MiB and waited < 5
    monkeypatch.setattr(gpu_probe, "device_used", lambda: 5000 * MiB)
    waited, used = bench_gpu._wait_device_back(1216 * MiB, timeout=0.2)
    assert used == 5000 * MiB and 0.2 <= waited < 5


def test_a_broken_server_install_is_a_note_not_a_crash(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    """On the H200's image fastapi itself imported but its own import of opentelemetry failed,
    and the whole bench died with a traceback: the server section now says why instead."""
    import sys

    from zeta_local import bench

    monkeypatch.setitem(sys.modules, "zeta_local.server", None)  # importing it raises ImportError
    result = bench._server(tmp_path / "unused.gguf", {}, tmp_path, runs=1, max_tokens=1)
    assert result == {"note": "needs the serve extra (zeta_local.server is not installed)"}


def test_bytes_read_per_token_follow_the_offload(tmp_path: Path):
    """Fully offloaded, every weight is read on the GPU, the tied 4B's token embeddings too
    (its output layer reads them); one row of untied token embeddings is not counted. On the
    CPU (no layers offloaded) everything but that row is read from RAM."""
    from zeta_local.synth_models import write_synth_model

    for name in ("general-4b", "reason-14b"):
        info = read_gguf_info(write_synth_model(tmp_path / f"{name}.gguf", name))
        total = sum(t.nbytes for t in info.tensors)
        embd = next(t.nbytes for t in info.tensors if t.name == "token_embd.weight")
        read_all = total if name == "general-4b" else total - embd
        assert weights_read_per_token(info, -1) == (read_all, 0)
        assert weights_read_per_token(info, 0) == (0, read_all)
        half_gpu, half_cpu = weights_read_per_token(info, 10)
        assert 0 < half_gpu < half_cpu and half_gpu + half_cpu == read_all


def test_a_small_fraction_of_the_bound_keeps_its_figures():
    """A tiny model on an H200 decoded at 0.0003 of its bound; three decimals had printed 0.0."""
    assert fraction_of_bound(900.0, 2.9e6) == 0.00031
    assert fraction_of_bound(241.0, 1000.0) == 0.241


def test_roofline_bound_adds_the_gpu_and_cpu_shares():
    """8 GB at 4 TB/s is 2 ms a token: 500 tokens/s; 1 GB more at 50 GB/s makes it 22 ms."""
    assert roofline_bound(8 * 10**9, 0, 4e12, None) == pytest.approx(500)
    assert roofline_bound(8 * 10**9, 10**9, 4e12, 50e9) == pytest.approx(1 / 0.022)


@pytest.mark.skipif(GPU_BUILD, reason="a CUDA build measures the GPU section: scripts/gpu_check.sh runs it")
def test_gpu_section_says_why_it_did_not_run(tmp_path: Path):
    """On a build that cannot offload the section is a note, and the markdown says so."""
    result = measure_gpu(tmp_path, quick=True, progress=lambda _: None)
    assert set(result) == {"note"} and "cannot offload" in result["note"]
    assert gpu_markdown(result)[2].startswith("Not measured: this llama.cpp build cannot offload")


def test_gpu_section_renders_every_step(tmp_path: Path):
    """A full result, one step failed, as the GPU machine writes it: every table renders."""
    lines = "\n".join(gpu_markdown(_full_gpu_result()))
    assert "NVIDIA H200" in lines and "| reason-14b | 10,650 | 9,735 (8,148 / 1,280 / 307) | +9.4 % |" in lines
    assert "general-4b + embedding context" in lines and "1.09× generation alone" in lines
    assert "| coder-7b | 246.0 | 248.0 | 0.992 (0.99–0.995) | True | 1021.4 | 0.241 |" in lines
    assert "(4800 GB/s, NVML: peak)" in lines
    assert "→ worker free (ms, p50 / p95) | 140.0 / 150.0 |" in lines
    assert "1210, 1210, 1212, 1210, 1210 (back within 64 MiB)" in lines
    assert "reason-14b out_of_memory; general-4b ok → answered by general-4b in 1.26 s" in lines
    assert "| load/unload cycles |" not in lines
    broken = _full_gpu_result() | {"cycles": {"error": "TimeoutError: reason-14b was not unloaded within 60 s"}}
    assert "| load/unload cycles | failed: TimeoutError" in "\n".join(gpu_markdown(broken))


@pytest.mark.skipif(ctypes.util.find_library("cuda") is not None, reason="this machine has a CUDA driver")
def test_holding_vram_without_a_gpu_fails_at_once_and_says_why():
    """The out-of-memory step's holder process is bounded: without a driver it ends at once."""
    with pytest.raises(RuntimeError, match="libcuda"):
        with hold_vram(2**30, ready_s=30):
            pass


def _full_gpu_result() -> dict[str, Any]:
    def row(model: str, predicted: int, cuda: tuple[float, float, float], delta: int) -> dict[str, Any]:
        buffers = {"model": int(cuda[0] * MiB), "KV": int(cuda[1] * MiB), "compute": int(cuda[2] * MiB)}
        total = sum(buffers.values())
        return {"model": model, "predicted_vram_bytes": predicted * MiB, "cuda_buffers": buffers,
                "cuda_total_bytes": total, "device_used_delta_bytes": delta * MiB, "process_bytes": None,
                "error_vs_cuda_percent": round((predicted * MiB - total) / total * 100, 1),
                "error_vs_device_delta_percent": round((predicted - delta) / delta * 100, 1)}

    four = row("general-4b", 4300, (2259.6, 1152, 304), 4700) | {"with_embedding_context": {
        "cuda_buffers": {"KV": 72 * MiB, "compute": 300 * MiB}, "predicted_vram_bytes": 400 * MiB,
        "device_used_delta_bytes": 5123 * MiB, "process_bytes": 6000 * MiB, "both_over_generation_alone": 1.09}}
    spread = {"p50": 0.992, "p25": 0.99, "p75": 0.995, "min": 0.98, "max": 1.0, "pairs": 8}
    attempts = [{"model": "reason-14b", "outcome": "out_of_memory", "detail": "unable to allocate CUDA0 buffer"},
                {"model": "general-4b", "outcome": "ok", "detail": ""}]
    return {"device": {"name": "NVIDIA H200", "memory_total_bytes": 143771 * MiB, "driver": "580.95"},
            "n_ctx": 8192,
            "vram": [four, row("coder-7b", 5500, (4168, 448, 494), 5700), row("reason-14b", 10650, (8148.38, 1280, 307), 10800)],
            "decode": [{"model": "coder-7b", "router_tokens_per_s": {"p50": 246.0}, "raw_tokens_per_s": {"p50": 248.0},
                        "tokens_per_s_ratio": 0.992, "ratio_spread": spread, "same_settings": True,
                        "max_tokens": 128, "bound_tokens_per_s": 1021.4, "fraction_of_bound": 0.241}],
            "memory_bandwidth": {"gb_s": 4800, "source": "NVML: peak"},
            "cancel": {"model": "reason-14b", "prompt_tokens": 7600, "prefill_s": 1.6, "cancelled_after_s": 0.64,
                       "ms_p50": 140.0, "ms_p95": 150.0},
            "cycles": {"baseline_mib": 1210, "process_idle_mib": 786, "max_excess_mib": 2, "back_to_baseline": True,
                       "tolerance_mib": 64, "cycles": [{"after_unload_mib": v} for v in (1210, 1210, 1212, 1210, 1210)]},
            "out_of_memory": {"left_free_bytes": 7680 * MiB, "process_lived_on": True,
                              "started_before_the_holder": {"answered_by": "general-4b", "seconds": 1.26, "attempts": attempts},
                              "started_after_the_holder": {"answered_by": "general-4b", "seconds": 0.9,
                                                           "attempts": [dict(attempts[0], outcome="does_not_fit"), attempts[1]]}}}
