"""Which task a request is and which chain it runs: the caller's task=, else the classifier;
when it is uncertain, the semantic stage's vote if that is sure (semantic.py, off by default),
else escalation ("fail expensive").

A classified decision whose confidence is under `[router] uncertain_below` goes to the chain of
`[router] uncertain_task` (default "reason": its models are the largest), since a wrong guess
costs more than a bigger model does. Its reason says so, with the two tasks it was torn
between: `uncertain (0.42): code 0.42 vs chat 0.38 -> reason`. A task given by the caller is
never second-guessed, and neither is a model given by the caller (the router asks for no
escalation then: the model answers under the classified task's label).
"""

from __future__ import annotations

from typing import Callable

from zeta_local.classifier import Classification, classify
from zeta_local.config import Config
from zeta_local.results import RouteDecision
from zeta_local.semantic import Vote

CALLER_TASK = "task given by the caller"


def decide(prompt: str, task: str | None, config: Config, *, escalate: bool = True,
           second_opinion: Callable[[str], Vote | None] | None = None) -> RouteDecision:
    """The route of one prompt; `task` (already validated) wins over the classifier.

    `second_opinion` (the semantic stage) is asked only when the classifier is uncertain, and
    decides only when it is itself sure enough; otherwise the request is escalated."""
    if task is not None:
        return RouteDecision(task, config.routes[task], CALLER_TASK)
    found = classify(prompt)
    settings = config.router
    if second_opinion is not None and found.confidence < settings.uncertain_below:
        vote = second_opinion(prompt)
        if vote is not None and vote.confidence >= settings.uncertain_below:
            return RouteDecision(vote.task, config.routes[vote.task], f"{vote.reason}; {found.reason}",
                                 vote.confidence, classified=vote.task)
    if escalate and found.confidence < settings.uncertain_below:
        target = settings.uncertain_task
        return RouteDecision(target, config.routes[target], uncertain_reason(found, target),
                             found.confidence, classified=found.task)
    return RouteDecision(found.task, config.routes[found.task], found.reason, found.confidence,
                         classified=found.task)


def uncertain_reason(found: Classification, target: str) -> str:
    """`uncertain (0.42): code 0.42 vs chat 0.38 -> reason`: the confidence, the two most likely
    tasks (the classified one first) and where the request goes."""
    ranked = sorted(found.probabilities.items(), key=lambda kv: (kv[0] != found.task, -kv[1]))
    (top, p_top), (runner_up, p_runner_up) = ranked[0], ranked[1]
    return (f"uncertain ({found.confidence:.2f}): {top} {p_top:.2f} vs {runner_up} "
            f"{p_runner_up:.2f} -> {target}")
