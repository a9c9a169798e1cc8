"""What the benchmark reads from an NVIDIA GPU, without torch: NVML through `pynvml` (from
nvidia-ml-py) where it is importable, and the CUDA driver API (libcuda.so.1, present wherever the
driver is) through ctypes.

    gpu_facts()            name, memory, driver, and the peak memory bandwidth from NVML's
                           maximum memory clock and bus width
    device_used()          bytes in use on the device (NVML, else the driver's cuMemGetInfo)
    process_used()         bytes this process holds on the device (NVML only)
    copy_bandwidth()       a device-to-device copy, timed: the bandwidth the card delivers
    hold_vram()            another process that holds all but N bytes of the card, for a real
                           out-of-memory

Every function answers None (or a dict with a "note") where the GPU, NVML or the driver cannot be
reached, so that a CPU machine runs the same code and only reports less.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import select
import statistics
import subprocess
import sys
import time
from typing import Any, Iterator

_DTOD_COPIES = 10  # copies per timed batch: long enough (tens of ms) for perf_counter


def peak_bandwidth(memory_clock_mhz: float, bus_width_bits: int) -> float:
    """Bytes per second from the maximum memory clock and the bus width, as NVML reports them:
    two transfers per clock (an H100 SXM: 2,619 MHz x 5,120 bits -> 3.35 TB/s)."""
    return memory_clock_mhz * 1e6 * 2 * bus_width_bits / 8


def _nvml() -> Any | None:
    """The pynvml module, initialised, or None."""
    try:
        import pynvml

        pynvml.nvmlInit()
        return pynvml
    except Exception:
        return None


def gpu_facts() -> dict[str, Any]:
    nv = _nvml()
    if nv is None:
        return {"note": "NVML is not available (install nvidia-ml-py): no device facts"}
    try:
        handle = nv.nvmlDeviceGetHandleByIndex(0)
        name = nv.nvmlDeviceGetName(handle)
        facts: dict[str, Any] = {
            "name": name.decode() if isinstance(name, bytes) else name,
            "memory_total_bytes": int(nv.nvmlDeviceGetMemoryInfo(handle).total),
            "driver": _text(nv.nvmlSystemGetDriverVersion()),
            "devices": int(nv.nvmlDeviceGetCount()),
        }
        clock = nv.nvmlDeviceGetMaxClockInfo(handle, nv.NVML_CLOCK_MEM)
        width = nv.nvmlDeviceGetMemoryBusWidth(handle)
        facts |= {"memory_clock_mhz_max": int(clock), "memory_bus_width_bits": int(width),
                  "peak_bandwidth_gb_s": round(peak_bandwidth(clock, width) / 1e9, 1)}
        return facts
    except Exception as exc:
        return {"note": f"NVML failed: {exc}"}


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def device_used() -> int | None:
    """Bytes in use on device 0, by every process."""
    nv = _nvml()
    if nv is not None:
        try:
            return int(nv.nvmlDeviceGetMemoryInfo(nv.nvmlDeviceGetHandleByIndex(0)).used)
        except Exception:
            pass
    with contextlib.suppress(Exception), _Driver() as cu:
        free, total = cu.mem_info()
        return total - free
    return None


def process_used(pid: int | None = None) -> int | None:
    """Bytes this process (or `pid`) holds on device 0, as NVML sees it; None where NVML is
    missing or cannot see the process (a container with its own process ids)."""
    nv = _nvml()
    if nv is None:
        return None
    pid = os.getpid() if pid is None else pid
    try:
        for p in nv.nvmlDeviceGetComputeRunningProcesses(nv.nvmlDeviceGetHandleByIndex(0)):
            if p.pid == pid and p.usedGpuMemory is not None:
                return int(p.usedGpuMemory)
    except Exception:
        pass
    return None


def copy_bandwidth(nbytes: int = 1 << 30, repeats: int = 5) -> float | None:
    """Bytes per second moved by a device-to-device copy of `nbytes` (each copy reads and writes
    them, so it counts twice): the median of `repeats` timed batches. None without a GPU."""
    try:
        with _Driver() as cu:
            src, dst = cu.alloc(nbytes), cu.alloc(nbytes)
            try:
                cu.copy(dst, src, nbytes)  # warm-up
                cu.sync()
                rates = []
                for _ in range(repeats):
                    started = time.perf_counter()
                    for _ in range(_DTOD_COPIES):
                        cu.copy(dst, src, nbytes)
                    cu.sync()
                    rates.append(2 * nbytes * _DTOD_COPIES / (time.perf_counter() - started))
                return statistics.median(rates)
            finally:
                cu.free(src)
                cu.free(dst)
    except (OSError, RuntimeError, AttributeError):
        return None


class _Driver:
    """The CUDA driver API on device 0's primary context (the one the CUDA runtime, and so
    llama.cpp, uses too: no second context is created)."""

    def __enter__(self) -> _Driver:
        cu = ctypes.CDLL("libcuda.so.1")
        cu.cuMemAlloc_v2.argtypes = [ctypes.POINTER(ctypes.c_uint64), ctypes.c_size_t]
        cu.cuMemFree_v2.argtypes = [ctypes.c_uint64]
        cu.cuMemcpyDtoD_v2.argtypes = [ctypes.c_uint64, ctypes.c_uint64, ctypes.c_size_t]
        cu.cuMemGetInfo_v2.argtypes = [ctypes.POINTER(ctypes.c_size_t), ctypes.POINTER(ctypes.c_size_t)]
        self.cu = cu
        self._check(cu.cuInit(0), "cuInit")
        self.device = ctypes.c_int()
        self._check(cu.cuDeviceGet(ctypes.byref(self.device), 0), "cuDeviceGet")
        context = ctypes.c_void_p()
        self._check(cu.cuDevicePrimaryCtxRetain(ctypes.byref(context), self.device), "cuDevicePrimaryCtxRetain")
        self._check(cu.cuCtxSetCurrent(context), "cuCtxSetCurrent")
        return self

    def __exit__(self, *exc_info: object) -> None:
        release = getattr(self.cu, "cuDevicePrimaryCtxRelease_v2", None) or self.cu.cuDevicePrimaryCtxRelease
        release(self.device)

    @staticmethod
    def _check(code: int, what: str) -> None:
        if code != 0:
            raise RuntimeError(f"{what} failed: CUDA error {code}")

    def mem_info(self) -> tuple[int, int]:
        free, total = ctypes.c_size_t(), ctypes.c_size_t()
        self._check(self.cu.cuMemGetInfo_v2(ctypes.byref(free), ctypes.byref(total)), "cuMemGetInfo")
        return free.value, total.value

    def alloc(self, nbytes: int) -> int:
        pointer = ctypes.c_uint64()
        self._check(self.cu.cuMemAlloc_v2(ctypes.byref(pointer), nbytes), "cuMemAlloc")
        return pointer.value

    def free(self, pointer: int) -> None:
        self.cu.cuMemFree_v2(pointer)

    def copy(self, dst: int, src: int, nbytes: int) -> None:
        self._check(self.cu.cuMemcpyDtoD_v2(dst, src, nbytes), "cuMemcpyDtoD")

    def sync(self) -> None:
        self._check(self.cu.cuCtxSynchronize(), "cuCtxSynchronize")


# A separate process that takes all of device 0 but `leave` bytes with cuMemAlloc (the driver
# commits device memory at once), says so on stdout, and holds it until its stdin closes or
# `limit` seconds pass. Exiting returns everything.
_HOLDER = r"""
import ctypes, select, sys
leave, limit = int(sys.argv[1]), float(sys.argv[2])
cu = ctypes.CDLL("libcuda.so.1")
cu.cuMemAlloc_v2.argtypes = [ctypes.POINTER(ctypes.c_uint64), ctypes.c_size_t]
cu.cuMemGetInfo_v2.argtypes = [ctypes.POINTER(ctypes.c_size_t), ctypes.POINTER(ctypes.c_size_t)]
def check(code, what):
    if code:
        print(f"error {what}: CUDA error {code}", flush=True)
        sys.exit(1)
check(cu.cuInit(0), "cuInit")
device, context = ctypes.c_int(), ctypes.c_void_p()
check(cu.cuDeviceGet(ctypes.byref(device), 0), "cuDeviceGet")
check(cu.cuDevicePrimaryCtxRetain(ctypes.byref(context), device), "cuDevicePrimaryCtxRetain")
check(cu.cuCtxSetCurrent(context), "cuCtxSetCurrent")
free, total, held, chunk = ctypes.c_size_t(), ctypes.c_size_t(), 0, 1 << 30
while chunk >= 1 << 24:
    check(cu.cuMemGetInfo_v2(ctypes.byref(free), ctypes.byref(total)), "cuMemGetInfo")
    pointer = ctypes.c_uint64()
    if free.value - chunk < leave or cu.cuMemAlloc_v2(ctypes.byref(pointer), chunk):
        chunk //= 2
        continue
    held += chunk
check(cu.cuMemGetInfo_v2(ctypes.byref(free), ctypes.byref(total)), "cuMemGetInfo")
print(f"ready {held} {free.value} {total.value}", flush=True)
select.select([sys.stdin], [], [], limit)
"""


@contextlib.contextmanager
def hold_vram(leave: int, *, limit_s: float = 300.0, ready_s: float = 60.0) -> Iterator[dict[str, int]]:
    """Another process holds all of device 0 but about `leave` bytes while the block runs;
    yields {"held_bytes", "free_bytes", "total_bytes"} as that process saw them. Bounded: the
    holder gives up after `limit_s` on its own, and is killed on the way out."""
    proc = subprocess.Popen([sys.executable, "-c", _HOLDER, str(leave), str(limit_s)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        line = ""
        ready, _, _ = select.select([proc.stdout], [], [], ready_s)
        if ready and proc.stdout is not None:
            line = proc.stdout.readline().strip()
        if not line.startswith("ready "):
            why = line or f"no answer within {ready_s:g} s"
            if not line and ready:  # it ended without a word: its stderr says why
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=10)
                    lines = (proc.stderr.read() if proc.stderr else "").strip().splitlines()
                    why = lines[-1] if lines else why  # the exception's own line
            raise RuntimeError(f"the process holding VRAM failed: {why[-300:]}")
        held, free, total = (int(x) for x in line.split()[1:4])
        yield {"held_bytes": held, "free_bytes": free, "total_bytes": total}
    finally:
        if proc.stdin is not None:
            with contextlib.suppress(OSError):
                proc.stdin.close()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
