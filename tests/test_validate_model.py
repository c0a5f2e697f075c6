"""config.json values and checkpoint tensors against the architecture (qconvert/validate/model.py).

A catalog: each case is a checkpoint that is wrong in one way, run through the CLI, and must be
refused with exit 1 and one line naming the culprit (the tensor or config key, and what was
expected), no traceback, nothing at the target, and the checkpoint's files unchanged. The
checkpoints are the conftest tiny Llama (and its Mixtral form) and copies of the fixture models
of the other families, with one tensor or key changed.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import replace
from pathlib import Path

import gguf
import numpy as np
import pytest
from conftest import MODELS, run_cli, tiny_llama_config, tiny_llama_tensors, tokenizer_vocab_size, write_checkpoint
from safetensors.numpy import save_file
from test_cli_errors import assert_clean_failure

from qconvert.arch import for_config
from qconvert.convert import prepare, write
from qconvert.errors import CheckpointError
from qconvert.options import KVOverride
from qconvert.reader import Checkpoint
from qconvert.validate.model import CONFIG_RULES, MAX_LAYERS, MAX_TOKENS, check_config

V = tokenizer_vocab_size()


def digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


def refused(model: Path, tmp_path: Path, *phrases: str) -> str:
    """Run the CLI on `model`; assert a clean refusal (exit 1) naming `phrases`, the checkpoint
    untouched. Returns the message."""
    before = digest(model)
    out = tmp_path / "out.gguf"
    proc = run_cli("quantize", model, "-t", "Q8_0", "-o", out, "--no-progress")
    assert_clean_failure(proc, out, *phrases, code=1)
    assert digest(model) == before
    return proc.stderr.strip()


def llama(tmp_path: Path, name: str = "ckpt", *, drop=(), add=None, config=None, **over) -> Path:
    """The conftest tiny Llama with two layers (`over` goes into the config the weights are made
    for, `config` only into config.json), `drop` tensors removed and `add` ones added."""
    cfg = tiny_llama_config(V, num_hidden_layers=2, **over)
    tensors = tiny_llama_tensors(cfg)
    for key in drop:
        del tensors[key]
    tensors.update(add or {})
    return write_checkpoint(tmp_path / name, {**cfg, **(config or {})}, tensors)


def mixtral(tmp_path: Path, **kw) -> Path:
    return llama(tmp_path, architectures=["MixtralForCausalLM"], num_local_experts=3, num_experts_per_tok=2, **kw)


def fixture(model: str, dest: Path, *, drop=(), add=None, config=None) -> Path:
    """A copy of a fixture model with tensors dropped or added (weights rewritten as float32)
    and config.json keys replaced."""
    shutil.copytree(MODELS / model, dest)
    cfg = json.loads((dest / "config.json").read_text())
    (dest / "config.json").write_text(json.dumps({**cfg, **(config or {})}, indent=2))
    if drop or add:
        ckpt = Checkpoint.open(MODELS / model)
        try:
            tensors = {name: ckpt.load(name) for name in ckpt.tensors if name not in drop}
        finally:
            ckpt.close()
        assert len(tensors) == len(ckpt.tensors) - len(drop), "a dropped tensor is not in the fixture"
        for f in dest.glob("*.safetensors*"):
            f.unlink()
        save_file({**tensors, **(add or {})}, str(dest / "model.safetensors"))
    return dest


def zeros(*shape: int) -> np.ndarray:
    return np.zeros(shape, np.float32)


# -- tensors against the architecture -----------------------------------------------------------


def test_dropped_layer_weight(tmp_path: Path):
    model = llama(tmp_path, drop=["model.layers.1.mlp.down_proj.weight"])
    refused(model, tmp_path, "lacks 1 tensor model.layers.1.mlp.down_proj.weight", "num_hidden_layers 2")


def test_missing_untied_lm_head(tmp_path: Path):
    model = llama(tmp_path, drop=["lm_head.weight"])
    refused(model, tmp_path, "lacks 1 tensor output.weight (the lm_head)", "tie_word_embeddings false")


def test_missing_final_norm(tmp_path: Path):
    refused(llama(tmp_path, drop=["model.norm.weight"]), tmp_path, "lacks 1 tensor output_norm.weight (the final norm)")


def test_missing_tensors_are_one_error_with_a_count(tmp_path: Path):
    """Every missing tensor is counted, the first few named, with the unexpected ones."""
    drop = [f"model.layers.{i}.{p}.weight" for i in (0, 1) for p in ("mlp.up_proj", "self_attn.v_proj")]
    model = llama(tmp_path, drop=drop + ["lm_head.weight"],
                  add={"model.layers.0.self_attn.q_proj.bias": zeros(64)})
    msg = refused(model, tmp_path, "lacks 5 tensors", "and 1 more", "model.layers.1.self_attn.v_proj.weight",
                  "model.layers.0.mlp.up_proj.weight",
                  "has 1 unexpected tensor model.layers.0.self_attn.q_proj.bias")
    assert msg.count("error:") == 1


def test_unexpected_bias(tmp_path: Path):
    """A bias the config does not have (attention_bias false): transformers would not load it,
    llama.cpp would use it."""
    model = llama(tmp_path, add={"model.layers.0.self_attn.q_proj.bias": zeros(64)})
    refused(model, tmp_path, "unexpected tensor model.layers.0.self_attn.q_proj.bias", "attention_bias false")


def test_biases_follow_the_config_flags(tmp_path: Path):
    """attention_bias / mlp_bias true: the biases are expected, and one lacking is named."""
    biases = {f"model.layers.{i}.{p}.bias": zeros(n) for i in (0, 1)
              for p, n in (("self_attn.q_proj", 64), ("self_attn.k_proj", 64), ("self_attn.v_proj", 64),
                           ("self_attn.o_proj", 64), ("mlp.gate_proj", 128), ("mlp.up_proj", 128),
                           ("mlp.down_proj", 64))}
    model = llama(tmp_path, "with", add=biases, attention_bias=True, mlp_bias=True)
    assert len(prepare(model, "F16").sources) == 2 * 9 + 3 + 14
    del biases["model.layers.1.mlp.up_proj.bias"]
    model = llama(tmp_path, "without", add=biases, attention_bias=True, mlp_bias=True)
    refused(model, tmp_path, "lacks 1 tensor model.layers.1.mlp.up_proj.bias", "mlp_bias true")


def test_tensor_of_a_layer_beyond_the_config(tmp_path: Path):
    model = llama(tmp_path, add={"model.layers.2.mlp.down_proj.weight": zeros(64, 128)})
    refused(model, tmp_path, "model.layers.2.mlp.down_proj.weight", "config.json says 2 layers", "layer 2")


def test_unknown_tensors_are_listed_together(tmp_path: Path):
    model = llama(tmp_path, add={"model.layers.0.mlp.extra.weight": zeros(8), "model.extra.weight": zeros(8)})
    refused(model, tmp_path, "2 tensors with no GGUF name", "model.layers.0.mlp.extra.weight", "model.extra.weight")


def test_mis_shaped_tensor(tmp_path: Path):
    model = llama(tmp_path, add={"model.layers.1.mlp.up_proj.weight": zeros(100, 64)})
    refused(model, tmp_path, "intermediate_size 128", "model.layers.1.mlp.up_proj.weight is [100, 64]",
            "expected [intermediate_size 128, hidden_size 64]")


def test_config_size_disagreeing_with_tensors_names_the_key(tmp_path: Path):
    """hidden_size 32 but every tensor is 64 wide: the key is named first, with a few tensors."""
    model = llama(tmp_path, config={"hidden_size": 32})
    refused(model, tmp_path, "config.json's hidden_size 32", "model.embed_tokens.weight is [", "and ")


def test_vocab_size_disagreeing_with_the_embedding(tmp_path: Path):
    """Checked before the tokenizer pads the vocabulary to vocab_size."""
    refused(llama(tmp_path, config={"vocab_size": V * 1000}), tmp_path, f"vocab_size {V * 1000}",
            f"model.embed_tokens.weight is [{V}, 64]")


def test_head_count_disagreeing_with_tensors(tmp_path: Path):
    model = llama(tmp_path, config={"num_key_value_heads": 1})
    refused(model, tmp_path, "num_key_value_heads x head_dim 32", "model.layers.0.self_attn.k_proj.weight is [64, 64]")


def test_tied_model_needs_no_lm_head_and_may_ship_one(tmp_path: Path):
    """llama.cpp uses token_embd as the output of a tied model without one; a tied checkpoint
    that ships lm_head.weight gets it written as output.weight, as llama.cpp's converter
    (LlamaModel) writes it and llama.cpp loads it."""
    tied = llama(tmp_path, "tied", tie_word_embeddings=True)
    assert "output.weight" not in {s.gguf_name for s in prepare(tied, "F16").sources}
    shipped = llama(tmp_path, "shipped", tie_word_embeddings=True, add={"lm_head.weight": zeros(V, 64)})
    assert "output.weight" in {s.gguf_name for s in prepare(shipped, "F16").sources}


# -- MoE ----------------------------------------------------------------------------------------


def test_moe_converts(tmp_path: Path):
    # per layer: attn_norm, q, k, v, o, ffn_norm, the router and three expert stacks
    assert len(prepare(mixtral(tmp_path), "F16").sources) == 3 + 2 * 10


def test_moe_missing_expert_is_named(tmp_path: Path):
    model = mixtral(tmp_path, drop=["model.layers.1.block_sparse_moe.experts.2.w3.weight"])
    refused(model, tmp_path, "lacks model.layers.1.block_sparse_moe.experts.2.w3.weight",
            "layer 1 has 8 of its 9 expert tensors")


def test_moe_missing_layer_of_experts(tmp_path: Path):
    drop = [f"model.layers.1.block_sparse_moe.experts.{e}.{w}.weight" for e in range(3) for w in ("w1", "w2", "w3")]
    refused(mixtral(tmp_path, drop=drop), tmp_path, "lacks 3 tensors",
            "model.layers.1.block_sparse_moe.experts.0.w1.weight")


def test_moe_missing_router(tmp_path: Path):
    refused(mixtral(tmp_path, drop=["model.layers.0.block_sparse_moe.gate.weight"]), tmp_path,
            "lacks 1 tensor model.layers.0.block_sparse_moe.gate.weight")


def test_moe_mis_shaped_experts(tmp_path: Path):
    experts = {f"model.layers.0.block_sparse_moe.experts.{e}.w2.weight": zeros(64, 100) for e in range(3)}
    refused(mixtral(tmp_path, add=experts), tmp_path, "intermediate_size 128",
            "the 3 experts of model.layers.0.block_sparse_moe.experts.0.w2.weight are [64, 100]")


def test_qwen3moe_missing_router(tmp_path: Path):
    model = fixture("qwen3moe-bpe-bf16", tmp_path / "m", drop=["model.layers.1.mlp.gate.weight"])
    refused(model, tmp_path, "lacks 1 tensor model.layers.1.mlp.gate.weight")


def test_qwen3moe_expert_width_is_moe_intermediate_size(tmp_path: Path):
    model = fixture("qwen3moe-bpe-bf16", tmp_path / "m", config={"moe_intermediate_size": 48})
    refused(model, tmp_path, "moe_intermediate_size 48")


# -- the other families -------------------------------------------------------------------------


def test_qwen2_needs_its_qkv_biases(tmp_path: Path):
    model = fixture("qwen2-bpe-bf16", tmp_path / "m", drop=["model.layers.1.self_attn.k_proj.bias"])
    refused(model, tmp_path, "lacks 1 tensor model.layers.1.self_attn.k_proj.bias")


def test_qwen2_has_no_output_bias(tmp_path: Path):
    model = fixture("qwen2-bpe-bf16", tmp_path / "m", add={"model.layers.0.self_attn.o_proj.bias": zeros(64)})
    refused(model, tmp_path, "unexpected tensor model.layers.0.self_attn.o_proj.bias")


def test_qwen3_needs_its_qk_norms(tmp_path: Path):
    model = fixture("qwen3-bpe-bf16", tmp_path / "m", drop=["model.layers.0.self_attn.q_norm.weight"])
    refused(model, tmp_path, "lacks 1 tensor model.layers.0.self_attn.q_norm.weight")


def test_gemma2_needs_its_extra_norms(tmp_path: Path):
    model = fixture("gemma2-spm-bf16", tmp_path / "m", drop=["model.layers.1.post_feedforward_layernorm.weight"])
    refused(model, tmp_path, "lacks 1 tensor model.layers.1.post_feedforward_layernorm.weight")


def test_gemma3_head_dim_disagreeing(tmp_path: Path):
    cfg = json.loads((MODELS / "gemma3-spm-bf16" / "config.json").read_text())
    model = fixture("gemma3-spm-bf16", tmp_path / "m", config={"head_dim": cfg["head_dim"] * 2,
                                                                 "query_pre_attn_scalar": cfg["head_dim"] * 2})
    refused(model, tmp_path, f"head_dim {cfg['head_dim'] * 2}", "q_norm.weight is [")


def test_phi3_needs_its_fused_ffn(tmp_path: Path):
    model = fixture("phi3-spm-bf16", tmp_path / "m", drop=["model.layers.0.mlp.gate_up_proj.weight"])
    refused(model, tmp_path, "lacks 1 tensor model.layers.0.mlp.gate_up_proj.weight")


def test_gpt2_missing_bias_and_positions(tmp_path: Path):
    model = fixture("gpt2-bpe-f32", tmp_path / "m", drop=["transformer.h.1.attn.c_attn.bias"])
    refused(model, tmp_path, "lacks 1 tensor transformer.h.1.attn.c_attn.bias")
    model = fixture("gpt2-bpe-f32", tmp_path / "p", config={"n_positions": 512})
    refused(model, tmp_path, "n_positions 512", "transformer.wpe.weight is [256, 64]")


def test_gpt2_conv1d_shapes_are_reported_as_stored(tmp_path: Path):
    model = fixture("gpt2-bpe-f32", tmp_path / "m", config={"n_inner": 128})
    refused(model, tmp_path, "n_inner 128",
            "transformer.h.0.mlp.c_fc.weight is [64, 256], expected [n_embd 64, n_inner 128]")


def test_bert_missing_layer_norm(tmp_path: Path):
    model = fixture("bert-wpm-f32", tmp_path / "m", drop=["encoder.layer.1.output.LayerNorm.weight"])
    refused(model, tmp_path, "lacks 1 tensor encoder.layer.1.output.LayerNorm.weight")


def test_bert_token_types_disagreeing(tmp_path: Path):
    model = fixture("bert-wpm-f32", tmp_path / "m", config={"type_vocab_size": 3})
    refused(model, tmp_path, "type_vocab_size 3", "embeddings.token_type_embeddings.weight is [2, 64]")


# -- config.json values -------------------------------------------------------------------------


@pytest.mark.parametrize("key,value,found,expected", [
    ("num_attention_heads", "2", "'2' (str)", "expected an integer"),
    ("num_hidden_layers", 2.0, "2.0 (float)", "expected an integer"),
    ("intermediate_size", True, "true (bool)", "expected an integer"),
    ("hidden_size", -64, "-64", "expected an integer from 1"),
    ("num_hidden_layers", 0, "0", "expected an integer from 1"),
    ("rms_norm_eps", "1e-5", "'1e-5' (str)", "expected a number"),
    ("rms_norm_eps", -1e-5, "-1e-05 (float)", "expected a number from 0 to 1"),
    ("rope_theta", 0, "0", "expected a number > 0"),
    ("tie_word_embeddings", "false", "'false' (str)", "expected true or false"),
    ("attention_bias", 0, "0", "expected true or false"),
    ("rope_scaling", [1, 2], "[1, 2]", "expected an object"),
])
def test_wrong_typed_config_value(key, value, found, expected, tmp_path: Path):
    model = llama(tmp_path, config={key: value})
    refused(model, tmp_path, f"config.json: {key} is {found}; {expected}")


def test_wrong_typed_rope_setting(tmp_path: Path):
    model = llama(tmp_path, config={"rope_scaling": {"rope_type": "linear", "factor": "2"}})
    refused(model, tmp_path, "config.json: rope_scaling.factor is '2' (str); expected a number > 0")


@pytest.mark.parametrize("key,value", [
    ("vocab_size", 10**12),        # the tokenizer would pad a trillion [PAD] tokens
    ("num_hidden_layers", 10**9),  # gguf's name map would hold ~10**11 names
    ("head_dim", 1 << 40),         # llama3's rope factors: one per pair of head dimensions
    ("max_position_embeddings", 1 << 40),  # written as UINT32
])
def test_absurd_config_value(key, value, tmp_path: Path):
    refused(llama(tmp_path, config={key: value}), tmp_path, f"config.json: {key} is {value}; expected an integer")


def test_heads_must_divide_into_kv_heads(tmp_path: Path):
    refused(llama(tmp_path, config={"num_key_value_heads": 3, "num_attention_heads": 4}), tmp_path,
            "num_attention_heads 4 is not a multiple of num_key_value_heads 3")


def test_architectures_must_be_a_list_of_names(tmp_path: Path):
    refused(llama(tmp_path, config={"architectures": "LlamaForCausalLM"}), tmp_path, "architectures", "list")


def test_config_rules():
    """The caps and kinds, without a checkpoint; a null is absent, as Hparams reads it."""
    check_config({k: None for k in CONFIG_RULES})
    check_config({"vocab_size": MAX_TOKENS, "num_hidden_layers": MAX_LAYERS, "rope_theta": 500000,
                  "rope_scaling": {"rope_type": "llama3", "factor": 8.0, "original_max_position_embeddings": 8192}})
    for bad in ({"vocab_size": MAX_TOKENS + 1}, {"num_hidden_layers": MAX_LAYERS + 1},
                {"rms_norm_eps": float("nan")}, {"rope_parameters": {"full_attention": {"rope_theta": "1e6"}}},
                {"rope_scaling": {"long_factor": [1.0, "x"]}}, {"num_local_experts": 2, "num_experts_per_tok": 3}):
        with pytest.raises(CheckpointError, match="config.json"):
            check_config(bad)


def test_every_fixture_meets_its_expectations():
    """Every fixture model (all 13 architectures) gives exactly the tensors its adapter expects."""
    for model in sorted(MODELS.iterdir()):
        ckpt = Checkpoint.open(model)
        try:
            adapter = for_config(ckpt.config, ckpt.path)
            expected = adapter.expected_tensors()
            got = {s.gguf_name: s.shape for s in adapter.tensors(ckpt.tensors) if s.src is not None}
        finally:
            ckpt.close()
        required = {n for n, e in expected.items() if e.required}
        assert required <= set(got) <= set(expected), model.name
        assert all(got[n] == expected[n].sizes for n in got), model.name


# -- what llama.cpp's loader refuses beyond the tensors -------------------------------------------


def test_phi3_name_without_phi3_tokens_is_refused(tmp_path: Path):
    """llama.cpp looks up </s>, <unk>, <s> and <|endoftext|> in any model whose general.name
    contains "phi3" (llama_vocab::impl::load); the tiny BPE vocabulary has only the last. The name
    comes from the folder here; --override-kv general.name avoids the rule."""
    model = llama(tmp_path, "tiny-phi3")
    refused(model, tmp_path, "general.name 'Tiny Phi3'", "lacks </s>, <unk>, <s>", "--override-kv general.name")
    out = tmp_path / "renamed.gguf"
    proc = run_cli("quantize", model, "-t", "F16", "-o", out, "--no-progress", "--override-kv", "general.name=str:tiny")
    assert proc.returncode == 0, proc.stderr
    assert gguf.GGUFReader(out).fields["general.name"].contents() == "tiny"


def test_phi3_name_rule_is_llama_cpps(tmp_path: Path):
    """The file that check refuses is one llama.cpp refuses: written past the check (the name set
    after prepare), llama.cpp fails to load it; with a harmless name it loads."""
    from llama_cpp import Llama

    job = prepare(llama(tmp_path, "tiny"), "F16")
    for name, loads in (("tiny", True), ("tiny-phi3", False)):
        out = tmp_path / f"{name}.gguf"
        write(replace(job, kv_overrides=(KVOverride("general.name", name, gguf.GGUFValueType.STRING),)), out)
        if loads:
            Llama(model_path=str(out), n_ctx=16, verbose=False).close()
        else:
            with pytest.raises(ValueError, match="Failed to load model"):
                Llama(model_path=str(out), n_ctx=16, verbose=False)


def test_untied_gemma2_is_refused(tmp_path: Path):
    """llama.cpp's gemma2 has no output tensor: an untied lm_head would be dropped, silently."""
    model = fixture("gemma2-spm-bf16", tmp_path / "m", config={"tie_word_embeddings": False})
    refused(model, tmp_path, "gemma2 with tie_word_embeddings false")
