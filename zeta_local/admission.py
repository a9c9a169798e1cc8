"""Admission: a model is loaded only when its predicted memory fits the budgets.

The ledger records what each loaded context holds (its estimate, corrected upward after an
out-of-memory). A model's generation and embedding contexts share its weights, which the
ledger counts once while either context is held. A model that does not fit may fit after
evicting idle contexts, least recently used first, never a pinned or busy one; the router
decides whether that is worth it.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from dataclasses import dataclass, field
from typing import Mapping

from zeta_local.memory import MemoryEstimate, weights_part, without_weights

log = logging.getLogger(__name__)

_UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
          "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-z]*)\s*$", re.IGNORECASE)
OOM_CORRECTION = 1.25  # after an out-of-memory, that model's estimate grows by this factor


def parse_size(text: str | int) -> int:
    """'6GiB', '512 MiB', '2GB' or a number of bytes -> bytes. Raises ValueError."""
    if isinstance(text, int) and not isinstance(text, bool):
        if text <= 0:
            raise ValueError("must be > 0")
        return text
    match = _SIZE.match(str(text))
    if not match or match.group(2).lower() not in _UNITS:
        raise ValueError("must be a size like \"6GiB\" or \"512MiB\", or \"auto\"")
    value = int(float(match.group(1)) * _UNITS[match.group(2).lower()])
    if value <= 0:
        raise ValueError("must be > 0")
    return value


def mib(n: int | float) -> str:
    """Bytes for people, in the binary units llama.cpp reports its buffers in."""
    if n < 2**20:
        return f"{n / 2**10:,.1f} KiB"
    return f"{n / 2**20:,.1f} MiB" if n < 2**30 else f"{n / 2**30:,.2f} GiB"


Key = tuple[str, bool]  # (model name, embedding context)


@dataclass
class Holding:
    """One context's reservation: its own buffers, and the weights it runs on, which it shares
    with the other context of the same model."""

    ram: int
    vram: int
    pinned: bool
    weights_ram: int = 0
    weights_vram: int = 0
    last_used: float = field(default_factory=time.monotonic)


def footprint(held: Mapping[Key, Holding]) -> tuple[int, int]:
    """(RAM, VRAM) these reservations take together: each context's own buffers, plus each
    model's weights once, however many of its contexts are held."""
    weights: dict[str, tuple[int, int]] = {}
    for (name, _), h in held.items():
        ram, vram = weights.get(name, (0, 0))
        weights[name] = (max(ram, h.weights_ram), max(vram, h.weights_vram))
    return (sum(h.ram for h in held.values()) + sum(ram for ram, _ in weights.values()),
            sum(h.vram for h in held.values()) + sum(vram for _, vram in weights.values()))


@dataclass(frozen=True)
class Admission:
    fits: bool
    evict: tuple[Key, ...]  # keys to unload first (empty when it fits as it is)
    detail: str  # the numbers, for people


class MemoryLedger:
    def __init__(self, ram_budget: int, vram_budget: int | None, process_vram: int = 0):
        self.ram_budget, self.vram_budget = ram_budget, vram_budget  # None: no GPU budget applies
        # What the process holds on the GPU beside its models (memory.GPU_PROCESS_COST on a
        # build that offloads), taken from the VRAM budget once, before any model.
        self.process_vram = process_vram
        self._held: dict[Key, Holding] = {}
        self._correction: dict[Key, float] = {}
        self._lock = threading.Lock()

    def needs(self, key: Key, estimate: MemoryEstimate) -> tuple[int, int]:
        """(RAM, VRAM) this context takes loaded alone: its estimate, corrected after an
        out-of-memory."""
        factor = self._correction.get(key, 1.0)
        return int(estimate.ram * factor), int(estimate.vram * factor)

    def correct_upward(self, key: Key) -> None:
        with self._lock:
            self._correction[key] = self._correction.get(key, 1.0) * OOM_CORRECTION

    def held(self) -> dict[Key, Holding]:
        with self._lock:
            return dict(self._held)

    def consider(self, key: Key, estimate: MemoryEstimate, busy: set[Key]) -> Admission:
        """Does the context fit now, or after evicting which idle contexts (LRU first)? It
        needs its own buffers, and its model's weights unless its other context holds them."""
        new = self._holding(key, estimate, pinned=False)
        with self._lock:
            held = {k: h for k, h in self._held.items() if k != key}

        used_ram, used_vram = footprint(held)
        all_ram, all_vram = footprint(held | {key: new})
        ram, vram = all_ram - used_ram, all_vram - used_vram

        def fits(others: dict[Key, Holding]) -> bool:
            # A context that needs no VRAM is never refused for VRAM that others hold.
            ram_used, vram_used = footprint(others | {key: new})
            return ram_used <= self.ram_budget and (
                self.vram_budget is None or not vram or vram_used + self.process_vram <= self.vram_budget)

        shared = any(k[0] == key[0] for k in held) and (new.weights_ram or new.weights_vram)
        what = f"needs {mib(ram)} of RAM" + (f" and {mib(vram)} of VRAM" if vram else "") + (
            " beside the weights its other context holds" if shared else "")
        free = f"free: {mib(self.ram_budget - used_ram)} of ram_budget {mib(self.ram_budget)}" + (
            f", {mib(self.vram_budget - self.process_vram - used_vram)} of vram_budget "
            f"{mib(self.vram_budget)}" + (f" ({mib(self.process_vram)} of it kept for this "
                                          f"process's CUDA context and workspace)"
                                          if self.process_vram else "")
            if self.vram_budget is not None else "")
        if fits(held):
            return Admission(True, (), f"{what}; {free}")
        evict: list[Key] = []
        remaining = dict(held)
        for k, h in sorted(held.items(), key=lambda item: item[1].last_used):
            if fits(remaining):
                break
            if h.pinned or k in busy:
                continue
            evict.append(k)
            del remaining[k]
        ok = fits(remaining)
        detail = f"{what}; {free}" + (f" (held by {_holders(held)})" if held else "")
        if not ok:
            detail += "; lower n_ctx, raise the budget, or unpin a model"
        return Admission(ok, tuple(evict) if ok else (), detail)

    def take(self, key: Key, estimate: MemoryEstimate, pinned: bool) -> None:
        holding = self._holding(key, estimate, pinned)
        with self._lock:
            self._held[key] = holding

    def _holding(self, key: Key, estimate: MemoryEstimate, pinned: bool) -> Holding:
        factor = self._correction.get(key, 1.0)
        own = without_weights(estimate)
        weights_ram, weights_vram = weights_part(estimate)
        return Holding(int(own.ram * factor), int(own.vram * factor), pinned,
                       int(weights_ram * factor), int(weights_vram * factor))

    def touch(self, key: Key) -> None:
        with self._lock:
            if key in self._held:
                self._held[key].last_used = time.monotonic()

    def release(self, key: Key) -> None:
        with self._lock:
            self._held.pop(key, None)


def _holders(held: dict[Key, Holding]) -> str:
    """'a (generate + embed) 4.1 GiB, b 812.0 MiB': what each model holds, weights once."""
    names = dict.fromkeys(name for name, _ in held)
    parts = []
    for name in names:
        mine = {k: h for k, h in held.items() if k[0] == name}
        kinds = {embedding for _, embedding in mine}
        label = " (generate + embed)" if len(kinds) == 2 else " (embed)" if True in kinds else ""
        parts.append(f"{name}{label} {mib(sum(footprint(mine)))}")
    return ", ".join(parts)


def gpu_offload_supported() -> bool:
    """Whether this llama.cpp build can put layers on a GPU (a CPU-only build ignores n_gpu_layers)."""
    try:
        import llama_cpp

        return bool(llama_cpp.llama_supports_gpu_offload())
    except Exception:  # no usable llama.cpp: nothing will load anyway, and that says why
        return False


def memory_budgets(ram_budget: int | None, vram_budget: int | None, headroom: int,
                    gpu: bool) -> tuple[int, int | None]:
    """The RAM and VRAM budgets in bytes; None ("auto") is what is free now minus the headroom.
    VRAM only matters for a build that can offload, and is unbounded when it cannot be measured."""
    import psutil

    ram = ram_budget if ram_budget is not None else \
        max(0, psutil.virtual_memory().available - headroom)
    if not gpu:
        return ram, None
    if vram_budget is None:
        free = _free_vram()
        if free is None:
            log.warning("cannot measure free VRAM (install nvidia-ml-py, or set vram_budget); "
                        "VRAM is not budgeted")
            return ram, None
        vram_budget = max(0, free - headroom)
    return ram, vram_budget


def _free_vram() -> int | None:
    try:
        import pynvml  # from nvidia-ml-py, when installed

        pynvml.nvmlInit()
        return int(pynvml.nvmlDeviceGetMemoryInfo(pynvml.nvmlDeviceGetHandleByIndex(0)).free)
    except Exception:
        return None
