"""Chat rendering, stop strings across token boundaries, and the fault-spec parser."""

from __future__ import annotations

import pytest

from zeta_local.backend import _StopScanner
from zeta_local.errors import InvalidRequest
from zeta_local.faults import Fault, parse_faults
from zeta_local.prompt_format import render_chat, validate_messages

MESSAGES = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello."}, {"role": "user", "content": "Why?"}]


def test_plain_format_for_base_models():
    """A base model gets a Q&A transcript ending with the answer cue; it stops at the next question."""
    rendered = render_chat(MESSAGES, None, None)
    assert rendered.text == "Be brief.\n\nQuestion: Hi\nAnswer: Hello.\nQuestion: Why?\nAnswer:"
    assert rendered.stop == ("\nQuestion:",) and rendered.format == "plain"


def test_chat_format_overrides_the_gguf_template():
    """`chat_format` in models.toml wins over a template the GGUF carries."""
    rendered = render_chat(MESSAGES, "chatml", "{{ 'ignored' }}")
    assert rendered.text.startswith("<|im_start|>system\nBe brief.<|im_end|>\n")
    assert rendered.text.endswith("<|im_start|>assistant\n") and rendered.stop == ("<|im_end|>",)


def test_gemma_folds_the_system_prompt_into_the_first_user_turn():
    """Gemma has no system role."""
    rendered = render_chat(MESSAGES, "gemma", None)
    assert rendered.text.startswith("<start_of_turn>user\nBe brief.\n\nHi<end_of_turn>\n")
    assert "<start_of_turn>model\nHello.<end_of_turn>\n" in rendered.text
    assert rendered.text.endswith("<start_of_turn>model\n")


def test_gguf_template_gets_bos_eos_and_generation_prompt():
    """The GGUF's Jinja template renders with the variables llama.cpp templates expect; a
    leading BOS is dropped because the tokenizer adds it."""
    template = "{{ bos_token }}{% for m in messages %}[{{ m.role }}]{{ m.content }}{{ eos_token }}{% endfor %}" \
               "{% if add_generation_prompt %}[assistant]{% endif %}"
    rendered = render_chat(MESSAGES[1:2], None, template, bos_token="<s>", eos_token="</s>")
    assert rendered.text == "[user]Hi</s>[assistant]"
    assert rendered.stop == ("</s>",)


def test_template_raise_exception_becomes_value_error():
    """Templates that reject a conversation (e.g. roles out of order) fail cleanly."""
    template = "{{ raise_exception('roles must alternate') }}"
    with pytest.raises(ValueError, match="roles must alternate"):
        render_chat(MESSAGES, None, template)


@pytest.mark.parametrize("messages, fragment", [
    ("hello", "non-empty list"),
    ([{"role": "user"}], "content"),
    ([{"role": "user", "content": 3}], "must be a string"),
    ([{"role": "user", "content": "  "}], "no user text"),
    ([["user", "hi"]], "must be a dict"),
])
def test_bad_messages(messages, fragment):
    """Malformed conversations are rejected with the index and field at fault."""
    with pytest.raises(ValueError, match=fragment):
        validate_messages(messages)


def test_stop_string_split_across_pieces_is_never_emitted():
    """"\\nUser:" arriving as "\\nUs" + "er:" must not leak its first half to the stream."""
    scanner = _StopScanner(("\nUser:",))
    out = []
    for piece in ["Hello", " there", "\nUs", "er:", " more"]:
        text, stopped = scanner.feed(piece)
        out.append(text)
        if stopped:
            break
    assert "".join(out) == "Hello there" and scanner.stopped


def test_held_back_text_is_released_when_it_is_not_a_stop():
    """A partial match that turns out not to be a stop string is emitted, nothing lost."""
    scanner = _StopScanner(("\nUser:",))
    assert scanner.feed("a\nUs") == ("a", False)
    assert scanner.feed("ually") == ("\nUsually", False)
    assert scanner.flush("!\nU") == "!\nU"


def test_fault_specs():
    """MODEL=KIND;MODEL=KIND:N, with whitespace tolerated and mistakes rejected."""
    assert parse_faults(" a=fail_load ; b-2=raise_after:3;") == {
        "a": Fault("fail_load"), "b-2": Fault("raise_after", 3)}
    assert parse_faults("x=stall_after:3;y=hang_prefill;z=slow_token:50") == {
        "x": Fault("stall_after", 3), "y": Fault("hang_prefill"), "z": Fault("slow_token", 50)}
    for bad in ("a", "a=raise_after", "a=fail_load:2", "a=melt", "=fail_load"):
        with pytest.raises(InvalidRequest, match="cannot read"):
            parse_faults(bad)


def test_plain_writes_an_answer_back_as_the_model_wrote_it():
    """An earlier answer follows "Answer:" exactly as generated (here a newline first), so that
    the next turn's prompt starts with the tokens the model's context holds and its KV cache is
    reused; an answer without leading whitespace gets the usual space."""
    from zeta_local.prompt_format import render_chat

    turn1 = [{"role": "user", "content": "What does it do?"}]
    first = render_chat(turn1, "plain", None).text
    generated = "\nIt sums two numbers.\n"
    turn2 = render_chat(turn1 + [{"role": "assistant", "content": generated},
                                 {"role": "user", "content": "Shorter?"}], "plain", None).text
    assert turn2 == first + generated.rstrip() + "\nQuestion: Shorter?\nAnswer:"
    trimmed = render_chat(turn1 + [{"role": "assistant", "content": "It sums."},
                                   {"role": "user", "content": "Shorter?"}], "plain", None).text
    assert trimmed == "Question: What does it do?\nAnswer: It sums.\nQuestion: Shorter?\nAnswer:"
