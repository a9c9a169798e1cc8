"""What models.toml declares and what is actually on this machine, for `zeta-local models`."""

from __future__ import annotations

from typing import Any

from zeta_local.config import Config
from zeta_local.errors import InvalidModelFile, ModelFileMissing
from zeta_local.gguf_info import read_gguf_info
from zeta_local.sources import find_model_file


def describe_models(config: Config) -> list[dict[str, Any]]:
    """One row per model: its source, whether its file is here and valid, and its header facts.
    Reads GGUF headers only; loads nothing and assembles nothing."""
    rows = []
    for name, spec in config.models.items():
        row: dict[str, Any] = {
            "name": name, "source": spec.source, "file": "present", "path": None,
            "size_bytes": None, "quantization": None, "architecture": None,
            "n_ctx": spec.n_ctx, "trained_context": None,
            "capabilities": sorted(spec.capabilities), "routes": config.routes_using(name),
            "description": spec.description, "problem": None,
        }
        if spec.remote:  # no file: its engine holds it (the key is never shown, only its variable's name)
            row |= {"file": "remote", "n_ctx": None, "endpoint": spec.endpoint,
                    "remote_model": spec.remote_model, "api_key_env": spec.api_key_env}
            rows.append(row)
            continue
        try:
            path = find_model_file(spec, materialize=False)
            if path is None:
                row["file"] = "on first use"  # a package whose weights are assembled when needed
            else:
                row["path"] = str(path)
                info = read_gguf_info(path)
                row |= {"size_bytes": info.file_size, "quantization": info.quantization,
                        "architecture": info.architecture, "trained_context": info.context_length}
        except ModelFileMissing as exc:
            row |= {"file": "missing", "problem": str(exc)}
        except InvalidModelFile as exc:
            row |= {"file": "invalid", "problem": str(exc)}
        rows.append(row)
    return rows


def plan_models(config: Config) -> dict[str, Any]:
    """The memory each model will take, by part, predicted from its GGUF header, and whether it
    fits the budgets now (both of its contexts at once, beside the process's own GPU cost on a
    build that offloads). A model that serves both loads its weights once: its embedding
    context's row counts no weights (`shares_weights`). Loads nothing; a package not yet
    assembled, or a missing file, has no header to predict from."""
    from zeta_local.admission import gpu_offload_supported, memory_budgets
    from zeta_local.memory import GPU_PROCESS_COST, estimate_for, flash_attn_on, without_weights

    settings = config.router
    gpu = gpu_offload_supported()
    ram_budget, vram_budget = memory_budgets(settings.ram_budget, settings.vram_budget,
                                              settings.memory_headroom, gpu)
    process_vram = GPU_PROCESS_COST if gpu else 0
    rows = []
    for row in describe_models(config):
        spec = config.models[row["name"]]
        plan: dict[str, Any] = {"name": row["name"], "file": row["file"], "problem": row["problem"],
                                "flash_attn": not spec.remote and flash_attn_on(spec, gpu=gpu),
                                "generate": None, "embed": None, "fits": None}
        if spec.remote:
            plan |= {"remote": "remote: no local memory", "fits": True}
        elif row["path"] is not None and row["file"] == "present":
            info = read_gguf_info(row["path"])
            ram = vram = 0
            for purpose in ("generate", "embed"):
                if purpose in spec.capabilities:
                    estimate = estimate_for(spec, info, gpu=gpu, embedding=purpose == "embed")
                    shares = purpose == "embed" and "generate" in spec.capabilities
                    if shares:
                        estimate = without_weights(estimate)
                    plan[purpose] = estimate.to_dict() | {"shares_weights": shares}
                    ram, vram = ram + estimate.ram, vram + estimate.vram
            plan["fits"] = ram <= ram_budget and (vram_budget is None or vram + process_vram <= vram_budget)
        rows.append(plan)
    return {"ram_budget": ram_budget, "vram_budget": vram_budget, "gpu_offload": gpu,
            "gpu_process_cost": process_vram, "models": rows}
