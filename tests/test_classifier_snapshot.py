"""The rules and the learned stage's features must not change under performance work.

tests/data/classifier/snapshot.json holds, for every prompt below, a digest of what the rules
decided (task, signals, scores, strength) and of the learned stage's hashed features, as the
code computed them when it was written. Neither depends on the trained weights, so retraining
leaves it valid; a pure speed-up of the rules or the feature code must reproduce it exactly.
The prompts: tuning.jsonl, the 4,000-character prompts of classifier_eval.long_prompts,
mixtures of tuning prompts, adversarial long inputs and fuzz. Never the held-out part
(heldout_v<N>.jsonl).

Regenerate (when the rules or features are *meant* to change, or tuning.jsonl grows), from the
code in CODE_DIR (default: this checkout; give the old checkout's root to snapshot the code
before a change):
    python tests/test_classifier_snapshot.py --write [CODE_DIR]
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
SNAPSHOT = ROOT / "tests" / "data" / "classifier" / "snapshot.json"
TUNING = ROOT / "tests" / "data" / "classifier" / "tuning.jsonl"


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


_CODE = '''import os
from typing import Dict

class Cache(object):
    def __init__(self, size: int = 128):
        self.size = size  # max entries
        self.data: Dict[str, int] = {}

    def get(self, key):
        if key in self.data and self.size > 0:
            return self.data[key]
        for i in range(10):
            print(f"miss {i}", key)
        return None

int main(void) { int x = 3; printf("%d\\n", x); return 0; }
const f = (a, b) => a + b; let y = f(1, 2);
'''
_PROSE = ("The river wound slowly through the valley, past the old mill and the orchard where we "
          "used to pick apples every autumn. My grandmother would tell stories of the winters when "
          "the water froze so hard that the whole village skated on it, lanterns swinging, children "
          "laughing. I think about those evenings often, and about how little of that world is left. ")
_MATH = "12 + 34 * (56 - 7) / 8 = x^2 - 3y + 4z; 2x + 5 = 17, f(x) = 3x^2 + 2, 45% of 380 ≤ 9 ± 1 "
_LOG = ('2024-05-01 12:00:01,123 INFO  [main] server.Started: listening on port 8080 (pid 4211)\n'
        '2024-05-01 12:00:02,456 WARN  [pool-1] db.Pool: connection slow, took 1532 ms\n'
        '2024-05-01 12:00:03,789 ERROR [pool-2] api.Handler: request failed: TimeoutError\n'
        '    at com.example.api.Handler.handle(Handler.java:42)\n'
        '    at com.example.Server.run(Server.java:117)\n'
        'src/main.c:12:5: error: expected ";" before "}" token\n'
        'npm ERR! code ELIFECYCLE exit status 1\n')


def _fill(unit: str, chars: int = 4000) -> str:
    return (unit * (chars // len(unit) + 1))[:chars]


def adversarial() -> dict[str, str]:
    out = {
        "a10k": "a" * 10_000,
        "code4k": _fill(_CODE),
        "prose4k": _fill(_PROSE),
        "math4k": _fill(_MATH),
        "digits_ops4k": _fill("1+2*3-4/5=6^7%8 (9) "),
        "log4k": _fill(_LOG),
        "words4k": _fill("java rust go ruby swift c python plan if then all are who what but write "),
        "spaces4k": " " * 3999 + "x",
        "newlines4k": _fill("x\n"),
        "upper_code4k": _fill(_CODE).upper(),
        "mixed_long": _fill(_PROSE + _CODE + _MATH + _LOG, 12_000),
        "one_mb_code": "def f(x):\n    return x + 1  # comment\n" * 28_000,
    }
    for i, p in enumerate(["a" * 5000, "{;" * 2500, "if " * 1700, "SELECT " * 700, "`" * 5000, "1+" * 2500,
                           "--a" * 1700, "write a " * 600, ":\n " * 1700, "a=\n" * 1700, "all x are " * 500,
                           "(" * 5000, "<a " * 1700]):
        out[f"pathological{i}"] = p
    return out


def prompts() -> dict[str, str]:
    """Name -> prompt, deterministic."""
    from zeta_local import classifier_eval as ce

    tuning = _rows(TUNING)
    out: dict[str, str] = {}
    for i, row in enumerate(tuning):
        out[f"tuning{i}"] = row["prompt"]
    for task, text in ce.long_prompts(tuning).items():
        out[f"long_tuning_{task}"] = text
    # Mixtures: several prompts of different tasks run together, 1,500 to 6,000 characters.
    everything = [r["prompt"] for r in tuning]
    n = len(everything)
    for i in range(150):
        parts, k = [], 0
        while sum(map(len, parts)) < 1500 + 30 * i:
            parts.append(everything[(i * 37 + k * 101) % n])
            k += 1
        out[f"mix{i}"] = ("\n\n" if i % 2 else " ").join(parts)
    # Each prompt's upper-cased and title-cased form (the case-sensitive rules see a different text).
    for i in range(0, len(tuning), 5):
        out[f"upper{i}"] = tuning[i]["prompt"].upper()
        out[f"title{i}"] = tuning[i]["prompt"].title()
    out.update(adversarial())
    out.update(fuzz())
    return out


_FUZZ_PARTS = (
    "a", "the", " ", "\t", "python", "python3", " 3.11", "code", ".", "x", "data", "(", "3", "2", "\n", "snake",
    "go", "c", "or", "java", "rust", "and", "-", "+", "=", "^", "%", "1", "error", "Error", "ValueError",
    "foo.bar(", "()", ")", "SELECT", "FROM", "if", "then", "how many", "plan", "make", "f(x)", "²", "/", "05/01",
    "println!(", "def", "class", "import", "return", "  ", "vs.", "c++", "#", "commit", "the commit",
    "a car leaves", "60 mph", "é", "\u2019s", "\u201cquoted\u201d", "\u00a0", "中文", "`x`", "--flag", "$ ls",
    "at Foo.bar(Foo.java:3)", "write a function", "step by step", "who is the tallest", "why does", "what has",
    "all x are", "port 8080", "npm err!", "main.c:3:1: error", "cargo build", "pip install", "learn rust",
    "in java?", "react hooks", "pandas df", "sin(", "2x", "3 + 4", "7 - 2", "1/2", "x^2", "{", "}", ";", ":",
    "    ", "\r\n", "<div>", "file.py", "=>", "::", "!=", "options:\n(a)", "weighings", "with two moves",
)


def fuzz(n: int = 3000) -> dict[str, str]:
    """Short random strings of the pieces the rules look for, in random order and spacing."""
    import random

    rnd = random.Random(20240501)
    return {f"fuzz{i}": "".join(rnd.choice(_FUZZ_PARTS) + rnd.choice(("", " ", " ", "\n"))
                                for _ in range(rnd.randint(1, 14))) for i in range(n)}


def record(prompt: str) -> dict:
    from zeta_local import classifier_rules as rules
    from zeta_local import learned_classifier as learned

    text = rules.scan_text(prompt)
    decision = rules.decide(text)
    features = learned.extract(text, decision)
    digest = hashlib.sha1(np.sort(features.index).astype(np.int64).tobytes())
    digest.update(np.sort(features.value).astype(np.float32).tobytes())
    return {"task": decision.task, "signals": list(decision.signals), "scores": decision.scores,
            "strength": round(decision.strength, 6), "features": digest.hexdigest()[:16]}


def _key(name: str, prompt: str) -> str:
    return name + ":" + hashlib.sha1(prompt.encode("utf-8", "surrogatepass")).hexdigest()[:12]


def current() -> dict[str, str]:
    """Prompt key -> a digest of its record (the snapshot keeps digests: 0.7 MB, not 2.7)."""
    from zeta_local import classifier_rules

    print(f"recording with {classifier_rules.__file__}", file=sys.stderr)
    return {_key(name, p): _digest(record(p)) for name, p in prompts().items()}


def _digest(entry: dict) -> str:
    return hashlib.sha1(json.dumps(entry, sort_keys=True).encode()).hexdigest()[:16]


def test_decisions_match_the_snapshot():
    want = json.loads(SNAPSHOT.read_text(encoding="utf-8"))
    named = prompts()
    got = {_key(name, p): _digest(record(p)) for name, p in named.items()}
    assert set(got) == set(want), "the snapshot's prompts changed (tuning.jsonl grew?); regenerate it"
    diff = [k for k in want if got[k] != want[k]]
    by_key = {_key(name, p): p for name, p in named.items()}
    assert not diff, f"{len(diff)} decisions changed, e.g. " + "; ".join(
        f"{k}: now {record(by_key[k])}" for k in diff[:3])


if __name__ == "__main__":
    if sys.argv[1:2] != ["--write"] or len(sys.argv) > 3:
        sys.exit(__doc__)
    sys.path.insert(0, sys.argv[2] if len(sys.argv) > 2 else str(ROOT))
    entries = sorted(current().items())  # one prompt a line, so that a diff reads
    SNAPSHOT.write_text("{\n" + ",\n".join(f"{json.dumps(k)}: {json.dumps(v)}" for k, v in entries) + "\n}\n",
                        encoding="utf-8")
    print(f"wrote {SNAPSHOT}")
