"""The GGUF header check: what it reads, and every broken file it must turn into a clear error."""

from __future__ import annotations

import struct
import time
from pathlib import Path

import pytest

from zeta_local.errors import InvalidModelFile, ModelFileMissing
from zeta_local.gguf_info import SkippedArray, read_gguf_info


def test_reads_the_facts_of_a_generated_model(tiny_models: dict[str, Path]):
    """Architecture, context, tensors and quantization come from the header alone."""
    info = read_gguf_info(tiny_models["tiny-a"])
    assert info.architecture == "llama"
    assert info.context_length == 2048
    assert info.version == 3
    assert len(info.tensors) == 3 + 2 * 9
    assert info.quantization == "ALL_F32"
    embd = next(t for t in info.tensors if t.name == "token_embd.weight")
    assert embd.shape == (64, 259) and embd.type == "F32" and embd.nbytes == 64 * 259 * 4
    assert info.data_offset + sum(t.nbytes for t in info.tensors) <= info.file_size
    assert info.chat_template is None
    assert read_gguf_info(tiny_models["tiny-chatml"]).chat_template.startswith("{% for m in messages")


def test_long_arrays_are_skipped_not_decoded(tiny_models: dict[str, Path]):
    """Vocabularies are skipped (that is what keeps big models fast); short arrays are kept."""
    info = read_gguf_info(tiny_models["tiny-a"])
    assert isinstance(info.metadata["tokenizer.ggml.tokens"], tuple)  # 259 entries: kept
    assert len(info.metadata["tokenizer.ggml.tokens"]) == 259


def test_result_is_cached_until_the_file_changes(tmp_path: Path, tiny_models: dict[str, Path]):
    """A header is parsed once per process; a replaced file is parsed again."""
    copy = tmp_path / "m.gguf"
    copy.write_bytes(tiny_models["tiny-a"].read_bytes())
    assert read_gguf_info(copy) is read_gguf_info(copy)
    copy.write_bytes(tiny_models["tiny-a"].read_bytes()[:1000])
    with pytest.raises(InvalidModelFile, match="truncated"):
        read_gguf_info(copy)


def test_truncated_file_says_how_much_is_missing(tiny_models: dict[str, Path]):
    """An interrupted download is named as such, with the byte counts."""
    with pytest.raises(InvalidModelFile, match=r"truncated: the file is 234,656 bytes but its tensors need 469,312"):
        read_gguf_info(tiny_models["truncated"])


def test_html_error_page_is_recognised(tiny_models: dict[str, Path]):
    """The commonest bad download, an HTML page saved under the model's name."""
    with pytest.raises(InvalidModelFile, match="HTML page"):
        read_gguf_info(tiny_models["not-gguf"])


@pytest.mark.parametrize("content, fragment", [
    (b"", "too small"),
    (b"version https://git-lfs.github.com/spec/v1\noid sha256:abc\nsize 123\n", "Git LFS pointer"),
    (b"GGUF" + struct.pack("<IQQ", 1, 0, 0), "GGUF version 1 is not supported"),
    (b"GGUF" + struct.pack(">IQQ", 3, 0, 0), "big-endian"),
    (b"GGUF" + struct.pack("<IQQ", 3, 1 << 40, 0), "corrupt header"),
    (b"GGUF" + struct.pack("<IQQ", 3, 0, 1) + struct.pack("<Q", 1 << 40), "truncated inside the header"),
    (b"\x00" * 64, "instead of b'GGUF'"),
])
def test_malformed_headers(tmp_path: Path, content: bytes, fragment: str):
    """Each malformed header is an InvalidModelFile that says what is wrong, never a crash."""
    path = tmp_path / "bad.gguf"
    path.write_bytes(content)
    with pytest.raises(InvalidModelFile, match=fragment.replace("(", r"\(").replace(")", r"\)")) as caught:
        read_gguf_info(path)
    assert str(path) in str(caught.value)


def test_missing_file(tmp_path: Path):
    """A path with nothing behind it is ModelFileMissing (also a FileNotFoundError)."""
    with pytest.raises(FileNotFoundError):
        read_gguf_info(tmp_path / "absent.gguf")
    with pytest.raises(ModelFileMissing):
        read_gguf_info(tmp_path / "absent.gguf")


@pytest.mark.real_model
def test_real_gemma_header_is_read_quickly(gemma_path: Path):
    """Gemma 3 270M's 262k-token vocabulary is skipped: gguf.GGUFReader takes ~10 s here."""
    started = time.perf_counter()
    from zeta_local.gguf_info import _parse  # uncached, to time the real work

    info = _parse(gemma_path, gemma_path.stat().st_size)
    elapsed = time.perf_counter() - started
    assert info.architecture == "gemma3"
    assert info.quantization == "Q4_K_M"
    assert info.context_length == 32768
    assert isinstance(info.metadata["tokenizer.ggml.tokens"], SkippedArray)
    assert info.metadata["tokenizer.ggml.tokens"].length == 262144
    assert 200e6 < info.n_params < 300e6  # "270M" with the tied embedding counted once
    assert elapsed < 5, f"reading the header took {elapsed:.2f} s"
