"""The chunk loop carries out what a SourceTensor states: row order, stacked experts, transposed
storage, value transforms. Checked against plain NumPy on the same checkpoint, with chunks small
enough that every tensor is cut into several and stacked tensors are cut across experts."""

from __future__ import annotations

from types import SimpleNamespace

import gguf
import numpy as np
import pytest
from safetensors.numpy import save_file

import qconvert.convert
from qconvert.convert import tensor_chunks
from qconvert.reader import Checkpoint
from qconvert.types import PlanRow, SourceTensor

T = gguf.GGMLQuantizationType


@pytest.fixture
def ckpt(tmp_path):
    rng = np.random.default_rng(0)
    tensors = {f"experts.{e}.w": rng.standard_normal((6, 32)).astype(np.float32) for e in range(3)}
    tensors["conv1d"] = rng.standard_normal((32, 10)).astype(np.float32)  # [in, out]
    tensors["norm"] = rng.standard_normal(32).astype(np.float32)
    tensors["q"] = rng.standard_normal((8, 32)).astype(np.float32)
    (tmp_path / "config.json").write_text("{}")
    save_file(tensors, str(tmp_path / "model.safetensors"))
    c = Checkpoint.open(tmp_path)
    yield c, tensors
    c.close()


def chunk_jobs(job):
    """The pipeline's chunk jobs for one output: each returns its GGUF bytes (or raises its error)."""
    def one(fn):
        (part,), nbytes = fn()
        if isinstance(part, BaseException):
            raise part
        return part, nbytes

    return [lambda fn=fn: one(fn) for fn in tensor_chunks([job])]


def run(ckpt: Checkpoint, src: SourceTensor, qtype: T = T.F32) -> np.ndarray:
    """The bytes the pipeline writes for `src`, as float32 values when qtype is F32."""
    row = PlanRow(src.src, src.gguf_name, src.shape, src.src_dtype, qtype, "test")
    job = SimpleNamespace(sources=[src], rows=[row], checkpoint=ckpt, quant_weights=lambda r: None,
                          allow_nonfinite=False)
    parts = [fn() for fn in chunk_jobs(job)]
    data = np.concatenate([p for p, _ in parts])
    # progress counts the checkpoint bytes behind what is written
    assert sum(n for _, n in parts) == src.n_elements * 4
    return data.view(np.float32).reshape(src.shape) if qtype == T.F32 else data


@pytest.fixture(autouse=True)
def small_chunks(monkeypatch):
    monkeypatch.setattr(qconvert.convert, "CHUNK_ELEMENTS", 64)  # two 32-wide rows a chunk


def test_stacked_experts_make_one_3d_tensor(ckpt):
    c, t = ckpt
    names = tuple(f"experts.{e}.w" for e in range(3))
    src = SourceTensor("blk.0.ffn_up_exps.weight", (3, 6, 32), names[0], "F32", stack=names)
    np.testing.assert_array_equal(run(c, src), np.stack([t[n] for n in names]))


def test_stacked_experts_quantize_like_the_whole_tensor(ckpt):
    c, t = ckpt
    names = tuple(f"experts.{e}.w" for e in range(3))
    src = SourceTensor("blk.0.ffn_up_exps.weight", (3, 6, 32), names[0], "F32", stack=names)
    want = gguf.quants.quantize(np.stack([t[n] for n in names]), T.Q8_0)
    np.testing.assert_array_equal(run(c, src, T.Q8_0), want.reshape(-1))


def test_transposed_matrix_is_written_in_gguf_order(ckpt):
    c, t = ckpt
    src = SourceTensor("blk.0.attn_qkv.weight", (10, 32), "conv1d", "F32", transpose=True)
    np.testing.assert_array_equal(run(c, src), t["conv1d"].T)


def test_transform_applies_to_every_chunk(ckpt):
    c, t = ckpt

    def add_one(x: np.ndarray) -> None:
        x += 1.0

    src = SourceTensor("blk.0.attn_norm.weight", (32,), "norm", "F32", transform=add_one)
    np.testing.assert_array_equal(run(c, src), t["norm"] + np.float32(1.0))
    q = SourceTensor("blk.0.attn_q.weight", (8, 32), "q", "F32", transform=add_one)
    np.testing.assert_array_equal(run(c, q), t["q"] + np.float32(1.0))
    # the checkpoint's own values are untouched (the transform works on the decoded copy)
    np.testing.assert_array_equal(c.load("q"), t["q"])


def test_row_order_selects_rows(ckpt):
    c, t = ckpt
    order = np.array([7, 0, 3, 1])
    src = SourceTensor("blk.0.attn_k.weight", (4, 32), "q", "F32", row_order=order)
    np.testing.assert_array_equal(run(c, src), t["q"][order])
