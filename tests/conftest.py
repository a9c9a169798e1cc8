"""Shared fixtures: tiny GGUF models written once per session, config files written per test,
and the real Gemma 3 270M from the `tiny` extra."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable

import pytest

from zeta_local.admission import gpu_offload_supported
from zeta_local.tiny_models import write_standard_set

ROOT = Path(__file__).resolve().parent.parent
# Whether this llama.cpp build offloads to a GPU. Tests that depend on it say so and assert what
# holds on each build (CI and the project's machines are CPU-only; a GPU machine runs the suite
# on the CUDA build, see scripts/gpu_check.sh).
GPU_BUILD = gpu_offload_supported()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """A test that uses the real Gemma (the gemma_path fixture, directly or through another
    fixture) is a real_model test, and one that starts the HTTP server (the serve fixture) a
    server test, marked or not, so that `-m "not real_model and not server"` leaves them out
    where the tiny or the serve extra is not installed (the GPU machine's image)."""
    for item in items:
        fixtures = getattr(item, "fixturenames", ())
        if "gemma_path" in fixtures:
            item.add_marker(pytest.mark.real_model)
        if "serve" in fixtures:
            item.add_marker(pytest.mark.server)


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The standard set of generated models: tiny-a, tiny-b, tiny-chatml, no-output-norm
    (valid header, refused by llama.cpp), truncated, not-gguf."""
    return write_standard_set(tmp_path_factory.mktemp("models"))


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a valid TOML basic string
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {toml_value(v)}" for k, v in value.items()) + " }"
    raise TypeError(f"cannot write {value!r} as TOML")


def dump_toml(data: dict[str, Any]) -> str:
    """Enough TOML for models.toml: tables (nested ones too, such as [models.NAME] and
    [models.NAME.when_thinking]) of scalars and lists."""
    lines: list[str] = []

    def table(path: list[str], body: dict[str, Any]) -> None:
        scalars = {k: v for k, v in body.items() if not isinstance(v, dict)}
        if path and (scalars or len(scalars) == len(body)):
            lines.append("[" + ".".join(f'"{p}"' for p in path) + "]")
            lines.extend(f'"{k}" = {toml_value(v)}' for k, v in scalars.items())
            lines.append("")
        for key, value in body.items():
            if isinstance(value, dict):
                table(path + [key], value)

    table([], data)
    return "\n".join(lines)


@pytest.fixture
def write_config(tmp_path: Path, tiny_models: dict[str, Path]) -> Callable[..., Path]:
    """write_config(models={name: table}, routes={task: chain}, router={...}, tasks={...}) -> path.

    Model tables may use `model = "tiny-a"` (a role of `tiny_models`) instead of `path`.
    Tasks not given in `routes` get the chain of `default_chain`."""

    def write(models: dict[str, dict[str, Any]], routes: dict[str, list[str]] | None = None,
              router: dict[str, Any] | None = None, default_chain: list[str] | None = None,
              name: str = "models.toml", tasks: dict[str, dict[str, Any]] | None = None) -> Path:
        resolved = {}
        for model_name, table in models.items():
            table = dict(table)
            if "model" in table:
                table["path"] = str(tiny_models[table.pop("model")])
            table.setdefault("capabilities", ["generate", "embed"])
            resolved[model_name] = table
        chain = default_chain or list(models)
        all_routes = {task: chain for task in ("code", "reason", "chat", "embed")} | (routes or {})
        data: dict[str, Any] = {"router": {"max_tokens": 16, "seed": 7,
                                           "metrics_path": str(tmp_path / "metrics.sqlite3")} | (router or {}),
                                "models": resolved, "routes": all_routes}
        if tasks:
            data["tasks"] = tasks
        path = tmp_path / name
        path.write_text(dump_toml(data))
        return path

    return write


@pytest.fixture(scope="session")
def gemma_path() -> Path:
    """The real Gemma 3 270M (Q4_K_M) GGUF, assembled from the `tiny` extra's package."""
    from zeta_local.config import load_config
    from zeta_local.sources import find_model_file

    spec = load_config(ROOT / "zeta_local" / "models.toml").models["tiny"]
    path = find_model_file(spec)
    assert path is not None
    return path


def run_cli(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None,
            timeout: float = 240) -> subprocess.CompletedProcess[str]:
    """Run `zeta-local ARGS` in a fresh interpreter, as a person would from a shell."""
    import os

    full_env = {k: v for k, v in os.environ.items() if not k.startswith("ZETA_")} | (env or {})
    return subprocess.run([sys.executable, "-m", "zeta_local", *args], capture_output=True,
                          text=True, env=full_env, cwd=cwd, timeout=timeout)


@pytest.fixture
def serve(write_config: Callable[..., Path]):
    """serve(models, routes=None, router=None, faults="", **app_options) -> (server, router):
    the OpenAI-compatible server on a free loopback port, over a router of tiny models. Both
    are closed after the test."""
    from zeta_local import ZetaDynamicRouter
    from zeta_local.server import BackgroundServer

    running: list[tuple[Any, Any]] = []

    def start(models: dict[str, dict[str, Any]], routes: dict[str, list[str]] | None = None,
              router: dict[str, Any] | None = None, faults: str = "", **app_options: Any):
        zeta = ZetaDynamicRouter.from_toml(write_config(models, routes, router), faults=faults)
        server = BackgroundServer(zeta, **app_options)
        running.append((server, zeta))
        return server, zeta

    yield start
    for server, zeta in running:
        server.close()
        zeta.close()
