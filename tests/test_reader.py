"""The checkpoint reader: dtypes decoded exactly, shards found, data left memory-mapped."""

from __future__ import annotations

import json
import os
import signal
import stat
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

from qconvert.errors import CheckpointError, TokenizerError
from qconvert import reader
from qconvert.reader import Checkpoint, decode_to_f32, open_regular, read_json


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


def test_read_json_refuses_what_is_not_a_regular_file(tmp_path: Path):
    """A FIFO is refused from its stat, never opened (a blocking open would wait for a writer);
    the error is of the caller's class."""
    fifo, folder = tmp_path / "x.json", tmp_path / "d.json"
    os.mkfifo(fifo)
    folder.mkdir()
    with pytest.raises(TokenizerError, match="x.json is a FIFO .named pipe.; expected a regular file"):
        read_json(fifo, error=TokenizerError)
    with pytest.raises(CheckpointError, match="d.json is a directory"):
        read_json(folder, missing_ok=True)  # missing_ok is for absent files, not for odd ones
    (tmp_path / "link.json").symlink_to(tmp_path / "nowhere.json")
    assert read_json(tmp_path / "link.json", missing_ok=True) is None


def test_a_fifo_swapped_in_after_the_stat_is_still_refused(tmp_path: Path, monkeypatch):
    """The race: the name is a regular file when stat'ed and a FIFO when opened. The open is
    non-blocking and the descriptor is checked, so this neither hangs nor reads the FIFO."""
    regular, fifo = tmp_path / "regular", tmp_path / "fifo"
    regular.write_text("{}")
    os.mkfifo(fifo)
    real_stat = os.stat
    monkeypatch.setattr(reader.os, "stat", lambda p, *a, **k: real_stat(regular) if Path(p) == fifo
                        else real_stat(p, *a, **k))
    before = len(os.listdir("/proc/self/fd"))

    def hang(signum, frame):
        raise AssertionError("opening the FIFO blocked")

    previous = signal.signal(signal.SIGALRM, hang)
    signal.alarm(10)  # a blocking open would wait for a writer forever
    try:
        with pytest.raises(CheckpointError, match="fifo is a FIFO"):
            open_regular(fifo)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    assert len(os.listdir("/proc/self/fd")) == before  # the descriptor was closed
    fd = open_regular(regular)
    assert stat.S_ISREG(os.fstat(fd).st_mode)
    os.close(fd)


def test_shards_are_read_through_the_descriptors_that_were_validated(tmp_path: Path):
    """A shard replaced after the checkpoint was opened (and validated) does not change what is
    read: each shard stays open on the descriptor its header was checked through."""
    (tmp_path / "config.json").write_text("{}")
    save_file({"x": np.arange(8, dtype=np.float32)}, str(tmp_path / "model.safetensors"))
    ckpt = Checkpoint.open(tmp_path)
    save_file({"x": np.full(8, 7, np.float32)}, str(tmp_path / "other.safetensors"))
    os.replace(tmp_path / "other.safetensors", tmp_path / "model.safetensors")
    assert ckpt.load("x").tolist() == list(range(8))
    ckpt.close()


def test_failed_open_leaks_no_descriptor(tmp_path: Path):
    (tmp_path / "config.json").write_text("{}")
    save_file({"x": np.zeros(2, np.float32)}, str(tmp_path / "model-1.safetensors"))
    save_file({"x": np.zeros(2, np.float32)}, str(tmp_path / "model-2.safetensors"))
    before = sorted(os.listdir("/proc/self/fd"))
    with pytest.raises(CheckpointError, match="tensor x is in two shards, model-1.safetensors and model-2"):
        Checkpoint.open(tmp_path)
    assert sorted(os.listdir("/proc/self/fd")) == before
