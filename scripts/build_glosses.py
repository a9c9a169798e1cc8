#!/usr/bin/env python3
"""Build zeta_local/data/glosses.json (the learned stage's English glosses of other languages'
words, see zeta_local/glosses.py) from the lexicon as written, dropping the forms that would
misfire on English prompts.

Run from the repository root:  python scripts/build_glosses.py [--check]

Reads tests/data/classifier/glosses_source.json ({language: {iso, script, spaces, forms:
{concept: [form, ...]}}}, written by hand; see the data README) and tuning.jsonl (never the
held-out part). A form is dropped when it is:
* too short to be specific: under 4 letters in ASCII, under 3 characters otherwise (2 for
  Chinese and Japanese, whose words are short);
* an ASCII word that English prompts use: a token of at least MIN_ENGLISH_DOCS tuning prompts
  that read as English (ASCII forms are only ever matched as whole tokens);
* claimed by concepts of two different tasks (in one language or two: a word that means
  "table" in one language and "recipe" in another). Synonyms (cost and price) keep the form.
--check exits 1 if the committed file differs from what the build gives.
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
import unicodedata
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # this checkout's zeta_local, whatever is installed

from zeta_local import glosses  # noqa: E402
from zeta_local.classifier_rules import lower_and_tokens  # noqa: E402

SOURCE = ROOT / "tests" / "data" / "classifier" / "glosses_source.json"
TUNING = ROOT / "tests" / "data" / "classifier" / "tuning.jsonl"
MIN_ENGLISH_DOCS = 3
_SHORT_WORD_SCRIPTS = {"Chinese", "Japanese"}
# Which prompts read as English: this share of its tokens are English function words, ones that
# other languages do not use as common words of their own ("in", "was", "is", "my", "to", "for",
# "of" and "i" are German, Dutch, Polish, Danish or Czech words too).
_ENGLISH_SHARE = 0.12
_ENGLISH_WORDS = frozenset(
    "the and you your what how why when where which with this that these those from have has does did "
    "not can could would should than then there about are were been its".split())


def reads_english(tokens: list[str]) -> bool:
    if not tokens:
        return True
    return sum(1 for t in tokens if t in _ENGLISH_WORDS) >= _ENGLISH_SHARE * len(tokens)


def english_tokens() -> collections.Counter:
    """Document frequency of every token of the tuning prompts that read as English."""
    df: collections.Counter = collections.Counter()
    for line in TUNING.read_text(encoding="utf-8").splitlines():
        if line.strip():
            _, tokens = lower_and_tokens(json.loads(line)["prompt"])
            if tokens and reads_english(tokens):
                df.update(set(tokens))
    return df


def build(source: dict) -> tuple[dict, collections.Counter]:
    owners: dict[str, set[str]] = collections.defaultdict(set)
    for language, spec in source.items():
        for concept, forms in spec["forms"].items():
            if concept not in glosses.CONCEPT_TASK:  # the learned stage counts concepts per task
                raise ValueError(f"{language}: concept {concept!r} has no task: add it to glosses.CONCEPT_TASK")
            for form in forms:
                owners[_normal(form)].add(glosses.CONCEPT_TASK[concept])
    df = english_tokens()
    common = {t for t, n in df.items() if n >= MIN_ENGLISH_DOCS and t.isascii()}

    dropped: collections.Counter = collections.Counter()
    out = {}
    for language, spec in sorted(source.items()):
        kept = {}
        for concept, forms in spec["forms"].items():
            good = []
            for form in dict.fromkeys(_normal(f) for f in forms):
                shortest = 4 if form.isascii() else 2 if language in _SHORT_WORD_SCRIPTS else 3
                if len(form) < shortest:
                    dropped["too short"] += 1
                elif form.isascii() and form in common:
                    dropped["English"] += 1
                elif len(owners[form]) > 1:
                    dropped["two tasks"] += 1
                else:
                    good.append(form)
            kept[concept] = good
        out[language] = {"iso": spec.get("iso", ""), "script": spec.get("script", ""),
                         "spaces": bool(spec.get("spaces", True)), "forms": kept}
    return out, dropped


def _normal(form: str) -> str:
    return " ".join(unicodedata.normalize("NFC", form).lower().split())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only compare with the committed file")
    args = parser.parse_args()
    try:
        out, dropped = build(json.loads(SOURCE.read_text(encoding="utf-8")))
    except ValueError as exc:
        print(f"{SOURCE}: {exc}", file=sys.stderr)
        return 1
    text = json.dumps(out, ensure_ascii=False, indent=1, sort_keys=True) + "\n"
    forms = sum(len(f) for spec in out.values() for f in spec["forms"].values())
    print(f"{len(out)} languages, {forms} forms kept; dropped: {dict(dropped)}")
    if args.check:
        same = glosses.GLOSSES_PATH.exists() and glosses.GLOSSES_PATH.read_text(encoding="utf-8") == text
        print("up to date" if same else f"{glosses.GLOSSES_PATH} is out of date: run scripts/build_glosses.py")
        return 0 if same else 1
    glosses.GLOSSES_PATH.write_text(text, encoding="utf-8")
    print(f"wrote {glosses.GLOSSES_PATH}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
