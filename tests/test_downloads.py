"""zeta-local download against a local stand-in for the hub, and zeta-local doctor."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Callable

import pytest

from conftest import run_cli
from fake_hub import FakeHub


@pytest.fixture
def hub():
    server = FakeHub()
    yield server
    server.close()


@pytest.fixture
def setup(tmp_path: Path, hub: FakeHub, tiny_models: dict[str, Path], write_config: Callable[..., Path]):
    """A models.toml with `remote` (a tiny GGUF on the fake hub), the environment that points
    huggingface-hub at it, and the GGUF's bytes."""
    content = tiny_models["tiny-a"].read_bytes()
    hub.files["org/repo/model.gguf"] = content

    def make(**remote: object) -> tuple[Path, dict[str, str], bytes]:
        options = {k: v for k, v in remote.items() if v is not None}
        config = write_config({"remote": {"hf_repo": "org/repo", "hf_file": "model.gguf"} | options,
                               "local": {"model": "tiny-b"}})
        env = {"HF_ENDPOINT": hub.url, "HF_HUB_CACHE": str(tmp_path / "hub-cache"),
               "HF_HUB_DISABLE_XET": "1", "HF_HUB_DISABLE_TELEMETRY": "1"}
        return config, env, content
    return make


def cached_files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file()] if root.exists() else []


def test_download_then_answer_offline(setup, tmp_path: Path):
    """Downloaded into the cache and verified; then the router finds it with the network off."""
    config, env, content = setup(sha256=None)
    proc = run_cli("download", "remote", "--config", str(config), env=env)
    assert proc.returncode == 0, proc.stderr
    assert "remote: " in proc.stdout and " at " in proc.stdout and "model.gguf" in proc.stdout
    proc = run_cli("ask", "hi", "--task", "chat", "--json", "--config", str(config),
                   env=env | {"HF_HUB_OFFLINE": "1", "HF_ENDPOINT": "http://127.0.0.1:9"})
    assert proc.returncode == 0, proc.stderr
    assert '"model": "remote"' in proc.stdout


def test_sha256_is_checked(setup):
    """The sha256 of models.toml is checked; a match passes."""
    config, env, content = setup(sha256=hashlib.sha256(b"x").hexdigest())
    good = hashlib.sha256(content).hexdigest()
    config.write_text(config.read_text().replace(hashlib.sha256(b"x").hexdigest(), good))
    proc = run_cli("download", "remote", "--config", str(config), env=env)
    assert proc.returncode == 0, proc.stderr


def test_checksum_mismatch_removes_the_file(setup, tmp_path: Path):
    """A wrong hash: exit 1, both hashes named, and no file left for the router to trust."""
    wrong = "0" * 64
    config, env, content = setup(sha256=wrong)
    proc = run_cli("download", "remote", "--config", str(config), env=env)
    assert proc.returncode == 1
    assert wrong in proc.stderr and hashlib.sha256(content).hexdigest() in proc.stderr
    assert not any(p.suffix == ".gguf" or len(p.name) == 64 for p in cached_files(tmp_path / "hub-cache"))
    assert "Traceback" not in proc.stderr


def test_the_hubs_published_sha256_is_checked_when_models_toml_has_none(setup, hub: FakeHub, tmp_path: Path):
    """The hub's ETag of an LFS file is its sha256: a file that does not match it is removed."""
    config, env, content = setup()
    hub.etag = "1" * 64
    proc = run_cli("download", "remote", "--config", str(config), env=env)
    assert proc.returncode == 1 and "the hub published " + "1" * 64 in proc.stderr
    assert cached_files(tmp_path / "hub-cache" / "models--org--repo" / "blobs") == []


def test_a_file_that_is_not_a_gguf_is_removed(setup, hub: FakeHub, tmp_path: Path):
    """An HTML page served as the model: rejected by the header check, deleted."""
    config, env, _ = setup()
    hub.files["org/repo/model.gguf"] = b"<!DOCTYPE html><html>rate limited</html>" * 10
    proc = run_cli("download", "remote", "--config", str(config), env=env)
    assert proc.returncode == 1 and "not a usable GGUF" in proc.stderr and "HTML page" in proc.stderr
    assert cached_files(tmp_path / "hub-cache" / "models--org--repo" / "blobs") == []


def test_interrupted_transfer_resumes(setup, hub: FakeHub, tmp_path: Path):
    """The connection drops half-way; the download resumes from where it stopped (a Range
    request), and the file that lands is whole."""
    config, env, _ = setup(sha256=None)
    # huggingface-hub writes in 10 MiB chunks: the model must be bigger for a resume to show.
    from zeta_local.tiny_models import write_tiny_model

    big = write_tiny_model(tmp_path / "big.gguf", n_embd=512, n_ff=2048, n_layers=2)
    content = hub.files["org/repo/model.gguf"] = big.read_bytes()
    assert len(content) > 12 * 2**20
    hub.cut_first_transfer_at = 11 * 2**20
    proc = run_cli("download", "remote", "--config", str(config), env=env)
    assert proc.returncode == 0, proc.stderr
    assert any(r.startswith("bytes=") and r != "bytes=0-" for r in hub.ranges), hub.ranges
    blobs = cached_files(tmp_path / "hub-cache" / "models--org--repo" / "blobs")
    assert [b.read_bytes() == content for b in blobs] == [True]


def test_not_enough_disk_space(setup, hub: FakeHub):
    """The free-space check happens before the transfer, with the numbers."""
    config, env, _ = setup()
    proc = run_cli("download", "remote", "--min-free", "1000TiB", "--config", str(config), env=env)
    assert proc.returncode == 1
    assert "free; " in proc.stderr and "must stay free after it" in proc.stderr
    assert hub.ranges == [], "no transfer was started"


def test_offline_fails_at_once(setup):
    """With HF_HUB_OFFLINE, or with the hub unreachable, download fails at once and says what
    to do instead."""
    config, env, _ = setup()
    proc = run_cli("download", "remote", "--config", str(config), env=env | {"HF_HUB_OFFLINE": "1"}, timeout=30)
    assert proc.returncode == 1 and "HF_HUB_OFFLINE is set" in proc.stderr and "set `path`" in proc.stderr
    proc = run_cli("download", "remote", "--config", str(config), env=env | {"HF_ENDPOINT": "http://127.0.0.1:9"},
                   timeout=60)
    assert proc.returncode == 1 and "cannot reach the Hugging Face hub" in proc.stderr


def test_local_and_package_models_say_what_they_are(setup):
    """Nothing to download for a local path or a package; --all covers every model."""
    config, env, _ = setup()
    proc = run_cli("download", "--all", "--config", str(config), env=env)
    assert proc.returncode == 0, proc.stderr
    assert "local: a local file" in proc.stdout and "remote: " in proc.stdout
    assert run_cli("download", "--config", str(config), env=env).returncode == 1  # neither names nor --all


def test_doctor_on_a_missing_and_a_corrupt_model(write_config: Callable[..., Path]):
    """doctor names the missing and the corrupt model with what to do, shows which model can
    serve each task, and exits 0 while every task has one."""
    config = write_config({"gone": {"path": "/nonexistent/gone.gguf"}, "broken": {"model": "truncated"},
                           "good": {"model": "tiny-a"}})
    proc = run_cli("doctor", "--config", str(config))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    assert "gone" in out and "missing" in out and "corrupt" in out and "truncated" in out
    assert "code    gone, broken, good*  -> answered by good" in out
    assert "healthy: every task has a model" in out
    bad = write_config({"gone": {"path": "/nonexistent/gone.gguf"}, "broken": {"model": "truncated"}},
                       name="bad.toml")
    proc = run_cli("doctor", "--config", str(bad))
    assert proc.returncode == 1 and "NO MODEL CAN SERVE IT" in proc.stdout
