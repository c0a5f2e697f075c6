"""Phi-3 and GPT-2 checkpoints spelled as they are found in the wild, beyond the fixtures.

The fixtures (tests/fixtures/models/phi3-spm-bf16, phi4mini-longrope-bf16, gpt2-bpe-f32) are
checked against transformers, llama.cpp's converter and llama-quantize by the shared tests. Here:
other spellings of the same checkpoints must give the same GGUF, and bad LongRoPE settings fail
with one-line errors before any output exists.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import gguf
import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from conftest import MODELS
from qconvert.convert import convert
from qconvert.errors import CheckpointError, UnsupportedError

GPT2 = "gpt2-bpe-f32"
LONGROPE = "phi4mini-longrope-bf16"


def gguf_contents(path: Path) -> tuple[dict, dict]:
    """({key: value} of the metadata, {tensor: (type, shape, bytes)}) of a GGUF file."""
    reader = gguf.GGUFReader(path)
    fields = {k: f.contents() for k, f in reader.fields.items() if not k.startswith(("GGUF.", "qconvert."))}
    tensors = {t.name: (t.tensor_type, list(t.shape), t.data.tobytes()) for t in reader.tensors}
    return fields, tensors


def copy_fixture(model: str, dest: Path) -> Path:
    """The fixture under dest/<model> (same folder name, so the same general.name)."""
    return Path(shutil.copytree(MODELS / model, dest / model))


def test_gpt2_openai_spelling(tmp_path: Path):
    """openai-community/gpt2's own file: names without `transformer.`, and the causal-mask
    buffers attn.bias / attn.masked_bias that older transformers saved with the weights."""
    ckpt = copy_fixture(GPT2, tmp_path / "openai")
    weights = load_file(ckpt / "model.safetensors")
    n_ctx = json.loads((ckpt / "config.json").read_text())["n_positions"]
    renamed = {name.removeprefix("transformer."): w for name, w in weights.items()}
    assert len(renamed) == len(weights) and not any(n.startswith("transformer.") for n in renamed)
    for i in range(2):
        renamed[f"h.{i}.attn.bias"] = np.tril(np.ones((n_ctx, n_ctx), np.float32))[None, None]
        renamed[f"h.{i}.attn.masked_bias"] = np.array(-1e4, np.float32)
    save_file(renamed, str(ckpt / "model.safetensors"))

    convert(MODELS / GPT2, tmp_path / "fixture.gguf", "F32")
    convert(ckpt, tmp_path / "openai.gguf", "F32")
    ours, want = gguf_contents(tmp_path / "openai.gguf")[1], gguf_contents(tmp_path / "fixture.gguf")[1]
    assert sorted(ours) == sorted(want)
    for name in want:
        assert ours[name] == want[name], name


def test_gpt2_conv1d_weights_are_transposed(tmp_path: Path):
    """attn_qkv's rows are c_attn's columns: the first row of the GGUF matrix (Q's first output)
    is column 0 of the stored [in, out] weight."""
    convert(MODELS / GPT2, tmp_path / "f32.gguf", "F32")
    tensors = {t.name: t for t in gguf.GGUFReader(tmp_path / "f32.gguf").tensors}
    stored = load_file(MODELS / GPT2 / "model.safetensors")["transformer.h.0.attn.c_attn.weight"]
    assert stored.shape == (64, 192)
    qkv = tensors["blk.0.attn_qkv.weight"].data
    assert qkv.shape == (192, 64)
    np.testing.assert_array_equal(qkv, stored.T)
    assert tensors["position_embd.weight"].tensor_type == gguf.GGMLQuantizationType.F32


def longrope_variant(tmp_path: Path, edit) -> Path:
    ckpt = copy_fixture(LONGROPE, tmp_path)
    config = json.loads((ckpt / "config.json").read_text())
    edit(config)
    (ckpt / "config.json").write_text(json.dumps(config, indent=2))
    return ckpt


def as_transformers5(config: dict) -> None:
    """The fixture's transformers-4 config as transformers 5 saves it: everything rope in
    rope_parameters, spelled rope_type."""
    rope = config.pop("rope_scaling")
    rope["rope_type"] = rope.pop("type")
    for key in ("rope_theta", "partial_rotary_factor", "original_max_position_embeddings"):
        rope[key] = config.pop(key)
    config["rope_parameters"] = rope
    config["dtype"] = config.pop("torch_dtype")


def old_name_su(config: dict) -> None:
    config["rope_scaling"]["type"] = "su"  # LongRoPE's first name (Phi-3-*-128k's early configs)


@pytest.mark.parametrize("edit", [as_transformers5, old_name_su], ids=["transformers5", "su"])
def test_longrope_config_spellings(tmp_path: Path, edit):
    convert(MODELS / LONGROPE, tmp_path / "fixture.gguf", "F32")
    variant = longrope_variant(tmp_path / "variant", edit)
    convert(variant, tmp_path / "variant.gguf", "F32")
    assert gguf_contents(tmp_path / "variant.gguf") == gguf_contents(tmp_path / "fixture.gguf")


def test_longrope_metadata_and_factors(tmp_path: Path):
    convert(MODELS / LONGROPE, tmp_path / "f32.gguf", "F32")
    reader = gguf.GGUFReader(tmp_path / "f32.gguf")
    config = json.loads((MODELS / LONGROPE / "config.json").read_text())
    fields = {k: f.contents() for k, f in reader.fields.items()}
    n_ctx, n_orig = config["max_position_embeddings"], config["original_max_position_embeddings"]
    assert fields["phi3.rope.scaling.original_context_length"] == n_orig
    assert fields["phi3.rope.dimension_count"] == 12  # 0.75 of 16
    attn_factor = np.float32(np.sqrt(1 + np.log(n_ctx / n_orig) / np.log(n_orig)))
    assert np.float32(fields["phi3.rope.scaling.attn_factor"]) == attn_factor
    assert "phi3.rope.scaling.type" not in fields  # the converter writes none for phi3
    tensors = {t.name: t.data for t in reader.tensors}
    np.testing.assert_array_equal(tensors["rope_factors_long.weight"],
                                  np.array(config["rope_scaling"]["long_factor"], np.float32))
    np.testing.assert_array_equal(tensors["rope_factors_short.weight"],
                                  np.array(config["rope_scaling"]["short_factor"], np.float32))


def test_phi3_default_rope_writes_no_factors(tmp_path: Path):
    convert(MODELS / "phi3-spm-bf16", tmp_path / "f32.gguf", "F32")
    reader = gguf.GGUFReader(tmp_path / "f32.gguf")
    assert not any(t.name.startswith("rope_factors") for t in reader.tensors)
    assert "phi3.rope.scaling.attn_factor" not in reader.fields
    assert reader.fields["phi3.attention.sliding_window"].contents() == 2047
    assert reader.fields["phi3.rope.scaling.original_context_length"].contents() == 4096  # Phi3Config's


def test_longrope_factor_count_is_checked(tmp_path: Path):
    ckpt = longrope_variant(tmp_path, lambda c: c["rope_scaling"]["long_factor"].append(2.0))
    out = tmp_path / "out.gguf"
    with pytest.raises(CheckpointError) as e:
        convert(ckpt, out, "F32")
    msg = str(e.value)
    assert "6 values" in msg and "12 rotary dimensions" in msg and "\n" not in msg
    assert not out.exists()


def test_long_factors_with_another_rope_type_are_refused(tmp_path: Path):
    ckpt = longrope_variant(tmp_path, lambda c: c["rope_scaling"].update(type="dynamic"))
    with pytest.raises(UnsupportedError, match="dynamic"):
        convert(ckpt, tmp_path / "out.gguf", "F32")
