"""The optional semantic stage: the nearest labelled prompts, by an embedding model already loaded.

It decides only what the rules and the learned stage leave uncertain. The labelled examples
are embedded once per model file, in the background, and cached on disk; until the index is
ready the stage simply abstains. Its vote is a similarity-weighted kNN whose sharpness is
fitted on the examples themselves (leave-one-out), so its confidence means what it says there.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from zeta_local.errors import ConfigError
from zeta_local.sources import cache_dir

log = logging.getLogger(__name__)

TASKS = ("code", "reason", "chat")
K = 10  # neighbours that vote
# A prompt is embedded from its head: the question and any pasted code are there, and the
# embedding context holds 512 tokens (a character is at most about one token).
EMBED_CHARS = 480
BATCH = 16  # examples per embedding request while the index is built
# How long an embedding may take, queue included. A prompt being routed waits little, then is
# routed without this stage. A batch of the index build runs in the background, where only
# patience is at stake: with the prompt's 5 s for it too, Gemma 3 270M's first batch missed
# the deadline on a busy 2-core VM and the index was never built (a 4B model is slower still).
PROMPT_DEADLINE_S = 5.0
BATCH_DEADLINE_S = 600.0
# After a failed build the next is tried no sooner than this, doubled after each failure in a
# row up to RETRY_MAX_S: a model that cannot embed would otherwise start a doomed build, and log
# a warning, on every uncertain prompt.
RETRY_AFTER_S = 60.0
RETRY_MAX_S = 3600.0
_TAUS = np.geomspace(0.002, 0.5, 40)  # the softmax temperatures the fit chooses from

Embed = Callable[[list[str], float], np.ndarray]  # (texts, deadline_s) -> L2-normalised rows


def load_examples(path: Path | None = None) -> list[tuple[str, str]]:
    """(prompt, task) pairs from a jsonl of {"prompt", "task"} rows; by default the tuning part
    of the labelled set that the package ships. A bad file is a ConfigError naming the line."""
    source = path or files("zeta_local") / "data" / "routing_examples.jsonl"
    examples = []
    for number, line in enumerate(source.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            prompt, task = row["prompt"], row["task"]
            if not isinstance(prompt, str) or not prompt.strip() or task not in TASKS:
                raise ValueError
        except (ValueError, KeyError, TypeError):
            raise ConfigError(f"{source}, line {number}: expected {{\"prompt\": a non-empty string, "
                                 f"\"task\": one of {', '.join(TASKS)}}}") from None
        examples.append((prompt, task))
    if len({task for _, task in examples}) < len(TASKS):
        raise ConfigError(f"{source}: the semantic examples need prompts of every task: {', '.join(TASKS)}")
    return examples


@dataclass(frozen=True)
class Vote:
    task: str
    probabilities: dict[str, float]
    nearest: tuple[tuple[str, float], ...]  # (task, cosine similarity) of the closest examples

    @property
    def confidence(self) -> float:
        return self.probabilities[self.task]

    @property
    def reason(self) -> str:
        near = ", ".join(f"{task} {sim:.2f}" for task, sim in self.nearest[:3])
        return f"{self.task} (semantic, {self.confidence:.2f}): nearest examples {near}"


class ExampleIndex:
    """The examples' unit vectors for one embedding model, and the vote's fitted temperature."""

    def __init__(self, vectors: np.ndarray, labels: np.ndarray, tau: float):
        self.vectors = vectors.astype(np.float32)
        self.labels = labels.astype(np.int64)
        self.tau = float(tau)

    @classmethod
    def fit(cls, vectors: np.ndarray, labels: np.ndarray) -> ExampleIndex:
        """Choose the temperature that gives the best leave-one-out log-likelihood."""
        sims = vectors @ vectors.T
        np.fill_diagonal(sims, -np.inf)  # an example never votes for itself
        k = min(K, len(labels) - 1)
        best = min(_TAUS, key=lambda tau: _log_loss(_vote_probabilities(sims, labels, tau, k), labels))
        return cls(vectors, labels, best)

    def vote(self, vector: np.ndarray) -> Vote:
        sims = self.vectors @ vector.astype(np.float32)
        probs = _vote_probabilities(sims[None, :], self.labels, self.tau, min(K, len(self.labels)))[0]
        nearest = np.argsort(-sims)[:K]
        best = int(np.argmax(probs))
        return Vote(TASKS[best], {t: round(float(p), 3) for t, p in zip(TASKS, probs)},
                    tuple((TASKS[self.labels[i]], round(float(sims[i]), 3)) for i in nearest))

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp.npz")
        np.savez(tmp, vectors=self.vectors, labels=self.labels, tau=np.float64(self.tau))
        tmp.replace(path)  # a reader never sees half a file

    @classmethod
    def load(cls, path: Path) -> ExampleIndex | None:
        try:
            with np.load(path) as data:
                return cls(data["vectors"], data["labels"], float(data["tau"]))
        except (OSError, KeyError, ValueError) as exc:
            log.warning("ignoring the unreadable semantic index %s: %s", path, exc)
            return None


def _vote_probabilities(sims: np.ndarray, labels: np.ndarray, tau: float, k: int) -> np.ndarray:
    """Each row's k nearest examples vote with weight exp(similarity / tau); rows sum to 1."""
    nearest = np.argpartition(-sims, k - 1, axis=1)[:, :k]
    near_sims = np.take_along_axis(sims, nearest, axis=1)
    weights = np.exp((near_sims - near_sims.max(axis=1, keepdims=True)) / tau)
    probs = np.zeros((sims.shape[0], len(TASKS)))
    for task in range(len(TASKS)):
        probs[:, task] = (weights * (labels[nearest] == task)).sum(axis=1)
    # A little smoothing: ten examples never make a certainty.
    probs = probs / probs.sum(axis=1, keepdims=True)
    return (probs * k + 0.5) / (k + 0.5 * len(TASKS))


def _log_loss(probs: np.ndarray, labels: np.ndarray) -> float:
    return float(-np.mean(np.log(probs[np.arange(len(labels)), labels])))


class SemanticStage:
    """The examples, one index per embedding model file, and the threads that build them."""

    def __init__(self, examples: Sequence[tuple[str, str]] | None = None, *,
                 cache_root: Path | None = None, retry_after_s: float = RETRY_AFTER_S):
        examples = list(examples) if examples is not None else load_examples()
        self.texts = [prompt[:EMBED_CHARS] for prompt, _ in examples]
        self.labels = np.array([TASKS.index(task) for _, task in examples])
        digest = hashlib.sha256(json.dumps(examples).encode("utf-8")).hexdigest()[:16]
        self._digest = digest
        self._cache_root = cache_root or cache_dir() / "semantic"
        self._indexes: dict[Path, ExampleIndex] = {}
        self._building: dict[Path, threading.Thread] = {}
        self._retry_after_s = retry_after_s
        self._failed: dict[Path, tuple[int, float]] = {}  # failures in a row, monotonic time of the next try
        self._stop = threading.Event()
        self._lock = threading.Lock()

    def index_path(self, model_file: Path) -> Path:
        """One cache file per model file (by path, size and modification time) and example set."""
        stat = model_file.stat()
        key = hashlib.sha256(f"{model_file.resolve()}|{stat.st_size}|{stat.st_mtime_ns}".encode())
        return self._cache_root / f"{model_file.stem}-{key.hexdigest()[:12]}-{self._digest}.npz"

    def index(self, model_file: Path, embed: Embed) -> ExampleIndex | None:
        """The model's index, from memory or disk; None (and a build started) when there is none."""
        path = self.index_path(model_file)
        with self._lock:
            found = self._indexes.get(path)
            if found is not None or path in self._building or self._stop.is_set():
                return found
            if path in self._failed and time.monotonic() < self._failed[path][1]:
                return None
            if path.exists():
                found = ExampleIndex.load(path)
                if found is not None and len(found.labels) == len(self.labels):
                    self._indexes[path] = found
                    return found
            thread = threading.Thread(target=self._build, args=(path, embed), daemon=True,
                                      name=f"zeta-semantic-index-{model_file.stem}")
            self._building[path] = thread
        log.info("building the semantic routing index for %s (%d examples) in the background",
                 model_file.name, len(self.texts))
        thread.start()
        return None

    def _build(self, path: Path, embed: Embed) -> None:
        try:
            rows = []
            for start in range(0, len(self.texts), BATCH):
                if self._stop.is_set():
                    return
                rows.append(embed(self.texts[start:start + BATCH], BATCH_DEADLINE_S))
            index = ExampleIndex.fit(np.concatenate(rows), self.labels)
            index.save(path)
            with self._lock:
                self._indexes[path] = index
                self._failed.pop(path, None)
            log.info("semantic routing index ready: %s (temperature %.3f)", path, index.tau)
        except Exception as exc:  # the stage abstains; routing goes on without it
            with self._lock:
                failures = self._failed.get(path, (0, 0.0))[0] + 1
                wait = min(self._retry_after_s * 2 ** (failures - 1), RETRY_MAX_S)
                self._failed[path] = (failures, time.monotonic() + wait)
            log.warning("could not build the semantic routing index %s: %s (next try in %.0f s at the "
                        "earliest)", path, exc, wait)
        finally:
            with self._lock:
                self._building.pop(path, None)

    def second_opinion(self, prompt: str, model_file: Path, embed: Embed) -> Vote | None:
        """The examples' vote on `prompt`; None while the model's index is being built, or
        when the embedding fails (routing then goes on without this stage)."""
        index = self.index(model_file, embed)
        if index is None:
            return None
        try:
            vector = embed([prompt[:EMBED_CHARS]], PROMPT_DEADLINE_S)[0]
        except Exception as exc:
            log.info("semantic stage abstains: embedding the prompt failed: %s", exc)
            return None
        return index.vote(vector)

    def wait_ready(self, timeout: float) -> bool:
        """Wait for every build in progress (tests, benchmarks). True when none is left."""
        with self._lock:
            threads = list(self._building.values())
        for thread in threads:
            thread.join(timeout)
        return not any(t.is_alive() for t in threads)

    def stop(self) -> None:
        """Build no more: a build in progress ends before its next batch."""
        self._stop.set()

    def close(self, timeout: float = 5.0) -> None:
        """stop(), and wait for the build thread to end (an error is logged if it does not)."""
        self.stop()
        if not self.wait_ready(timeout):
            log.error("the semantic index build did not stop within %.1f s", timeout)
