"""NaN, Inf and overflowing weights are refused in the converting pass, naming the tensor and row
(qconvert/validate/values.py); --allow-nonfinite writes them."""

from __future__ import annotations

import hashlib
from pathlib import Path

import gguf
import numpy as np
import pytest

from conftest import run_cli, tiny_llama_config, tiny_llama_tensors, tokenizer_vocab_size, write_checkpoint
from qconvert import quants
from qconvert.validate.values import first_bad_row
from test_cli_errors import assert_clean_failure

T = gguf.GGMLQuantizationType


def digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def checkpoint_with(tmp_path: Path, edit, **cfg_over) -> Path:
    cfg = tiny_llama_config(tokenizer_vocab_size(), **cfg_over)
    tensors = tiny_llama_tensors(cfg)
    edit(tensors)
    return write_checkpoint(tmp_path / "model", cfg, tensors)


def set_value(name: str, index: tuple[int, ...], value: float):
    def edit(tensors):
        tensors[name][index] = value
    return edit


# (what is put where, -t, phrases the one line must hold)
CASES = {
    "nan-in-matrix": (set_value("model.layers.0.mlp.up_proj.weight", (17, 3), np.nan), "Q8_0",
                      ("tensor model.layers.0.mlp.up_proj.weight", "NaN in row 17", "blk.0.ffn_up.weight")),
    "inf-in-norm": (set_value("model.norm.weight", (5,), np.inf), "Q8_0",
                    ("tensor model.norm.weight", "+Inf in row 0", "output_norm.weight")),
    "-inf-f32": (set_value("lm_head.weight", (40, 0), -np.inf), "F32", ("tensor lm_head.weight", "-Inf in row 40")),
    # q_proj's rows are permuted for llama.cpp's rope: the checkpoint's own row is named
    "nan-in-permuted-rows": (set_value("model.layers.0.self_attn.q_proj.weight", (1, 0), np.nan), "F16",
                             ("tensor model.layers.0.self_attn.q_proj.weight", "NaN in row 1")),
    "f16-overflow": (set_value("model.layers.0.mlp.down_proj.weight", (2, 9), 70000.0), "F16",
                     ("tensor model.layers.0.mlp.down_proj.weight", "70000, beyond what F16 can hold", "row 2")),
    "q8_0-scale-overflow": (set_value("model.layers.0.self_attn.o_proj.weight", (63, 1), 1e7), "Q8_0",
                            ("tensor model.layers.0.self_attn.o_proj.weight", "1e+07, too large for Q8_0's fp16",
                             "row 63")),
    "q4_k-mix-scale-overflow": (set_value("model.embed_tokens.weight", (3, 0), -3e9), "Q4_K_M",
                                ("tensor model.embed_tokens.weight", "-3e+09, beyond what", "row 3")),
}


@pytest.mark.parametrize("case", CASES)
def test_bad_values_are_refused(tmp_path: Path, case: str):
    edit, qtype, phrases = CASES[case]
    model = checkpoint_with(tmp_path, edit)
    before = digest(model)
    out = tmp_path / "out.gguf"
    proc = run_cli("quantize", model, "-t", qtype, "-o", out, "--no-progress")
    assert_clean_failure(proc, out, *phrases, "--allow-nonfinite", code=1)
    assert digest(model) == before


def test_nan_in_an_expert_names_the_expert(tmp_path: Path):
    model = checkpoint_with(tmp_path, set_value("model.layers.0.block_sparse_moe.experts.2.w2.weight", (7, 7), np.nan),
                            architectures=["MixtralForCausalLM"], model_type="mixtral", num_local_experts=4,
                            num_experts_per_tok=2)
    out = tmp_path / "out.gguf"
    proc = run_cli("quantize", model, "-t", "Q8_0", "-o", out, "--no-progress")
    assert_clean_failure(proc, out, "tensor model.layers.0.block_sparse_moe.experts.2.w2.weight", "NaN in row 7",
                         "blk.0.ffn_down_exps.weight", code=1)


def test_mxfp4_nan_scale_is_refused(tmp_path: Path):
    """ggml's MXFP4 gives a block whose largest |x| lies in [2^-126, 2^-125) the exponent 0xFF, E8M0's
    NaN (its float exponent wraps modulo 256), which llama-quantize's row validation refuses."""
    qt = quants.get("MXFP4")
    x = np.random.default_rng(2).standard_normal((4, 64)).astype(np.float32)
    assert first_bad_row(x, qt, quants.quantize_rows("MXFP4", x)) is None
    x[2, 32:] *= np.float32(1e-39)
    x[2, 40] = np.float32(1.5e-38)
    out = quants.quantize_rows("MXFP4", x)
    assert out[2, 17] == 0xFF  # the second block of row 2: ggml's own bytes (tests/test_quants.py)
    row, what = first_bad_row(x, qt, out)
    assert row == 2 and "1.5e-38" in what and "NaN" in what
    from qconvert.verify import count_nonfinite
    assert count_nonfinite(out, T.MXFP4) == 1  # and verify counts it as a NaN scale

    def edit(tensors):
        w = tensors["model.layers.0.block_sparse_moe.experts.1.w1.weight"]
        w[5, :32] = w[5, :32] * np.float32(1e-40)
        w[5, 3] = np.float32(1.5e-38)

    model = checkpoint_with(tmp_path, edit, architectures=["MixtralForCausalLM"], model_type="mixtral",
                            num_local_experts=4, num_experts_per_tok=2)
    out = tmp_path / "out.gguf"
    proc = run_cli("quantize", model, "-t", "MXFP4_MOE", "-o", out, "--no-progress")
    assert_clean_failure(proc, out, "tensor model.layers.0.block_sparse_moe.experts.1.w1.weight", "row 5",
                         "blk.0.ffn_gate_exps.weight", "E8M0 NaN", code=1)


def test_allow_nonfinite_writes_them(tmp_path: Path):
    model = checkpoint_with(tmp_path, set_value("model.layers.0.mlp.up_proj.weight", (17, 3), np.nan))
    out = tmp_path / "out.gguf"
    proc = run_cli("quantize", model, "-t", "F32", "-o", out, "--no-progress", "--allow-nonfinite")
    assert proc.returncode == 0, proc.stderr
    t = next(t for t in gguf.GGUFReader(out).tensors if t.name == "blk.0.ffn_up.weight")
    data = np.asarray(t.data).reshape(-1, 64)
    assert np.isnan(data[17, 3]) and np.isfinite(np.delete(data.reshape(-1), 17 * 64 + 3)).all()


@pytest.mark.parametrize("qtype", quants.SUPPORTED, ids=lambda t: t.name)
def test_first_bad_row_on_every_type(qtype: T):
    """Sound rows pass; a NaN, an Inf, and (where the type has a limit) a huge value are found in
    the row they are in, whichever type is written."""
    qt = quants.get(qtype)
    rng = np.random.default_rng(1)
    x = rng.standard_normal((6, 256)).astype(np.float32)
    assert first_bad_row(x, qt, quants.quantize_rows(qtype, x)) is None
    for row, value in ((4, np.nan), (2, np.inf), (5, -np.inf)):
        y = x.copy()
        y[row, 100] = value
        found = first_bad_row(y, qt, quants.quantize_rows(qtype, y))
        assert found is not None and found[0] == row, (value, found)
    huge = x.copy()
    huge[3, 7] = 1e30
    found = first_bad_row(huge, qt, quants.quantize_rows(qtype, huge))
    if qtype in (T.F32, T.BF16, T.MXFP4):  # 1e30 is an ordinary value there (MXFP4: a power-of-two scale)
        assert found is None
    else:  # F16 itself, or the fp16 scales of every block type, cannot hold it
        assert found is not None and found[0] == 3, found


@pytest.mark.parametrize("dtype", ["BF16", "F16", "F32"])
def test_decode_and_measure_is_decode_and_the_reference(dtype: str):
    """The fused decode-and-measure gives reader.decode_to_f32's values and the reference's
    magnitude, for the compiled kernel and the NumPy reference, on every special value."""
    from qconvert.reader import decode_to_f32
    from qconvert.validate import values

    rng = np.random.default_rng(2)
    f32 = (rng.standard_normal(1000) * 10.0 ** rng.integers(-30, 30, 1000)).astype(np.float32)
    f32[[3, 500, 997]] = [np.inf, -np.inf, np.nan]
    with np.errstate(over="ignore"):  # the F16 copy: beyond 65504 becomes inf, on purpose
        raw = {"BF16": (f32.view(np.uint32) >> 16).astype(np.uint16),
               "F16": f32.astype(np.float16), "F32": f32}[dtype]
    for cut in (1000, 999, 17, 16, 0):
        part = raw[:cut].reshape(-1, 1) if cut else raw[:0].reshape(0, 1)
        want = decode_to_f32(part, dtype)
        out = np.full(1024, 7.0, np.float32)
        x, bits = values.decode_and_measure(part, dtype, out)
        assert x.tobytes() == want.tobytes()
        assert bits == values.max_magnitude_bits_ref(want.reshape(-1).view(np.uint32))
        if dtype == "BF16":
            ref_out = np.zeros(1024, np.uint32)
            assert values.widen_bf16_ref(part.reshape(-1), ref_out) == bits
            assert ref_out[:cut].tobytes() == want.tobytes()
        assert values.max_magnitude_bits(want.reshape(-1).view(np.uint32)) == bits
