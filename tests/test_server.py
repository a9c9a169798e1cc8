"""The OpenAI-compatible server, through the official `openai` client: a real uvicorn server on
a free loopback port, over a router of real (tiny) llama.cpp models with faults injected into
the real backend. What the server answers must be what the router answers in-process, and the
model named in every response, header and stream chunk must be the model that produced it."""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
import openai
import pytest

from conftest import GPU_BUILD

GREEDY = {"temperature": 0, "seed": 7, "max_tokens": 16}
FAST = {"first_token_timeout_s": 0.5, "stall_timeout_s": 0.5, "load_timeout_s": 5}
HELLO = [{"role": "user", "content": "hello there"}]


def client(server: Any, **options: Any) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url + "/v1", api_key=options.pop("api_key", "unused"),
                         max_retries=0, timeout=60, **options)


@pytest.fixture
def one_model(serve: Callable[..., Any]) -> tuple[Any, Any]:
    return serve({"talker": {"model": "tiny-a"}})


def test_chat_answers_as_the_router_does_and_names_the_model(one_model):
    server, router = one_model
    raw = client(server).chat.completions.with_raw_response.create(model="auto", messages=HELLO, **GREEDY)
    completion = raw.parse()
    expected = router.chat(HELLO, **GREEDY)
    assert completion.model == "talker" and completion.object == "chat.completion"
    assert completion.choices[0].message.role == "assistant"
    assert completion.choices[0].message.content == expected.text
    assert completion.choices[0].finish_reason == expected.finish_reason
    assert completion.usage.completion_tokens == expected.usage.completion_tokens > 0
    assert completion.usage.total_tokens == completion.usage.prompt_tokens + completion.usage.completion_tokens
    zeta = completion.model_extra["zeta"]
    assert zeta["task"] == expected.task and zeta["route_reason"] == expected.route.reason
    assert [(a["model"], a["outcome"]) for a in zeta["attempts"]] == [("talker", "ok")]
    assert raw.headers["x-zeta-model"] == "talker"
    assert raw.headers["x-zeta-task"] == expected.task
    assert raw.headers["x-zeta-attempts"] == "talker:ok"


def test_chat_streams_the_same_text_and_ends_with_usage(one_model):
    server, router = one_model
    chunks = list(client(server).chat.completions.create(
        model="chat", messages=HELLO, stream=True, stream_options={"include_usage": True}, **GREEDY))
    expected = router.chat(HELLO, task="chat", **GREEDY)
    *text_chunks, final, usage = chunks
    assert text_chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in text_chunks) == expected.text
    assert all(c.model == "talker" and c.object == "chat.completion.chunk" for c in chunks)
    assert all(c.choices[0].finish_reason is None and c.usage is None for c in text_chunks)
    assert final.choices[0].finish_reason == expected.finish_reason
    assert final.model_extra["zeta"]["attempts"][-1]["outcome"] == "ok"
    assert usage.choices == [] and usage.usage.completion_tokens == expected.usage.completion_tokens


def test_stream_without_include_usage_has_no_usage_chunk(one_model):
    server, _ = one_model
    chunks = list(client(server).chat.completions.create(model="auto", messages=HELLO, stream=True,
                                                         **GREEDY))
    assert chunks[-1].choices[0].finish_reason in ("stop", "length")
    assert all("usage" not in c.model_extra and c.usage is None for c in chunks)


def test_completions_plain_and_streamed(one_model):
    server, router = one_model
    openai_client = client(server)
    expected = router.generate("Once upon a time", task="chat", **GREEDY)
    completion = openai_client.completions.create(model="chat", prompt="Once upon a time", **GREEDY)
    assert completion.object == "text_completion" and completion.model == "talker"
    assert completion.choices[0].text == expected.text
    streamed = list(openai_client.completions.create(model="chat", prompt="Once upon a time",
                                                     stream=True, **GREEDY))
    assert "".join(c.choices[0].text for c in streamed) == expected.text
    assert streamed[-1].choices[0].finish_reason == expected.finish_reason


@pytest.mark.parametrize("encoding_format", ["base64", "float"])
def test_embeddings_are_identical_to_router_embed(one_model, encoding_format: str):
    server, router = one_model
    texts = ["first text", "a second, longer text to embed"]
    kwargs = {} if encoding_format == "base64" else {"encoding_format": "float"}  # base64: the client's default
    response = client(server).embeddings.create(model="auto", input=texts, **kwargs)
    expected = router.embed(texts)
    assert response.model == expected.model == "talker"
    got = np.array([row.embedding for row in response.data], dtype=np.float32)
    assert got.shape == expected.vectors.shape
    if GPU_BUILD:  # two runs of the same batch on a GPU may sum in another order (~5e-5)
        np.testing.assert_allclose(got, expected.vectors, rtol=0, atol=1e-4)
    else:  # on the CPU the server's vectors are the router's, bit for bit
        assert np.array_equal(got, expected.vectors)


def test_models_lists_auto_the_tasks_and_every_model(serve: Callable[..., Any], tmp_path):
    server, _ = serve({"talker": {"model": "tiny-a"},
                       "absent": {"path": str(tmp_path / "nowhere.gguf")}},
                      routes={task: ["talker"] for task in ("code", "reason", "chat", "embed")})
    listed = {m.id: m for m in client(server).models.list()}
    assert {"auto", "code", "reason", "chat", "embed", "talker", "absent"} <= set(listed)
    assert listed["talker"].model_extra["zeta"]["file_present"] is True
    assert listed["absent"].model_extra["zeta"]["file_present"] is False
    assert listed["code"].model_extra["zeta"]["chain"] == ["talker"]
    assert client(server).models.retrieve("talker").id == "talker"
    with pytest.raises(openai.NotFoundError):
        client(server).models.retrieve("gpt-4o")


def test_a_model_name_means_that_model_alone(serve: Callable[..., Any]):
    server, _ = serve({"first": {"model": "tiny-a"}, "second": {"model": "tiny-b"}},
                      faults="second=raise_after:0")
    completion = client(server).chat.completions.create(model="first", messages=HELLO, **GREEDY)
    assert completion.model == "first"
    with pytest.raises(openai.APIStatusError) as failed:  # never a substitute for the model asked for
        client(server).chat.completions.create(model="second", messages=HELLO, **GREEDY)
    assert failed.value.status_code == 503
    assert [a["model"] for a in failed.value.body["zeta"]["attempts"]] == ["second"]


def test_a_two_turn_conversation_keeps_its_model(serve: Callable[..., Any]):
    """Conversation affinity over HTTP: turn 1 (code, streamed: the answering model is recorded
    at the stream's end) goes to the coder; turn 2, a follow-up the classifier calls chat, stays
    on the coder, and the zeta object says why. The same follow-up alone goes to chat's model."""
    server, _ = serve({"coder": {"model": "tiny-a"}, "talker": {"model": "tiny-b"}},
                      routes={"code": ["coder", "talker"], "chat": ["talker", "coder"]},
                      router={"uncertain_below": 0})
    openai_client = client(server)
    turn1 = [{"role": "user", "content": "def add(a, b):\n    return a + b\n# write a unit test for this in Python"}]
    chunks = list(openai_client.chat.completions.create(model="auto", messages=turn1, stream=True, **GREEDY))
    assert {c.model for c in chunks} == {"coder"}
    answer = "".join(c.choices[0].delta.content or "" for c in chunks)
    turn2 = turn1 + [{"role": "assistant", "content": answer.strip()},
                     {"role": "user", "content": "Thanks! Can you say that more briefly?"}]
    raw = openai_client.chat.completions.with_raw_response.create(model="auto", messages=turn2, **GREEDY)
    completion = raw.parse()
    zeta = completion.model_extra["zeta"]
    assert completion.model == "coder" and raw.headers["x-zeta-model"] == "coder"
    assert (zeta["task"], zeta["classified_task"], zeta["escalated"], zeta["affinity"]) == (
        "chat", "chat", False, "coder")
    assert zeta["route_reason"].startswith("affinity: continues the conversation answered by coder; chat")
    streamed = list(openai_client.chat.completions.create(model="auto", messages=turn2, stream=True, **GREEDY))
    assert {c.model for c in streamed} == {"coder"}
    assert streamed[-1].model_extra["zeta"]["affinity"] == "coder"
    alone = openai_client.chat.completions.create(model="auto", messages=turn2[-1:], **GREEDY)
    assert alone.model == "talker" and alone.model_extra["zeta"]["affinity"] is None


def test_unknown_model_is_404_naming_the_choices(one_model):
    server, _ = one_model
    with pytest.raises(openai.NotFoundError) as failed:
        client(server).chat.completions.create(model="gpt-4o", messages=HELLO)
    assert failed.value.body["code"] == "model_not_found"
    message = failed.value.body["message"]
    assert "'gpt-4o'" in message and "auto" in message and "talker" in message


# ---- fallbacks, visible everywhere ---------------------------------------------------------


@pytest.fixture
def failing_first(serve: Callable[..., Any]) -> tuple[Any, Any]:
    return serve({"first": {"model": "tiny-a"} | FAST, "second": {"model": "tiny-b"}},
                 faults="first=raise_after:0")


def test_fallback_shows_in_model_and_headers(failing_first):
    server, _ = failing_first
    raw = client(server).chat.completions.with_raw_response.create(model="chat", messages=HELLO, **GREEDY)
    completion = raw.parse()
    assert completion.model == "second"
    assert raw.headers["x-zeta-model"] == "second"
    assert raw.headers["x-zeta-attempts"] == "first:error,second:ok"
    assert [a["outcome"] for a in completion.model_extra["zeta"]["attempts"]] == ["error", "ok"]


def test_fallback_before_the_first_token_shows_in_the_stream(failing_first):
    server, _ = failing_first
    with client(server).chat.completions.with_streaming_response.create(
            model="chat", messages=HELLO, stream=True, **GREEDY) as response:
        assert response.headers["x-zeta-model"] == "second"
        assert response.headers["x-zeta-attempts"] == "first:error,second:streaming"
        chunks = list(response.parse())
    hop = chunks[0].model_extra["zeta"]["fallback"]  # on the first text, of the model that gave it
    assert hop["from"] == "first" and hop["to"] == "second" and hop["outcome"] == "error"
    assert hop["continues"] is False and chunks[0].choices[0].delta.content
    assert all(c.model == "second" for c in chunks)  # no chunk names a model that wrote nothing
    assert [a["outcome"] for a in chunks[-1].model_extra["zeta"]["attempts"]] == ["error", "ok"]


def test_fallback_mid_answer_names_each_model_in_its_chunks(serve: Callable[..., Any]):
    server, _ = serve({"first": {"model": "tiny-a"} | FAST, "second": {"model": "tiny-b"}},
                      faults="first=stall_after:3", router={"max_tokens": 24})
    chunks = list(client(server).chat.completions.create(
        model="chat", messages=HELLO, stream=True, temperature=0, seed=7))
    models = [c.model for c in chunks if c.choices[0].delta.content]
    assert models[:3] == ["first"] * 3 and set(models[3:]) == {"second"}
    hops = [c for c in chunks if "fallback" in (c.model_extra.get("zeta") or {})]
    assert len(hops) == 1 and hops[0].model == "second" and hops[0].choices[0].delta.content
    hop = hops[0].model_extra["zeta"]["fallback"]
    assert (hop["from"], hop["to"], hop["outcome"], hop["continues"]) == ("first", "second", "stalled", True)
    assert chunks.index(hops[0]) == 3  # the second model's first text, after the first's three
    assert [(a["model"], a["outcome"]) for a in chunks[-1].model_extra["zeta"]["attempts"]] == [
        ("first", "stalled"), ("second", "ok")]


def test_every_model_failing_is_503_with_every_attempt(serve: Callable[..., Any]):
    server, _ = serve({"first": {"model": "tiny-a"}, "second": {"model": "tiny-b"}},
                      faults="first=raise_after:0;second=fail_load")
    for stream in (False, True):
        with pytest.raises(openai.InternalServerError) as failed:
            response = client(server).chat.completions.create(model="chat", messages=HELLO, stream=stream)
            list(response) if stream else None
        assert failed.value.status_code == 503
        body = failed.value.body
        assert body["code"] == "no_model_available" and "Traceback" not in body["message"]
        assert [(a["model"], a["outcome"]) for a in body["zeta"]["attempts"]] == [
            ("first", "error"), ("second", "load_failed")]


def test_api_key_is_required_when_configured(serve: Callable[..., Any]):
    server, _ = serve({"talker": {"model": "tiny-a"}}, api_key="s3cret")
    with pytest.raises(openai.AuthenticationError):
        client(server, api_key="wrong").chat.completions.create(model="auto", messages=HELLO)
    answer = client(server, api_key="s3cret").chat.completions.create(model="auto", messages=HELLO, **GREEDY)
    assert answer.model == "talker"
