"""English glosses for words of other languages, so that the learned stage can read them.

The learned stage's weights come from mostly English prompts: a prompt in Telugu or Somali
shares no n-gram with them, and used to be decided on its shape alone (out of fold, prompts in
non-Latin scripts were right 73 % of the time against 95 % for the rest). data/glosses.json
maps common words of 83 languages to the English concept they stand for ("احتمال" ->
"probability"), and the learned stage adds each concept a prompt names as if the English word
were in it, so its English weight applies.

Three kinds of match, each as cheap as the prompt allows:
* a whole token; or, for a token with a non-ASCII letter, a stem that begins it (agglutinating
  languages: "todennäköisyyden" begins with the Finnish stem "todennäköisyy");
* a phrase of several tokens (Vietnamese words have spaces in them), looked for only when the
  prompt has every token of it;
* a form written inside running text (Chinese, Japanese, Thai, Lao, Khmer, Burmese put no
  spaces between words), looked for (in the first _SUBSTRING_CHARS characters) only when the
  prompt has the form's first character.

An English prompt costs two set intersections, and finds nothing: the lexicon holds no ASCII
form that English prompts use (scripts/build_glosses.py drops them).
"""

from __future__ import annotations

import hashlib
import json
import logging
from functools import lru_cache
from pathlib import Path

logger = logging.getLogger(__name__)

GLOSSES_PATH = Path(__file__).resolve().parent / "data" / "glosses.json"

# Concept keys that are phrases: the English word that carries their weight.
_CONCEPT_WORD = {"how_many": "many", "how_much": "much", "next_to": "next", "kilometres": "km", "odd_one_out": "odd"}
# The task each concept speaks for, as the lexicon's brief listed them. The learned stage counts
# a prompt's concepts per task ("g reason"): the rules' scores do that for English words, and
# a prompt in another language fires almost no rule (feature version 6).
CONCEPT_TASK = {c: task for task, words in {
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
_MIN_STEM = 3  # characters; a shorter stem begins too many unrelated words
_MAX_TOKEN = 30  # longer tokens are pasted data, not words
_MAX_SUFFIX = 8  # a stem is tried with at most this many characters of ending after it
# Scripts without spaces are searched form by form: in the first this many characters only, so
# that a long paste in Chinese costs no more than a short one.
_SUBSTRING_CHARS = 600


class Lexicon:
    """Look-up tables built once from data/glosses.json."""

    def __init__(self, languages: dict[str, dict]):
        self.words: dict[str, str] = {}  # whole token or stem -> English word
        # first token -> [(" form ", word, its other tokens)]
        self.phrases: dict[str, list[tuple[str, str, frozenset[str]]]] = {}
        self.substrings: dict[str, list[tuple[str, str]]] = {}  # first character -> [(form, word)]
        for spec in languages.values():
            for concept, forms in spec["forms"].items():
                word = _CONCEPT_WORD.get(concept, concept)
                for form in forms:
                    form = form.strip().lower()
                    if not form:
                        continue
                    if not spec.get("spaces", True):
                        self.substrings.setdefault(form[0], []).append((form, word))
                    elif " " in form:
                        first, *rest = form.split()
                        self.phrases.setdefault(first, []).append((f" {form} ", word, frozenset(rest)))
                    else:
                        self.words.setdefault(form, word)
        # English word -> the task its concept speaks for
        self.task_of = {_CONCEPT_WORD.get(c, c): task for c, task in CONCEPT_TASK.items()}
        self.word_keys = frozenset(self.words)
        self.phrase_keys = frozenset(self.phrases)
        self.substring_keys = frozenset(self.substrings)
        # Stored with the weights: trained with other glosses, they would read other features.
        phrases = sorted((k, sorted((form, word) for form, word, _ in v)) for k, v in self.phrases.items())
        self.digest = hashlib.sha256(json.dumps([sorted(self.words.items()), sorted(
            (k, sorted(v)) for k, v in self.substrings.items()), phrases, sorted(self.task_of.items())],
            ensure_ascii=False).encode()).hexdigest()[:16]

    def concepts(self, lower: str, tokens: list[str]) -> list[tuple[str, str]]:
        """[(form found, English word)] for each concept the text names, sorted by word."""
        found: dict[str, str] = {}  # English word -> the form that named it
        token_set = set(tokens)
        for token in sorted(self.word_keys & token_set):  # whole tokens
            found.setdefault(self.words[token], token)
        first_tokens = self.phrase_keys & token_set
        if first_tokens:
            joined = f" {' '.join(tokens)} "
            for first in sorted(first_tokens):
                for form, word, rest in self.phrases[first]:
                    # Its other tokens must all occur before the search of the whole text: an English
                    # prompt has "a", "in", "per", which begin phrases of other languages.
                    if word not in found and rest <= token_set and form in joined:
                        found[word] = form.strip()
        if not lower.isascii():
            self._stems(tokens, found)
            self._substrings(lower[:_SUBSTRING_CHARS], found)
        return sorted((form, word) for word, form in found.items())

    def _stems(self, tokens: list[str], found: dict[str, str]) -> None:
        """Stems only of tokens with a non-ASCII letter: an ASCII stem would begin English words."""
        words = self.words
        for token in sorted({t for t in tokens if not t.isascii() and len(t) <= _MAX_TOKEN}):
            for end in range(len(token) - 1, max(_MIN_STEM, len(token) - _MAX_SUFFIX) - 1, -1):
                word = words.get(token[:end])
                if word is not None:
                    found.setdefault(word, token[:end])
                    break

    def _substrings(self, head: str, found: dict[str, str]) -> None:
        """Forms of scripts written without spaces whose first character the text has."""
        for first in sorted(self.substring_keys.intersection(head)):
            for form, word in self.substrings[first]:
                if word not in found and form in head:
                    found[word] = form


@lru_cache(maxsize=1)
def lexicon() -> Lexicon:
    """The shipped lexicon; an empty one (and a logged error) if its file cannot be read."""
    try:
        with GLOSSES_PATH.open(encoding="utf-8") as f:
            return Lexicon(json.load(f))
    except Exception:  # glosses help other languages; without them routing still works
        logger.exception("classifier: cannot read %s; prompts in other languages lose their glosses", GLOSSES_PATH)
        return Lexicon({})
