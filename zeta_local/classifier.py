"""Prompt classifier: decides whether a prompt is `code`, `reason` or `chat`, and how sure it is.

Two stages. The rules (classifier_rules) run first: they are fast and say in words why.
When their evidence is strong enough (strength at or above the trained gate) they decide,
with a confidence calibrated on the tuning prompts they decide. Otherwise a learned model
(learned_classifier: logistic regression over hashed n-grams and the rules' findings)
decides, with temperature-scaled probabilities, and its reason names the prompt's words that
weighed most. Both stages' confidences are calibrated on tuning prompts only (see
scripts/train_classifier.py), so `confidence` means "right about that often".
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass

from zeta_local import classifier_rules as rules
from zeta_local import learned_classifier as learned
from zeta_local.classifier_rules import TASKS, task_of

logger = logging.getLogger(__name__)

__all__ = ["TASKS", "Classification", "classify"]

_NO_SIGNALS = "no code or reasoning signals"

# A prompt with no rule signal and no word that names a topic ("hmm", "can you help me with
# this?", "what do you think", "fix it") gives any stage too little to go on: its
# probabilities are pulled toward even (VAGUE_SHRINK of the way), so it stays under the
# escalation threshold whatever the learned stage leans to. A policy, not a fit: the labelled
# set calls such prompts chat, but the next message may well be code or a puzzle.
VAGUE_SHRINK = 2 / 3
# The learned stage's stop words, and the words that ask or react without naming a topic.
_NOT_A_TOPIC = learned.STOP_WORDS | frozenset(
    "im u ur whats who which something anything thing things stuff help please pls tell say know "
    "think want need like look see ok okay yes yeah yep nope hmm hm um uh well sure right go going "
    "get got one more again now question questions idea ideas thoughts opinion mean meant really "
    "very quite also too maybe lol fix solve explain problem issue work works working wrong correct "
    "better best way try trying doing done make".split())


@dataclass(frozen=True)
class Classification:
    """The chosen task, how sure, which stage decided and the evidence behind it."""

    task: str
    signals: tuple[str, ...]  # the rules' signals: winner's first, heaviest first
    scores: dict[str, float]  # the rules' summed signal weights; "chat" includes its prior
    confidence: float  # calibrated probability that `task` is right; == probabilities[task]
    # Every task's probability, summing to 1.
    probabilities: dict[str, float]
    # "rules"; "learned" when the rules were not sure enough; "vague" when the prompt gave
    # neither stage enough to go on (the learned stage's lean, made unsure)
    stage: str = "rules"
    evidence: tuple[str, ...] = ()  # learned stage: the prompt's words that weighed most

    @property
    def reason(self) -> str:
        """One human-readable line saying what decided the task."""
        if self.stage == "vague":
            return f"{self.task} ({self.confidence:.2f}): too little to go on: no rule signal, no word that names a topic"
        if self.stage == "learned":
            words = ", ".join(f'"{w}"' for w in self.evidence) or "no telling words"
            rule_part = ", ".join(self.signals) if self.signals else _NO_SIGNALS
            return f"{self.task} (learned, {self.confidence:.2f}): {words}; rules uncertain: {rule_part}"
        if not self.signals:
            return f"{self.task}: {_NO_SIGNALS} (confidence {self.confidence:.2f})"
        own = [s for s in self.signals if task_of(s) == self.task]
        others = [s for s in self.signals if task_of(s) != self.task]
        what = ", ".join(own) if own else "only weak signals"
        line = f"{self.task}: {what} (confidence {self.confidence:.2f})"
        if others:
            line += f"; outweighed: {', '.join(others)}"
        return line


@functools.lru_cache(maxsize=1)
def _model() -> learned.Model | None:
    try:
        return learned.load()
    except Exception:  # a broken or stale weights file must not stop routing: rules alone
        logger.exception("classifier: cannot load %s; deciding with the rules alone", learned.WEIGHTS_PATH)
        return None


def classify(prompt: str) -> Classification:
    """Classify one prompt as "code", "reason" or "chat"; never raises on any string."""
    try:
        return _classify(prompt if isinstance(prompt, str) else "")
    except Exception:  # a bug here must cost a routing decision, never a request
        logger.exception("classifier: failed on a prompt of %d characters; answering chat, unsure",
                         len(prompt) if isinstance(prompt, str) else -1)
        return _unsure()


def _classify(prompt: str) -> Classification:
    text = rules.scan_text(prompt)
    if not text.strip():
        return _unsure()
    decision = rules.decide(text)
    model = _model()
    if model is None:  # uncalibrated: say no more than the rules' own strength
        confidence = round(1 / 3 + 2 / 3 * decision.strength, 3)
        return _from_rules(decision, confidence)
    if decision.strength >= model.gate:
        return _from_rules(decision, round(model.rule_confidence(decision.strength), 3))

    features = learned.extract(text, decision)
    rows = model.rows(features)
    p = model.probabilities(features, rows)
    vague = not decision.signals and not _names_a_topic(features.tokens)
    if vague:
        p = (1 - VAGUE_SHRINK) * p + VAGUE_SHRINK / len(TASKS)
    task = TASKS[int(p.argmax())]
    probabilities = _rounded({t: float(x) for t, x in zip(TASKS, p)}, task)
    signals = tuple(sorted(decision.signals, key=lambda s: task_of(s) != task))  # stable: keeps weight order
    return Classification(task, signals, decision.scores, probabilities[task], probabilities,
                          "vague" if vague else "learned", model.explain(features, task, rows=rows))


def _names_a_topic(tokens: tuple[str, ...]) -> bool:
    return any(t not in _NOT_A_TOPIC and not t.isdigit() for t in tokens)


def _from_rules(decision: rules.RuleDecision, confidence: float) -> Classification:
    """The rules' decision; the runners-up share what confidence leaves in proportion to their evidence."""
    others = [t for t in TASKS if t != decision.task]
    evidence = [max(decision.scores[t] - (rules.CHAT_PRIOR if t == "chat" else 0.0), 1e-3) for t in others]
    probs = {t: (1 - confidence) * e / sum(evidence) for t, e in zip(others, evidence)}
    probs[decision.task] = confidence
    probabilities = _rounded(probs, decision.task)
    return Classification(decision.task, decision.signals, decision.scores, probabilities[decision.task],
                          probabilities)


def _rounded(probs: dict[str, float], task: str) -> dict[str, float]:
    """Three decimals, still summing to 1: the last runner-up takes the rounding remainder."""
    out = {t: round(probs[t], 3) for t in TASKS}
    last = [t for t in TASKS if t != task][-1]
    out[last] = max(0.0, round(1.0 - sum(v for t, v in out.items() if t != last), 3))
    return out


def _unsure() -> Classification:
    """An empty prompt (or a failure): chat, but with no reason to prefer it over the others."""
    probabilities = {"code": 0.333, "reason": 0.333, "chat": 0.334}
    return Classification("chat", (), {"code": 0.0, "reason": 0.0, "chat": rules.CHAT_PRIOR},
                          probabilities["chat"], probabilities)
