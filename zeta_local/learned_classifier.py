"""Second stage of the prompt classifier: multinomial logistic regression over hashed n-grams.

It decides the prompts the rules leave uncertain. Features are word uni- and bigrams, the
English words that other languages' words gloss (zeta_local.glosses) and how many glossed
concepts speak for each task, character 2- to 5-grams (digits folded to 0), the prompt's shape
(numbers, question mark, length, lines, script) and the rules' own findings (which signal
families fired, their scores), hashed into DIM buckets with stable hashes (zlib.crc32 for words
and names, a numpy polynomial hash for characters; never Python's salted hash()), so the same
prompt has the same features in every process. Run time needs numpy only; the weights, the
temperature and the gate live in data/classifier.npz, written by scripts/train_classifier.py.
"""

from __future__ import annotations

import logging
import re
import zlib
from dataclasses import dataclass
from itertools import islice
from pathlib import Path

import numpy as np

from zeta_local import glosses
from zeta_local.classifier_rules import TASKS, RuleDecision, family, lower_and_tokens, tokenize  # noqa: F401

logger = logging.getLogger(__name__)

# Bump when the features change: weights trained on other features are refused at load.
FEATURE_VERSION = 7
# 2^20 buckets: at 2^18 the ~200,000 weighted n-grams of the tuning prompts collided often.
# Out of fold (writer folds, 15,178 prompts) 2^20 was right on 0.33 points more than 2^18, and
# 2^21 on 0.07 more still, for twice the 12 MiB table.
DIM_BITS = 20
DIM = 1 << DIM_BITS
# Character 2-grams since feature version 3: out of fold on 20,597 prompts, 2-5 was right on
# 93.68 % against 93.39 % for 3-5 (reason recall 0.928 against 0.919) for 1 % more weights; 2-6
# gave 93.60 % for two thirds more (data README, held-out v6, step 4).
CHAR_NS = (2, 3, 4, 5)
WEIGHTS_PATH = Path(__file__).resolve().parent / "data" / "classifier.npz"

# Stored with the weights: its feature indices at training time must equal today's, or the
# weights would be read against the wrong buckets.
PROBE = ("Why does `pip install numpy` fail? Traceback: ValueError 3.14 -- who is taller, "
         "Ann or Bo? Write a haiku. \u00e9\u4e2d\U0001f600")

_MASK64 = (1 << 64) - 1
_CHAR_BASE = np.uint64(1_000_003)
_MIX = np.uint64(0x9E3779B97F4A7C15)  # Fibonacci hashing: the top bits of h * _MIX are well mixed
_SHIFT = np.uint64(64 - DIM_BITS)
_UNIGRAM_SALT = np.uint64(0x2545F4914F6CDD1D)
_BIGRAM_SALT = np.uint64(0x1B873593CC9E2D51)
# Words too common to explain anything to a reader (they still count as features).
STOP_WORDS = frozenset(
    "a an the and or but if of to in on at by for with from as is are was were be been being it its this that "
    "these those i me my we our you your he she him her they them their what whom how when where why "
    "do does did have has had not no so can could would should will just than then there here about into "
    "over some any all".split())
# The rules' scores enter as values up to this many STRONG signals' worth.
_SCORE_CAP = 6.0
# A task's glossed concepts count up to this many (out of fold on 26,458 prompts, with the counts
# as features 94.69 % against 94.62 % without, non-Latin prompts 81.6 % against 79.7 %).
_GLOSS_CAP = 3


def use_char_ngrams(ns: tuple[int, ...]) -> None:
    """Hash character n-grams of these lengths (ascending). For experiments out of fold
    (scripts/oof_classifier.py --chars); weights trained on other lengths are refused by load()."""
    global CHAR_NS, _CHAR_SALT, _CHAR_SALT_POW
    ns = tuple(ns)
    # _char_indices() builds each length from the one before it, starting at 2.
    if not ns or ns[0] < 2 or list(ns) != sorted(set(ns)):
        raise ValueError(f"character n-gram lengths must be distinct, ascending and at least 2, got {ns}")
    CHAR_NS = ns
    # Per-n salts, so that "abc" as a 3-gram and "\0abc" as a 4-gram never share a bucket by design.
    _CHAR_SALT = {n: np.uint64((0x5851F42D4C957F2D * (n + 1)) & _MASK64) for n in CHAR_NS}
    _CHAR_SALT_POW = {n: np.uint64((int(s) * pow(1_000_003, n, 1 << 64)) & _MASK64) for n, s in _CHAR_SALT.items()}


use_char_ngrams(CHAR_NS)


# The prompt's shape, in any language: how many numbers, a question mark, its length and
# lines, and whether it is written in a non-Latin script, alone and crossed. A word problem in
# a language with few training prompts still looks like one: numbers and a question. Since
# feature version 4: out of fold on 22,115 prompts 94.42 % against 93.63 % without (data
# README, held-out v7, step 1).
SHAPE_FEATURES = True
_NUMBER = re.compile(r"\d+(?:[.,:]\d+)*")
# Greek to Ethiopic and beyond, CJK, Hangul: coarse on purpose (Vietnamese's letters with two
# diacritics, U+1E00-1EFF, count as "other" too).
_NON_LATIN = re.compile(r"[\u0370-\u1fff\u2e80-\ua4ff\uac00-\ud7af]")


# Words of other languages counted as the English words they gloss (zeta_local.glosses). Since
# feature version 5.
GLOSSES = True


def use_glosses(on: bool) -> None:
    """For experiments out of fold (scripts/oof_classifier.py --no-glosses); weights trained
    without them are refused by load()."""
    global GLOSSES
    GLOSSES = on


def use_shape_features(on: bool) -> None:
    """For experiments out of fold (scripts/oof_classifier.py --no-shape); weights trained
    without them are refused by load()."""
    global SHAPE_FEATURES
    SHAPE_FEATURES = on


def _bucket(n: int, edges: tuple[int, ...]) -> int:
    return sum(n >= e for e in edges)


def _shape_names(text: str) -> list[str]:
    numbers = _bucket(sum(1 for _ in islice(_NUMBER.finditer(text), 10)), (1, 2, 3, 4, 6, 10))  # 10+: one
    question = "?" in text or "\uff1f" in text or "\u061f" in text
    length = _bucket(len(text), (30, 60, 150, 400, 1200))
    lines = _bucket(text.count("\n"), (1, 3, 10))
    # isascii() is a flag look-up: an ASCII prompt skips the scan (16 µs on 4,000 characters).
    script = "other" if not text.isascii() and _NON_LATIN.search(text) else "latin"
    return [f"shape n{numbers}", f"shape q{question:d}", f"shape len{length}", f"shape lines{lines}",
            f"shape {script}", f"shape n{numbers} q{question:d}", f"shape n{numbers} len{length}",
            f"shape {script} n{numbers}", f"shape {script} n{numbers} q{question:d}",
            f"shape {script} len{length} q{question:d}"]


def _word_index(key: str) -> int:
    return zlib.crc32(key.encode("utf-8", "surrogatepass")) & (DIM - 1)


# token -> crc32 of its UTF-8: most tokens recur from prompt to prompt, and a look-up is a
# fraction of encode + crc32. Only short tokens, and cleared past _CRC_CACHE_MAX entries, so
# it stays a few MB whatever is pasted.
_CRC_CACHE: dict[str, int] = {}
_CRC_CACHE_MAX = 50_000
_CRC_CACHE_TOKEN_CHARS = 40


def _crc(token: str) -> int:
    h = zlib.crc32(token.encode("utf-8", "surrogatepass"))
    if len(token) <= _CRC_CACHE_TOKEN_CHARS:
        if len(_CRC_CACHE) >= _CRC_CACHE_MAX:
            _CRC_CACHE.clear()
        _CRC_CACHE[token] = h
    return h


def _word_indices(toks: list[str]) -> np.ndarray:
    """Buckets of the unigrams (crc32 each), then of the bigrams, mixed from their unigrams'
    32-bit hashes in numpy: one crc32 call per token instead of two."""
    get = _CRC_CACHE.get
    h = np.array([get(t) or _crc(t) for t in toks], dtype=np.uint64)
    with np.errstate(over="ignore"):
        bigrams = (h[:-1] << np.uint64(32)) ^ h[1:] ^ _BIGRAM_SALT
        both = np.concatenate([h ^ _UNIGRAM_SALT, bigrams])
        return ((both * _MIX) >> _SHIFT).astype(np.intp)


def _char_indices(lower: str) -> np.ndarray:
    """Bucket of every character n-gram, vectorised: h = sum c[i+k] * B^(n-1-k), then mixed."""
    codes = np.frombuffer(lower.encode("utf-32-le", "surrogatepass"), dtype=np.uint32).astype(np.uint64)
    codes[(codes >= 48) & (codes <= 57)] = 48  # every digit is "0": "12 apples" ~ "37 apples"
    out = []
    # h_n = salt_n * B^n + p_n with p_n[i] = sum_k c[i+k] B^(n-1-k), and p_{n+1}[i] = p_n[i] B + c[i+n]:
    # each longer n-gram extends the shorter one's polynomial (all mod 2**64, as the hash is).
    size = len(codes)
    with np.errstate(over="ignore"):  # uint64 arithmetic wraps mod 2**64, which is the hash
        p = codes.copy()  # p_1
        for n in range(2, CHAR_NS[-1] + 1):
            if size < n:
                break
            p = p[:size - n + 1] * _CHAR_BASE + codes[n - 1:]
            if n in _CHAR_SALT:
                h = p + _CHAR_SALT_POW[n]
                h *= _MIX
                h >>= _SHIFT
                out.append(h)
    return np.concatenate(out).astype(np.intp) if out else np.zeros(0, dtype=np.intp)


@dataclass(frozen=True)
class Features:
    """One prompt's hashed features: bucket, value, and a readable name for the word n-grams."""

    index: np.ndarray  # intp, may repeat (a repeated n-gram counts each time)
    value: np.ndarray  # float32, same length
    tokens: tuple[str, ...]  # the first 2 len(tokens) - 1 entries are their uni- then bigrams
    # then one entry per gloss: (the form found, the English word it counts as)
    glosses: tuple[tuple[str, str], ...] = ()

    def word_name(self, i: int) -> str:
        n = len(self.tokens)
        if i < n:
            return self.tokens[i]
        if i < 2 * n - 1:
            return self.tokens[i - n] + " " + self.tokens[i - n + 1]
        form, word = self.glosses[i - max(0, 2 * n - 1)]
        return f"{form} ({word})"

    @property
    def n_words(self) -> int:
        return max(0, 2 * len(self.tokens) - 1) + len(self.glosses)


def extract(text: str, rules: RuleDecision) -> Features:
    """Features of scanned text (classifier_rules.scan_text) and the rules' decision on it."""
    lower, toks = lower_and_tokens(text)
    lexicon = glosses.lexicon()
    found = tuple(lexicon.concepts(lower, toks)) if GLOSSES else ()
    words = _word_indices(toks)
    if found:  # each concept as the English word's unigram, so its English weight applies
        words = np.concatenate([words, _word_indices([word for _, word in found])[:len(found)]])
    chars = _char_indices(lower)

    # The rules' findings: each fired family once and the three scores. Not the rules' winner:
    # with it the model only learned to copy the rules, and to be sure of "no signal -> chat".
    extra_names = sorted({"r " + family(s) for s in rules.signals})
    extra_values = [1.0] * len(extra_names)
    for task in TASKS:
        evidence = rules.scores[task] - (1.0 if task == "chat" else 0.0)
        extra_names.append("s " + task)
        extra_values.append(min(evidence, _SCORE_CAP) / 3.0)
    if found:  # how many glossed concepts speak for each task, capped as the scores are
        per_task: dict[str, int] = {}
        for _, word in found:
            task = lexicon.task_of[word]
            per_task[task] = per_task.get(task, 0) + 1
        for task in sorted(per_task):
            extra_names.append("g " + task)
            extra_values.append(min(per_task[task], _GLOSS_CAP) / _GLOSS_CAP)
    if SHAPE_FEATURES:
        shape = _shape_names(text)
        extra_names += shape
        extra_values += [1.0] * len(shape)
    extra_index = [_word_index(name) for name in extra_names]

    # Length-normalised counts (count / sqrt(total)), so a long paste does not swamp the bias.
    word_value = 1.0 / np.sqrt(len(words)) if len(words) else 0.0
    char_value = 1.0 / np.sqrt(len(chars)) if len(chars) else 0.0
    index = np.concatenate([words, chars,
                            np.asarray(extra_index, dtype=np.intp)])
    value = np.concatenate([np.full(len(words), word_value, dtype=np.float32),
                            np.full(len(chars), char_value, dtype=np.float32),
                            np.asarray(extra_values, dtype=np.float32)])
    return Features(index, value, tuple(toks), found)


@dataclass(frozen=True)
class Model:
    """Fitted weights plus what calibrates and gates them (see scripts/train_classifier.py)."""

    # float32 (DIM, len(TASKS)): a bucket's weights for every task side by side, so that a
    # prompt's ~17,000 scattered buckets cost one cache miss each rather than one per task
    # (on a 4,000-character prompt with a cold cache the look-up took ~200 µs instead of ~300).
    weights: np.ndarray
    bias: np.ndarray  # float64 (len(TASKS),)
    temperature: float  # learned logits are divided by this before the softmax
    gate: float  # rule strength at or above which the rules decide alone
    rule_platt: tuple[float, float]  # rule confidence = sigmoid(a * strength + b)

    def rows(self, features: Features) -> np.ndarray:
        """The weights of the prompt's buckets, (len(index), tasks): gathered once, read twice."""
        return self.weights.take(features.index, axis=0)

    def logits(self, features: Features, rows: np.ndarray | None = None) -> np.ndarray:
        return features.value @ (self.rows(features) if rows is None else rows) + self.bias

    def probabilities(self, features: Features, rows: np.ndarray | None = None) -> np.ndarray:
        """Calibrated probability of each task, in TASKS order."""
        z = self.logits(features, rows) / self.temperature
        z = np.exp(z - z.max())
        return z / z.sum()

    def rule_confidence(self, strength: float) -> float:
        a, b = self.rule_platt
        return float(1.0 / (1.0 + np.exp(-(a * strength + b))))

    def explain(self, features: Features, task: str, top: int = 3, rows: np.ndarray | None = None) -> tuple[str, ...]:
        """The prompt's word n-grams that pushed hardest toward `task` over the other tasks
        (`rows`: what rows() gave for these features, if the caller has it)."""
        n = features.n_words
        if not n:
            return ()
        # push = own weight - mean of the others', as one product: (1, -1/2, -1/2) for task 0
        contrast = np.full(len(TASKS), -1.0 / (len(TASKS) - 1), dtype=np.float32)
        contrast[TASKS.index(task)] = 1.0
        push = (self.weights.take(features.index[:n], axis=0) if rows is None else rows[:n]) @ contrast
        # Only the strongest few need ordering (repeats and stop words: look deeper than `top`).
        look = min(n, 8 * top)
        strongest = np.argpartition(-push, look - 1)[:look] if look < n else np.arange(n)
        order = strongest[np.argsort(-push[strongest], kind="stable")]
        total: dict[str, float] = {}
        for i, weight in zip(order.tolist(), push[order].tolist()):  # Python numbers: no numpy scalars
            name = features.word_name(i)
            if weight > 0 and not set(name.split()) <= STOP_WORDS:
                total[name] = total.get(name, 0.0) + weight
        return tuple(sorted(total, key=lambda w: -total[w])[:top])


def glosses_digest() -> str:
    return glosses.lexicon().digest if GLOSSES else "none"


def probe_indices() -> np.ndarray:
    return extract(PROBE, RuleDecision("chat", (), {"code": 0.0, "reason": 0.0, "chat": 1.0}, 0.0)).index


def save(path: Path, index: np.ndarray, weights: np.ndarray, bias: np.ndarray, *, temperature: float,
         gate: float, rule_platt: tuple[float, float], meta: str = "") -> None:
    """Write the weights sparsely: only the buckets that carry weight, as float16. The buckets
    are stored as gaps from the one before (sorted, so the gaps are small and compress to half
    the size of the indices themselves), in the smallest integer type that holds them; the
    float16 weights as two byte planes, high bytes apart from low ones, which compress 5 % better
    than interleaved (both lossless)."""
    index = np.asarray(index, dtype=np.int64)
    if np.any(np.diff(index) <= 0):
        raise ValueError("bucket indices must be sorted and distinct")
    gaps = np.diff(index, prepend=0)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as f:
        np.savez_compressed(
            f, feature_version=np.int32(FEATURE_VERSION), dim_bits=np.int32(DIM_BITS),
            probe=probe_indices().astype(np.uint32), glosses=np.str_(glosses_digest()),
            index_gaps=gaps.astype(np.min_scalar_type(int(gaps.max(initial=0)))),
            weight_planes=_byte_planes(weights), bias=bias.astype(np.float64),
            temperature=np.float64(temperature), gate=np.float64(gate),
            rule_platt=np.asarray(rule_platt, dtype=np.float64), meta=np.str_(meta))


def _byte_planes(weights: np.ndarray) -> np.ndarray:
    """(tasks, buckets) weights as little-endian float16, split into (2, tasks, buckets) bytes."""
    w = np.ascontiguousarray(weights, dtype="<f2")
    return np.ascontiguousarray(w.view(np.uint8).reshape(w.shape + (2,)).transpose(2, 0, 1))


def _from_byte_planes(planes: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(planes.transpose(1, 2, 0)).view("<f2")[..., 0]


def load(path: Path = WEIGHTS_PATH) -> Model:
    """Read a weights file; raises ValueError if it was trained on other features."""
    with np.load(path, allow_pickle=False) as data:
        if "index_gaps" not in data.files:  # buckets stored as plain indices, before 2026-11-26
            raise ValueError(f"{path}: an older weights format; retrain with scripts/train_classifier.py")
        if int(data["feature_version"]) != FEATURE_VERSION or int(data["dim_bits"]) != DIM_BITS:
            raise ValueError(f"{path}: trained on feature version {int(data['feature_version'])}, "
                             f"{int(data['dim_bits'])} bits; this code has {FEATURE_VERSION}, {DIM_BITS}")
        if not np.array_equal(data["probe"].astype(np.intp), probe_indices()):
            raise ValueError(f"{path}: the feature hashing differs from the one it was trained with")
        if str(data["glosses"]) != glosses_digest():
            raise ValueError(f"{path}: trained with other glosses (data/glosses.json changed); retrain")
        weights = np.zeros((DIM, len(TASKS)), dtype=np.float32)
        stored = _from_byte_planes(data["weight_planes"]) if "weight_planes" in data.files else data["weights"]
        weights[np.cumsum(data["index_gaps"], dtype=np.int64)] = stored.astype(np.float32).T
        return Model(weights, data["bias"].astype(np.float64), float(data["temperature"]),
                     float(data["gate"]), tuple(float(x) for x in data["rule_platt"]))
