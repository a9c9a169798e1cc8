"""Read what we need from a GGUF header without loading weights, and check the file is whole.

`gguf.GGUFReader` parses every metadata array into Python objects (9.7 s for Gemma 3 270M's
262k-token vocabulary), so this reader skips long arrays and keeps only scalars, strings and short
arrays. It uses the gguf package's own constants for value and tensor types. Results are cached
by (path, size, mtime), so a file is parsed once per process unless it changes.

Passing this check before a file reaches llama.cpp matters: llama.cpp may abort the whole process
on a truncated file, while here it becomes an InvalidModelFile naming what is wrong.
"""

from __future__ import annotations

import mmap
import os
import struct
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from gguf.constants import GGML_QUANT_SIZES, GGUF_MAGIC, GGMLQuantizationType, GGUFValueType, LlamaFileType

from zeta_local.errors import InvalidModelFile, ModelFileMissing

_MAX_KEPT_ARRAY = 1024  # longer arrays (vocabularies, merges) are skipped, not decoded
_MAX_COUNT = 1 << 24  # no real GGUF has more tensors or metadata keys than this
_MAX_DIMS = 4  # GGML_MAX_DIMS
_DEFAULT_ALIGNMENT = 32

_SCALARS = {
    GGUFValueType.UINT8: "<B", GGUFValueType.INT8: "<b", GGUFValueType.UINT16: "<H",
    GGUFValueType.INT16: "<h", GGUFValueType.UINT32: "<I", GGUFValueType.INT32: "<i",
    GGUFValueType.FLOAT32: "<f", GGUFValueType.BOOL: "<?", GGUFValueType.UINT64: "<Q",
    GGUFValueType.INT64: "<q", GGUFValueType.FLOAT64: "<d",
}


@dataclass(frozen=True)
class SkippedArray:
    """A metadata array too long to be worth decoding; only its element type and length are kept."""

    type: str
    length: int


@dataclass(frozen=True)
class TensorInfo:
    name: str
    shape: tuple[int, ...]
    type: str  # e.g. "Q4_K", "F32"
    offset: int  # from the start of the data section
    nbytes: int


@dataclass(frozen=True)
class GGUFInfo:
    path: Path
    file_size: int
    version: int
    metadata: Mapping[str, Any]
    tensors: tuple[TensorInfo, ...]
    data_offset: int

    @property
    def architecture(self) -> str:
        return str(self.metadata.get("general.architecture", "unknown"))

    def arch_value(self, key: str, default: Any = None) -> Any:
        """An architecture-scoped key, e.g. arch_value('context_length') -> llama.context_length."""
        return self.metadata.get(f"{self.architecture}.{key}", default)

    @property
    def context_length(self) -> int | None:
        value = self.arch_value("context_length")
        return int(value) if isinstance(value, int) else None

    @property
    def chat_template(self) -> str | None:
        value = self.metadata.get("tokenizer.chat_template")
        return value if isinstance(value, str) and value.strip() else None

    @property
    def n_params(self) -> int:
        total = 0
        for t in self.tensors:
            count = 1
            for dim in t.shape:
                count *= dim
            total += count
        return total

    @property
    def quantization(self) -> str:
        """The file type the publisher declared (Q4_K_M, ...), else the commonest tensor type."""
        file_type = self.metadata.get("general.file_type")
        if isinstance(file_type, int):
            try:
                return LlamaFileType(file_type).name.removeprefix("MOSTLY_")
            except ValueError:
                pass
        by_bytes: dict[str, int] = {}
        for t in self.tensors:
            by_bytes[t.type] = by_bytes.get(t.type, 0) + t.nbytes
        return max(by_bytes, key=by_bytes.__getitem__) if by_bytes else "unknown"


_cache: dict[tuple[str, int, int], GGUFInfo | InvalidModelFile] = {}
_cache_lock = threading.Lock()


def read_gguf_info(path: str | os.PathLike[str]) -> GGUFInfo:
    """Parse and check a GGUF header. Raises ModelFileMissing or InvalidModelFile."""
    path = Path(path)
    try:
        st = path.stat()
    except FileNotFoundError:
        raise ModelFileMissing(f"{path}: no such file") from None
    except OSError as exc:
        raise InvalidModelFile(f"{path}: cannot read: {exc.strerror or exc}") from None
    if not path.is_file():
        raise InvalidModelFile(f"{path}: not a regular file")
    key = (str(path.absolute()), st.st_size, st.st_mtime_ns)
    with _cache_lock:
        cached = _cache.get(key)
    if cached is None:
        try:
            cached = _parse(path, st.st_size)
        except InvalidModelFile as exc:
            cached = exc  # a broken file stays broken until it changes: remember that too
        with _cache_lock:
            _cache[key] = cached
    if isinstance(cached, InvalidModelFile):
        raise InvalidModelFile(str(cached))
    return cached


def _parse(path: Path, size: int) -> GGUFInfo:
    def bad(problem: str) -> InvalidModelFile:
        return InvalidModelFile(f"{path}: {problem}")

    if size < 24:
        raise bad(f"only {size} bytes, too small to be a GGUF model file")
    try:
        with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buf:
            return _Reader(path, buf, size, bad).read()
    except OSError as exc:
        raise bad(f"cannot read: {exc.strerror or exc}") from None


class _Reader:
    def __init__(self, path: Path, buf: Any, size: int, bad: Any):
        self.path, self.buf, self.size, self.bad = path, buf, size, bad
        self.pos = 0

    def read(self) -> GGUFInfo:
        magic = bytes(self.buf[:4])
        if struct.unpack("<I", magic)[0] != GGUF_MAGIC:
            raise self.bad(f"not a GGUF file ({_describe_start(bytes(self.buf[:64]))})")
        self.pos = 4
        version = self.unpack("<I")
        if version not in (2, 3):
            if version > 0xFFFF:  # a byte-swapped small number
                raise self.bad("a big-endian GGUF; llama.cpp on this machine needs little-endian")
            raise self.bad(f"GGUF version {version} is not supported (2 or 3 expected)")
        n_tensors, n_kv = self.unpack("<Q"), self.unpack("<Q")
        if n_tensors > _MAX_COUNT or n_kv > _MAX_COUNT:
            raise self.bad(f"corrupt header: claims {n_tensors} tensors and {n_kv} metadata keys")
        metadata: dict[str, Any] = {}
        for _ in range(n_kv):
            key = self.string()
            metadata[key] = self.value(self.value_type())
        tensors = [self.tensor_info() for _ in range(n_tensors)]
        alignment = metadata.get("general.alignment", _DEFAULT_ALIGNMENT)
        if not isinstance(alignment, int) or alignment <= 0 or alignment & (alignment - 1):
            raise self.bad(f"corrupt header: general.alignment = {alignment!r}")
        data_offset = -(-self.pos // alignment) * alignment
        needed = data_offset + max((t.offset + t.nbytes for t in tensors), default=0)
        if needed > self.size:
            raise self.bad(
                f"truncated: the file is {self.size:,} bytes but its tensors need {needed:,} "
                f"({needed - self.size:,} missing); the download or copy did not finish")
        return GGUFInfo(self.path, self.size, version, metadata, tuple(tensors), data_offset)

    def unpack(self, fmt: str) -> Any:
        width = struct.calcsize(fmt)
        if self.pos + width > self.size:
            raise self.bad("truncated inside the header")
        value = struct.unpack_from(fmt, self.buf, self.pos)[0]
        self.pos += width
        return value

    def string(self) -> str:
        length = self.unpack("<Q")
        if self.pos + length > self.size:
            raise self.bad("truncated inside the header (a string runs past the end of the file)")
        raw = self.buf[self.pos:self.pos + length]
        self.pos += length
        return raw.decode("utf-8", errors="replace")

    def value_type(self) -> GGUFValueType:
        raw = self.unpack("<I")
        try:
            return GGUFValueType(raw)
        except ValueError:
            raise self.bad(f"corrupt header: unknown metadata value type {raw}") from None

    def value(self, vtype: GGUFValueType) -> Any:
        if vtype == GGUFValueType.STRING:
            return self.string()
        if vtype == GGUFValueType.ARRAY:
            item_type, length = self.value_type(), self.unpack("<Q")
            if length > self.size:
                raise self.bad(f"corrupt header: an array claims {length} elements")
            if length <= _MAX_KEPT_ARRAY:
                return tuple(self.value(item_type) for _ in range(length))
            self.skip_array(item_type, length)
            return SkippedArray(item_type.name, length)
        return self.unpack(_SCALARS[vtype])

    def skip_array(self, item_type: GGUFValueType, length: int) -> None:
        if item_type in _SCALARS:
            width = struct.calcsize(_SCALARS[item_type]) * length
            if self.pos + width > self.size:
                raise self.bad("truncated inside the header (an array runs past the end)")
            self.pos += width
        elif item_type == GGUFValueType.STRING:
            unpack_from, buf, pos = struct.unpack_from, self.buf, self.pos
            for _ in range(length):  # the hot loop of the whole reader: keep it bare
                if pos + 8 > self.size:
                    raise self.bad("truncated inside the header (an array runs past the end)")
                pos += 8 + unpack_from("<Q", buf, pos)[0]
            self.pos = pos
        else:
            for _ in range(length):
                self.value(item_type)

    def tensor_info(self) -> TensorInfo:
        name = self.string()
        n_dims = self.unpack("<I")
        if not 1 <= n_dims <= _MAX_DIMS:
            raise self.bad(f"corrupt header: tensor {name!r} has {n_dims} dimensions")
        shape = tuple(self.unpack("<Q") for _ in range(n_dims))
        raw_type = self.unpack("<I")
        offset = self.unpack("<Q")
        try:
            qtype = GGMLQuantizationType(raw_type)
            block_size, type_size = GGML_QUANT_SIZES[qtype]
        except (ValueError, KeyError):
            raise self.bad(f"tensor {name!r} has a tensor type ({raw_type}) this reader does not "
                           "know; a newer llama.cpp and gguf package may be needed") from None
        count = 1
        for dim in shape:
            count *= dim
        if shape[0] % block_size:
            raise self.bad(f"corrupt header: tensor {name!r} row of {shape[0]} is not a multiple "
                           f"of its {qtype.name} block size {block_size}")
        return TensorInfo(name, shape, qtype.name, offset, count // block_size * type_size)


def _describe_start(head: bytes) -> str:
    """Say what the file looks like instead, because the usual culprits are easy to recognise."""
    if head.startswith(b"version https://git-lfs"):
        return "it is a Git LFS pointer; fetch the real file with `git lfs pull` or download it"
    stripped = head.lstrip().lower()
    if stripped.startswith((b"<!doctype html", b"<html")):
        return "it is an HTML page, probably an error page saved by a failed download"
    if stripped.startswith(b"{"):
        return "it is JSON text, not model weights"
    if head.startswith(b"ggjt") or head.startswith(b"tjgg") or head.startswith(b"ggml"):
        return "it is an old GGML/GGJT model; convert it to GGUF with llama.cpp's tools"
    return f"it starts with {head[:8]!r} instead of b'GGUF'"
