"""Tiny random-weight Llama-family checkpoints through qconvert and llama.cpp.

Each fixture under tests/fixtures/models/ (made by scripts/make_tiny_models.py) holds a prompt's
token ids and transformers' float32 logits for it (an encoder's: its last hidden states,
"embeddings", compared with llama.cpp's per-token embeddings). Converted to F32, llama.cpp must
reproduce them to 1e-4 of their scale; the other types must load and run, and their error
against the reference is reported (and bounded loosely, so a broken quantizer still fails).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import gguf
import numpy as np
import pytest

from conftest import MODELS, llama_logits, llama_outputs, memoized, reference_kind, relative_error, report
from qconvert.convert import convert, prepare

FIXTURE_MODELS = sorted(p.name for p in MODELS.glob("*") if (p / "reference.npz").is_file())

# Ceilings on the error against transformers' float32 logits. F32 is the real check (measured
# about 1e-6). The others are about twice the worst value measured on these random tiny models
# (F16 7.6e-4, BF16 6.8e-3, Q8_0 3.0e-2, Q4_0 0.26, Q4_K_M 0.22; llama.cpp also rounds activations to the
# weight type for F16/BF16), so that a broken quantizer, whose error is of order 1, fails; the
# figures themselves are printed in the "qconvert figures" section of the test log.
CEILING = {"F32": 1e-4, "F16": 3e-3, "BF16": 2e-2, "Q8_0": 6e-2, "Q4_0": 0.5, "Q4_K_M": 0.5}


def test_fixture_models_exist():
    assert len(FIXTURE_MODELS) >= 4, FIXTURE_MODELS


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """(model, type) -> converted GGUF path, each converted once per module."""
    def make(model: str, qtype: str) -> Path:
        out = tmp_path_factory.mktemp(model) / f"{qtype}.gguf"
        convert(MODELS / model, out, qtype)
        return out

    return memoized(make)


@pytest.mark.parametrize("qtype", list(CEILING))
@pytest.mark.parametrize("model", FIXTURE_MODELS)
def test_logits_match_transformers(model: str, qtype: str, converted):
    ref = np.load(MODELS / model / "reference.npz")
    kind = reference_kind(MODELS / model)
    got = llama_outputs(converted(model, qtype), ref["tokens"], kind)
    assert got.shape == ref[kind].shape
    assert np.all(np.isfinite(got))
    err = relative_error(got, ref[kind])
    report(f"{model:<28} {qtype:<5} max |llama.cpp - transformers| / max |{kind[:-1]}| = {err:.2e}")
    assert err <= CEILING[qtype], f"{model} {qtype}: relative error {err:.3e} > {CEILING[qtype]}"


@pytest.mark.parametrize("qtype", ["F16", "Q8_0", "Q4_0"])
@pytest.mark.parametrize("model", FIXTURE_MODELS)
def test_tensor_types_follow_the_plan(model: str, qtype: str, converted):
    """The file holds the planner's types (test_mixes checks the plan against llama-quantize):
    each tensor the requested type unless its PlanRow's reason says why not, and 1-D tensors
    and norms F32."""
    reader = gguf.GGUFReader(converted(model, qtype))
    job = prepare(MODELS / model, qtype)
    job.checkpoint.close()
    assert {t.name: t.tensor_type for t in reader.tensors} == {r.gguf_name: r.qtype for r in job.rows}
    want = gguf.GGMLQuantizationType[qtype]
    default_reasons = (qtype, f"{qtype} default")  # planner.choose's reasons for the recipe's type
    matrices = []
    for row in job.rows:
        if len(row.shape) == 1 or row.gguf_name.endswith("_norm.weight"):
            assert row.qtype == gguf.GGMLQuantizationType.F32, row
            continue
        matrices.append(row)
        if row.qtype != want:
            assert row.reason not in default_reasons, row  # another type: a rule or fallback says why
    assert sum(r.qtype == want for r in matrices) > len(matrices) // 2
    ft = reader.fields["general.file_type"].contents()
    assert ft == {"F16": 1, "Q8_0": 7, "Q4_0": 2}[qtype]


# GPT-2's GELU in llama.cpp reads an F16 table (see scripts/make_tiny_models.py), which alone
# costs about 1e-4 of the logit scale; against the reference with that table emulated, the F32
# file must agree as closely as the other architectures do with transformers (measured 3.8e-7).
# (BERT's too, with its embeddings: llama.cpp runs that table for BERT's exact GELU as well.)
GELU_MODELS = [m for m in FIXTURE_MODELS
               if f"{reference_kind(MODELS / m)}_ggml_gelu" in np.load(MODELS / m / "reference.npz")]


@pytest.mark.parametrize("model", GELU_MODELS)
def test_f32_logits_match_with_ggml_gelu(model: str, converted):
    ref, kind = np.load(MODELS / model / "reference.npz"), reference_kind(MODELS / model)
    err = relative_error(llama_outputs(converted(model, "F32"), ref["tokens"], kind), ref[f"{kind}_ggml_gelu"])
    report(f"{model:<28} F32   against transformers with ggml's F16 GELU table: {err:.2e}")
    assert err <= 1e-5, f"{model}: relative error {err:.3e} > 1e-5"


def test_longrope_fixture_checks_the_long_factors(tmp_path: Path, converted):
    """The LongRoPE fixture's logits depend on the factors both sides use: the same checkpoint
    with its long factors replaced by the short ones lands far from the reference."""
    model = next(m for m in FIXTURE_MODELS if "longrope" in m)
    reader = gguf.GGUFReader(converted(model, "F32"))
    names = [t.name for t in reader.tensors]
    assert names[:2] == ["rope_factors_long.weight", "rope_factors_short.weight"]
    assert reader.fields["phi3.rope.scaling.attn_factor"].contents() > 1.5
    ref = np.load(MODELS / model / "reference.npz")
    # llama.cpp takes the long factors when its context exceeds the original one; transformers
    # when the sequence does. Both hold for this fixture.
    n_orig = reader.fields["phi3.rope.scaling.original_context_length"].contents()
    assert len(ref["tokens"]) > n_orig
    shutil.copytree(MODELS / model, tmp_path / model)
    config_path = tmp_path / model / "config.json"
    config = json.loads(config_path.read_text())
    rope = config["rope_scaling"]
    assert rope["long_factor"] != rope["short_factor"]
    rope["long_factor"] = rope["short_factor"]
    config_path.write_text(json.dumps(config))
    convert(tmp_path / model, tmp_path / "short.gguf", "F32")
    err = relative_error(llama_logits(tmp_path / "short.gguf", ref["tokens"]), ref["logits"])
    assert err > 100 * CEILING["F32"], err


def test_llama3_rope_freqs_written(converted):
    llama3 = [m for m in FIXTURE_MODELS if "llama3" in m]
    assert llama3, "no llama3-rope fixture"
    reader = gguf.GGUFReader(converted(llama3[0], "F32"))
    names = [t.name for t in reader.tensors]
    assert "rope_freqs.weight" in names
    freqs = next(t for t in reader.tensors if t.name == "rope_freqs.weight")
    assert freqs.tensor_type == gguf.GGMLQuantizationType.F32
    assert np.all(freqs.data >= 1.0) and np.any(freqs.data > 1.0)


def test_thread_count_does_not_change_bytes(tmp_path: Path, monkeypatch):
    import qconvert.convert
    monkeypatch.setattr(qconvert.convert, "CHUNK_ELEMENTS", 256)  # many chunks even for tiny tensors
    model = MODELS / FIXTURE_MODELS[0]
    one, two = tmp_path / "one.gguf", tmp_path / "two.gguf"
    convert(model, one, "Q4_0", threads=1)
    convert(model, two, "Q4_0", threads=2)
    assert one.read_bytes() == two.read_bytes()
