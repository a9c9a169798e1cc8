"""models.toml -> frozen dataclasses, validated strictly at the edge.

Every problem is a ConfigError naming the file, the table and the key, because a typo that is
silently ignored (a misspelt `n_ctx`, a route to a model that does not exist) costs a person far
more than a loud error at start-up.
"""

from __future__ import annotations

import difflib
import math
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

from zeta_local.errors import ConfigError
from zeta_local.prompt_format import CHAT_FORMATS
from zeta_local.sampling import INTEGER_SAMPLING_KEYS, MODEL_SAMPLING_KEYS, TASK_SAMPLING_KEYS, sampling_problem
from zeta_local.thinking import thinking_problem

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

TASKS = ("code", "reason", "chat", "embed")
CAPABILITIES = ("generate", "embed")
# The capability a model needs to serve each task.
TASK_CAPABILITY = {"code": "generate", "reason": "generate", "chat": "generate", "embed": "embed"}
GENERATE_TASKS = tuple(t for t in TASKS if TASK_CAPABILITY[t] == "generate")

CONFIG_ENV = "ZETA_CONFIG"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class ModelSpec:
    """One `[models.NAME]` table: where the GGUF comes from and how to run it."""

    name: str
    capabilities: frozenset[str]
    # Exactly one source: a local file, a file in the Hugging Face cache, or a Python package.
    path: Path | None = None
    hf_repo: str | None = None
    hf_file: str | None = None
    hf_revision: str | None = None
    package: str | None = None
    sha256: str | None = None
    description: str = ""
    n_ctx: int = 4096
    n_batch: int = 512
    n_gpu_layers: int = -1  # -1 = every layer that fits on the GPU; ignored on a CPU-only build
    chat_format: str | None = None  # overrides the GGUF's own chat template
    # Per-model watchdog budgets; None = the [router] value.
    load_timeout_s: float | None = None
    first_token_timeout_s: float | None = None
    stall_timeout_s: float | None = None
    pinned: bool = False  # never evicted to make room for another model
    keep_alive_s: float | None = None  # unloaded after this long idle; None = kept loaded
    allow_partial_offload: bool = False  # put fewer layers on the GPU rather than skip the model
    # Sampling defaults, as the model's authors recommend; None = the [router] value. A value
    # given with the request wins over both.
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    repeat_penalty: float | None = None
    # The same keys for an attempt that thinks ([models.NAME.when_thinking]): a reasoning model's
    # authors may recommend other values in its thinking mode (Qwen3's do). (key, value) pairs.
    when_thinking: tuple[tuple[str, float], ...] = ()
    # "auto" (on when some layers are on a GPU), True or False; a table without the key takes
    # [router] flash_attn.
    flash_attn: bool | str = "auto"
    # "auto" (think for the reason task only), True or False, for a model whose chat template
    # has a thinking switch (thinking.py); a table without the key takes [router] thinking.
    thinking: bool | str = "auto"
    # A remote engine instead of a local file (remote.py): its OpenAI-compatible base URL, the
    # model name it serves, and the NAME of the environment variable holding its key (the key
    # itself is never in models.toml, nor in any spec, log or error).
    endpoint: str | None = None
    remote_model: str | None = None
    api_key_env: str | None = None

    @property
    def remote(self) -> bool:
        """Whether an OpenAI-compatible engine elsewhere runs it (no local file, no local memory)."""
        return self.endpoint is not None

    @property
    def source(self) -> str:
        """Where the file comes from, for people: 'path:...', 'hf:repo/file', 'package:...' or
        'remote:URL'."""
        if self.endpoint is not None:
            return f"remote:{self.endpoint}"
        if self.path is not None:
            return f"path:{self.path}"
        if self.hf_repo is not None:
            return f"hf:{self.hf_repo}/{self.hf_file}"
        return f"package:{self.package}"


@dataclass(frozen=True)
class RouterSettings:
    """`[router]`: defaults for every request, overridable per model and per call."""

    max_tokens: int = 512
    temperature: float = 0.3
    top_p: float = 0.95
    top_k: int = 40
    # llama.cpp's own default. Any other value makes its penalty sampler visit every entry of
    # the vocabulary for every token (README: "What a repetition penalty costs").
    repeat_penalty: float = 1.0
    seed: int | None = None  # None: a fresh random seed per request
    # The most tokens a chat's thinking may take before it is closed (reasoning.py); None: no
    # cap but max_tokens. Per task ([tasks.NAME]) and per call overridable.
    reasoning_budget: int | None = None
    n_threads: int | None = None  # None: one per physical core
    # Watchdog budgets, in seconds (see watchdog.py). Per model and per call overridable.
    load_timeout_s: float = 120.0
    first_token_timeout_s: float = 30.0
    first_token_s_per_1k_tokens: float = 30.0  # extra first-token time per 1,000 prompt tokens
    stall_timeout_s: float = 15.0
    deadline_s: float = 600.0  # the whole request, shared by every attempt in the chain
    cancel_grace_s: float = 2.0  # a worker not back this long after a cancel is quarantined
    queue_size: int = 8  # requests waiting per model; a full queue moves on to the next model
    # Circuit breaker: `allowed_fails` failures within `fail_window_s` -> skipped for `cooldown_s`.
    allowed_fails: int = 3
    fail_window_s: float = 60.0
    cooldown_s: float = 30.0
    # Memory budgets in bytes; None = "auto": what is free when the router starts, minus headroom.
    ram_budget: int | None = None
    vram_budget: int | None = None
    memory_headroom: int = 1 << 30
    flash_attn: bool | str = "auto"  # every model's, unless its table says otherwise
    thinking: bool | str = "auto"  # likewise; a call's thinking= wins over both
    # Escalation ("fail expensive"): a classified request whose confidence is under
    # `uncertain_below` goes to `uncertain_task`'s chain. 0 turns it off. See routing.py.
    uncertain_below: float = 0.6
    uncertain_task: str = "reason"
    # Conversation affinity: a follow-up turn stays on the model that answered the previous
    # one, whose context still holds the conversation. See affinity.py.
    affinity: bool = True
    # The semantic stage (off by default): when the classifier is under `uncertain_below` and an
    # embedding model is already loaded, the nearest labelled examples vote. See semantic.py.
    semantic_routing: bool = False
    semantic_examples: Path | None = None  # a jsonl of {"prompt", "task"}; None = the packaged set
    # Usage metrics (metrics.py): every attempt is recorded in a small SQLite file that outlives
    # the process, the last `metrics_keep` attempts per model. None = cache_dir()/metrics.sqlite3.
    metrics: bool = True
    metrics_path: Path | None = None
    metrics_keep: int = 1000
    # Adaptive order (ordering.py): fallbacks ordered by how they did in their last
    # `adaptive_window` attempts within `adaptive_window_s`; a first choice whose success rate there
    # is under `demote_below` loses its place.
    adaptive: bool = False
    adaptive_window: int = 20
    adaptive_window_s: float = 900.0
    demote_below: float = 0.5
    # Load spreading: a first choice whose expected wait exceeds this many seconds hands the
    # request to a loaded, idle model of the chain. None = off.
    max_queue_wait_s: float | None = None


@dataclass(frozen=True)
class TaskSettings:
    """`[tasks.NAME]`: what a task's requests get unless the caller says otherwise; None = the
    [router] value. A reasoning task needs room to think that a chat does not."""

    max_tokens: int | None = None
    reasoning_budget: int | None = None


@dataclass(frozen=True)
class Config:
    path: Path  # the file it was read from
    models: Mapping[str, ModelSpec]
    routes: Mapping[str, tuple[str, ...]]
    router: RouterSettings = field(default_factory=RouterSettings)
    strict_order: frozenset[str] = frozenset()  # tasks whose fallbacks keep the chain's order
    tasks: Mapping[str, TaskSettings] = field(default_factory=dict)

    def routes_using(self, model: str) -> list[str]:
        return [task for task, chain in self.routes.items() if model in chain]


# ---- discovery -------------------------------------------------------------------------


def shipped_config_path() -> Path:
    """The models.toml inside the installed package, used when no other is found."""
    return Path(__file__).with_name("models.toml")


def find_config(explicit: str | os.PathLike[str] | None = None) -> Path:
    """--config PATH, then $ZETA_CONFIG, then ./models.toml, then the copy shipped in the package.

    An explicitly named file that does not exist is an error, never a silent fall-through."""
    if explicit is not None:
        return _existing(Path(explicit), "--config")
    env = os.environ.get(CONFIG_ENV)
    if env:
        return _existing(Path(env), f"${CONFIG_ENV}")
    local = Path.cwd() / "models.toml"
    if local.is_file():
        return local
    return shipped_config_path()


def _existing(path: Path, named_by: str) -> Path:
    path = path.expanduser()
    if not path.is_file():
        raise ConfigError(f"{path}: no such config file (named by {named_by})")
    return path


def load_config(path: str | os.PathLike[str] | None = None) -> Config:
    """Find, read and validate models.toml."""
    file = find_config(path)
    try:
        data = tomllib.loads(file.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"{file}: cannot read: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{file}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{file}: not valid TOML: {exc}") from None
    return parse_config(data, file)


# ---- validation ------------------------------------------------------------------------


class _Table:
    """Reads typed keys out of one TOML table and reports problems with file/table/key."""

    def __init__(self, file: Path, name: str, data: Any):
        self.file, self.name = file, name
        if not isinstance(data, dict):
            self.fail(None, f"must be a table, got {_kind(data)}")
        self.data = dict(data)

    def fail(self, key: str | None, message: str) -> None:
        where = f"[{self.name}]" + (f" {key}" if key else "")
        raise ConfigError(f"{self.file}: {where}: {message}")

    def take(self, key: str, kind: type | tuple[type, ...], default: Any = None,
             check: Callable[[Any], str | None] | None = None) -> Any:
        if key not in self.data:
            return default
        value = self.data.pop(key)
        kinds = kind if isinstance(kind, tuple) else (kind,)
        # TOML booleans are Python ints: `n_ctx = true` must not pass as 1.
        if isinstance(value, bool) and bool not in kinds or not isinstance(value, kinds):
            names = " or ".join(_KIND_NAMES.get(k, k.__name__) for k in kinds)
            self.fail(key, f"must be {names}, got {_kind(value)} {value!r}")
        if isinstance(value, float) and not math.isfinite(value):
            self.fail(key, f"must be a finite number, got {value!r}")
        problem = check(value) if check else None
        if problem:
            self.fail(key, f"{problem}, got {value!r}")
        return value

    def done(self, known: tuple[str, ...]) -> None:
        """Any key left over is a typo or a key this version does not know."""
        for key in self.data:
            close = difflib.get_close_matches(key, known, n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            self.fail(key, f"unknown key; {hint}known keys are: {', '.join(known)}")


_KIND_NAMES = {str: "a string", int: "an integer", float: "a number", bool: "true or false",
               list: "a list", dict: "a table"}


def _kind(value: Any) -> str:
    return _KIND_NAMES.get(type(value), type(value).__name__)


def _positive(value: float) -> str | None:
    return None if value > 0 else "must be > 0"


MODEL_BUDGET_KEYS = ("load_timeout_s", "first_token_timeout_s", "stall_timeout_s")
_MODEL_KEYS = ("path", "hf_repo", "hf_file", "hf_revision", "package", "sha256", "description",
               "n_ctx", "n_batch", "n_gpu_layers", "chat_format", "capabilities", "pinned",
               "keep_alive_s", "allow_partial_offload", "flash_attn", "thinking", "endpoint", "remote_model",
               "api_key_env", "when_thinking") + MODEL_BUDGET_KEYS + MODEL_SAMPLING_KEYS
# Keys that only mean something for a GGUF run in this process: an error on a remote model,
# whose engine decides them itself (its own context, batch, offload, template and memory).
LOCAL_ONLY_KEYS = ("sha256", "hf_revision", "n_ctx", "n_batch", "n_gpu_layers", "chat_format",
                   "flash_attn", "allow_partial_offload", "pinned", "keep_alive_s")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_ROUTER_SECONDS = ("load_timeout_s", "first_token_timeout_s", "first_token_s_per_1k_tokens",
                   "stall_timeout_s", "deadline_s", "cancel_grace_s", "fail_window_s", "cooldown_s")
_ROUTER_SAMPLING = ("max_tokens", "temperature", "top_p", "top_k", "repeat_penalty", "seed", "reasoning_budget")
_ROUTER_KEYS = _ROUTER_SAMPLING + ("n_threads",) + _ROUTER_SECONDS + (
    "queue_size", "allowed_fails", "ram_budget", "vram_budget", "memory_headroom", "flash_attn", "thinking",
    "uncertain_below", "uncertain_task", "affinity", "semantic_routing", "semantic_examples",
    "metrics", "metrics_path", "metrics_keep", "adaptive", "adaptive_window", "adaptive_window_s",
    "demote_below", "max_queue_wait_s")


def parse_config(data: Mapping[str, Any], file: Path) -> Config:
    top = _Table(file, "top level", data)
    models_data = top.take("models", dict)
    routes_data = top.take("routes", dict)
    router = _parse_router(_Table(file, "router", top.take("router", dict, {})))
    tasks = _parse_tasks(_Table(file, "tasks", top.take("tasks", dict, {})))
    top.done(("models", "routes", "router", "tasks"))
    if not models_data:
        top.fail("models", "declare at least one [models.NAME] table")
    models = {name: _parse_model(file, name, table, router) for name, table in models_data.items()}
    if routes_data is None:
        top.fail("routes", f"missing; add a [routes] table with a chain for each of {', '.join(TASKS)}")
    routes, strict = _parse_routes(_Table(file, "routes", routes_data), models)
    return Config(path=file, models=models, routes=routes, router=router, strict_order=strict, tasks=tasks)


def _parse_tasks(t: _Table) -> dict[str, TaskSettings]:
    """[tasks.code], [tasks.reason], [tasks.chat]: max_tokens and reasoning_budget per task."""
    tasks = {}
    for task in GENERATE_TASKS:
        data = t.take(task, dict)
        if data is not None:
            table = _Table(t.file, f"tasks.{task}", data)
            tasks[task] = TaskSettings(**{key: _sampling(table, key, None) for key in TASK_SAMPLING_KEYS})
            table.done(TASK_SAMPLING_KEYS)
    t.done(GENERATE_TASKS)
    return tasks


def _parse_router(t: _Table) -> RouterSettings:
    d = RouterSettings()
    settings = RouterSettings(
        **{key: _sampling(t, key, getattr(d, key)) for key in _ROUTER_SAMPLING},
        n_threads=t.take("n_threads", int, d.n_threads, _positive),
        queue_size=t.take("queue_size", int, d.queue_size, _positive),
        allowed_fails=t.take("allowed_fails", int, d.allowed_fails, _positive),
        **{key: float(t.take(key, (int, float), getattr(d, key), _positive)) for key in _ROUTER_SECONDS},
        ram_budget=_size(t, "ram_budget", allow_auto=True),
        vram_budget=_size(t, "vram_budget", allow_auto=True),
        memory_headroom=_size(t, "memory_headroom", allow_auto=False) or d.memory_headroom,
        flash_attn=_flash_attn(t, d.flash_attn),
        thinking=_thinking(t, d.thinking),
        uncertain_below=float(t.take("uncertain_below", (int, float), d.uncertain_below,
                                     lambda v: None if 0 <= v <= 1 else "must be between 0 and 1 "
                                     "(a confidence; 0 turns escalation off)")),
        uncertain_task=t.take("uncertain_task", str, d.uncertain_task,
                              lambda v: None if v in GENERATE_TASKS else
                              f"must be a generation task: {', '.join(GENERATE_TASKS)}"),
        affinity=t.take("affinity", bool, d.affinity),
        semantic_routing=t.take("semantic_routing", bool, d.semantic_routing),
        semantic_examples=_examples_file(t),
        metrics=t.take("metrics", bool, d.metrics),
        metrics_path=_metrics_file(t),
        metrics_keep=t.take("metrics_keep", int, d.metrics_keep,
                            lambda v: None if v >= 10 else "must be at least 10 attempts"),
        adaptive=t.take("adaptive", bool, d.adaptive),
        adaptive_window=t.take("adaptive_window", int, d.adaptive_window,
                               lambda v: None if v >= 2 else "must be at least 2 attempts"),
        adaptive_window_s=float(t.take("adaptive_window_s", (int, float), d.adaptive_window_s, _positive)),
        demote_below=float(t.take("demote_below", (int, float), d.demote_below,
                                  lambda v: None if 0 <= v <= 1 else "must be between 0 and 1 "
                                  "(a success rate; 0 never demotes the first choice)")),
        max_queue_wait_s=_float_or_none(t.take("max_queue_wait_s", (int, float), None, _positive)),
    )
    t.done(_ROUTER_KEYS)
    return settings


def _examples_file(t: _Table) -> Path | None:
    """`semantic_examples`: a path, relative to the config file's folder, that must exist."""
    value = t.take("semantic_examples", str, None)
    if value is None:
        return None
    path = t.file.parent / Path(value).expanduser()  # an absolute path stays as it is
    if not path.is_file():
        t.fail("semantic_examples", f"no file at {path}; give a jsonl of {{\"prompt\", \"task\"}} "
                                    "rows, or remove the key to use the packaged examples")
    return path


def _metrics_file(t: _Table) -> Path | None:
    """`metrics_path`: relative to the config file's folder; created on first use."""
    value = t.take("metrics_path", str, None)
    return None if value is None else t.file.parent / Path(value).expanduser()


def _sampling(t: _Table, key: str, default: Any) -> Any:
    """A sampling key, held to the same bounds as a request's value (sampling.sampling_problem)."""
    integral = key in INTEGER_SAMPLING_KEYS
    value = t.take(key, int if integral else (int, float), default,
                   lambda v: sampling_problem(key, v))
    return value if value is None or integral else float(value)


def _size(t: _Table, key: str, *, allow_auto: bool) -> int | None:
    """A size like "6GiB" (or "auto" where allowed: None)."""
    value = t.take(key, (str, int))
    if value is None or (allow_auto and value == "auto"):
        return None
    from zeta_local.admission import parse_size

    try:
        return parse_size(value)
    except ValueError as exc:
        t.fail(key, f"{exc}, got {value!r}")
        raise  # unreachable: fail() raises


def _flash_attn(t: _Table, default: bool | str) -> bool | str:
    return t.take("flash_attn", (str, bool), default,
                  lambda v: None if v == "auto" or isinstance(v, bool) else 'must be "auto", true or false')


def _thinking(t: _Table, default: bool | str) -> bool | str:
    return t.take("thinking", (str, bool), default, thinking_problem)


def _parse_model(file: Path, name: str, data: Any, router: RouterSettings) -> ModelSpec:
    t = _Table(file, f"models.{name}", data)
    if not _NAME.match(name):
        t.fail(None, "model names may use letters, digits, '.', '_' and '-' only")
    endpoint = t.take("endpoint", str, None)
    problem = _endpoint_problem(endpoint) if endpoint is not None else None
    if problem:  # the URL is not echoed: it may carry credentials
        t.fail("endpoint", problem)
    if endpoint is not None:
        for key in LOCAL_ONLY_KEYS:
            if key in t.data:
                t.fail(key, "only means something for a local GGUF; a remote model (`endpoint`) "
                            "is run by its engine, which decides it itself: remove the key")
    remote_model = t.take("remote_model", str, None, lambda v: None if v.strip() else "must not be empty")
    api_key_env = t.take("api_key_env", str, None,
                         lambda v: None if _ENV_NAME.match(v) else
                         "must be the NAME of an environment variable (letters, digits, '_'), "
                         "not the key itself")
    if endpoint is None and (remote_model is not None or api_key_env is not None):
        t.fail("remote_model" if remote_model is not None else "api_key_env",
               "only means something for a remote model; add `endpoint` or remove the key")
    if endpoint is not None and remote_model is None:
        t.fail("remote_model", "missing; a remote model needs the model name its engine serves "
                               "(as its /v1/models lists it)")
    path = t.take("path", str)
    hf_repo, hf_file = t.take("hf_repo", str), t.take("hf_file", str)
    package = t.take("package", str)
    capabilities = t.take("capabilities", list, ["generate"])
    for cap in capabilities:
        if cap not in CAPABILITIES:
            t.fail("capabilities", f"unknown capability {cap!r}; use {' and/or '.join(CAPABILITIES)}")
    if not capabilities:
        t.fail("capabilities", "must name at least one of " + ", ".join(CAPABILITIES))
    spec = ModelSpec(
        name=name,
        capabilities=frozenset(capabilities),
        path=_resolve_path(path, file) if path is not None else None,
        hf_repo=hf_repo,
        hf_file=hf_file,
        hf_revision=t.take("hf_revision", str),
        package=package,
        sha256=t.take("sha256", str, None,
                      lambda v: None if _SHA256.match(v) else "must be 64 lower-case hex digits"),
        description=t.take("description", str, ""),
        n_ctx=t.take("n_ctx", int, ModelSpec.n_ctx,
                     lambda v: None if v >= 16 else "must be at least 16 tokens"),
        n_batch=t.take("n_batch", int, ModelSpec.n_batch, _positive),
        n_gpu_layers=t.take("n_gpu_layers", int, ModelSpec.n_gpu_layers,
                            lambda v: None if v >= -1 else "must be -1 (all) or >= 0"),
        chat_format=t.take("chat_format", str, None,
                           lambda v: None if v in CHAT_FORMATS
                           else "must be one of " + ", ".join(CHAT_FORMATS)),
        **{key: _float_or_none(t.take(key, (int, float), None, _positive)) for key in MODEL_BUDGET_KEYS},
        pinned=t.take("pinned", bool, False),
        keep_alive_s=_float_or_none(t.take("keep_alive_s", (int, float), None, _positive)),
        allow_partial_offload=t.take("allow_partial_offload", bool, False),
        **{key: _sampling(t, key, None) for key in MODEL_SAMPLING_KEYS},
        when_thinking=_when_thinking(t),
        flash_attn=_flash_attn(t, router.flash_attn),
        thinking=_thinking(t, router.thinking),
        endpoint=endpoint.rstrip("/") if endpoint is not None else None,
        remote_model=remote_model,
        api_key_env=api_key_env,
    )
    t.done(_MODEL_KEYS)
    sources = [s for s, v in (("path", path), ("hf_repo", hf_repo), ("package", package),
                              ("endpoint", endpoint)) if v]
    if len(sources) != 1:
        t.fail(None, "needs exactly one source: `path`, `hf_repo` + `hf_file`, `package`, or "
               "`endpoint` (a remote engine)" + (f" (found {', '.join(sources)})" if sources else ""))
    if (hf_repo is None) != (hf_file is None):
        t.fail("hf_file" if hf_file is None else "hf_repo", "`hf_repo` and `hf_file` go together")
    return spec


def _when_thinking(t: _Table) -> tuple[tuple[str, float], ...]:
    """[models.NAME.when_thinking]: the model's sampling keys for an attempt that thinks."""
    data = t.take("when_thinking", dict)
    if data is None:
        return ()
    table = _Table(t.file, f"{t.name}.when_thinking", data)
    values = {key: _sampling(table, key, None) for key in MODEL_SAMPLING_KEYS}
    table.done(MODEL_SAMPLING_KEYS)
    return tuple((key, value) for key, value in values.items() if value is not None)


def _endpoint_problem(url: str) -> str | None:
    """An http(s) base URL with a host, such as http://host:8000/v1."""
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(url)
        parts.port  # raises on a port that is not a number
    except ValueError as exc:
        return f"is not a URL ({exc}); write it as http://HOST:PORT/v1"
    if parts.username or parts.password:
        return "must not carry credentials; put the key in an environment variable named by `api_key_env`"
    if parts.scheme not in ("http", "https"):
        return f"must be an http:// or https:// URL, such as http://host:8000/v1, got {parts.scheme or 'no'} scheme"
    if not parts.hostname:
        return "has no host; write it as http://HOST:PORT/v1"
    if parts.query or parts.fragment:
        return "must be a base URL without ?query or #fragment, such as http://host:8000/v1"
    return None


def _float_or_none(value: float | None) -> float | None:
    return None if value is None else float(value)


def _resolve_path(raw: str, config_file: Path) -> Path:
    """`~` and $VARS are expanded; a relative path is relative to the config file's folder."""
    path = Path(os.path.expandvars(os.path.expanduser(raw)))
    return path if path.is_absolute() else config_file.parent.absolute() / path


def _parse_routes(t: _Table, models: Mapping[str, ModelSpec]) -> tuple[dict[str, tuple[str, ...]], frozenset[str]]:
    routes: dict[str, tuple[str, ...]] = {}
    strict: set[str] = set()
    for task in TASKS:
        chain = t.take(task, (list, dict))
        if isinstance(chain, dict):  # {chain = [...], strict_order = true}
            route = _Table(t.file, f"routes.{task}", chain)
            chain = route.take("chain", list)
            if route.take("strict_order", bool, False):
                strict.add(task)
            route.done(("chain", "strict_order"))
            if chain is None:
                route.fail("chain", "missing; list the models to try, in order")
        if chain is None:
            t.fail(task, f"missing; every task ({', '.join(TASKS)}) needs a chain of models")
        if not chain:
            t.fail(task, "the chain is empty; list at least one model")
        need = TASK_CAPABILITY[task]
        for name in chain:
            if not isinstance(name, str):
                t.fail(task, f"chain entries must be model names (strings), got {name!r}")
            if name not in models:
                t.fail(task, f"names model {name!r}, which has no [models.{name}] table; "
                             f"declared models: {', '.join(models)}")
            if need not in models[name].capabilities:
                t.fail(task, f"model {name!r} cannot serve {task!r}: it lacks the {need!r} "
                             f"capability (add it to [models.{name}] capabilities if it has it)")
        if len(set(chain)) != len(chain):
            t.fail(task, "names a model twice")
        routes[task] = tuple(chain)
    t.done(TASKS)
    return routes, frozenset(strict)
