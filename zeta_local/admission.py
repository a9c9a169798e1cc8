"""Admission: a model is loaded only when its predicted memory fits the budgets.

The ledger records what each loaded model holds (its estimate, corrected upward after an
out-of-memory). A model that does not fit may fit after evicting idle models, least recently
used first, never a pinned or busy one; the router decides whether that is worth it.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from dataclasses import dataclass, field

from zeta_local.memory import MemoryEstimate

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


@dataclass
class Holding:
    ram: int
    vram: int
    pinned: bool
    last_used: float = field(default_factory=time.monotonic)


@dataclass(frozen=True)
class Admission:
    fits: bool
    evict: tuple[tuple[str, bool], ...]  # keys to unload first (empty when it fits as it is)
    detail: str  # the numbers, for people


class MemoryLedger:
    def __init__(self, ram_budget: int, vram_budget: int | None, process_vram: int = 0):
        self.ram_budget, self.vram_budget = ram_budget, vram_budget  # None: no GPU budget applies
        # What the process holds on the GPU beside its models (memory.GPU_PROCESS_COST on a
        # build that offloads), taken from the VRAM budget once, before any model.
        self.process_vram = process_vram
        self._held: dict[tuple[str, bool], Holding] = {}
        self._correction: dict[tuple[str, bool], float] = {}
        self._lock = threading.Lock()

    def needs(self, key: tuple[str, bool], estimate: MemoryEstimate) -> tuple[int, int]:
        """(RAM, VRAM) this model will take: its estimate, corrected after an out-of-memory."""
        factor = self._correction.get(key, 1.0)
        return int(estimate.ram * factor), int(estimate.vram * factor)

    def correct_upward(self, key: tuple[str, bool]) -> None:
        with self._lock:
            self._correction[key] = self._correction.get(key, 1.0) * OOM_CORRECTION

    def held(self) -> dict[tuple[str, bool], Holding]:
        with self._lock:
            return dict(self._held)

    def consider(self, key: tuple[str, bool], estimate: MemoryEstimate,
                 busy: set[tuple[str, bool]]) -> Admission:
        """Does the model fit now, or after evicting which idle models (LRU first)?"""
        ram, vram = self.needs(key, estimate)
        with self._lock:
            held = {k: h for k, h in self._held.items() if k != key}
            free_ram = self.ram_budget - sum(h.ram for h in held.values())
            free_vram = None if self.vram_budget is None else \
                self.vram_budget - self.process_vram - sum(h.vram for h in held.values())
        what = f"needs {mib(ram)} of RAM" + (f" and {mib(vram)} of VRAM" if vram else "")
        free = f"free: {mib(free_ram)} of ram_budget {mib(self.ram_budget)}" + (
            f", {mib(free_vram)} of vram_budget {mib(self.vram_budget)}"
            + (f" ({mib(self.process_vram)} of it kept for this process's CUDA context and workspace)"
               if self.process_vram else "")
            if free_vram is not None and self.vram_budget is not None else "")
        if ram <= free_ram and (free_vram is None or not vram or vram <= free_vram):
            return Admission(True, (), f"{what}; {free}")
        evict: list[tuple[str, bool]] = []
        for k, h in sorted(held.items(), key=lambda item: item[1].last_used):
            if ram <= free_ram and (free_vram is None or not vram or vram <= free_vram):
                break
            if h.pinned or k in busy:
                continue
            evict.append(k)
            free_ram += h.ram
            if free_vram is not None:
                free_vram += h.vram
        fits = ram <= free_ram and (free_vram is None or not vram or vram <= free_vram)
        holders = ", ".join(f"{k[0]}{' (embed)' if k[1] else ''} {mib(h.ram + h.vram)}"
                            for k, h in held.items())
        detail = f"{what}; {free}" + (f" (held by {holders})" if holders else "")
        if not fits:
            detail += "; lower n_ctx, raise the budget, or unpin a model"
        return Admission(fits, tuple(evict) if fits else (), detail)

    def take(self, key: tuple[str, bool], estimate: MemoryEstimate, pinned: bool) -> None:
        ram, vram = self.needs(key, estimate)
        with self._lock:
            self._held[key] = Holding(ram, vram, pinned)

    def touch(self, key: tuple[str, bool]) -> None:
        with self._lock:
            if key in self._held:
                self._held[key].last_used = time.monotonic()

    def release(self, key: tuple[str, bool]) -> None:
        with self._lock:
            self._held.pop(key, None)


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
