"""The `zeta-local` command in a subprocess, as a person or a script would run it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import pytest

from conftest import run_cli


@pytest.fixture
def config(write_config: Callable[..., Path]) -> Path:
    return write_config({"big": {"path": "/nonexistent/big.gguf"}, "broken": {"model": "truncated"},
                         "small": {"model": "tiny-a"}},
                        routes={"embed": ["broken", "small"]})


def test_ask_json_shows_the_chain_of_attempts(config: Path):
    """--json prints one object: text, model, task, route reason, attempts and usage."""
    # Not `def f(x)`: f(x) reads as maths too, and a prompt the classifier is unsure of is
    # escalated to the reason chain ([router] uncertain_below).
    proc = run_cli("ask", "def greet(name): return name  # add a docstring", "--json", "--config", str(config))
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["model"] == "small" and data["task"] == "code"
    assert data["route_reason"].startswith("code")
    assert [(a["model"], a["outcome"]) for a in data["attempts"]] == [
        ("big", "missing"), ("broken", "invalid_file"), ("small", "ok")]
    assert data["usage"]["completion_tokens"] > 0 and isinstance(data["text"], str)


def test_ask_streams_answer_and_reports_on_stderr(config: Path):
    """Text goes to stdout; skipped models with reasons and the answering model go to stderr."""
    proc = run_cli("ask", "hello there", "--task", "chat", "--max-tokens", "8", "--config", str(config))
    assert proc.returncode == 0, proc.stderr
    assert "skipped big: missing: no file at /nonexistent/big.gguf" in proc.stderr
    assert "skipped broken: invalid_file:" in proc.stderr and "truncated" in proc.stderr
    assert "answered by small (task chat: task given by the caller)" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_failed_request_is_one_error_and_nonzero_exit(write_config: Callable[..., Path]):
    """When no model can answer: exit 1, the attempts listed, no traceback."""
    path = write_config({"big": {"path": "/nonexistent/big.gguf"}, "broken": {"model": "not-gguf"}})
    proc = run_cli("ask", "hello", "--config", str(path))
    assert proc.returncode == 1
    assert "error: no model could answer the 'chat' request" in proc.stderr
    assert "  big: missing:" in proc.stderr and "  broken: invalid_file:" in proc.stderr
    assert "Traceback" not in proc.stderr
    proc = run_cli("ask", "hello", "--json", "--config", str(path))
    assert proc.returncode == 1 and json.loads(proc.stdout)["attempts"][0]["model"] == "big"


def test_config_typo_is_a_one_line_error(tmp_path: Path, config: Path):
    """A models.toml with a typo fails with the file, table and key, not a traceback."""
    broken = tmp_path / "typo.toml"
    broken.write_text(config.read_text().replace("max_tokens", "max_tokes"))
    for command in (["ask", "hi"], ["models"], ["route", "hi"], ["embed", "hi"]):
        proc = run_cli(*command, "--config", str(broken))
        assert proc.returncode == 1, command
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1, proc.stderr
        assert lines[0].startswith(f"zeta-local: error: {broken}: [router] max_tokes: unknown key; "
                                   "did you mean 'max_tokens'? known keys are: max_tokens, ")


def test_bad_arguments_exit_2(config: Path):
    """argparse's usage errors keep their conventional exit status."""
    assert run_cli("ask", "hi", "--task", "poetry", "--config", str(config)).returncode == 2
    assert run_cli("frobnicate").returncode == 2


def test_empty_prompt_is_an_error(config: Path):
    """An empty prompt is refused with a message, before any model loads."""
    proc = run_cli("ask", "  ", "--config", str(config))
    assert proc.returncode == 1 and "the prompt is empty" in proc.stderr


def test_route_json(config: Path):
    """route explains the decision without running a model."""
    proc = run_cli("route", "Solve for x: 3x + 7 = 22, step by step", "--json", "--config", str(config))
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["task"] == "reason" and data["chain"] == ["big", "broken", "small"]
    assert data["reason"]


def test_embed_prints_normalised_vectors(config: Path):
    """embed --json returns one unit vector per text and names the model."""
    proc = run_cli("embed", "first text", "second text", "--json", "--config", str(config))
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["model"] == "small" and data["dim"] == 64 and len(data["vectors"]) == 2
    for row in data["vectors"]:
        assert abs(sum(x * x for x in row) - 1.0) < 1e-4
    assert data["attempts"][0]["outcome"] == "invalid_file"
    proc = run_cli("embed", "first text", "--config", str(config))
    assert "model small, dim 64" in proc.stdout and "norm 1.0000" in proc.stdout


def test_models_lists_files_and_routes(config: Path):
    """models reports each model's source, whether its file is here, and the routes using it."""
    proc = run_cli("models", "--json", "--config", str(config))
    assert proc.returncode == 0, proc.stderr
    rows = {row["name"]: row for row in json.loads(proc.stdout)["models"]}
    assert rows["big"]["file"] == "missing" and "no file at" in rows["big"]["problem"]
    assert rows["broken"]["file"] == "invalid" and "truncated" in rows["broken"]["problem"]
    small = rows["small"]
    assert small["file"] == "present" and small["quantization"] == "ALL_F32"
    assert small["size_bytes"] > 0 and small["trained_context"] == 2048
    assert small["routes"] == ["code", "reason", "chat", "embed"]
    text = run_cli("models", "--config", str(config)).stdout
    assert "small" in text and "present" in text and "missing" in text


@pytest.mark.real_model
def test_quickstart_answer_comes_from_tiny(tmp_path: Path, gemma_path: Path):
    """The README's first command: with the shipped models.toml and no big weights on this
    machine, the big models are reported missing and the embedded default answers."""
    proc = run_cli("ask", "Write a Python function that reverses a string", "--max-tokens", "24",
                   "--json", cwd=tmp_path, env={"HF_HUB_CACHE": str(tmp_path / "empty-hf-cache")})
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["task"] == "code" and data["model"] == "tiny"
    assert [(a["model"], a["outcome"]) for a in data["attempts"]] == [
        ("coder-7b", "missing"), ("general-4b", "missing"), ("reason-14b", "missing"), ("tiny", "ok")]
    assert data["text"].strip(), "Gemma 3 270M answered with nothing"


def test_last_model_failing_mid_answer(write_config: Callable[..., Path]):
    """The partial answer's line is ended, the failure is explained, and the exit is 1."""
    path = write_config({"only": {"model": "tiny-a"}}, router={"max_tokens": 20})
    proc = run_cli("ask", "hello", "--task", "chat", "--config", str(path),
                   env={"ZETA_INJECT_FAULTS": "only=raise_after:3"})
    assert proc.returncode == 1
    assert proc.stdout.endswith("\n") and proc.stdout.strip()
    assert "only: error: injected fault raise_after:3" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_status_lists_every_model(config: Path):
    """status shows each model's state, and why an unavailable one is."""
    proc = run_cli("status", "--json", "--config", str(config))
    assert proc.returncode == 0, proc.stderr
    rows = {r["name"]: r for r in json.loads(proc.stdout)}
    assert rows["big"]["state"] == "unavailable" and "no file at" in rows["big"]["detail"]
    assert rows["broken"]["state"] == "unavailable" and "truncated" in rows["broken"]["detail"]
    assert rows["small"]["state"] == "unloaded"
    assert "unavailable" in run_cli("status", "--config", str(config)).stdout


def test_hung_first_model_is_timed_out_and_the_next_answers(write_config: Callable[..., Path]):
    """The issue's demonstration: the code chain's first model hangs in prompt evaluation;
    ask answers from the next one and --json shows timeout_first_token."""
    path = write_config({"first": {"model": "tiny-a", "first_token_timeout_s": 0.5, "stall_timeout_s": 0.5},
                         "second": {"model": "tiny-b"}})
    for fault, outcome in (("hang_prefill", "timeout_first_token"), ("stall_after:3", "stalled")):
        proc = run_cli("ask", "def f(): pass", "--task", "code", "--json", "--config", str(path),
                       env={"ZETA_INJECT_FAULTS": f"first={fault}"})
        assert proc.returncode == 0, proc.stderr
        data = json.loads(proc.stdout)
        assert data["model"] == "second"
        assert [(a["model"], a["outcome"]) for a in data["attempts"]] == [("first", outcome), ("second", "ok")]


def test_plan_lists_every_model_with_its_estimate(config: Path):
    """plan predicts each present model's memory by part, from its header alone."""
    proc = run_cli("plan", "--json", "--config", str(config))
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    rows = {r["name"]: r for r in data["models"]}
    assert set(rows) == {"big", "broken", "small"}
    assert rows["big"]["generate"] is None and rows["big"]["file"] == "missing"
    small = rows["small"]
    for purpose in ("generate", "embed"):
        parts = small[purpose]
        assert parts["total"] == sum(parts[k] for k in ("weights_cpu", "weights_gpu", "kv_cache",
                                                         "output", "compute", "margin"))
    assert small["fits"] is True and data["ram_budget"] > 0
    assert small["embed"]["shares_weights"] and small["embed"]["weights_cpu"] == 0
    text = run_cli("plan", "--config", str(config)).stdout
    assert "TOTAL" in text and "shared" in text


def test_plan_on_an_offloading_build_shows_flash_attention_and_the_gpu_cost(write_config: Callable[..., Path],
                                                                            monkeypatch: pytest.MonkeyPatch,
                                                                            capsys: pytest.CaptureFixture[str]):
    """On a build that can offload (simulated: plan reads headers only), plan says which models
    run with flash attention, what each puts in VRAM, and the process's own GPU cost."""
    from zeta_local.cli import main

    monkeypatch.setattr("zeta_local.admission.gpu_offload_supported", lambda: True)
    path = write_config({"gpu": {"model": "tiny-a"}, "cpu": {"model": "tiny-b", "n_gpu_layers": 0},
                         "forced": {"model": "tiny-chatml", "flash_attn": False}},
                        router={"vram_budget": "8GiB"})
    assert main(["plan", "--json", "--config", str(path)]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["gpu_process_cost"] == 786 * 2**20
    rows = {r["name"]: r for r in plan["models"]}
    assert {name: r["flash_attn"] for name, r in rows.items()} == {"gpu": True, "cpu": False, "forced": False}
    assert rows["gpu"]["generate"]["flash_attn"] is True and rows["gpu"]["generate"]["vram"] > 0
    assert rows["cpu"]["generate"]["vram"] == 0
    assert main(["plan", "--config", str(path)]) == 0
    table = capsys.readouterr().out
    assert "FLASH_ATTN" in table and "VRAM" in table
    assert "per-process GPU cost 786.0 MiB (CUDA context and workspace), counted once against vram_budget" in table
