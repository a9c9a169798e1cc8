"""Escalation of uncertain classifications ("fail expensive"), on real tiny models: a classified
decision under [router] uncertain_below runs uncertain_task's chain and says so; task= and
model= are never second-guessed.

The classifier's numbers change as it is tuned, so the tests read the confidence of their
prompt from classify() and set the threshold around it, instead of hard-coding it."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Callable

import pytest

from conftest import run_cli
from zeta_local import ZetaDynamicRouter
from zeta_local.classifier import Classification, classify
from zeta_local.routing import uncertain_reason

# Prompts that should stay ambiguous whatever the classifier's weights: the first one whose
# confidence is strictly between 0 and 1 is used.
AMBIGUOUS = ("Explain recursion", "Can you help me sort this out?", "What does this function do?",
             "Tell me about the trade-offs of caching", "How do I get better at chess?")
MODELS = {"coder": {"model": "tiny-a"}, "thinker": {"model": "tiny-b"}, "talker": {"model": "tiny-chatml"}}
ROUTES = {"code": ["coder", "talker"], "reason": ["thinker", "talker"], "chat": ["talker"],
          "embed": ["coder"]}
REASON_SHAPE = re.compile(r"^uncertain \((\d\.\d\d)\): (code|reason|chat) (\d\.\d\d) vs "
                          r"(code|reason|chat) (\d\.\d\d) -> (code|reason|chat)$")


@pytest.fixture(scope="module")
def ambiguous() -> tuple[str, Classification]:
    for prompt in AMBIGUOUS:
        found = classify(prompt)
        if 0 < found.confidence < 1:
            return prompt, found
    pytest.skip("no prompt of AMBIGUOUS is uncertain for this classifier")  # pragma: no cover


@pytest.fixture
def make_router(write_config: Callable[..., Path]):
    routers: list[ZetaDynamicRouter] = []

    def make(**router: Any) -> ZetaDynamicRouter:
        routers.append(ZetaDynamicRouter.from_toml(write_config(MODELS, ROUTES, router)))
        return routers[-1]

    yield make
    for r in routers:
        r.close()


def test_uncertain_decision_goes_to_the_uncertain_chain(make_router, ambiguous):
    """Under the threshold, the request runs uncertain_task's chain, and the reason says what
    the classifier was torn between, in the documented shape."""
    prompt, found = ambiguous
    router = make_router(uncertain_below=round(found.confidence + 0.01, 3))
    decision = router.route(prompt)
    assert decision.task == "reason" and decision.chain == ("thinker", "talker")
    assert decision.classified == found.task
    assert decision.escalated is (found.task != "reason")
    assert decision.confidence == found.confidence
    match = REASON_SHAPE.match(decision.reason)
    assert match, decision.reason
    confidence, top, p_top, second, p_second, target = match.groups()
    assert (confidence, top, p_top) == (f"{found.confidence:.2f}", found.task, f"{found.confidence:.2f}")
    assert second != top and p_second == f"{found.probabilities[second]:.2f}"
    assert max(p for t, p in found.probabilities.items() if t != top) == found.probabilities[second]
    assert target == "reason"
    result = router.generate(prompt)
    assert (result.task, result.model) == ("reason", "thinker")
    assert result.route == decision
    reply = router.chat([{"role": "user", "content": prompt}])  # the last user message decides
    assert (reply.task, reply.model, reply.route.reason) == ("reason", "thinker", decision.reason)


def test_reason_text_is_exactly_the_documented_shape():
    """`uncertain (0.42): code 0.42 vs chat 0.38 -> reason`, the classified task first."""
    found = Classification("code", (), {}, 0.42, {"code": 0.42, "reason": 0.2, "chat": 0.38})
    assert uncertain_reason(found, "reason") == "uncertain (0.42): code 0.42 vs chat 0.38 -> reason"


def test_at_or_above_the_threshold_nothing_changes(make_router, ambiguous):
    """Escalation is for confidence strictly under uncertain_below."""
    prompt, found = ambiguous
    decision = make_router(uncertain_below=found.confidence).route(prompt)
    assert (decision.task, decision.reason, decision.escalated) == (found.task, found.reason, False)
    assert decision.chain == tuple(ROUTES[found.task])


def test_zero_turns_escalation_off(make_router, ambiguous):
    prompt, found = ambiguous
    router = make_router(uncertain_below=0)
    assert router.route(prompt).task == found.task
    assert router.route(prompt).reason == found.reason


def test_uncertain_task_is_configurable(make_router, ambiguous):
    """uncertain_task may be any generation task; when it is the classified task already,
    only the reason changes."""
    prompt, found = ambiguous
    other = next(t for t in ("chat", "code", "reason") if t != found.task)
    decision = make_router(uncertain_below=1, uncertain_task=other).route(prompt)
    assert (decision.task, decision.chain, decision.escalated) == (other, tuple(ROUTES[other]), True)
    assert decision.reason.endswith(f"-> {other}")
    same = make_router(uncertain_below=1, uncertain_task=found.task).route(prompt)
    assert (same.task, same.chain, same.escalated) == (found.task, tuple(ROUTES[found.task]), False)
    assert same.reason.startswith(f"uncertain ({found.confidence:.2f}): {found.task} ")


def test_explicit_task_is_never_escalated(make_router, ambiguous):
    prompt, _ = ambiguous
    router = make_router(uncertain_below=1)
    result = router.generate(prompt, task="chat")
    assert (result.task, result.model, result.route.reason) == ("chat", "talker", "task given by the caller")
    assert result.route.classified is None and not result.route.escalated
    assert router.route(prompt, task="code").chain == ("coder", "talker")


def test_explicit_model_is_never_escalated(make_router, ambiguous):
    """model= answers alone, labelled with the classified task (no chain was chosen)."""
    prompt, found = ambiguous
    router = make_router(uncertain_below=1)
    result = router.generate(prompt, model="coder")
    assert (result.model, result.task, result.route.chain) == ("coder", found.task, ("coder",))
    assert result.route.reason == "model coder given by the caller" and not result.route.escalated
    assert [a.model for a in result.attempts] == ["coder"]


def test_route_command_shows_the_escalation(write_config: Callable[..., Path], ambiguous):
    prompt, found = ambiguous
    path = write_config(MODELS, ROUTES, {"uncertain_below": 1, "uncertain_task": "reason"})
    proc = run_cli("route", prompt, "--config", str(path))
    assert proc.returncode == 0, proc.stderr
    assert f"reason:     uncertain ({found.confidence:.2f}): {found.task}" in proc.stdout
    if found.task != "reason":
        assert f"task:       reason (escalated from {found.task})" in proc.stdout
    data = json.loads(run_cli("route", prompt, "--json", "--config", str(path)).stdout)
    assert (data["task"], data["classified"]) == ("reason", found.task)
    assert data["escalated"] is (found.task != "reason") and REASON_SHAPE.match(data["reason"])
