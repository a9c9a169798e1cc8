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
