"""SmolLM3 beyond what the fixture-wide tests check.

test_llama_e2e, test_converter_equality and test_mixes run the smollm3-bpe-bf16 fixture (8 layers,
the 4th and 8th without rope) against transformers, the converter and llama-quantize. Here: that
the fixture's NoPE layers are what those tests check, and the configurations llama.cpp's smollm3
cannot run, refused in one line.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import gguf
import numpy as np
import pytest

from conftest import MODELS, llama_logits, relative_error, run_cli
from qconvert.arch import for_config
from qconvert.convert import convert
from qconvert.errors import UnsupportedError

SMOLLM3 = MODELS / "smollm3-bpe-bf16"


def config(**over) -> dict:
    cfg = json.loads((SMOLLM3 / "config.json").read_text())
    for key, value in over.items():
        cfg.pop(key, None) if value is None else cfg.__setitem__(key, value)
    return cfg


def test_fixture_has_nope_layers_llama_cpp_runs():
    cfg = config()
    assert cfg["no_rope_layers"] == [1, 1, 1, 0, 1, 1, 1, 0]
    adapter = for_config(cfg)
    assert adapter.arch_name == "smollm3"
    assert adapter.nope_layers.layers(adapter.hp, adapter.n_blocks) == [False, False, False, True] * 2
    # the interval alone (transformers builds the same list from it) is the same model
    assert for_config(config(no_rope_layers=None)).metadata().items == adapter.metadata().items


def test_nope_layers_are_what_the_logits_check(tmp_path: Path):
    """llama.cpp's smollm3 matches transformers (test_llama_e2e); the same weights run as a Llama,
    which rotates every layer, land far from the reference: the NoPE layers carry weight."""
    ref = np.load(SMOLLM3 / "reference.npz")
    convert(SMOLLM3, tmp_path / "smollm3.gguf", "F32")
    assert relative_error(llama_logits(tmp_path / "smollm3.gguf", ref["tokens"]), ref["logits"]) <= 1e-4
    as_llama = shutil.copytree(SMOLLM3, tmp_path / "as-llama")
    (as_llama / "config.json").write_text(json.dumps(config(architectures=["LlamaForCausalLM"], model_type="llama")))
    convert(as_llama, tmp_path / "llama.gguf", "F32")
    # the same tensors and bytes: only the architecture, and so the rope in layers 3 and 7, differ
    ours, llama = gguf.GGUFReader(tmp_path / "smollm3.gguf"), gguf.GGUFReader(tmp_path / "llama.gguf")
    assert [(t.name, t.data.tobytes()) for t in ours.tensors] == [(t.name, t.data.tobytes()) for t in llama.tensors]
    err = relative_error(llama_logits(tmp_path / "llama.gguf", ref["tokens"]), ref["logits"])
    assert err > 100 * 1e-4, err


@pytest.mark.parametrize("over, phrase", [
    (dict(no_rope_layers=[1, 1, 0, 1, 1, 1, 1, 0]), "without rope in layers [2, 7]"),
    (dict(no_rope_layers=[1] * 8), "without rope in layers none"),
    (dict(no_rope_layers=None, no_rope_layer_interval=2), "without rope in layers [1, 3, 5, 7]"),
    (dict(no_rope_layers=[1, 1, 1, 0]), "config.json has 4 no_rope_layers for 8 layers"),
    (dict(use_sliding_window=True, sliding_window=4, layer_types=None), "use_sliding_window true"),
    (dict(use_sliding_window=True, sliding_window=4, layer_types=["full_attention"] * 3 + ["sliding_attention"] * 5),
     "use_sliding_window true"),
    (dict(rope_parameters={"rope_type": "llama3", "rope_theta": 1e5, "factor": 8.0, "low_freq_factor": 1.0,
                           "high_freq_factor": 4.0, "original_max_position_embeddings": 64}),
     "smollm3 with llama3 rope scaling"),
])
def test_what_llama_cpp_cannot_run_is_refused(over: dict, phrase: str):
    with pytest.raises(UnsupportedError, match=phrase.replace("[", r"\[").replace("]", r"\]")):
        for_config(config(**over))


def test_sliding_window_that_slides_nothing_is_accepted():
    """transformers slides only the layers layer_types names (by default the NoPE ones), and only
    with both settings: a window without use_sliding_window (SmolLM3-3B's config), or with every
    layer full_attention (the fixture's layer_types), changes nothing."""
    for_config(config(use_sliding_window=False, sliding_window=4, layer_types=None))
    for_config(config(use_sliding_window=True, sliding_window=4))


def test_refusal_is_one_line_and_writes_nothing(tmp_path: Path):
    model = shutil.copytree(SMOLLM3, tmp_path / "model")
    (model / "config.json").write_text(json.dumps(config(no_rope_layer_interval=3, no_rope_layers=None)))
    out = tmp_path / "out.gguf"
    proc = run_cli("quantize", model, "-t", "F16", "-o", out, "--no-progress")
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: SmolLM3 without rope in layers [2, 5]"), proc.stderr
    assert "every 4th layer" in lines[0]
    assert not out.exists()
