"""English glosses of other languages' words (zeta_local.glosses) and how the learned stage uses them."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest

from zeta_local import classifier as C
from zeta_local import classifier_rules as rules
from zeta_local import glosses
from zeta_local import learned_classifier as learned

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
import build_glosses  # noqa: E402


def concepts(text: str) -> dict[str, str]:
    lower, tokens = rules.lower_and_tokens(text)
    return {word: form for form, word in glosses.lexicon().concepts(lower, tokens)}


@pytest.mark.parametrize("text, word", [
    ("Wie hoch ist die Wahrscheinlichkeit, mit zwei Würfeln eine Sieben zu werfen?", "probability"),  # a whole word
    ("Mikä on todennäköisyys, että kolikko näyttää kruunaa kolme kertaa peräkkäin?", "probability"),
    ("दो पासों से कुल 7 आने की संभावना क्या है?", "probability"),  # Devanagari, with a trailing "?"
    ("ช่วยบอกสูตรอาหารผัดไทยแบบง่ายๆ หน่อย", "recipe"),  # Thai: no spaces, found inside the text
    ("xác suất để tung đồng xu ra mặt sấp ba lần liên tiếp là bao nhiêu?", "probability"),  # a phrase
    ("мой скрипт на сервере падает с ошибкой", "error"),  # Russian, inflected: a stem
])
def test_a_word_of_another_language_is_read_as_its_english_concept(text, word):
    assert word in concepts(text), concepts(text)


@pytest.mark.parametrize("text", [
    "Write a Python function that reverses a string",
    "my sister is taller than my brother but shorter than me, who is tallest?",
    "can you recommend a good book for a long train ride",
    "docker compose up fails: port is already allocated",
    "SELECT name, count(*) FROM orders GROUP BY name HAVING count(*) > 3",
])
def test_an_english_prompt_gets_no_glosses(text):
    """English is what the weights were trained on: a gloss there could only add noise."""
    assert concepts(text) == {}


def test_english_tuning_prompts_are_almost_never_glossed():
    """The build drops ASCII forms that English prompts use; what is left must stay rare there."""
    rows = [json.loads(line) for line in (ROOT / "tests/data/classifier/tuning.jsonl").read_text(
        encoding="utf-8").splitlines() if line.strip()]
    english = [r["prompt"] for r in rows if r["prompt"].isascii()
               and build_glosses.reads_english(rules.lower_and_tokens(r["prompt"])[1])]
    glossed = [p for p in english if concepts(p)]
    assert len(english) > 10_000
    assert len(glossed) <= 0.01 * len(english), glossed[:20]


def test_the_learned_stage_names_the_gloss_that_weighed():
    """The gloss counts as the English word's unigram, and the reason shows both."""
    text = "दो पासों से कुल 7 आने की संभावना क्या है?"
    decision = rules.decide(text)
    features = learned.extract(text, decision)
    assert features.glosses and ("संभावना", "probability") in features.glosses
    names = [features.word_name(i) for i in range(features.n_words)]
    assert "संभावना (probability)" in names
    english = learned.extract("what is the probability", rules.decide("what is the probability"))
    probability_bucket = english.index[english.tokens.index("probability")]
    assert probability_bucket in features.index[:features.n_words]


def test_the_lexicon_covers_many_languages_and_every_concept():
    lexicon = json.loads(glosses.GLOSSES_PATH.read_text(encoding="utf-8"))
    assert len(lexicon) >= 60
    for language, spec in lexicon.items():
        assert set(spec["forms"]) == set(lexicon["German"]["forms"]), language


def test_the_shipped_lexicon_is_what_the_build_gives():
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "build_glosses.py"), "--check"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_build_refuses_a_concept_without_a_task():
    """Each concept counts for its task ("g reason"): one with none would be missing at run time."""
    source = {"Esperanto": {"forms": {"probability": ["probableco"], "teapot": ["tekruĉo"]}}}
    with pytest.raises(ValueError, match="'teapot' has no task"):
        build_glosses.build(source)


def test_a_missing_lexicon_costs_the_glosses_not_the_decision(tmp_path, monkeypatch, caplog):
    assert C._model() is not None  # loaded (and cached) with the real lexicon, as in a running process
    monkeypatch.setattr(glosses, "GLOSSES_PATH", tmp_path / "absent.json")
    glosses.lexicon.cache_clear()
    try:
        with caplog.at_level(logging.ERROR):
            assert concepts("दो पासों से कुल 7 आने की संभावना क्या है?") == {}
        assert "cannot read" in caplog.text
        assert C.classify("दो पासों से कुल 7 आने की संभावना क्या है?").task in C.TASKS
    finally:  # the empty lexicon must not outlive the test: restore the path, then forget it
        monkeypatch.undo()
        glosses.lexicon.cache_clear()


def test_weights_trained_with_other_glosses_are_refused(monkeypatch):
    """The glosses are features: weights fitted with another lexicon would read the wrong ones.
    load() refuses them (and classify() then falls back to the rules, see _model)."""
    monkeypatch.setattr(glosses, "lexicon", lambda: glosses.Lexicon({}))
    with pytest.raises(ValueError, match="other glosses"):
        learned.load()
