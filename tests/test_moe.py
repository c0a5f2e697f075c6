"""Mixture-of-experts checkpoints (Mixtral, Qwen3-MoE) beyond what the fixture-wide tests check.

test_llama_e2e, test_converter_equality and test_mixes already run the mixtral-bpe-bf16 and
qwen3moe-bpe-bf16 fixtures (per-expert tensors, as transformers saves them) against
transformers, the converter and llama-quantize. Here: the same checkpoints with their experts
fused as transformers 5 holds them in memory, the config spellings and shapes that must be
refused, and the model facts the planner's 8-expert rules read.
"""

from __future__ import annotations

import json
import re
import shutil
import sys
from pathlib import Path

import gguf
import numpy as np
import pytest
from safetensors.numpy import save_file

from conftest import MODELS, ROOT
from qconvert.arch import for_config
from qconvert.convert import convert, prepare
from qconvert.errors import CheckpointError, UnsupportedError
from qconvert.reader import Checkpoint

sys.path.insert(0, str(ROOT / "scripts"))
from oracle_convert import oracle_convert  # noqa: E402

MIXTRAL, QWEN3MOE = "mixtral-bpe-bf16", "qwen3moe-bpe-bf16"
# per-expert kinds -> (fused tensor, half of gate_up_proj or None)
PROJ = {MIXTRAL: {"w1": "gate", "w3": "up", "w2": "down"},
        QWEN3MOE: {"gate_proj": "gate", "up_proj": "up", "down_proj": "down"}}
EXPERT = re.compile(r"^model\.layers\.(\d+)\.(?:block_sparse_moe|mlp)\.experts\.(\d+)\.(\w+)\.weight$")


def copy_fixture(model: str, dest: Path, tensors: dict[str, np.ndarray] | None = None, **config) -> Path:
    """The fixture's files in `dest`, with config.json keys replaced (None deletes) and, if
    given, `tensors` (float32) as its model.safetensors."""
    shutil.copytree(MODELS / model, dest)
    cfg = json.loads((dest / "config.json").read_text())
    for key, value in config.items():
        cfg.pop(key, None) if value is None else cfg.__setitem__(key, value)
    (dest / "config.json").write_text(json.dumps(cfg, indent=2))
    if tensors is not None:
        save_file(tensors, str(dest / "model.safetensors"))
    return dest


def fixture_tensors(model: str) -> dict[str, np.ndarray]:
    ckpt = Checkpoint.open(MODELS / model)
    try:
        return {name: ckpt.load(name) for name in ckpt.tensors}
    finally:
        ckpt.close()


def fused(model: str) -> dict[str, np.ndarray]:
    """The fixture's weights with transformers 5's in-memory expert layout: per layer
    mlp.experts.gate_up_proj [E, 2 * ff, hidden] (gate rows, then up rows, per expert) and
    mlp.experts.down_proj [E, hidden, ff]; the Mixtral router becomes mlp.gate."""
    per_expert: dict[tuple[int, str], dict[int, np.ndarray]] = {}
    out = {}
    for name, value in fixture_tensors(model).items():
        if m := EXPERT.match(name):
            per_expert.setdefault((int(m[1]), PROJ[model][m[3]]), {})[int(m[2])] = value
        else:
            out[name.replace(".block_sparse_moe.gate.", ".mlp.gate.")] = value
    stacks = {key: np.stack([experts[e] for e in sorted(experts)]) for key, experts in per_expert.items()}
    for bid in sorted({bid for bid, _ in stacks}):
        out[f"model.layers.{bid}.mlp.experts.down_proj"] = stacks[bid, "down"]
        out[f"model.layers.{bid}.mlp.experts.gate_up_proj"] = np.concatenate(
            [stacks[bid, "gate"], stacks[bid, "up"]], axis=1)
    return out


def gguf_tensors(path: Path) -> list[tuple[str, str, list[int], bytes]]:
    return [(t.name, t.tensor_type.name, [int(d) for d in t.shape], t.data.tobytes())
            for t in gguf.GGUFReader(path).tensors]


@pytest.mark.parametrize("model", [MIXTRAL, QWEN3MOE])
def test_fused_experts_give_the_same_file(model: str, tmp_path: Path):
    """Fused experts: the same tensors (names, types, shapes, bytes) as the per-expert checkpoint.
    The order differs only where the converter's does: a fused layer's down stack comes before
    gate/up (names sort down_proj < gate_up_proj), as for per-expert Qwen3-MoE."""
    src = copy_fixture(model, tmp_path / "fused", fused(model))
    assert any(n.endswith("gate_up_proj") for n in Checkpoint.open(src).tensors)
    convert(MODELS / model, tmp_path / "per-expert.gguf", "F32")
    convert(src, tmp_path / "fused.gguf", "F32")
    want, got = gguf_tensors(tmp_path / "per-expert.gguf"), gguf_tensors(tmp_path / "fused.gguf")
    assert sorted(got) == sorted(want)
    exps = [t[0] for t in got if "_exps" in t[0]]
    assert exps[:3] == ["blk.0.ffn_down_exps.weight", "blk.0.ffn_gate_exps.weight", "blk.0.ffn_up_exps.weight"]


def test_fused_qwen3moe_matches_converter(tmp_path: Path):
    """llama.cpp's converter splits a fused gate_up_proj itself (Qwen2MoeModel.modify_tensors):
    our F16 file of the fused checkpoint equals its, tensor by tensor, in order."""
    src = copy_fixture(QWEN3MOE, tmp_path / "fused", fused(QWEN3MOE))
    oracle_convert(src, tmp_path / "theirs.gguf", "f16", vocab_pre="smollm")
    convert(src, tmp_path / "ours.gguf", "F16")
    assert gguf_tensors(tmp_path / "ours.gguf") == gguf_tensors(tmp_path / "theirs.gguf")


def test_missing_expert_is_an_error(tmp_path: Path):
    tensors = fixture_tensors(MIXTRAL)
    del tensors["model.layers.1.block_sparse_moe.experts.5.w2.weight"]
    src = copy_fixture(MIXTRAL, tmp_path / "m", tensors)
    with pytest.raises(CheckpointError, match=r"layer 1 has 23 of its 24 expert tensors"):
        prepare(src, "F16")


def test_expert_beyond_the_config_is_an_error(tmp_path: Path):
    src = copy_fixture(MIXTRAL, tmp_path / "m", num_local_experts=4)
    with pytest.raises(CheckpointError, match=r"expert 4, but config.json says 4 experts"):
        prepare(src, "F16")


@pytest.mark.parametrize("config,message", [
    # transformers' default is false; llama.cpp's qwen3moe graph renormalizes the top-k weights
    # regardless, which changed this fixture's logits by 1.0e-2 of their scale
    (dict(norm_topk_prob=False), "norm_topk_prob false"),
    (dict(norm_topk_prob=None), "norm_topk_prob false"),
    (dict(mlp_only_layers=[1]), "dense layers"),
    (dict(decoder_sparse_step=2), "dense layers"),
])
def test_qwen3moe_llama_cpp_cannot_run_is_refused(config: dict, message: str, tmp_path: Path):
    src = copy_fixture(QWEN3MOE, tmp_path / "q", **config)
    with pytest.raises(UnsupportedError, match=message):
        prepare(src, "F16")


def test_qwen3moe_hub_config_spelling(tmp_path: Path):
    """Qwen3-MoE configs on the hub say num_experts; transformers 5.23 saves num_local_experts."""
    saved = json.loads((MODELS / QWEN3MOE / "config.json").read_text())
    hub = {k: v for k, v in saved.items() if k != "num_local_experts"} | {"num_experts": 4}
    a, b = for_config(saved), for_config(hub)
    assert a.metadata().items == b.metadata().items
    assert a.model_facts() == b.model_facts()
    assert b.model_facts().n_expert == 4
    assert b.metadata().items["qwen3moe.expert_count"][0] == 4
    assert b.metadata().items["qwen3moe.expert_feed_forward_length"][0] == 32


def test_eight_experts_are_not_a_70b():
    """llama.cpp sizes an 8-expert llama by layers (8x7B, 8x22B), never as LLM_TYPE_70B, whose
    attn_v rule would otherwise apply at 80 layers with GQA; other expert counts keep it."""
    cfg = json.loads((MODELS / MIXTRAL / "config.json").read_text()) | {"num_hidden_layers": 80}
    facts = for_config(cfg).model_facts()
    assert (facts.n_expert, facts.is_70b, facts.n_gqa) == (8, False, 2)
    assert for_config(cfg | {"num_local_experts": 4}).model_facts().is_70b
    qwen = json.loads((MODELS / QWEN3MOE / "config.json").read_text()) | {"num_hidden_layers": 80}
    assert not for_config(qwen).model_facts().is_70b


@pytest.mark.parametrize("model", [MIXTRAL, QWEN3MOE])
def test_experts_keep_no_state(model: str):
    """The stacks are a pure function of the config and the tensor list: a list that lacks an
    expert fails and leaves nothing behind in the adapter, and the full list then gives what it
    gave before, the stacks where the layer's last expert tensor is."""
    ckpt = Checkpoint.open(MODELS / model)
    try:
        adapter = for_config(ckpt.config)
        state = {k: repr(v) for k, v in vars(adapter).items()}
        first = adapter.tensors(ckpt.tensors)
        lacking = {n: i for n, i in ckpt.tensors.items() if ".experts.3." not in n}
        with pytest.raises(CheckpointError, match="layer 0 has .* expert tensors"):
            adapter.tensors(lacking)
        assert {k: repr(v) for k, v in vars(adapter).items()} == state
        again = adapter.tensors(ckpt.tensors)
    finally:
        ckpt.close()
    assert again == first
    # written in checkpoint order, each stack where the last of its experts is
    order = {name: i for i, name in enumerate(ckpt.tensors)}
    at = [max(order[n] for n in t.sources) for t in first]
    assert at == sorted(at)
    assert sum(bool(t.stack) for t in first) == 2 * 3  # two layers, three projections
