"""The OpenAI wire format: request bodies checked at the edge, and the router's results in
OpenAI's shapes. Pure translation, no HTTP and no routing: zeta_local.server does the serving.

What the router cannot do is refused by name (`n` > 1, `tools`, `logprobs`, ...), never
ignored: a client that asks for it would otherwise get an answer that silently lacks it.
"""

from __future__ import annotations

import base64
import time
import uuid
from typing import Any, Iterable, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict

from zeta_local.results import Attempt, EmbeddingResult, Fallback, GenerationResult, Usage
from zeta_local.thinking import TEMPLATE_SWITCH

# The `model` field: "auto" lets the classifier decide, a task name takes that task's chain,
# and a model name of models.toml takes that model alone.
AUTO = "auto"
GENERATION_TASKS = ("code", "reason", "chat")
EMBED_TASK = "embed"


class RequestError(Exception):
    """A request that is refused before it reaches a model; carries its HTTP status and
    OpenAI's error fields."""

    def __init__(self, status: int, message: str, *, param: str | None = None,
                 code: str | None = None, type: str = "invalid_request_error",
                 headers: dict[str, str] | None = None, attempts: tuple[Attempt, ...] = ()):
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.type = status, message, param, code, type
        self.headers = headers or {}
        self.attempts = attempts

    def body(self) -> dict[str, Any]:
        error: dict[str, Any] = {"message": self.message, "type": self.type, "param": self.param,
                                 "code": self.code}
        if self.attempts:
            error["zeta"] = {"attempts": attempts_json(self.attempts)}
        return {"error": error}


# ---- request bodies ------------------------------------------------------------------------

# Parameters that change what an answer is and that the router cannot honour: accepted only at
# the value that asks for nothing, otherwise refused with the reason.
_UNSUPPORTED: dict[str, tuple[Any, str]] = {
    "n": ((None, 1), "zeta-local returns one choice per request; send n = 1 or leave it out"),
    "tools": ((None, []), "tool calling is not supported"),
    "tool_choice": ((None, "none"), "tool calling is not supported"),
    "functions": ((None, []), "function calling is not supported"),
    "function_call": ((None, "none"), "function calling is not supported"),
    "logprobs": ((None, False, 0), "log probabilities are not supported"),
    "top_logprobs": ((None, 0), "log probabilities are not supported"),
    "logit_bias": ((None, {}), "logit_bias is not supported"),
    "frequency_penalty": ((None, 0), "frequency_penalty is not supported; repeat_penalty is"),
    "presence_penalty": ((None, 0), "presence_penalty is not supported; repeat_penalty is"),
    "response_format": ((None, {"type": "text"}), "structured output (response_format) is not "
                                                   "supported"),
    "echo": ((None, False), "echo is not supported"),
    "best_of": ((None, 1), "best_of must be 1"),
    "suffix": ((None, ""), "suffix (fill-in-the-middle) is not supported"),
}


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    include_usage: bool = False


class _Generation(BaseModel):
    """What chat and completion requests share: the model, sampling, streaming."""

    model_config = ConfigDict(extra="forbid")
    model: str
    max_tokens: int | None = None
    max_completion_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None  # llama.cpp's, as its own server takes it
    repeat_penalty: float | None = None  # likewise
    stop: str | list[str] | None = None
    seed: int | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    user: str | None = None  # an end-user id for the caller's own records; changes nothing
    # Accepted only at their neutral value (see _UNSUPPORTED).
    n: Any = None
    tools: Any = None
    tool_choice: Any = None
    parallel_tool_calls: bool | None = None  # without tools it asks for nothing
    functions: Any = None
    function_call: Any = None
    logprobs: Any = None
    top_logprobs: Any = None
    logit_bias: Any = None
    frequency_penalty: Any = None
    presence_penalty: Any = None
    response_format: Any = None

    def sampling(self) -> dict[str, Any]:
        """The router's sampling options; unsupported parameters are refused by name."""
        for name in self.model_fields_set & set(_UNSUPPORTED):
            allowed, why = _UNSUPPORTED[name]
            value = getattr(self, name)
            if value not in allowed:
                raise RequestError(400, f"{name}={value!r} is not supported: {why}", param=name,
                                   code="unsupported_parameter")
        if self.stream_options is not None and not self.stream:
            raise RequestError(400, "stream_options is only allowed with stream=true",
                               param="stream_options")
        max_tokens = self.max_completion_tokens
        if self.max_tokens is not None:
            if max_tokens is not None and max_tokens != self.max_tokens:
                raise RequestError(400, "max_tokens and max_completion_tokens differ; give one",
                                   param="max_tokens")
            max_tokens = self.max_tokens
        options = {"max_tokens": max_tokens, "temperature": self.temperature, "top_p": self.top_p,
                   "top_k": self.top_k, "repeat_penalty": self.repeat_penalty, "seed": self.seed,
                   "stop": self.stop}
        return {k: v for k, v in options.items() if v is not None}

    @property
    def include_usage(self) -> bool:
        return self.stream_options is not None and self.stream_options.include_usage


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="forbid")
    role: str
    content: str | list[dict[str, Any]] | None = None
    name: str | None = None  # a participant's name; the models' templates have no place for it
    tool_calls: Any = None
    refusal: Any = None
    # An earlier answer's thinking, as this server (and llama.cpp's, DeepSeek's) returned it.
    # Accepted and dropped: a turn's thinking is not part of the conversation (Qwen3's own
    # template drops it from earlier turns too).
    reasoning_content: Any = None


class ChatRequest(_Generation):
    messages: list[ChatMessage]
    # vLLM's and llama.cpp's server's field for a template's own variables. Only the thinking
    # switch is taken (thinking.py): the router's other variables are its own to set.
    chat_template_kwargs: dict[str, Any] | None = None
    # The most tokens the thinking may take before it is closed (as llama.cpp's server's
    # --reasoning-budget, per request); the answer's thinking comes back as reasoning_content.
    reasoning_budget: int | None = None

    def sampling(self) -> dict[str, Any]:
        """As for any generation, plus `thinking` from chat_template_kwargs.enable_thinking,
        and reasoning_budget."""
        options = super().sampling()
        if self.reasoning_budget is not None:
            options["reasoning_budget"] = self.reasoning_budget
        kwargs = self.chat_template_kwargs or {}
        unknown = sorted(set(kwargs) - {TEMPLATE_SWITCH})
        if unknown:
            raise RequestError(400, f"chat_template_kwargs: only {TEMPLATE_SWITCH} is supported, got "
                               f"{', '.join(unknown)}", param="chat_template_kwargs",
                               code="unsupported_parameter")
        if TEMPLATE_SWITCH in kwargs:
            value = kwargs[TEMPLATE_SWITCH]
            if not isinstance(value, bool):
                raise RequestError(400, f"chat_template_kwargs.{TEMPLATE_SWITCH} must be true or false, "
                                   f"got {value!r}", param="chat_template_kwargs")
            options["thinking"] = value
        return options

    def router_messages(self) -> list[dict[str, str]]:
        """OpenAI's messages as the router's: text parts joined, `developer` as `system`."""
        out = []
        for i, message in enumerate(self.messages):
            where = f"messages[{i}]"
            if message.role in ("tool", "function") or message.tool_calls:
                raise RequestError(400, f"{where}: tool and function messages are not supported",
                                   param=where)
            content = message.content
            if isinstance(content, list):
                texts = []
                for j, part in enumerate(content):
                    if part.get("type") != "text" or not isinstance(part.get("text"), str):
                        raise RequestError(400, f"{where}.content[{j}]: only text parts are "
                                           f"supported, got type {part.get('type')!r}",
                                           param=f"{where}.content")
                    texts.append(part["text"])
                content = "\n".join(texts)
            role = "system" if message.role == "developer" else message.role
            out.append({"role": role, "content": content if content is not None else ""})
        return out


class CompletionRequest(_Generation):
    prompt: str | list[str]
    echo: Any = None
    best_of: Any = None
    suffix: Any = None

    def text(self) -> str:
        if isinstance(self.prompt, list):
            if len(self.prompt) != 1:
                raise RequestError(400, f"prompt: send one prompt per request, got "
                                   f"{len(self.prompt)}", param="prompt")
            return self.prompt[0]
        return self.prompt


class EmbeddingRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    model: str
    input: str | list[str]
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = None
    user: str | None = None

    def texts(self) -> list[str]:
        return [self.input] if isinstance(self.input, str) else list(self.input)


def validation_error(errors: list[dict[str, Any]]) -> RequestError:
    """pydantic's first complaint about a body, as OpenAI's 400."""
    if not errors:
        return RequestError(400, "the request body is not valid")
    error = errors[0]
    loc = [str(p) for p in error.get("loc", ()) if p != "body"]
    param = ".".join(loc) or None
    kind = error.get("type", "")
    if kind == "json_invalid":
        return RequestError(400, f"the request body is not valid JSON: {error.get('msg', '')}")
    if kind == "extra_forbidden":
        return RequestError(400, f"unrecognized request argument supplied: {param}", param=param,
                            code="unsupported_parameter")
    if kind == "missing":
        return RequestError(400, f"{param} is required", param=param)
    if not loc:
        return RequestError(400, f"the request body must be a JSON object: {error.get('msg', '')}")
    return RequestError(400, f"{param}: {error.get('msg', 'invalid value')}", param=param)


# ---- responses -----------------------------------------------------------------------------


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:24]}"


def usage_json(usage: Usage) -> dict[str, Any]:
    """OpenAI's usage; completion_tokens counts the thinking, as its details say how much."""
    return {"prompt_tokens": usage.prompt_tokens, "completion_tokens": usage.completion_tokens,
            "total_tokens": usage.total_tokens,
            "completion_tokens_details": {"reasoning_tokens": usage.reasoning_tokens}}


def attempts_json(attempts: tuple[Attempt, ...] | list[Attempt]) -> list[dict[str, Any]]:
    return [{"model": a.model, "outcome": a.outcome, "detail": a.detail,
             "seconds": round(a.seconds, 3)} for a in attempts]


def attempts_header(tried: Iterable[tuple[str, str]]) -> str:
    """(model, outcome) pairs as `coder-7b:timeout_first_token,general-4b:ok`."""
    return ",".join(f"{model}:{outcome}" for model, outcome in tried)


def zeta_json(result: GenerationResult) -> dict[str, Any]:
    """What the router did for this answer: the task, why, and every model tried.
    `classified_task` is the classifier's task (null when the request named one); it differs
    from `task` when an uncertain decision was escalated. `affinity` names the model the
    conversation continued on, when it did; `thinking` the first model's thinking choice for a
    chat (each attempt's detail says its own)."""
    route = result.route
    return {"task": result.task, "route_reason": route.reason,
            "confidence": round(route.confidence, 3), "classified_task": route.classified,
            "escalated": route.escalated, "affinity": route.affinity, "thinking": route.thinking,
            "attempts": attempts_json(result.attempts)}


def fallback_json(event: Fallback) -> dict[str, Any]:
    return {"from": event.from_model, "to": event.to_model, "outcome": event.outcome,
            "detail": event.detail, "continues": event.continues}


def completion_json(result: GenerationResult, *, chat: bool, request_id: str, created: int) -> dict[str, Any]:
    if chat:
        message = {"role": "assistant", "content": result.text}
        if result.reasoning:  # llama.cpp's server's and DeepSeek's field for the thinking
            message["reasoning_content"] = result.reasoning
        choice: dict[str, Any] = {"index": 0, "message": message,
                                  "logprobs": None, "finish_reason": result.finish_reason}
    else:
        choice = {"index": 0, "text": result.text, "logprobs": None,
                  "finish_reason": result.finish_reason}
    return {"id": request_id, "object": "chat.completion" if chat else "text_completion",
            "created": created, "model": result.model, "choices": [choice],
            "usage": usage_json(result.usage), "zeta": zeta_json(result)}


def chunk_json(*, chat: bool, request_id: str, created: int, model: str, text: str | None = None,
               reasoning: str | None = None, role: bool = False, finish_reason: str | None = None,
               zeta: dict[str, Any] | None = None, include_usage: bool = False) -> dict[str, Any]:
    """One streamed chunk. `model` is the model that produced this chunk's text (or thinking,
    as a chat delta's reasoning_content)."""
    if chat:
        delta: dict[str, Any] = {"role": "assistant"} if role else {}
        if text is not None:
            delta["content"] = text
        if reasoning is not None:
            delta["reasoning_content"] = reasoning
        choice: dict[str, Any] = {"index": 0, "delta": delta, "logprobs": None,
                                  "finish_reason": finish_reason}
    else:
        choice = {"index": 0, "text": text or "", "logprobs": None, "finish_reason": finish_reason}
    chunk: dict[str, Any] = {"id": request_id,
                             "object": "chat.completion.chunk" if chat else "text_completion",
                             "created": created, "model": model, "choices": [choice]}
    if include_usage:
        chunk["usage"] = None  # only the last chunk carries it
    if zeta is not None:
        chunk["zeta"] = zeta
    return chunk


def usage_chunk_json(result: GenerationResult, *, chat: bool, request_id: str, created: int) -> dict[str, Any]:
    return {"id": request_id, "object": "chat.completion.chunk" if chat else "text_completion",
            "created": created, "model": result.model, "choices": [],
            "usage": usage_json(result.usage)}


def embeddings_json(result: EmbeddingResult, encoding_format: str) -> dict[str, Any]:
    rows = []
    for i, vector in enumerate(result.vectors):
        if encoding_format == "base64":  # little-endian float32, as OpenAI sends them
            data: Any = base64.b64encode(np.asarray(vector, dtype="<f4").tobytes()).decode("ascii")
        else:
            data = [float(x) for x in vector]
        rows.append({"object": "embedding", "index": i, "embedding": data})
    return {"object": "list", "data": rows, "model": result.model,
            "zeta": {"dim": result.dim, "attempts": attempts_json(result.attempts)}}


def model_json(name: str, created: int, zeta: dict[str, Any]) -> dict[str, Any]:
    return {"id": name, "object": "model", "created": created, "owned_by": "zeta-local", "zeta": zeta}


def now() -> int:
    return int(time.time())
