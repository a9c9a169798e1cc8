"""Conversation affinity: a follow-up turn goes to the model that answered the turn before.

Two reasons. The conversation stays with one voice instead of hopping between models as each
new message is classified on its own ("thanks, and in Go?" reads as chat). And it is faster:
llama-cpp-python reuses a context's KV cache for the longest common token prefix with the
previous call on it, so the model that answered turn 1 evaluates only turn 2's new tokens
while any other model evaluates the whole conversation again (zeta_local.bench_routing
measures the difference).

A conversation is recognised by its messages, nothing else (the OpenAI API has no session
id): after model M answers `messages`, the digest of `messages + [the answer]` is remembered
as M's, in a bounded LRU. A later request whose history (its messages up to and including the
last assistant message) has that digest continues on M. Each message's content is compared
without the whitespace at its ends, so that a client echoing the answer back trimmed (or with a
newline added) still matches.

The rules, in the order they apply:
- `model=` given by the caller wins: no affinity.
- M must be in the chain the request would run: with `task=` given, that task's chain; after an
  escalation (routing.py), the escalated chain, else the classified one (the conversation's own
  model is better evidence about a short follow-up than the classifier's doubt about it). A
  model outside those chains is never used.
- M must be healthy: not cooling down in the circuit breaker, not quarantined.
- Then M goes first; the rest of that chain follows in its order, as fallbacks.
- An attempt on M that fails (anything but a cancel) forgets the affinity, so that a retry of
  the same turn is routed afresh. Whichever model answers a turn is remembered for the next.

The speed-up needs M's context to still hold the conversation: a request for another
conversation on M in between replaces it (the affinity still keeps the conversation on M).
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from collections import OrderedDict
from dataclasses import replace
from typing import Callable, Iterator, Mapping, Sequence

from zeta_local.errors import FallbackExhausted
from zeta_local.results import CANCELLED, Done, Fallback, RouteDecision, StreamEvent

log = logging.getLogger(__name__)

# Conversations remembered (a digest and a name each: well under 1 MB at this size).
MAX_CONVERSATIONS = 4096

Messages = Sequence[Mapping[str, str]]


def conversation_key(messages: Messages) -> str:
    """The digest of a conversation: each message's role and content, the content without the
    whitespace at its ends."""
    digest = hashlib.sha256()
    for message in messages:
        digest.update(json.dumps([message["role"], message["content"].strip()]).encode())
        digest.update(b"\n")
    return digest.hexdigest()


def history(messages: Messages) -> list[Mapping[str, str]] | None:
    """The messages up to and including the last assistant message: what an earlier turn's
    answer ended; None when no assistant has spoken yet."""
    last = max((i for i, m in enumerate(messages) if m["role"] == "assistant"), default=None)
    return None if last is None else list(messages[:last + 1])


class ConversationAffinity:
    """Which model answered which conversation, for the last `max_conversations` of them.
    Safe to share between threads."""

    def __init__(self, max_conversations: int = MAX_CONVERSATIONS):
        if max_conversations < 1:
            raise ValueError("max_conversations must be at least 1")
        self.max_conversations = max_conversations
        self._models: OrderedDict[str, str] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        with self._lock:
            return len(self._models)

    def remember(self, messages: Messages, answer: str, model: str) -> None:
        """`model` answered `messages` with `answer`: a request continuing from there goes to it."""
        key = conversation_key([*messages, {"role": "assistant", "content": answer}])
        with self._lock:
            self._models[key] = model
            self._models.move_to_end(key)
            while len(self._models) > self.max_conversations:
                self._models.popitem(last=False)

    def recall(self, messages: Messages) -> str | None:
        """The model that answered the conversation `messages` continues, if it is remembered."""
        earlier = history(messages)
        if earlier is None:
            return None
        key = conversation_key(earlier)
        with self._lock:
            model = self._models.get(key)
            if model is not None:
                self._models.move_to_end(key)
            return model

    def forget(self, messages: Messages, model: str) -> None:
        """`model` failed on this conversation: route its next attempt afresh."""
        earlier = history(messages)
        if earlier is None:
            return
        key = conversation_key(earlier)
        with self._lock:
            if self._models.get(key) == model:
                del self._models[key]
                log.info("%s failed on a conversation it answered before; the affinity is dropped", model)

    def apply(self, decision: RouteDecision, messages: Messages, routes: Mapping[str, tuple[str, ...]],
              healthy: Callable[[str], bool]) -> RouteDecision:
        """The decision for `messages`, with the conversation's model first when it may be."""
        model = self.recall(messages)
        if model is None:
            return decision
        candidates = [(decision.task, decision.chain)]
        if decision.escalated:
            assert decision.classified is not None
            candidates.append((decision.classified, routes[decision.classified]))
        found = next(((task, chain) for task, chain in candidates if model in chain), None)
        if found is None:
            log.debug("the conversation's model %s is not in the %s chain; routed as classified",
                      model, decision.task)
            return decision
        if not healthy(model):
            log.debug("the conversation's model %s is cooling down or quarantined; routed as "
                      "classified", model)
            return decision
        task, chain = found
        kept = "" if task == decision.task else f" (kept on {task}, not escalated)"
        return replace(decision, task=task, chain=(model, *(m for m in chain if m != model)),
                       reason=f"affinity: continues the conversation answered by {model}{kept}; "
                              f"{decision.reason}",
                       affinity=model)

    def track(self, messages: Messages, decision: RouteDecision,
              events: Iterator[StreamEvent]) -> Iterator[StreamEvent]:
        """The request's events, unchanged; on the way, the answering model is remembered at
        the Done event, and a failure of the conversation's model forgets it."""
        kept = decision.affinity
        try:
            for event in events:
                if isinstance(event, Fallback) and event.from_model == kept and kept is not None:
                    self.forget(messages, kept)
                elif isinstance(event, Done):
                    self.remember(messages, event.result.text, event.result.model)
                yield event
        except FallbackExhausted as exc:
            if kept is not None and any(a.model == kept and a.outcome != CANCELLED
                                        for a in exc.attempts):
                self.forget(messages, kept)
            raise
        finally:
            close = getattr(events, "close", None)
            if close is not None:
                close()  # a consumer that stops reading stops the model too
