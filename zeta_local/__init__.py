"""zeta_local: an in-process local inference router over llama.cpp.

    from zeta_local import ZetaDynamicRouter

    with ZetaDynamicRouter.from_toml() as router:
        result = router.generate("Write a Python function that reverses a string")
        print(result.text, result.model, result.attempts)
"""

import logging

from zeta_local.cancel import CancelToken
from zeta_local.config import Config, ModelSpec, RouterSettings, load_config
from zeta_local.errors import (Cancelled, ConfigError, ContextOverflow, EngineBusy, EngineUnreachable,
                               FallbackExhausted, GenerationError, InvalidModelFile, InvalidRequest,
                               ModelFileMissing, ModelLoadError, OutOfMemory, UnknownModel, ZetaError)
from zeta_local.results import (Attempt, Done, EmbeddingResult, Fallback, GenerationResult,
                                ModelStatus, ReasoningChunk, RouteDecision, Stream, StreamEvent,
                                TextChunk, Usage)
from zeta_local.metrics import UsageStats
from zeta_local.router import ZetaDynamicRouter

__version__ = "0.1.0"

# An embedding application decides what it sees: without its own logging set up, nothing of
# ours (nor of llama.cpp, routed through us) reaches its stderr.
logging.getLogger("zeta_local").addHandler(logging.NullHandler())

__all__ = [
    "Attempt",
    "CancelToken",
    "Cancelled",
    "Config",
    "ConfigError",
    "ContextOverflow",
    "Done",
    "EngineBusy",
    "EngineUnreachable",
    "EmbeddingResult",
    "Fallback",
    "FallbackExhausted",
    "GenerationError",
    "GenerationResult",
    "InvalidModelFile",
    "InvalidRequest",
    "ModelFileMissing",
    "ModelLoadError",
    "ModelSpec",
    "ModelStatus",
    "OutOfMemory",
    "ReasoningChunk",
    "RouteDecision",
    "RouterSettings",
    "Stream",
    "StreamEvent",
    "TextChunk",
    "UnknownModel",
    "Usage",
    "UsageStats",
    "ZetaDynamicRouter",
    "ZetaError",
    "load_config",
]
