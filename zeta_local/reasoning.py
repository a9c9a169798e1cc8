"""Thinking kept apart from the answer: a reasoning model's `<think> ... </think>` block, cut out
of a chat's text as it streams, and what ends it when the reasoning budget runs out.

A chat's answer may open with a thinking block (Qwen3 thinking, DeepSeek-R1, QwQ: the format
llama.cpp's server parses with --reasoning-format deepseek). The splitter sees the text after
the stop strings are cut and before anyone else: it yields the thinking as `Thought` pieces and
the answer as plain `str` pieces, holding back a tail that may begin a tag, so that a tag split
across tokens never leaks into either. Only a block at the very start counts (whitespace
aside): a `<think>` later in an answer is the answer's own text (an HTML lesson, a regex).
A template that opens the block itself (its prompt ends inside one) starts the splitter inside.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

OPEN, CLOSE = "<think>", "</think>"
# What the budget inserts to end the thinking (Qwen3's own layout after a block: a blank line).
FORCED_CLOSE = f"\n{CLOSE}\n\n"

_BEFORE, _THINKING, _ANSWER = "before", "thinking", "answer"


@dataclass(frozen=True)
class Thought:
    """A piece of a model's thinking, as LoadedModel.generate() yields it beside the answer's
    `str` pieces."""

    text: str


def starts_inside(prompt: str) -> bool:
    """Whether a rendered prompt leaves the model inside a thinking block: its template opened
    one for the model to go on with (DeepSeek-R1's does; Qwen3's with thinking off closes it)."""
    return prompt.rfind(OPEN) > prompt.rfind(CLOSE)


class ThinkSplitter:
    """Splits one answer's text pieces into its thinking (`Thought`) and the answer (`str`),
    and times the thinking. Whitespace around the block's contents, and before the answer,
    is dropped: it is the template's layout, not text anyone wrote."""

    def __init__(self, inside: bool = False):
        self._state = _THINKING if inside else _BEFORE
        self._pending = ""
        self._answer_started = False
        self._thought_started = False  # some thinking text given out (leading whitespace is layout)
        self.started_at: float | None = time.monotonic() if inside else None
        self.ended_at: float | None = None

    @property
    def thinking(self) -> bool:
        """Whether the text so far ends inside the thinking block."""
        return self._state == _THINKING

    @property
    def seconds(self) -> float:
        """How long it thought: from its block's opening to its close (or to now)."""
        if self.started_at is None:
            return 0.0
        return (self.ended_at or time.monotonic()) - self.started_at

    def feed(self, text: str) -> list[str | Thought]:
        self._pending += text
        out: list[str | Thought] = []
        while self._pending:
            before = (self._state, len(self._pending))
            if self._state == _BEFORE:
                self._before()
            elif self._state == _THINKING:
                self._think(out)
            else:
                self._answer(out)
            if (self._state, len(self._pending)) == before:
                break  # waiting for more text to decide
        return out

    def flush(self) -> list[str | Thought]:
        """The end of the answer: whatever was held back is what it is."""
        rest, self._pending = self._pending, ""
        if self._state == _THINKING:
            self.ended_at = self.ended_at or time.monotonic()
            rest = rest.rstrip()
            return [Thought(rest)] if rest else []
        if self._state == _ANSWER and not self._answer_started:
            rest = rest.lstrip()
        return [rest] if rest else []

    def _before(self) -> None:
        head = self._pending.lstrip()
        if head.startswith(OPEN):
            self._pending = head[len(OPEN):].lstrip()
            self._state, self.started_at = _THINKING, time.monotonic()
        elif not OPEN.startswith(head):  # the answer began without a block
            self._state, self._answer_started = _ANSWER, True

    def _think(self, out: list[str | Thought]) -> None:
        if not self._thought_started:
            self._pending = self._pending.lstrip()
        cut = self._pending.find(CLOSE)
        if cut >= 0:
            text, self._pending = self._pending[:cut].rstrip(), self._pending[cut + len(CLOSE):]
            self._state, self.ended_at = _ANSWER, time.monotonic()
        else:  # hold back what may begin the close tag, and the whitespace before it
            hold = next((k for k in range(min(len(CLOSE) - 1, len(self._pending)), 0, -1)
                         if self._pending.endswith(CLOSE[:k])), 0)
            keep = len(self._pending) - hold
            keep = len(self._pending[:keep].rstrip())
            text, self._pending = self._pending[:keep], self._pending[keep:]
        if text:
            self._thought_started = True
            out.append(Thought(text))

    def _answer(self, out: list[str | Thought]) -> None:
        if not self._answer_started:
            self._pending = self._pending.lstrip()
            if not self._pending:
                return
            self._answer_started = True
        out.append(self._pending)
        self._pending = ""
