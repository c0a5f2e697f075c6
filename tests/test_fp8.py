"""Pre-quantized checkpoints: FP8 with block scales read, every other quantization refused.

- the float8 decode tables (reader.F8_TABLES) against torch's float8_e4m3fn and float8_e5m2, all
  256 codes;
- FP8 checkpoints (E4M3 and E5M2, F32 and BF16 scales, blocks cut at both edges) convert to the
  same file as a checkpoint holding their dequantized weights in float32, with chunks that cut
  across the blocks and Q/K rows permuted;
- the FP8 fixture (tests/fixtures/models/llama-fp8-e4m3, scripts/make_fp8_fixture.py) gives the
  F16 and F32 files of llama.cpp's converter byte for byte (F16 also in test_converter_equality,
  its logits in test_llama_e2e), and so does an E5M2 copy of it with BF16 scales (slow);
- every refusal: one line naming the tensor, key or method, exit 1, nothing written;
- memory: an FP8 conversion stays within the chunk bound, as a bf16 one does.
"""

from __future__ import annotations

import json
import shutil
import struct
import sys
import tracemalloc
from pathlib import Path

import gguf
import numpy as np
import pytest

import qconvert.convert
from conftest import (MODELS, ROOT, assert_same_conversion, oracle_vocab_pre, report, run_cli_inprocess,
                      tiny_llama_config, tiny_llama_tensors, tokenizer_vocab_size, write_checkpoint)
from qconvert.convert import convert, prepare_model
from qconvert.errors import UnsupportedError
from qconvert.reader import F8_TABLES, Checkpoint

sys.path.insert(0, str(ROOT / "scripts"))
from oracle_convert import oracle_convert  # noqa: E402

FIXTURE = MODELS / "llama-fp8-e4m3"
FP8_CONFIG = {"quant_method": "fp8", "activation_scheme": "dynamic", "weight_block_size": [32, 48]}
# The matrices an FP8 release stores as float8 (DeepSeek V3: every linear layer of the blocks)
QUANTIZED = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
# Codes that are not finite numbers: E4M3 (fn) has NaN at 0x7F/0xFF only; E5M2 Inf/NaN at exponent 31
NONFINITE = {"F8_E4M3": {0x7F, 0xFF}, "F8_E5M2": set(range(0x7C, 0x80)) | set(range(0xFC, 0x100))}


# -- writing checkpoints with float8 tensors ---------------------------------------------------

def write_safetensors(path: Path, tensors: dict[str, tuple[str, np.ndarray]]) -> None:
    """A safetensors file from {name: (dtype, array of its storage)}: float8 tensors as uint8
    codes, BF16 as uint16 bits (safetensors.numpy cannot write either)."""
    header, blobs, offset = {}, [], 0
    for name, (dtype, array) in sorted(tensors.items()):
        data = np.ascontiguousarray(array).tobytes()
        header[name] = {"dtype": dtype, "shape": list(array.shape), "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    path.write_bytes(struct.pack("<Q", len(text)) + text + b"".join(blobs))


def bf16_bits(x: np.ndarray) -> np.ndarray:
    """float32 -> bfloat16 bits, rounded to nearest even (finite values)."""
    bits = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32).astype(np.uint64)
    return ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype(np.uint16)


def block_scale_grid(shape: tuple[int, int], block: list[int]) -> tuple[int, int]:
    return -(-shape[0] // block[0]), -(-shape[1] // block[1])


def dequantize(codes: np.ndarray, dtype: str, scale: np.ndarray, block: list[int]) -> np.ndarray:
    """What the checkpoint means, plainly: each value times its block's scale, in float32."""
    full = np.repeat(np.repeat(scale, block[0], axis=0), block[1], axis=1)[:codes.shape[0], :codes.shape[1]]
    return F8_TABLES[dtype][codes] * full


def fp8_checkpoints(tmp_path: Path, dtype: str = "F8_E4M3", scale_dtype: str = "F32",
                    block: list[int] = FP8_CONFIG["weight_block_size"], seed: int = 0) -> tuple[Path, Path]:
    """(an FP8 Llama, the same model with its dequantized weights stored as F32). Hidden 64,
    MLP 80, blocks of 32x48 by default: both edges of the blocks fall inside the tensors."""
    rng = np.random.default_rng(seed)
    cfg = tiny_llama_config(tokenizer_vocab_size(), intermediate_size=80)
    plain = tiny_llama_tensors(cfg, seed)
    stored: dict[str, tuple[str, np.ndarray]] = {}
    finite = np.array(sorted(set(range(256)) - NONFINITE[dtype]), dtype=np.uint8)
    for name, w in plain.items():
        if not name.endswith(tuple(f"{m}.weight" for m in QUANTIZED)):
            stored[name] = ("F32", w)
            continue
        codes = rng.choice(finite, size=w.shape)
        scale = rng.uniform(1e-3, 2e-2, block_scale_grid(w.shape, block)).astype(np.float32)
        if scale_dtype == "BF16":
            bits = bf16_bits(scale)
            stored[name + "_scale_inv"] = ("BF16", bits)
            scale = (bits.astype(np.uint32) << 16).view(np.float32)
        else:
            stored[name + "_scale_inv"] = ("F32", scale)
        stored[name] = (dtype, codes)
        plain[name] = dequantize(codes, dtype, scale, block)
    fp8 = write_checkpoint(tmp_path / "fp8" / "tiny", {**cfg, "quantization_config": {**FP8_CONFIG,
                                                                                     "weight_block_size": block}},
                           {}, tokenizer="tiny-bpe")
    write_safetensors(fp8 / "model.safetensors", stored)
    return fp8, write_checkpoint(tmp_path / "f32" / "tiny", cfg, plain)


# -- decoding ----------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype,torch_name", [("F8_E4M3", "float8_e4m3fn"), ("F8_E5M2", "float8_e5m2")])
def test_decode_tables_match_torch(dtype: str, torch_name: str):
    """Every one of the 256 codes decodes to torch's value, bit for bit (NaN where torch's is)."""
    import torch

    want = torch.arange(256, dtype=torch.uint8).view(getattr(torch, torch_name)).float().numpy()
    got = F8_TABLES[dtype]
    nan = np.isnan(want)
    assert np.array_equal(np.isnan(got), nan)
    assert np.array_equal(got[~nan].view(np.uint32), want[~nan].view(np.uint32))
    assert set(np.flatnonzero(~np.isfinite(got))) == NONFINITE[dtype]
    assert np.nanmax(np.abs(got[np.isfinite(got)])) == {"F8_E4M3": 448.0, "F8_E5M2": 57344.0}[dtype]


@pytest.mark.parametrize("dtype,scale_dtype", [("F8_E4M3", "F32"), ("F8_E5M2", "BF16")])
def test_rows_decode_to_their_dequantized_values(tmp_path: Path, dtype: str, scale_dtype: str):
    """Checkpoint.decode_rows on any rows (a slice across blocks, an index array in Q/K order)
    gives the float8 values times their blocks' scales; the scale tensors are not listed."""
    fp8, f32 = fp8_checkpoints(tmp_path, dtype, scale_dtype)
    a, b = Checkpoint.open(fp8), Checkpoint.open(f32)
    try:
        assert not any(n.endswith("_scale_inv") for n in a.tensors)
        assert sorted(a.tensors) == sorted(b.tensors)
        name = "model.layers.0.mlp.gate_proj.weight"  # [80, 64]: three row blocks, the last of 16
        info = a.tensors[name]
        assert (info.dtype, info.scale.dtype, info.scale.shape) == (dtype, scale_dtype, (3, 2))
        want = b.load(name)
        assert np.array_equal(a.load(name), want)
        for rows in (slice(30, 70), np.array([79, 0, 33, 31, 64])):
            assert np.array_equal(a.decode_rows(name, a.read_rows(name, rows), rows), want[rows])
    finally:
        a.close()
        b.close()


@pytest.mark.parametrize("qtype", ["F32", "F16", "Q8_0"])
@pytest.mark.parametrize("dtype,scale_dtype", [("F8_E4M3", "F32"), ("F8_E5M2", "BF16")])
def test_fp8_converts_as_its_dequantized_weights(tmp_path: Path, monkeypatch, dtype: str, scale_dtype: str,
                                                 qtype: str):
    """The whole pipeline, with chunks of 5 rows (cutting the 32-row blocks anywhere): the file
    is the one made from the dequantized weights stored as F32, and the plan names the float8
    dtype as the source."""
    monkeypatch.setattr(qconvert.convert, "CHUNK_ELEMENTS", 5 * 64)
    fp8, f32 = fp8_checkpoints(tmp_path, dtype, scale_dtype)
    convert(fp8, tmp_path / "fp8.gguf", qtype, threads=2)
    convert(f32, tmp_path / "f32.gguf", qtype, threads=2)
    assert_same_conversion(tmp_path / "fp8.gguf", tmp_path / "f32.gguf")
    model = prepare_model(fp8)
    model.checkpoint.close()
    dtypes = {s.src: s.src_dtype for s in model.sources if s.src is not None}
    assert dtypes["model.layers.0.self_attn.q_proj.weight"] == dtype
    assert dtypes["model.embed_tokens.weight"] == "F32"
    # progress counts the weights' bytes as stored: one a float8 weight
    assert model.source_bytes == sum(t.nbytes for t in model.checkpoint.tensors.values())


# -- the fixture against llama.cpp's converter ---------------------------------------------------

def test_fixture_is_fp8_with_ragged_blocks():
    """The fixture holds what the other tests rely on: float8 weights with scales whose blocks
    are cut at the bottom (320 rows) and right (320 columns) edges."""
    ckpt = Checkpoint.open(FIXTURE)
    try:
        scaled = {n: t for n, t in ckpt.tensors.items() if t.scale is not None}
        assert len(scaled) == 2 * len(QUANTIZED)
        assert all(t.dtype == "F8_E4M3" and t.blocks.rows == t.blocks.cols == 128 for t in scaled.values())
        assert any(t.shape[0] % 128 for t in scaled.values()) and any(t.shape[1] % 128 for t in scaled.values())
        assert ckpt.tensors["model.embed_tokens.weight"].dtype == "BF16"
    finally:
        ckpt.close()


def compare_with_converter(ours: Path, theirs: Path) -> int:
    """Every key and every tensor's bytes equal (no generated tensors here); the tensor count."""
    a, b = gguf.GGUFReader(ours), gguf.GGUFReader(theirs)
    keys = {k: f.contents() for k, f in b.fields.items() if not k.startswith(("GGUF.", "qconvert."))}
    assert {k: a.fields[k].contents() for k in keys if k in a.fields} == keys
    assert [t.name for t in a.tensors] == [t.name for t in b.tensors]
    for got, want in zip(a.tensors, b.tensors):
        assert (got.tensor_type, list(got.shape)) == (want.tensor_type, list(want.shape)), got.name
        assert got.data.tobytes() == want.data.tobytes(), f"{got.name} differs from the converter's"
    return len(b.tensors)


def test_fixture_f32_matches_converter(tmp_path: Path):
    """F32 (F16 is test_converter_equality's): the converter dequantizes in float32 as we do."""
    oracle_convert(FIXTURE, tmp_path / "theirs.gguf", "f32", vocab_pre=oracle_vocab_pre(FIXTURE))
    convert(FIXTURE, tmp_path / "ours.gguf", "F32")
    n = compare_with_converter(tmp_path / "ours.gguf", tmp_path / "theirs.gguf")
    report(f"{FIXTURE.name:<28} F32 equal to the converter's in all {n} tensors")


@pytest.mark.slow  # a converter run (~20 s) beyond what the FP8 fixture's comparisons cover
def test_e5m2_with_bf16_scales_matches_converter(tmp_path: Path):
    """The fixture re-encoded as E5M2 weights with BF16 scales (its values rounded to E5M2 and
    the scales to bf16): F16 equal to the converter's byte for byte."""
    import torch
    from safetensors.torch import load_file, save_file

    ckpt = tmp_path / "llama-fp8-e5m2"
    shutil.copytree(FIXTURE, ckpt)
    tensors = load_file(str(FIXTURE / "model.safetensors"))
    for name, t in list(tensors.items()):
        if t.dtype == torch.float8_e4m3fn:
            tensors[name] = t.float().to(torch.float8_e5m2)
        elif name.endswith("_scale_inv"):
            tensors[name] = t.to(torch.bfloat16)
    save_file(tensors, str(ckpt / "model.safetensors"), metadata={"format": "pt"})
    stored = Checkpoint.open(ckpt)
    assert {(t.dtype, t.scale.dtype) for t in stored.tensors.values() if t.scale is not None} == {("F8_E5M2", "BF16")}
    stored.close()
    oracle_convert(ckpt, tmp_path / "theirs.gguf", "f16", vocab_pre=oracle_vocab_pre(ckpt))
    convert(ckpt, tmp_path / "ours.gguf", "F16")
    compare_with_converter(tmp_path / "ours.gguf", tmp_path / "theirs.gguf")


# -- refusals ----------------------------------------------------------------------------------

def refused(model: Path, tmp_path: Path, *phrases: str) -> str:
    """Converting `model` fails with exit 1 and one line holding every phrase; nothing written."""
    out = tmp_path / "out.gguf"
    proc = run_cli_inprocess("quantize", str(model), "-t", "F16", "-o", str(out), "--no-progress")
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    for phrase in phrases:
        assert phrase in lines[0], lines[0]
    assert not out.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".out.gguf")]
    return lines[0]


def with_config(tmp_path: Path, quantization_config: dict | None, extra_files: dict[str, str] | None = None) -> Path:
    cfg = tiny_llama_config(tokenizer_vocab_size())
    if quantization_config is not None:
        cfg["quantization_config"] = quantization_config
    model = write_checkpoint(tmp_path / "model", cfg, tiny_llama_tensors(cfg))
    for name, text in (extra_files or {}).items():
        (model / name).write_text(text)
    return model


@pytest.mark.parametrize("config,phrases", [
    ({"quant_method": "gptq", "bits": 4, "group_size": 128}, ['quant_method is "gptq"', "GPTQ"]),
    ({"quant_method": "awq", "bits": 4, "version": "gemm"}, ['quant_method is "awq"', "AWQ"]),
    ({"quant_method": "bitsandbytes", "load_in_4bit": True, "bnb_4bit_quant_type": "nf4"},
     ['quant_method is "bitsandbytes"', "bitsandbytes 4-bit"]),
    ({"load_in_8bit": True}, ["quantization_config.load_in_8bit is true", "bitsandbytes 8-bit"]),
    ({"quant_method": "modelopt", "quant_algo": "NVFP4"}, ['quant_method is "modelopt"', "NVFP4"]),
    ({"quant_method": "compressed-tensors", "format": "nvfp4-pack-quantized", "config_groups": {}},
     ['quant_method is "compressed-tensors"']),
    ({"quant_method": "mxfp4"}, ['quant_method is "mxfp4"', "gpt-oss"]),
    ({"quant_method": "some-new-method"}, ['quant_method is "some-new-method"', "does not know"]),
    ({"quant_method": "fp8", "activation_scheme": "dynamic"}, ["weight_block_size is missing"]),
    ({"quant_method": "fp8", "weight_block_size": [128]}, ["weight_block_size is [128]"]),
    ({"bits": 4}, ["quantization_config has no quant_method"]),
], ids=["gptq", "awq", "bnb-4bit", "bnb-8bit-legacy", "modelopt-nvfp4", "compressed-tensors", "mxfp4", "unknown",
        "fp8-no-block", "fp8-bad-block", "no-method"])
def test_quantization_config_refused(tmp_path: Path, config: dict, phrases: list[str]):
    refused(with_config(tmp_path, config), tmp_path, "config.json", *phrases)


def test_refusal_is_an_unsupported_input(tmp_path: Path):
    """A method qconvert does not read is an UnsupportedError ("unsupported" in --json), before
    any shard is read (the checkpoint need not even have one)."""
    model = with_config(tmp_path, {"quant_method": "gptq"})
    (model / "model.safetensors").unlink()
    with pytest.raises(UnsupportedError, match="gptq"):
        Checkpoint.open(model)
    proc = run_cli_inprocess("quantize", str(model), "-t", "F16", "-o", str(tmp_path / "o.gguf"), "--json")
    assert json.loads(proc.stdout)["error"]["kind"] == "unsupported" and proc.returncode == 1


def test_modelopt_file_refused(tmp_path: Path):
    model = with_config(tmp_path, None, {"hf_quant_config.json": json.dumps({"quantization": {"quant_algo": "NVFP4"}})})
    refused(model, tmp_path, "hf_quant_config.json", "ModelOpt")


def edited_fp8(tmp_path: Path, edit) -> Path:
    """The FP8 test checkpoint with `edit(stored tensors)` applied to its safetensors file."""
    fp8, _ = fp8_checkpoints(tmp_path / "src")
    ckpt = Checkpoint.open(fp8)
    stored = {}
    for name, t in ckpt.tensors.items():
        stored[name] = (t.dtype, ckpt.raw(name))
        if t.scale is not None:
            stored[t.scale.name] = (t.scale.dtype, ckpt._read_rows(t.scale).reshape(t.scale.shape))
    ckpt.close()
    edit(stored)
    write_safetensors(fp8 / "model.safetensors", stored)
    return fp8


UP = "model.layers.0.mlp.up_proj.weight"  # [80, 64], scales [3, 2] in blocks of 32x48


@pytest.mark.parametrize("edit,phrases", [
    (lambda t: t.pop(UP + "_scale_inv"), [f"tensor {UP} has dtype F8_E4M3 but no {UP}_scale_inv"]),
    (lambda t: t.pop(UP), [f"tensor {UP}_scale_inv holds block scales of {UP}, which the checkpoint does not have"]),
    (lambda t: t.update({UP + "_scale_inv": ("F32", np.ones((2, 2), np.float32))}),
     [f"tensor {UP}_scale_inv has shape [2, 2]; expected [3, 2]", "32x48", f"{UP} [80, 64]"]),
    (lambda t: t.update({UP + "_scale_inv": ("I32", np.ones((3, 2), np.int32))}),
     [f"tensor {UP}_scale_inv has dtype I32; expected block scales in F32, BF16, F16"]),
    (lambda t: t.update({UP: ("F32", np.ones((80, 64), np.float32))}),
     [f"tensor {UP}_scale_inv holds block scales of {UP}, which is F32; expected a float8 weight"]),
    (lambda t: t[UP][1].__setitem__((17, 3), 0x7F), [f"tensor {UP}: NaN in row 17"]),
], ids=["missing-scale", "scale-without-weight", "scale-shape", "scale-dtype", "scale-of-a-float-weight", "nan-code"])
def test_inconsistent_fp8_checkpoint_refused(tmp_path: Path, edit, phrases: list[str]):
    refused(edited_fp8(tmp_path, edit), tmp_path, *phrases)


def test_e5m2_infinity_refused(tmp_path: Path):
    """E5M2 has infinities (0x7C): refused as any other Inf (--allow-nonfinite writes it)."""
    fp8, _ = fp8_checkpoints(tmp_path / "src", "F8_E5M2")
    ckpt = Checkpoint.open(fp8)
    stored = {n: (t.dtype, ckpt.raw(n)) for n, t in ckpt.tensors.items()}
    stored.update({t.scale.name: (t.scale.dtype, ckpt._read_rows(t.scale).reshape(t.scale.shape))
                   for t in ckpt.tensors.values() if t.scale is not None})
    ckpt.close()
    stored[UP][1][40, 0] = 0xFC  # -Inf
    write_safetensors(fp8 / "model.safetensors", stored)
    refused(fp8, tmp_path, f"tensor {UP}: -Inf in row 40")


def test_fp8_tensor_without_quantization_config_refused(tmp_path: Path):
    fp8, _ = fp8_checkpoints(tmp_path / "src")
    cfg = json.loads((fp8 / "config.json").read_text())
    del cfg["quantization_config"]
    (fp8 / "config.json").write_text(json.dumps(cfg))
    refused(fp8, tmp_path, "_scale_inv holds block scales of", "config.json has no quantization_config")


# -- memory ------------------------------------------------------------------------------------

def peak_bytes(model: Path, out: Path) -> int:
    """tracemalloc's peak over a conversion to Q8_0 on one thread (what it allocates beyond what
    the process held before)."""
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        convert(model, out, "Q8_0", threads=1)
        return tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()


def test_fp8_conversion_stays_within_the_chunk_bound(tmp_path: Path, monkeypatch):
    """4096 x 1024 float8 matrices (16 MB as float32) converted with chunks of 64K weights: the
    peak stays far below the tensor's float32 size and close to that of the same model in bf16:
    the dequantization works a chunk of rows at a time."""
    monkeypatch.setattr(qconvert.convert, "CHUNK_ELEMENTS", 1 << 16)
    rng = np.random.default_rng(3)
    cfg = tiny_llama_config(tokenizer_vocab_size(), hidden_size=1024, intermediate_size=4096,
                            num_attention_heads=8, num_key_value_heads=8)
    tensors = tiny_llama_tensors(cfg)
    block = [128, 128]
    stored = {n: ("BF16", bf16_bits(w)) for n, w in tensors.items()}
    for name in ("model.layers.0.mlp.gate_proj.weight", "model.layers.0.mlp.up_proj.weight",
                 "model.layers.0.mlp.down_proj.weight"):
        shape = tensors[name].shape
        stored[name] = ("F8_E4M3", rng.integers(0, 0x7F, shape, dtype=np.uint8))
        scale = rng.uniform(1e-3, 1e-2, block_scale_grid(shape, block)).astype(np.float32)
        stored[name + "_scale_inv"] = ("F32", scale)
    fp8 = write_checkpoint(tmp_path / "fp8", {**cfg, "quantization_config": {**FP8_CONFIG, "weight_block_size": block}},
                           {})
    write_safetensors(fp8 / "model.safetensors", stored)
    bf16 = write_checkpoint(tmp_path / "bf16", cfg, {})
    write_safetensors(bf16 / "model.safetensors", {n: ("BF16", bf16_bits(w)) for n, w in tensors.items()})
    largest = 4096 * 1024 * 4
    peak_fp8, peak_bf16 = peak_bytes(fp8, tmp_path / "fp8.gguf"), peak_bytes(bf16, tmp_path / "bf16.gguf")
    report(f"FP8 conversion peak (tracemalloc) {peak_fp8 / 1e6:.2f} MB, bf16 {peak_bf16 / 1e6:.2f} MB, "
           f"largest tensor as float32 {largest / 1e6:.1f} MB")
    assert peak_fp8 < largest / 4, peak_fp8
    assert peak_fp8 < 1.25 * peak_bf16 + (1 << 20), (peak_fp8, peak_bf16)
