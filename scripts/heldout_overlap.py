"""Overlap check for a held-out set (tests/data/classifier/sources/heldoutN_*.jsonl).

Every row of the held-out version given (--version, default the one being written) is compared
with every row of every other extract under sources/ and with the other rows of that version: an exact duplicate after normalisation (Unicode NFKC, casefolded,
whitespace collapsed, as scripts/build_labelled_set.py does) or a near duplicate (Jaccard >=
THRESHOLD over the sets of word tokens of the normalised texts) is reported by id and score
only; the text of the other row is never printed (the older extracts hold the spent v1 held-out
rows, which must not steer new prompts).  Exit status 1 if anything is reported.

The public extracts of v2 and v3 were drawn with scripts/extract_heldout_public.py, which uses
`overlapping()` below to skip a candidate and draw the next one instead.

usage: python scripts/heldout_overlap.py [--version 3] [--threshold 0.6]
"""
import argparse
import collections
import json
import re
import sys
import unicodedata
from pathlib import Path

SOURCES = Path(__file__).resolve().parent.parent / "tests" / "data" / "classifier" / "sources"
# the held-out version being written; its extracts are sources/heldout<N>_*.jsonl
VERSION = 11
THRESHOLD = 0.6
_WORD = re.compile(r"\w+")


def normalise(text):
    text = unicodedata.normalize("NFKC", text).casefold()
    return " ".join(text.split())


def tokens(text):
    return frozenset(_WORD.findall(normalise(text)))


class Index:
    """Normalised texts and token sets of many rows, with an inverted index for Jaccard look-ups."""

    def __init__(self):
        self.keys = {}
        self.toks = []
        self.ids = []
        self.post = collections.defaultdict(list)

    def add(self, rid, text):
        self.keys.setdefault(normalise(text), rid)
        t = tokens(text)
        n = len(self.toks)
        self.toks.append(t)
        self.ids.append(rid)
        for w in t:
            self.post[w].append(n)

    def matches(self, text, threshold=THRESHOLD, skip=None):
        """[(id, score)] of exact (score 1.0, 'exact') and near duplicates of text."""
        out = []
        key = normalise(text)
        if key in self.keys and self.keys[key] != skip:
            out.append((self.keys[key], "exact"))
        t = tokens(text)
        if not t:
            return out
        shared = collections.Counter()
        for w in t:
            for n in self.post.get(w, ()):
                shared[n] += 1
        for n, k in shared.items():
            if self.ids[n] == skip:
                continue
            j = k / (len(t) + len(self.toks[n]) - k)
            if j >= threshold:
                out.append((self.ids[n], round(j, 3)))
        return out


def read(path):
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def prefix(version=VERSION):
    return "heldout%d_" % version


def existing_index(version=VERSION):
    """Every row of every extract that is not part of held-out `version`, keyed 'file:line'."""
    index = Index()
    for path in sorted(SOURCES.glob("*.jsonl")):
        if path.name.startswith(prefix(version)):
            continue
        for lineno, rec in enumerate(read(path), 1):
            index.add("%s:%d" % (path.name, lineno), rec["prompt"])
    return index


def overlapping(text, index, threshold=THRESHOLD, skip=None):
    return index.matches(text, threshold, skip)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--version", type=int, default=VERSION, help="held-out version to check (default %(default)s)")
    ap.add_argument("--threshold", type=float, default=THRESHOLD)
    args = ap.parse_args()
    old = existing_index(args.version)
    new = Index()
    rows = []
    for path in sorted(SOURCES.glob(prefix(args.version) + "*.jsonl")):
        for rec in read(path):
            rows.append(rec)
            new.add(rec["id"], rec["prompt"])
    bad = 0
    for rec in rows:
        hits = old.matches(rec["prompt"], args.threshold) + new.matches(rec["prompt"], args.threshold, skip=rec["id"])
        if hits:
            bad += 1
            print("%s %r\n    %s" % (rec["id"], rec["prompt"][:160], ", ".join("%s %s" % h for h in hits)))
    print("%d held-out v%d rows, %d with an exact or near duplicate (Jaccard >= %g)" % (len(rows), args.version, bad, args.threshold))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
