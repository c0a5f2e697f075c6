"""qconvert's F16 file against llama.cpp's convert_hf_to_gguf.py's, for every fixture model.

F16 involves no quantization choice, so the two files must agree on everything an architecture
adapter decides: the same tensors in the same order with the same types, shapes and bytes (Q/K
row orders, biases, norms; generated tensors within a few float32 ulp, see conftest.GENERATED_ULPS),
and every metadata key the converter writes, with the same value and GGUF type. Keys only
qconvert writes do not fail the test; they are listed in the "qconvert figures" section of the log.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import gguf
import numpy as np
import pytest
from safetensors.numpy import save_file

from conftest import (MODELS, ROOT, assert_generated_close, generated_tensors, memoized, oracle_vocab_pre,
                      report)
from qconvert.arch import ADAPTERS, REGISTRY, for_config
from qconvert.convert import convert
from qconvert.reader import Checkpoint

sys.path.insert(0, str(ROOT / "scripts"))
from oracle_convert import oracle_convert  # noqa: E402

FIXTURE_MODELS = sorted(p.name for p in MODELS.glob("*") if (p / "config.json").is_file())


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    """model -> (qconvert's F16 file, convert_hf_to_gguf.py's F16 file)."""
    def make(model: str) -> tuple[Path, Path]:
        src, out = MODELS / model, tmp_path_factory.mktemp(model)
        # The converter has no hash for the tiny BPE vocabularies (see scripts/oracle_convert.py).
        oracle_convert(src, out / "theirs.gguf", "f16", vocab_pre=oracle_vocab_pre(src))
        convert(src, out / "ours.gguf", "F16")
        return out / "ours.gguf", out / "theirs.gguf"

    return memoized(make)


def fields(reader: gguf.GGUFReader) -> dict[str, gguf.ReaderField]:
    # GGUF.* are the header's counts, not metadata keys; qconvert.* (provenance) are ours alone.
    return {k: f for k, f in reader.fields.items() if not k.startswith(("GGUF.", "qconvert."))}


def test_every_fixture_is_compared():
    """Every fixture folder is compared, and every architecture adapter has a fixture."""
    folders = sorted(p.name for p in MODELS.iterdir() if p.is_dir() and not p.name.startswith("."))
    assert FIXTURE_MODELS == folders
    adapters = {type(for_config(json.loads((MODELS / m / "config.json").read_text()))) for m in FIXTURE_MODELS}
    assert adapters == set(ADAPTERS), sorted(c.__name__ for c in set(ADAPTERS) - adapters)
    # fixtures of architectures without an adapter wait in pending/; one whose adapter came moves here
    pending = MODELS.parent / "pending"
    waiting = {json.loads((p / "config.json").read_text())["architectures"][0]: p.name
               for p in pending.iterdir() if (p / "config.json").is_file()} if pending.is_dir() else {}
    assert not set(waiting) & set(REGISTRY), sorted(waiting[a] for a in set(waiting) & set(REGISTRY))


@pytest.mark.parametrize("model", FIXTURE_MODELS)
def test_metadata_matches_converter(model: str, pair):
    ours, theirs = (fields(gguf.GGUFReader(p)) for p in pair(model))
    missing = sorted(set(theirs) - set(ours))
    assert not missing, f"{model}: keys the converter writes and qconvert does not: {missing}"
    for key, want in theirs.items():
        got = ours[key]
        assert got.types == want.types, (key, got.types, want.types)
        assert got.contents() == want.contents(), (key, got.contents(), want.contents())
    if extra := sorted(set(ours) - set(theirs)):
        report(f"{model:<28} keys qconvert writes and the converter does not: {', '.join(extra)}")


@pytest.mark.parametrize("model", FIXTURE_MODELS)
def test_tensors_match_converter(model: str, pair):
    """Byte for byte, but the generated tensors (rope_freqs, rope_factors_*): those are the
    correctly rounded float32 of their formula, the converter's torch float32 arithmetic may be
    a few ulp off (conftest.GENERATED_ULPS; the distance found is in the test log)."""
    ours, theirs = (gguf.GGUFReader(p).tensors for p in pair(model))
    assert [t.name for t in ours] == [t.name for t in theirs]
    generated = generated_tensors(MODELS / model)
    for got, want in zip(ours, theirs):
        assert got.tensor_type == want.tensor_type, (got.name, got.tensor_type.name, want.tensor_type.name)
        assert list(got.shape) == list(want.shape), (got.name, list(got.shape), list(want.shape))
        if got.name in generated:
            assert got.tensor_type == gguf.GGMLQuantizationType.F32, got.name
            assert_generated_close(got.name, got.data, want.data, model)
        elif got.data.tobytes() != want.data.tobytes():
            bad = (got.data.reshape(-1) != want.data.reshape(-1)).sum()
            pytest.fail(f"{model}: {got.name} differs in {bad} of {want.data.size} values")


def test_gemma_norm_offset_of_an_f16_checkpoint(tmp_path: Path):
    """The one documented difference (qconvert/arch/gemma.py): Gemma's norm offset. The converter
    adds 1 in the checkpoint's dtype when that is float16 (it upcasts only other dtypes, bf16
    included, to float32 first), so its norms are 1 + w rounded to float16; transformers
    computes 1 + w in float32, and so do we. On the gemma2 fixture stored as float16, every other
    tensor and key is the same, and the norms differ by exactly that rounding."""
    src, ckpt = MODELS / "gemma2-spm-bf16", tmp_path / "gemma2-f16"
    ckpt.mkdir()
    for f in src.iterdir():
        if f.is_file() and f.suffix != ".safetensors" and f.name != "reference.npz":
            shutil.copy(f, ckpt / f.name)
    config = json.loads((src / "config.json").read_text())
    config["dtype"] = "float16"
    (ckpt / "config.json").write_text(json.dumps(config))
    stored = Checkpoint.open(src)
    save_file({name: stored.load(name).astype(np.float16) for name in stored.tensors}, str(ckpt / "model.safetensors"))
    stored.close()
    oracle_convert(ckpt, tmp_path / "theirs.gguf", "f16", vocab_pre=None)
    convert(ckpt, tmp_path / "ours.gguf", "F16")

    ours, theirs = (gguf.GGUFReader(tmp_path / f) for f in ("ours.gguf", "theirs.gguf"))
    assert {k: f.contents() for k, f in fields(ours).items()} == {k: f.contents() for k, f in fields(theirs).items()}
    assert [t.name for t in ours.tensors] == [t.name for t in theirs.tensors]
    f16 = Checkpoint.open(ckpt)
    source = {t.gguf_name: t.src for t in for_config(f16.config).tensors(f16.tensors)}
    norms = rounded = 0
    for got, want in zip(ours.tensors, theirs.tensors):
        assert (got.tensor_type, list(got.shape)) == (want.tensor_type, list(want.shape)), got.name
        if not got.name.endswith("norm.weight"):
            assert got.data.tobytes() == want.data.tobytes(), got.name
            continue
        norms += 1
        assert got.tensor_type == gguf.GGMLQuantizationType.F32, got.name
        # ours: transformers' 1.0 + weight.float(); theirs: that, rounded to float16
        assert np.array_equal(got.data, f16.load(source[got.name]) + np.float32(1)), got.name
        assert np.array_equal(want.data, got.data.astype(np.float16).astype(np.float32)), got.name
        rounded += int((want.data != got.data).sum())
    f16.close()
    assert norms == 2 * 4 + 1  # four norms a layer, two layers, and the output norm
    # These w came from bf16 (8 bits), so 1 + w mostly fits float16's 11; not where |w| is small
    # (63 of the 576 values): the difference is real, not vacuous.
    assert rounded > 0, "the float16 rounding changed no norm value"
