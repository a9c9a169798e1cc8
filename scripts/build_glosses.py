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
# The concepts by the task they speak for, as the lexicon's brief listed them.
TASK_OF = {c: task for task, words in {
    "reason": "probability chance odds prove proof solve calculate equation sum total average percent how_many "
              "how_much cost price cheaper twice half each minutes hours kilometres speed distance logic riddle "
              "puzzle clue truth lie liar taller older younger sits next_to left right between order first last "
              "plan schedule estimate argument conclusion cause therefore must exactly number divide multiply "
              "minus plus square triangle area circle angle fraction prime remainder dice coin cards win weigh ages "
              "least fewest some none nobody valid necessarily pattern stand front guess fallacy false always "
              "arrange before which conclude deduce odd_one_out minimum maximum",
    "code": "code program programming function script error bug compile install database query table column file "
            "folder variable loop array string server app website button command terminal library package "
            "import output input print formula spreadsheet cell macro test deploy repository software computer "
            "crash debug syntax automate download",
    "chat": "recipe cook poem story song letter email message write advice recommend gift birthday friend mother "
            "father child wedding love feel sad travel trip holiday visit city history book movie music garden "
            "plant dog cat health doctor sleep weather clothes summary translate meaning phone wifi printer "
            "neighbour teacher thank hello who polite tips life ideas funny famous invented origin best suggest "
            "reply sentence language tradition food culture opinion"}.items() for c in words.split()}
_SHORT_WORD_SCRIPTS = {"Chinese", "Japanese"}


def english_tokens() -> collections.Counter:
    """Document frequency of every token of the tuning prompts that read as English."""
    df: collections.Counter = collections.Counter()
    for line in TUNING.read_text(encoding="utf-8").splitlines():
        if line.strip():
            _, tokens = lower_and_tokens(json.loads(line)["prompt"])
            if tokens and glosses._reads_english(tokens):
                df.update(set(tokens))
    return df


def build(source: dict) -> tuple[dict, collections.Counter]:
    df = english_tokens()
    common = {t for t, n in df.items() if n >= MIN_ENGLISH_DOCS and t.isascii()}
    owners: dict[str, set[str]] = collections.defaultdict(set)
    for spec in source.values():
        for concept, forms in spec["forms"].items():
            for form in forms:
                owners[_normal(form)].add(TASK_OF.get(concept, concept))

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
    out, dropped = build(json.loads(SOURCE.read_text(encoding="utf-8")))
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
