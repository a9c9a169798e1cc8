"""Conversation affinity on real tiny models: a follow-up turn stays on the model that answered
the turn before, while it is in the new turn's chain and healthy; a failure forgets it; other
conversations are not affected; the memory is a bounded, thread-safe LRU."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, Callable

import pytest

from zeta_local import Done, Fallback, ZetaDynamicRouter
from zeta_local.affinity import ConversationAffinity, conversation_key, history
from zeta_local.classifier import classify

CODE = "def add(a, b):\n    return a + b\n# write a unit test for this in Python"
FOLLOW_UP = "Thanks! Can you say that more briefly?"
PROOF = "Prove that the square root of 2 is irrational, step by step."
MODELS = {"coder": {"model": "tiny-a"}, "talker": {"model": "tiny-b"},
          "thinker": {"model": "tiny-chatml"}}
ROUTES = {"code": ["coder", "talker"], "chat": ["talker", "coder"], "reason": ["thinker"],
          "embed": ["coder"]}


@pytest.fixture
def make_router(write_config: Callable[..., Path]):
    routers: list[ZetaDynamicRouter] = []

    def make(faults: str = "", routes: dict[str, list[str]] | None = None, **router: Any) -> ZetaDynamicRouter:
        settings = {"uncertain_below": 0, "temperature": 0} | router
        path = write_config(MODELS, routes or ROUTES, settings)
        routers.append(ZetaDynamicRouter.from_toml(path, faults=faults))
        return routers[-1]

    yield make
    for r in routers:
        r.close()


def first_turn(router: ZetaDynamicRouter, question: str = CODE, **options: Any) -> list[dict[str, str]]:
    """Turn 1 on the coder; the conversation as a client would send turn 2."""
    result = router.chat([{"role": "user", "content": question}], **options)
    assert result.model == "coder", "precondition: turn 1 is answered by the coder"
    return [{"role": "user", "content": question}, {"role": "assistant", "content": result.text},
            {"role": "user", "content": FOLLOW_UP}]


def test_classifier_sends_the_follow_up_elsewhere():
    """What the affinity tests rely on: alone, the follow-up is chat, the first turn code."""
    assert classify(FOLLOW_UP).task == "chat" and classify(CODE).task == "code"
    assert classify(PROOF).task == "reason"


def test_follow_up_stays_on_the_model_of_the_turn_before(make_router):
    router = make_router()
    turn2 = first_turn(router)
    result = router.chat(turn2)
    assert result.model == "coder" and result.task == "chat"
    assert result.route.affinity == "coder" and result.route.chain == ("coder", "talker")
    assert result.route.reason == ("affinity: continues the conversation answered by coder; "
                                   + classify(FOLLOW_UP).reason)
    # The stream's route says it before any model runs; and the third turn stays too.
    turn3 = turn2 + [{"role": "assistant", "content": result.text}, {"role": "user", "content": "And shorter?"}]
    stream = router.stream(turn3)
    assert stream.route.affinity == "coder"
    assert list(stream)[-1].result.model == "coder"


def test_a_client_echoing_the_answer_with_other_whitespace_still_matches(make_router):
    router = make_router()
    turn2 = first_turn(router)
    turn2[0]["content"] = "\n  " + turn2[0]["content"] + "  \n"
    turn2[1]["content"] = turn2[1]["content"].strip() + "\n\n"
    assert router.chat(turn2).route.affinity == "coder"


def test_other_conversations_are_not_affected(make_router):
    """The same follow-up in another conversation (or alone) is classified as usual."""
    router = make_router()
    first_turn(router)
    alone = router.chat([{"role": "user", "content": FOLLOW_UP}])
    assert (alone.model, alone.route.affinity) == ("talker", None)
    other = [{"role": "user", "content": "Write a Go function that sums a slice"},
             {"role": "assistant", "content": "func sum(xs []int) int { ... }"},
             {"role": "user", "content": FOLLOW_UP}]
    assert router.chat(other).model == "talker"
    # An edited answer is another conversation too.
    turn2 = first_turn(router)
    turn2[1]["content"] += " (edited)"
    assert router.chat(turn2).model == "talker"


def test_not_when_the_model_is_not_in_the_new_chain(make_router):
    """A follow-up classified as reason runs the reason chain, which lacks the coder."""
    router = make_router()
    turn2 = first_turn(router)
    turn2[-1]["content"] = PROOF
    result = router.chat(turn2)
    assert (result.model, result.task, result.route.affinity) == ("thinker", "reason", None)


def test_explicit_task_keeps_the_affinity_within_its_chain(make_router):
    router = make_router()
    turn2 = first_turn(router)
    chat = router.chat(turn2, task="chat")
    assert (chat.model, chat.route.affinity) == ("coder", "coder")
    assert chat.route.reason == "affinity: continues the conversation answered by coder; task given by the caller"
    assert router.chat(turn2, task="reason").model == "thinker"


def test_explicit_model_wins(make_router):
    router = make_router()
    turn2 = first_turn(router)
    result = router.chat(turn2, model="talker")
    assert (result.model, result.route.affinity) == ("talker", None)
    # ... and what it answered is remembered: the next turn continues on it.
    turn3 = turn2 + [{"role": "assistant", "content": result.text}, {"role": "user", "content": "ok"}]
    assert router.chat(turn3).route.affinity == "talker"


def test_a_pinned_first_turn_is_remembered_too(make_router):
    router = make_router()
    result = router.chat([{"role": "user", "content": "hello"}], model="coder")
    turn2 = [{"role": "user", "content": "hello"}, {"role": "assistant", "content": result.text},
             {"role": "user", "content": FOLLOW_UP}]
    assert router.chat(turn2).model == "coder"


def test_affinity_beats_escalation(make_router):
    """An uncertain follow-up stays with the conversation's model: in the escalated chain if
    it is there, else in the classified one (not escalated)."""
    from test_routing import AMBIGUOUS

    found_any = [(p, classify(p)) for p in AMBIGUOUS]
    follow_up, found = next(((p, f) for p, f in found_any if 0 < f.confidence < 1 and f.task != "reason"),
                            (None, None))
    if follow_up is None:  # pragma: no cover
        pytest.skip("no uncertain non-reason prompt for this classifier")
    escalating = {"uncertain_below": 1.0, "uncertain_task": "reason"}
    classified_chain = ["coder", "talker"] if found.task == "code" else ["talker", "coder"]
    routes = ROUTES | {found.task: classified_chain}

    def turn2(router: ZetaDynamicRouter) -> list[dict[str, str]]:
        return first_turn(router, model="coder")[:-1] + [{"role": "user", "content": follow_up}]

    router = make_router(routes=routes, **escalating)
    result = router.chat(turn2(router))
    assert (result.model, result.task, result.route.escalated) == ("coder", found.task, False)
    assert result.route.chain == ("coder", "talker")
    assert result.route.reason.startswith("affinity: continues the conversation answered by coder "
                                          f"(kept on {found.task}, not escalated); uncertain (")
    # With the coder in the escalated chain, the request runs that chain, the coder first.
    in_reason = make_router(routes=routes | {"reason": ["thinker", "coder"]}, **escalating)
    result = in_reason.chat(turn2(in_reason))
    assert (result.model, result.task, result.route.chain) == ("coder", "reason", ("coder", "thinker"))
    assert result.route.escalated and result.route.reason.startswith(
        "affinity: continues the conversation answered by coder; uncertain (")
    # Neither chain has it: escalation as usual.
    elsewhere = make_router(routes=routes | {found.task: ["talker"]}, **escalating)
    result = elsewhere.chat(turn2(elsewhere))
    assert (result.model, result.task, result.route.affinity) == ("thinker", "reason", None)


def test_a_failed_model_loses_the_affinity(make_router):
    """The coder fails in the middle of turn 2 (an error injected into its real backend after
    4 pieces; turn 1 asks for 3): the talker continues the answer, and a retry of turn 2 is
    routed afresh. The talker, having answered, keeps turn 3."""
    router = make_router(faults="coder=raise_after:4")
    turn2 = first_turn(router, max_tokens=3)
    events = list(router.stream(turn2, max_tokens=12))
    hop = next(e for e in events if isinstance(e, Fallback))
    assert (hop.from_model, hop.to_model, hop.outcome) == ("coder", "talker", "error")
    done = events[-1]
    assert isinstance(done, Done) and done.result.model == "talker"
    assert done.result.route.affinity == "coder"
    retry = router.chat(turn2, max_tokens=3)
    assert (retry.route.affinity, retry.model) == (None, "talker")
    turn3 = turn2 + [{"role": "assistant", "content": done.result.text}, {"role": "user", "content": "ok"}]
    assert router.chat(turn3, max_tokens=3).route.affinity == "talker"


def test_a_model_failing_alone_loses_the_affinity(make_router):
    """With no model after it in the chain, the request fails, and the affinity goes too."""
    from zeta_local import FallbackExhausted

    router = make_router(faults="coder=raise_after:4", routes=ROUTES | {"chat": ["coder"]})
    turn2 = first_turn(router, max_tokens=3)
    with pytest.raises(FallbackExhausted):
        router.chat(turn2, max_tokens=12)
    assert router._affinity.recall(turn2) is None


def test_not_while_the_model_is_cooling_down(make_router):
    router = make_router(allowed_fails=1)
    turn2 = first_turn(router)
    router._chains._breaker.record("coder", failed=True)  # as a failed request would
    result = router.chat(turn2)
    assert (result.model, result.route.affinity) == ("talker", None)


def test_off_in_the_config(make_router):
    router = make_router(affinity=False)
    turn2 = first_turn(router)
    assert router.chat(turn2).model == "talker"


def test_plain_prompts_have_no_conversation(make_router):
    router = make_router()
    first_turn(router)
    assert router.generate(FOLLOW_UP).model == "talker"


# ---- the memory itself ---------------------------------------------------------------------

def convo(i: int) -> list[dict[str, str]]:
    return [{"role": "user", "content": f"question {i}"}]


def test_history_is_up_to_the_last_assistant_message():
    messages = [{"role": "system", "content": "s"}, {"role": "user", "content": "u1"},
                {"role": "assistant", "content": "a1"}, {"role": "user", "content": "u2"},
                {"role": "user", "content": "u3"}]
    assert history(messages) == messages[:3]
    assert history(messages[:2]) is None
    assert conversation_key([{"role": "user", "content": " x\n"}]) == conversation_key([{"role": "user", "content": "x"}])
    assert conversation_key([{"role": "user", "content": "x"}]) != conversation_key([{"role": "system", "content": "x"}])


def test_the_memory_is_a_bounded_lru():
    memory = ConversationAffinity(max_conversations=2)
    for i in range(2):
        memory.remember(convo(i), f"answer {i}", f"m{i}")
    follow = [lambda i: convo(i) + [{"role": "assistant", "content": f"answer {i}"},
                                    {"role": "user", "content": "more"}]][0]
    assert memory.recall(follow(0)) == "m0"  # now the most recently used
    memory.remember(convo(2), "answer 2", "m2")  # evicts conversation 1, the least recently used
    assert len(memory) == 2
    assert (memory.recall(follow(0)), memory.recall(follow(1)), memory.recall(follow(2))) == ("m0", None, "m2")
    memory.forget(follow(0), "someone else")  # only the model it names is forgotten
    assert memory.recall(follow(0)) == "m0"
    memory.forget(follow(0), "m0")
    assert memory.recall(follow(0)) is None


def test_the_memory_is_thread_safe():
    memory = ConversationAffinity(max_conversations=50)
    errors: list[BaseException] = []

    def hammer(t: int) -> None:
        try:
            for i in range(300):
                n = (t * 7 + i) % 120
                memory.remember(convo(n), "a", f"m{t}")
                turn = convo(n) + [{"role": "assistant", "content": "a"}, {"role": "user", "content": "b"}]
                model = memory.recall(turn)
                assert model is None or model.startswith("m")
                if i % 5 == 0 and model is not None:
                    memory.forget(turn, model)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=hammer, args=(t,)) for t in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == [] and len(memory) <= 50


def test_the_affinity_benchmark_runs(tiny_models, tmp_path):
    """bench_routing on a generated model, one pair: turn 2 stays on `a` with affinity and goes
    to `b` without, and `a`'s context holds most of turn 2's prompt. (No timing is asserted.)"""
    from zeta_local.bench_routing import measure_affinity

    result = measure_affinity(tiny_models["tiny-a"], tmp_path, pairs=1, functions=2, turn1_tokens=8,
                              turn2_tokens=2)
    assert result["answered_by"] == {"on": ["a"], "off": ["b"]}
    assert result["route_reason_on"].startswith("affinity: continues the conversation answered by a")
    assert 0 < result["kv_prefix_reusable_tokens"] < result["turn2_prompt_tokens"]
    assert len(result["ttft_ms_on"]) == len(result["ttft_ms_off"]) == 1 and result["ratio_off_over_on"] > 0
