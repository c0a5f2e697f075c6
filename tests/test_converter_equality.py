"""qconvert's F16 file against llama.cpp's convert_hf_to_gguf.py's, for every fixture model.

F16 involves no quantization choice, so the two files must agree on everything an architecture
adapter decides: the same tensors in the same order with the same types, shapes and bytes (Q/K
row orders, biases, norms, generated tensors), and every metadata key the converter writes, with
the same value and GGUF type. Keys only qconvert writes do not fail the test; they are listed in
the "qconvert figures" section of the log.
"""

from __future__ import annotations

import sys
from pathlib import Path

import gguf
import pytest

from conftest import MODELS, ROOT, memoized, report
from qconvert.convert import convert

sys.path.insert(0, str(ROOT / "scripts"))
from oracle_convert import oracle_convert  # noqa: E402

FIXTURE_MODELS = sorted(p.name for p in MODELS.glob("*") if (p / "config.json").is_file())


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    """model -> (qconvert's F16 file, convert_hf_to_gguf.py's F16 file)."""
    def make(model: str) -> tuple[Path, Path]:
        src, out = MODELS / model, tmp_path_factory.mktemp(model)
        # The tiny BPE tokenizer is SmolLM's pre-tokenizer over a small vocab, which the converter
        # has no hash for (see scripts/oracle_convert.py); a SentencePiece vocab needs no name.
        vocab_pre = None if (src / "tokenizer.model").is_file() else "smollm"
        oracle_convert(src, out / "theirs.gguf", "f16", vocab_pre=vocab_pre)
        convert(src, out / "ours.gguf", "F16")
        return out / "ours.gguf", out / "theirs.gguf"

    return memoized(make)


def fields(reader: gguf.GGUFReader) -> dict[str, gguf.ReaderField]:
    # GGUF.* are the header's counts, not metadata keys.
    return {k: f for k, f in reader.fields.items() if not k.startswith("GGUF.")}


def test_every_fixture_is_compared():
    assert {"qwen2-bpe-bf16", "qwen3-bpe-bf16", "mistral-bpe-bf16"} <= set(FIXTURE_MODELS)


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
    ours, theirs = (gguf.GGUFReader(p).tensors for p in pair(model))
    assert [t.name for t in ours] == [t.name for t in theirs]
    for got, want in zip(ours, theirs):
        assert got.tensor_type == want.tensor_type, (got.name, got.tensor_type.name, want.tensor_type.name)
        assert list(got.shape) == list(want.shape), (got.name, list(got.shape), list(want.shape))
        if got.data.tobytes() != want.data.tobytes():
            bad = (got.data.reshape(-1) != want.data.reshape(-1)).sum()
            pytest.fail(f"{model}: {got.name} differs in {bad} of {want.data.size} values")
