"""The checkpoint reader: dtypes decoded exactly, shards found, data left memory-mapped."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

from qconvert.errors import CheckpointError, TokenizerError
from qconvert.reader import Checkpoint, decode_to_f32, read_json


def bf16_bits(x: np.ndarray) -> np.ndarray:
    """Truncate float32 to its top 16 bits (a valid bfloat16 whose value is exactly known)."""
    return (x.astype(np.float32).view(np.uint32) >> 16).astype(np.uint16)


def test_bf16_decode_is_exact_for_every_bit_pattern():
    bits = np.arange(0, 1 << 16, dtype=np.uint32).astype(np.uint16)
    got = decode_to_f32(bits, "BF16")
    want = (bits.astype(np.uint32) << 16).view(np.float32)
    assert np.array_equal(got.view(np.uint32), want.view(np.uint32))  # NaN payloads included


def test_f16_decode_is_exact():
    x = np.arange(0, 1 << 16, dtype=np.uint32).astype(np.uint16).view(np.float16)
    got = decode_to_f32(x, "F16")
    finite = np.isfinite(x)
    assert np.array_equal(got[finite], x[finite].astype(np.float32))


def write_bf16_safetensors(path: Path, tensors: dict[str, np.ndarray]) -> None:
    """safetensors.numpy cannot write bfloat16: write the header ourselves."""
    header, blobs, offset = {}, [], 0
    for name, arr in tensors.items():
        raw = bf16_bits(arr).tobytes()
        header[name] = {"dtype": "BF16", "shape": list(arr.shape), "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    path.write_bytes(len(text).to_bytes(8, "little") + text + b"".join(blobs))


def test_reads_bf16_f16_f32_across_shards(tmp_path: Path):
    rng = np.random.default_rng(1)
    a, b, c = (rng.standard_normal(s).astype(np.float32) for s in ((4, 8), (8,), (3, 2, 8)))
    (tmp_path / "config.json").write_text("{}")
    write_bf16_safetensors(tmp_path / "s1.safetensors", {"a": a})
    save_file({"b": b.astype(np.float16), "c": c}, str(tmp_path / "s2.safetensors"))
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps(
        {"weight_map": {"a": "s1.safetensors", "b": "s2.safetensors", "c": "s2.safetensors"}}))
    ckpt = Checkpoint.open(tmp_path)
    assert {n: t.dtype for n, t in ckpt.tensors.items()} == {"a": "BF16", "b": "F16", "c": "F32"}
    assert np.array_equal(ckpt.load("a"), decode_to_f32(bf16_bits(a), "BF16"))
    assert np.array_equal(ckpt.load("b"), b.astype(np.float16).astype(np.float32))
    assert np.array_equal(ckpt.load("c"), c)
    assert ckpt.tensors["c"].n_rows == 6
    rows = c.reshape(6, 8)
    assert np.array_equal(ckpt.read_rows("c", slice(2, 5)), rows[2:5])
    order = np.array([4, 1, 3])
    assert np.array_equal(ckpt.read_rows("c", order), rows[order])
    assert np.array_equal(decode_to_f32(ckpt.read_rows("a", np.array([3, 0])), "BF16"),
                          decode_to_f32(bf16_bits(a), "BF16")[[3, 0]])
    ckpt.close()


def test_unindexed_shards_are_found(tmp_path: Path):
    (tmp_path / "config.json").write_text("{}")
    save_file({"x": np.ones((2, 2), np.float32)}, str(tmp_path / "model-00001-of-00002.safetensors"))
    save_file({"y": np.zeros((2,), np.float32)}, str(tmp_path / "model-00002-of-00002.safetensors"))
    assert sorted(Checkpoint.open(tmp_path).tensors) == ["x", "y"]


def test_pytorch_bin_only_says_so(tmp_path: Path):
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "pytorch_model.bin").write_bytes(b"\0" * 16)
    with pytest.raises(CheckpointError, match="PyTorch .bin"):
        Checkpoint.open(tmp_path)


def test_invalid_config_json(tmp_path: Path):
    (tmp_path / "config.json").write_text("{oops")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        Checkpoint.open(tmp_path)


def test_read_json(tmp_path: Path):
    """One JSON reader for every file of a checkpoint: one-line errors of the caller's class."""
    f = tmp_path / "x.json"
    assert read_json(f, missing_ok=True) is None
    with pytest.raises(CheckpointError, match="x.json is missing"):
        read_json(f)
    f.write_text('[{"a": 1}]')
    assert read_json(f, list) == [{"a": 1}]
    with pytest.raises(TokenizerError, match="expected a JSON object, found a JSON array"):
        read_json(f, error=TokenizerError)
    f.write_text("{oops")
    with pytest.raises(CheckpointError, match="x.json: not valid JSON") as e:
        read_json(f, (dict, list))
    assert "\n" not in str(e.value)
