"""`zeta-local doctor`: what a person needs to see before filing a bug, in one report.

The machine and the llama.cpp build, memory and budgets, every model's file (present, size,
valid header, sha256 when models.toml gives one), every remote engine (reachable, whether it
lists its model, the round trip), and for every task the models that could serve it now.
Healthy when every task has at least one. A remote that is down, busy, refuses the key or has
no key set cannot serve now: a task whose chain has nothing else is unhealthy (exit 1), one
with a local model after it is not.
"""

from __future__ import annotations

import platform
from typing import Any

from zeta_local.admission import gpu_offload_supported, memory_budgets, mib
from zeta_local.config import TASK_CAPABILITY, Config
from zeta_local.errors import InvalidModelFile, ModelFileMissing
from zeta_local.gguf_info import read_gguf_info
from zeta_local.memory import GPU_PROCESS_COST, context_length, estimate_for, flash_attn_on
from zeta_local.sources import find_model_file

REMOTE_TIMEOUT_S = 5.0  # each step of a remote's check, at most (less if load_timeout_s is less)


def run_doctor(config: Config) -> tuple[str, bool]:
    """(the report, whether every task has a model able to serve it now)."""
    import llama_cpp
    import psutil

    from zeta_local import __version__

    settings = config.router
    gpu = gpu_offload_supported()
    ram_budget, vram_budget = memory_budgets(settings.ram_budget, settings.vram_budget,
                                             settings.memory_headroom, gpu)
    memory = psutil.virtual_memory()
    lines = [
        f"zeta_local {__version__}, Python {platform.python_version()}, "
        f"llama-cpp-python {llama_cpp.__version__}, {platform.system()} {platform.machine()}",
        "llama.cpp build: " + ("can offload to a GPU" if gpu else "CPU only (n_gpu_layers is ignored; "
                                                             "see the README to build for a GPU)"),
        f"CPU features: {llama_cpp.llama_print_system_info().decode('utf-8', 'replace').strip()}",
        f"RAM: {mib(memory.total)} total, {mib(memory.available)} available; ram_budget "
        + (mib(ram_budget) + (" (auto)" if settings.ram_budget is None else "")),
        "VRAM budget: " + (mib(vram_budget) if vram_budget is not None else "none (no GPU build, or not measurable)")
        + (f"; {mib(GPU_PROCESS_COST)} of it for this process's CUDA context and workspace, counted once"
           if gpu and vram_budget is not None else ""),
        f"config: {config.path}",
        "",
        "models:",
    ]
    usable: dict[str, bool] = {}
    for name, spec in config.models.items():
        if spec.remote:
            status, detail, usable[name] = _check_remote(spec, settings.load_timeout_s)
            lines.append(f"  {name:14} {status:12} {detail}")
            continue
        status, detail = _check_model(spec, ram_budget, vram_budget, gpu)
        usable[name] = status == "ok"
        lines.append(f"  {name:14} {status:12} {detail}")
    lines += ["", "routes (a model marked * can serve the task now):"]
    healthy = True
    for task, chain in config.routes.items():
        able = [n for n in chain if usable[n] and TASK_CAPABILITY[task] in config.models[n].capabilities]
        marked = ", ".join(f"{n}{'*' if n in able else ''}" for n in chain)
        verdict = f"answered by {able[0]}" if able else "NO MODEL CAN SERVE IT"
        healthy &= bool(able)
        lines.append(f"  {task:7} {marked}  -> {verdict}")
    lines += ["", "healthy: every task has a model that can serve it" if healthy
              else "not healthy: a task above has no model that can serve it"]
    return "\n".join(lines), healthy


def _check_remote(spec: Any, load_timeout_s: float) -> tuple[str, str, bool]:
    """(status, detail, whether it can serve now): one GET {endpoint}/models, bounded."""
    from zeta_local.remote import probe

    timeout_s = min(REMOTE_TIMEOUT_S, spec.load_timeout_s or load_timeout_s)
    found = probe(spec, timeout_s)
    key = f"; key from ${spec.api_key_env}" if spec.api_key_env and found.status != "no_key" else ""
    return found.status, f"remote {spec.remote_model!r}: {found.detail}{key}", found.can_serve


def _check_model(spec: Any, ram_budget: int, vram_budget: int | None, gpu: bool) -> tuple[str, str]:
    from zeta_local.downloads import sha256_of

    try:
        path = find_model_file(spec)
        assert path is not None
        info = read_gguf_info(path)
    except ModelFileMissing as exc:
        return "missing", str(exc)
    except InvalidModelFile as exc:
        return "corrupt", f"{exc}; delete it and download it again"
    facts = f"{mib(info.file_size)}, {info.quantization}, {info.architecture}, {path}"
    if spec.sha256 is not None:
        actual = sha256_of(path)
        if actual != spec.sha256:
            return "corrupt", f"sha256 {actual} but models.toml expects {spec.sha256}; {facts}"
        facts += ", sha256 matches"
    estimate = estimate_for(spec, info, gpu=gpu)
    n_ctx = context_length(spec.n_ctx, info)
    flash = f"flash attention {'on' if flash_attn_on(spec, gpu=gpu) else 'off'}"
    process_vram = GPU_PROCESS_COST if gpu else 0
    if estimate.ram > ram_budget or (vram_budget is not None and estimate.vram + process_vram > vram_budget):
        return "too_big", (f"needs {mib(estimate.ram)} of RAM" + (f" and {mib(estimate.vram)} of VRAM"
                                                                  if estimate.vram else "")
                           + f" at n_ctx {n_ctx}, {flash}, over the budget; {facts}")
    return "ok", f"{facts}; needs {mib(estimate.total)} at n_ctx {n_ctx}, {flash}"
