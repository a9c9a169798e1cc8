"""Every error zeta_local raises: one shallow tree under ZetaError.

Each error also inherits the builtin it resembles, so a caller can catch either
`zeta_local.ConfigError` or a plain `ValueError`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from zeta_local.results import Attempt


class ZetaError(Exception):
    """Base of every error raised by zeta_local."""


class ConfigError(ZetaError, ValueError):
    """models.toml is missing, unreadable or invalid; the message names the file, table and key."""


class InvalidRequest(ZetaError, ValueError):
    """The request itself is wrong (empty prompt, unknown task, bad sampling value)."""


class UnknownModel(ZetaError, KeyError):
    """A model name that models.toml does not declare. Never replaced by another model."""

    def __str__(self) -> str:  # KeyError would print the message with quotes around it
        return str(self.args[0]) if self.args else ""


class ModelFileMissing(ZetaError, FileNotFoundError):
    """The model's GGUF file is not on this machine."""


class InvalidModelFile(ZetaError, ValueError):
    """The file exists but is not a usable GGUF (wrong magic, truncated, corrupt header)."""


class ModelLoadError(ZetaError, RuntimeError):
    """llama.cpp refused to load a file whose header looked valid."""


class ContextOverflow(ZetaError, ValueError):
    """The prompt does not fit in the model's context window."""


class GenerationError(ZetaError, RuntimeError):
    """The model raised while generating or embedding."""


class OutOfMemory(ZetaError, MemoryError):
    """A model could not allocate its weights, cache or buffers; it is released."""


class EngineUnreachable(ZetaError, ConnectionError):
    """A remote engine could not be connected to, or its connection broke mid-answer."""


class EngineBusy(ZetaError, RuntimeError):
    """A remote engine refused the request for now (HTTP 429 or 503); `retry_after` is how many
    seconds it asked to be left alone (its Retry-After header), None when it did not say."""

    def __init__(self, message: str, retry_after: float | None = None):
        super().__init__(message)
        self.retry_after = retry_after


class Cancelled(ZetaError, RuntimeError):
    """The caller cancelled the request; carries the attempts made until then."""

    def __init__(self, attempts: list[Attempt]):
        self.attempts = list(attempts)
        super().__init__("the request was cancelled by the caller")


class DownloadFailed(ZetaError, OSError):
    """A model file could not be fetched or did not verify; nothing half-written is left."""


class Offline(DownloadFailed, ConnectionError):
    """The Hugging Face hub cannot be reached (no network, or HF_HUB_OFFLINE=1)."""


class FallbackExhausted(ZetaError, RuntimeError):
    """Every model in the chain was tried and none answered; carries every attempt."""

    def __init__(self, task: str, attempts: list[Attempt]):
        self.task = task
        self.attempts = list(attempts)
        tried = "; ".join(f"{a.model}: {a.outcome} ({a.detail})" for a in self.attempts)
        super().__init__(f"no model could answer the {task!r} request. Tried {tried}")
