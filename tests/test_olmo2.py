"""OLMo 2 beyond what the fixture-wide tests check.

test_llama_e2e, test_converter_equality and test_mixes run the olmo2-bpe-bf16 fixture (post-norms,
Q/K norms over all heads, GQA) against transformers, the converter and llama-quantize. Here: the
configurations llama.cpp's olmo2 cannot run, refused in one line.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from conftest import MODELS, run_cli
from qconvert.arch import for_config
from qconvert.errors import UnsupportedError

OLMO2 = MODELS / "olmo2-bpe-bf16"


def config(**over) -> dict:
    cfg = json.loads((OLMO2 / "config.json").read_text())
    for key, value in over.items():
        cfg.pop(key, None) if value is None else cfg.__setitem__(key, value)
    return cfg


def test_fixture_norms_span_all_heads():
    """q_norm / k_norm are as wide as the Q and K projections (4 and 2 heads of 64), not a head."""
    expected = for_config(config()).expected_tensors()
    assert expected["blk.0.attn_q_norm.weight"].sizes == (256,)
    assert expected["blk.0.attn_k_norm.weight"].sizes == (128,)
    assert "blk.0.attn_norm.weight" not in expected and "blk.0.ffn_norm.weight" not in expected


@pytest.mark.parametrize("over, phrase", [
    (dict(tie_word_embeddings=True), "tie_word_embeddings true"),
    (dict(attention_bias=True), "attention_bias true"),
    (dict(sliding_window=4), "sliding_window"),
    (dict(rope_parameters={"rope_type": "llama3", "rope_theta": 1e4, "factor": 8.0, "low_freq_factor": 1.0,
                           "high_freq_factor": 4.0, "original_max_position_embeddings": 64}),
     "olmo2 with llama3 rope scaling"),
])
def test_what_llama_cpp_cannot_run_is_refused(over: dict, phrase: str):
    with pytest.raises(UnsupportedError, match=phrase):
        for_config(config(**over))


def test_refusal_is_one_line_and_writes_nothing(tmp_path: Path):
    model = shutil.copytree(OLMO2, tmp_path / "model")
    (model / "config.json").write_text(json.dumps(config(tie_word_embeddings=True)))
    out = tmp_path / "out.gguf"
    proc = run_cli("quantize", model, "-t", "F16", "-o", out, "--no-progress")
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: OLMo 2 with tie_word_embeddings true"), proc.stderr
    assert not out.exists()
