"""Make the tiny random-weight checkpoints under tests/fixtures/models/<variant>/.

Dev tool (needs torch and transformers; qconvert itself never imports them). Each variant is a
checkpoint as `save_pretrained` writes it (config.json, generation_config.json, safetensors,
sharded or not), the tokenizer files of a fixture tokenizer under tests/fixtures/tokenizers/,
and reference.npz:

    tokens  int32 [n]          PROMPT encoded with the checkpoint's tokenizer, BOS first
    logits  float32 [n, vocab] the checkpoint as stored, loaded back, upcast to float32, eager attention

Seeded and single-threaded, so a rerun writes the same weights. Usage:

    python scripts/make_tiny_models.py             # all variants
    python scripts/make_tiny_models.py VARIANT...  # some of them
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tokenizers import Tokenizer
from transformers import (AutoModelForCausalLM, AutoTokenizer, LlamaConfig, MistralConfig, Qwen2Config,
                          Qwen3Config)
from transformers import MixtralConfig, Qwen3MoeConfig
from transformers import GPT2Config, Phi3Config
from transformers import Gemma2Config, Gemma3TextConfig
from transformers import AutoModel, BertConfig
from transformers import SmolLM3Config
from transformers import Olmo2Config

ROOT = Path(__file__).resolve().parents[1]
TOKENIZERS = ROOT / "tests" / "fixtures" / "tokenizers"
MODELS = ROOT / "tests" / "fixtures" / "models"

# The files of a fixture tokenizer that a real checkpoint ships (not its expected.json).
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model",
                   "special_tokens_map.json")
PROMPT = "Hello, world! How are you?"
# Longer for an encoder, whose prompt gets no BOS: word pieces, accents, CJK, an unknown word.
ENCODER_PROMPT = "Hello, world! How are you? Café naïve résumé, 今日は tokenizers 🦙 Привет 한국어."


@dataclass(frozen=True)
class Variant:
    config_class: type
    tokenizer: str
    dtype: torch.dtype
    seed: int
    config: dict
    max_shard_size: str | None = None  # None: one model.safetensors
    transformers4_config: bool = False  # rewrite config.json as transformers 4.x wrote it
    # An embedding model (AutoModel): saved with sentence-transformers' mean-pooling files, and
    # reference.npz holds its last hidden states ("embeddings") instead of logits.
    encoder: bool = False
    # What the model adds to its stored norm weights (Gemma applies 1 + w): the draws are shifted
    # by it, so the weights applied spread as in the other variants.
    norm_offset: float = 0.0
    # Norms (by name suffix) whose applied weights are drawn from another range than (0.5, 1.5).
    norm_ranges: tuple[tuple[str, float, float], ...] = ()


# Shared by all variants: small context, and an initializer wider than the default 0.02 so the
# logits of a 64-wide model spread enough to tell a wrong conversion from rounding noise.
COMMON = dict(max_position_embeddings=256, initializer_range=0.05, bos_token_id=1, eos_token_id=2)

# MoE routers: weights drawn with this spread (the initializer's 0.05 gives router logits of about
# 0.4 and near-ties), and the least gap allowed between the k-th and (k+1)-th largest router logit
# at any token of the reference prompt. llama.cpp's float32 sums differ from torch's by about 1e-6
# of the logit scale; a gap far above that keeps top-k's choice the same in both.
ROUTER_STD = 0.5
ROUTER_MARGIN = 0.1

# Gemma's FFN ends in a norm (post_feedforward_layernorm) that rescales its output to full size
# whatever the weights, so the error of llama.cpp's CPU GELU (an F16 table, about 5e-4 relative
# per activation; see TANH_GELUS below) reaches the residual stream undamped: with that norm's
# gains near 1, it alone puts llama.cpp 4e-4 (2 layers) to 2e-3 (6 layers) of the logit scale from
# transformers, and the activations that sit on an F16 rounding boundary (a few per layer; llama.cpp
# and torch round them apart) make even the emulated-table reference wobble by up to 4e-4. Gains
# of about 0.05 keep the FFN's share, and that error, at 2e-5 to 4e-5 of the logit scale (seeds
# 51-61) and the wobble mostly under 1e-5; a dropped or unshifted norm still moves them far more.
GEMMA_FFN_POST_NORM = (("post_feedforward_layernorm.weight", 0.02, 0.08),)

VARIANTS: dict[str, Variant] = {
    # transformers-5 config (rope_parameters, dtype), several shards + index, untied lm_head.
    "llama-bpe-bf16-sharded": Variant(
        LlamaConfig, "tiny-bpe", torch.bfloat16, seed=1, max_shard_size="100KB",
        config=dict(hidden_size=64, intermediate_size=160, num_hidden_layers=2,
                    num_attention_heads=4, num_key_value_heads=4, rms_norm_eps=1e-5,
                    rope_parameters={"rope_type": "default", "rope_theta": 100000.0},
                    tie_word_embeddings=False),
    ),
    # SentencePiece vocab; transformers-4 config (top-level rope_theta, torch_dtype); tied output.
    "llama-spm-f32": Variant(
        LlamaConfig, "tiny-spm", torch.float32, seed=2, transformers4_config=True,
        config=dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                    num_attention_heads=2, num_key_value_heads=2, rms_norm_eps=1e-6,
                    rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
                    tie_word_embeddings=True),
    ),
    # llama3 rope scaling (llama.cpp needs a rope_freqs tensor), explicit head_dim, GQA 4/2.
    "llama3-rope-f16": Variant(
        LlamaConfig, "tiny-bpe", torch.float16, seed=3,
        # head_dim 32 != 64 / 4. With theta 5e5 and head_dim 32 the rotary wavelengths run from
        # 2*pi to ~1.4e6, so the llama3 rule's three bands (kept below 64/4 = 16, scaled by
        # 1/factor above 64/1 = 64, smoothed between) all hold some dimensions.
        config=dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                    num_attention_heads=4, num_key_value_heads=2, head_dim=32, rms_norm_eps=1e-5,
                    rope_parameters={"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0,
                                     "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                                     "original_max_position_embeddings": 64},
                    tie_word_embeddings=False),
    ),
    # MistralForCausalLM (llama.cpp converts it as llama), GQA 4/2.
    "mistral-bpe-bf16": Variant(
        MistralConfig, "tiny-bpe", torch.bfloat16, seed=4,
        config=dict(hidden_size=64, intermediate_size=192, num_hidden_layers=2,
                    num_attention_heads=4, num_key_value_heads=2, head_dim=16, rms_norm_eps=1e-5,
                    rope_parameters={"rope_type": "default", "rope_theta": 1000000.0},
                    sliding_window=None, tie_word_embeddings=False),
    ),
    # Every weight row is 256 or 512 long: whole super-blocks for the K-quants.
    "llama-k256-bf16": Variant(
        LlamaConfig, "tiny-bpe", torch.bfloat16, seed=5,
        config=dict(hidden_size=256, intermediate_size=512, num_hidden_layers=2,
                    num_attention_heads=4, num_key_value_heads=2, rms_norm_eps=1e-5,
                    rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
                    tie_word_embeddings=False),
    ),
    # Qwen2ForCausalLM: q/k/v biases (spread below, or they would be zeros), GQA 4/2, no head_dim
    # in the config, untied lm_head.
    "qwen2-bpe-bf16": Variant(
        Qwen2Config, "tiny-bpe", torch.bfloat16, seed=6,
        config=dict(hidden_size=64, intermediate_size=160, num_hidden_layers=2,
                    num_attention_heads=4, num_key_value_heads=2, rms_norm_eps=1e-6,
                    rope_parameters={"rope_type": "default", "rope_theta": 1000000.0},
                    use_sliding_window=False, tie_word_embeddings=False),
    ),
    # Qwen3ForCausalLM: per-head q_norm/k_norm, head_dim 32 != 96 / 4, GQA 4/2, tied output.
    "qwen3-bpe-bf16": Variant(
        Qwen3Config, "tiny-bpe", torch.bfloat16, seed=7,
        config=dict(hidden_size=96, intermediate_size=192, num_hidden_layers=2,
                    num_attention_heads=4, num_key_value_heads=2, head_dim=32, rms_norm_eps=1e-6,
                    rope_parameters={"rope_type": "default", "rope_theta": 1000000.0},
                    attention_bias=False, use_sliding_window=False, tie_word_embeddings=True),
    ),
    # MixtralForCausalLM (llama.cpp: arch llama with experts): exactly 8 experts, because
    # llama-quantize has rules for 8-expert models (attn_v/attn_k Q8_0, attn_output Q5_K); top-2;
    # no head_dim in the config (MixtralConfig leaves it None, so the converter writes no
    # key_length); GQA 4/2; expert rows of 32 != 64, so a transposed expert matrix cannot pass.
    "mixtral-bpe-bf16": Variant(
        MixtralConfig, "tiny-bpe", torch.bfloat16, seed=31,
        config=dict(hidden_size=64, intermediate_size=32, num_hidden_layers=2,
                    num_attention_heads=4, num_key_value_heads=2, rms_norm_eps=1e-5,
                    num_local_experts=8, num_experts_per_tok=2,
                    rope_parameters={"rope_type": "default", "rope_theta": 1000000.0},
                    sliding_window=None, tie_word_embeddings=False),
    ),
    # Qwen3MoeForCausalLM: 4 experts, top-2, expert width (moe_intermediate_size 32) unlike the
    # dense intermediate_size (96, unused by an all-MoE model but written as feed_forward_length),
    # per-head q_norm/k_norm, head_dim 32 != 64 / 4, GQA 4/2. norm_topk_prob is true, as in every
    # released Qwen3-MoE: llama.cpp's qwen3moe graph always renormalizes the top-k weights.
    "qwen3moe-bpe-bf16": Variant(
        Qwen3MoeConfig, "tiny-bpe", torch.bfloat16, seed=25,
        config=dict(hidden_size=64, intermediate_size=96, moe_intermediate_size=32,
                    num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, head_dim=32,
                    rms_norm_eps=1e-6, num_experts=4, num_experts_per_tok=2, norm_topk_prob=True,
                    rope_parameters={"rope_type": "default", "rope_theta": 1000000.0},
                    attention_bias=False, use_sliding_window=False, tie_word_embeddings=False),
    ),
    # Phi3ForCausalLM as Phi-3-mini: SentencePiece vocab with Phi-3's added tokens, embedding
    # padded beyond them (Phi-3-mini: 32064 rows for 32011 tokens), <|endoftext|> as EOS and
    # padding, fused qkv_proj and gate_up_proj, NEOX rope over the whole head, GQA 4/2, untied,
    # Phi-3-mini's sliding_window key (llama.cpp runs phi3 without one; the prompt never reaches
    # it in transformers either).
    "phi3-spm-bf16": Variant(
        Phi3Config, "tiny-phi3", torch.bfloat16, seed=41,
        config=dict(vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                    num_attention_heads=4, num_key_value_heads=2, rms_norm_eps=1e-5,
                    rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
                    sliding_window=2047, eos_token_id=500, pad_token_id=500, tie_word_embeddings=False),
    ),
    # Phi3ForCausalLM with LongRoPE as Phi-4-mini has it: partial rotary 0.75 (12 of 16 head
    # dimensions, 6 factors each), tied output, GPT2Tokenizer BPE vocab, transformers-4 config
    # ("type": "longrope", partial_rotary_factor and original_max_position_embeddings at top
    # level). Not named phi3: llama.cpp wants <unk>, <s>, </s> and <|endoftext|> in the vocab of
    # any model whose general.name contains "phi3" (llama-vocab.cpp), and tiny-bpe has no <s>.
    # original_max_position_embeddings 8 is below the prompt's length, so transformers takes the
    # long factors (sequence 12..20 > 8); llama.cpp takes them when its context (n_ctx_seq, which
    # it pads to 256) exceeds 8, which any context does: the long factors are the ones both use
    # and the test checks. (With the short ones, llama.cpp would need n_ctx_seq <= original,
    # i.e. original >= 256, and transformers a prompt no longer than that.) attn_factor is then
    # sqrt(1 + ln(256 / 8) / ln 8) = 1.63, far from 1. pad is <|endoftext|>, as in Phi-4-mini (a
    # transformers-4 config leaves out a null one, and Phi3Config's default 32000 is out of vocab).
    "phi4mini-longrope-bf16": Variant(
        Phi3Config, "tiny-bpe", torch.bfloat16, seed=42, transformers4_config=True,
        config=dict(hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                    num_attention_heads=4, num_key_value_heads=1, rms_norm_eps=1e-5,
                    original_max_position_embeddings=8,
                    rope_parameters={"rope_type": "longrope", "rope_theta": 10000.0,
                                     "partial_rotary_factor": 0.75,
                                     "long_factor": [1.0, 1.5, 2.5, 4.0, 7.0, 12.0],
                                     "short_factor": [1.0, 1.05, 1.1, 1.2, 1.4, 1.6]},
                    sliding_window=None, pad_token_id=0, tie_word_embeddings=True),
    ),
    # GPT2LMHeadModel: Conv1D weights stored [in, out], learned positions (n_positions = n_ctx
    # = 256, as GPT-2's configs carry both), LayerNorm with biases, fused c_attn with bias, tied
    # lm_head, GPT-2's tokenizer in miniature (<|endoftext|> last, BOS and EOS at once).
    "gpt2-bpe-f32": Variant(
        GPT2Config, "tiny-gpt2", torch.float32, seed=43,
        config=dict(n_embd=64, n_layer=2, n_head=4, n_positions=256, n_ctx=256, n_inner=None,
                    activation_function="gelu_new", layer_norm_epsilon=1e-5,
                    bos_token_id=500, eos_token_id=500, tie_word_embeddings=True),
    ),
    # Gemma2ForCausalLM: norms applied as (1 + w), post-attention and post-FFN norms, GELU (tanh),
    # embedding scaled by sqrt(64), tied output, GQA 4/2, head_dim 16 (query_pre_attn_scalar 16,
    # the scale llama.cpp uses). Layer 0 slides over a 4-token window, layer 1 is global, and the
    # 14-token prompt crosses the window. The soft-caps are low enough to bite: without the
    # attention cap transformers' logits move by 1.5e-2 of their scale, without the final one by 0.37.
    "gemma2-spm-bf16": Variant(
        Gemma2Config, "tiny-gemma", torch.bfloat16, seed=51, norm_offset=1.0, norm_ranges=GEMMA_FFN_POST_NORM,
        config=dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                    num_attention_heads=4, num_key_value_heads=2, head_dim=16, query_pre_attn_scalar=16,
                    rms_norm_eps=1e-6, sliding_window=4, attn_logit_softcapping=1.0,
                    final_logit_softcapping=1.5, hidden_activation="gelu_pytorch_tanh",
                    rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
                    bos_token_id=2, eos_token_id=1, pad_token_id=0, tie_word_embeddings=True),
    ),
    # Gemma3ForCausalLM (text): Gemma 2 plus per-head q_norm/k_norm, no attention soft-cap. Six
    # layers in transformers' default layout, five sliding (window 4) and the sixth global: the
    # layout llama.cpp assumes for gemma3, so no per-layer list is needed. The global layer has
    # its own rope (theta 1e6, linear scaling 8, as Gemma 3 4B+), the sliding ones theta 10000.
    # GQA 2/1, head_dim 32 (query_pre_attn_scalar 32).
    "gemma3-spm-bf16": Variant(
        Gemma3TextConfig, "tiny-gemma", torch.bfloat16, seed=52, norm_offset=1.0, norm_ranges=GEMMA_FFN_POST_NORM,
        config=dict(hidden_size=64, intermediate_size=96, num_hidden_layers=6,
                    num_attention_heads=2, num_key_value_heads=1, head_dim=32, query_pre_attn_scalar=32,
                    rms_norm_eps=1e-6, sliding_window=4, hidden_activation="gelu_pytorch_tanh",
                    rope_parameters={
                        "full_attention": {"rope_type": "linear", "factor": 8.0, "rope_theta": 1000000.0},
                        "sliding_attention": {"rope_type": "default", "rope_theta": 10000.0}},
                    bos_token_id=2, eos_token_id=1, pad_token_id=0, tie_word_embeddings=True),
    ),
    # BertModel as sentence-transformers' all-MiniLM-L6-v2 ships it: WordPiece vocab (tiny-wpm,
    # specials at ids 0-4), absolute positions, token types, exact-erf GELU, LayerNorm eps 1e-12,
    # the pooler (which llama.cpp drops) and mean pooling in 1_Pooling/config.json. No BOS/EOS
    # in the config, as BERT's has none.
    "bert-wpm-f32": Variant(
        BertConfig, "tiny-wpm", torch.float32, seed=61, encoder=True,
        config=dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                    type_vocab_size=2, layer_norm_eps=1e-12, hidden_act="gelu", pad_token_id=0,
                    bos_token_id=None, eos_token_id=None),
    ),
    # Linear rope scaling (positions divided by the factor), transformers-5 rope_parameters.
    "llama-linear-rope-bf16": Variant(
        LlamaConfig, "tiny-bpe", torch.bfloat16, seed=71,
        config=dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                    num_attention_heads=4, num_key_value_heads=2, rms_norm_eps=1e-5,
                    rope_parameters={"rope_type": "linear", "rope_theta": 10000.0, "factor": 4.0},
                    tie_word_embeddings=False),
    ),
    # YaRN as Qwen2.5's long-context configs state it: transformers-4 `rope_scaling` with "type",
    # factor 4 over an original context of 32 (so the frequency ramp cuts through head_dim 16).
    "qwen2-yarn-bf16": Variant(
        Qwen2Config, "tiny-bpe", torch.bfloat16, seed=72, transformers4_config=True,
        config=dict(hidden_size=64, intermediate_size=160, num_hidden_layers=2,
                    num_attention_heads=4, num_key_value_heads=2, rms_norm_eps=1e-6,
                    rope_parameters={"rope_type": "yarn", "rope_theta": 10000.0, "factor": 4.0,
                                     "original_max_position_embeddings": 32},
                    use_sliding_window=False, tie_word_embeddings=False),
    ),
    # SmolLM3ForCausalLM: Llama with NoPE layers. Eight layers, of which the 4th and the 8th skip
    # rope (no_rope_layers listed, llama.cpp's every-4th pattern; a NoPE layer with rotary ones
    # after it, so a wrong one moves the logits), GQA 4/1, tied output, rows of 256.
    "smollm3-bpe-bf16": Variant(
        SmolLM3Config, "tiny-bpe", torch.bfloat16, seed=81,
        config=dict(hidden_size=256, intermediate_size=256, num_hidden_layers=8,
                    num_attention_heads=4, num_key_value_heads=1, rms_norm_eps=1e-6,
                    rope_parameters={"rope_type": "default", "rope_theta": 100000.0},
                    no_rope_layers=[1, 1, 1, 0, 1, 1, 1, 0], no_rope_layer_interval=4,
                    use_sliding_window=False, pad_token_id=None, tie_word_embeddings=True),
    ),
    # Olmo2ForCausalLM: no pre-norms, a norm after the attention and after the FFN, q_norm/k_norm
    # over all heads (256 and 128 wide, not a head's 64), GQA 4/2, untied output (llama.cpp's
    # olmo2 requires one), rows of 256.
    "olmo2-bpe-bf16": Variant(
        Olmo2Config, "tiny-bpe", torch.bfloat16, seed=82,
        config=dict(hidden_size=256, intermediate_size=512, num_hidden_layers=2,
                    num_attention_heads=4, num_key_value_heads=2, rms_norm_eps=1e-6,
                    rope_parameters={"rope_type": "default", "rope_theta": 500000.0},
                    pad_token_id=None, tie_word_embeddings=False),
    ),
}


def tokenizer_dir(name: str) -> Path:
    src = TOKENIZERS / name
    if not (src / "tokenizer.json").is_file():
        sys.exit(f"{src}/tokenizer.json is missing; make the fixture tokenizers first")
    return src


def copy_tokenizer(name: str, dest: Path) -> None:
    src = tokenizer_dir(name)
    for fname in TOKENIZER_FILES:
        if (src / fname).is_file():
            shutil.copy2(src / fname, dest / fname)


def build_model(variant: Variant):
    # The embedding has one row per token, added tokens included, as in a real checkpoint.
    vocab = Tokenizer.from_file(str(tokenizer_dir(variant.tokenizer) / "tokenizer.json"))
    # A variant may override COMMON, and pad the vocab_size (as Phi-3's embedding is padded).
    config = variant.config_class(**{"vocab_size": vocab.get_vocab_size(with_added_tokens=True),
                                     **COMMON, **variant.config})
    torch.manual_seed(variant.seed)
    model = (AutoModel if variant.encoder else AutoModelForCausalLM).from_config(config, dtype=torch.float32)
    with torch.no_grad():
        # Norm weights (GPT-2's are ln_1, ln_2, ln_f) start at exactly 1.0, which would hide a norm
        # tensor that is dropped or swapped in conversion; spread them.
        for name, param in model.named_parameters():
            if name.endswith(("norm.weight", ".ln_1.weight", ".ln_2.weight", ".ln_f.weight", "LayerNorm.weight")):
                lo, hi = next(((lo, hi) for suffix, lo, hi in variant.norm_ranges if name.endswith(suffix)),
                              (0.5, 1.5))
                param.uniform_(lo - variant.norm_offset, hi - variant.norm_offset)
            # Linear biases (Qwen2's q/k/v) start at zero, which would hide a dropped or
            # misordered bias. No Llama variant has any, so their draws are unchanged.
            elif name.endswith(".bias"):
                param.normal_(0.0, 0.5)
            # MoE routers (mlp.gate): wider than the initializer, so that the router's
            # probabilities spread and top-k picks the same experts in llama.cpp as here (see
            # check_router_margin). No dense variant has any.
            elif name.endswith(".mlp.gate.weight"):
                param.normal_(0.0, ROUTER_STD)
    return model.to(variant.dtype)


def rewrite_config_as_transformers4(path: Path) -> None:
    """config.json as transformers 4.x saved it: rope_theta and rope_scaling at top level,
    torch_dtype instead of dtype, no rope_parameters."""
    config = json.loads(path.read_text())
    rope = config.pop("rope_parameters")
    config["rope_theta"] = rope.pop("rope_theta")
    rope_type = rope.get("rope_type", "default")
    if config["architectures"] == ["Phi3ForCausalLM"]:
        # Phi3Config 4.x kept these at top level, and Phi-3's configs spell the rope type "type"
        for key in ("partial_rotary_factor", "original_max_position_embeddings"):
            if key in rope:
                config[key] = rope.pop(key)
        if "rope_type" in rope:
            rope["type"] = rope.pop("rope_type")
    config["rope_scaling"] = None if rope_type == "default" else rope
    config["torch_dtype"] = config.pop("dtype")
    config["transformers_version"] = "4.46.3"
    if config.get("pad_token_id", 0) is None:  # 4.x left out values equal to its defaults
        del config["pad_token_id"]
    path.write_text(json.dumps(dict(sorted(config.items())), indent=2) + "\n")


class RouterMargins:
    """Records, in a forward pass, each MoE router's least gap between its k-th and (k+1)-th
    largest logit (transformers' routers return (logits, top-k weights, top-k indices))."""

    def __init__(self, model):
        self.gaps: dict[str, float] = {}
        for name, module in model.named_modules():
            if type(module).__name__.endswith("TopKRouter"):
                module.register_forward_hook(self.hook(name, module.top_k))

    def hook(self, name: str, k: int):
        def record(module, args, out):
            logits = out[0].float().sort(dim=-1, descending=True).values
            self.gaps[name] = float((logits[:, k - 1] - logits[:, k]).min())
        return record

    def check(self) -> None:
        for name, gap in self.gaps.items():
            print(f"  {name}: least gap between the top-k logits and the rest {gap:.2e}")
            assert gap >= ROUTER_MARGIN, f"{name}: top-k gap {gap:.2e} < {ROUTER_MARGIN}; pick another seed"


# llama.cpp's CPU GELU (the tanh form GPT-2 uses) rounds its input to F16 and reads an F16 table
# of results (ggml-cpu/vec.h, GGML_GELU_FP16): some 5e-4 relative per activation, which alone puts
# a GPT-2's float32 logits up to ~1e-4 of the logit scale away from transformers'. For models with
# that activation, reference.npz also holds `logits_ggml_gelu`, the logits with the table emulated,
# which llama.cpp must match as tightly as any other model (tests/test_llama_e2e.py).
TANH_GELUS = ("NewGELUActivation", "GELUTanh", "PytorchGELUTanh")


def ggml_gelu_table(module, args, out):
    """Forward hook: the activation's output as ggml_vec_gelu_f32 computes it."""
    x = args[0]
    y = torch.nn.functional.gelu(x.half().float(), approximate="tanh").half().float()
    return torch.where(x <= -10, 0.0, torch.where(x >= 10, x, y))


def reference(checkpoint: Path) -> dict[str, np.ndarray]:
    """Tokens of PROMPT and the float32 logits of the checkpoint as stored on disk."""
    tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    model = AutoModelForCausalLM.from_pretrained(
        checkpoint, dtype=torch.float32, attn_implementation="eager")
    model.eval()
    bos = model.config.bos_token_id
    assert tokenizer.bos_token_id == bos, (tokenizer.bos_token_id, bos)
    ids = tokenizer.encode(PROMPT, add_special_tokens=False)
    tokens = np.array([bos, *ids], dtype=np.int32)
    assert 12 <= len(tokens) <= 20, len(tokens)
    routers = RouterMargins(model)
    with torch.no_grad():
        logits = model(torch.from_numpy(tokens.astype(np.int64))[None]).logits[0]
    assert logits.shape == (len(tokens), model.config.vocab_size)
    routers.check()
    out = {"tokens": tokens, "logits": logits.float().numpy()}
    gelus = [m for m in model.modules() if type(m).__name__ in TANH_GELUS]
    if gelus:
        for m in gelus:
            m.register_forward_hook(ggml_gelu_table)
        with torch.no_grad():
            out["logits_ggml_gelu"] = model(torch.from_numpy(tokens.astype(np.int64))[None]).logits[0].float().numpy()
    return out


def encoder_reference(checkpoint: Path) -> dict[str, np.ndarray]:
    """Tokens of ENCODER_PROMPT ([CLS] ... [SEP], as the tokenizer adds them) and the float32
    last hidden state of the checkpoint as stored on disk (token types 0, as llama.cpp's)."""
    tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    model = AutoModel.from_pretrained(checkpoint, dtype=torch.float32, attn_implementation="eager")
    model.eval()
    tokens = np.array(tokenizer.encode(ENCODER_PROMPT), dtype=np.int32)
    assert tokens[0] == tokenizer.cls_token_id and tokens[-1] == tokenizer.sep_token_id, tokens
    assert 16 <= len(tokens) <= 40 and tokenizer.unk_token_id in tokens, tokenizer.convert_ids_to_tokens(tokens)
    with torch.no_grad():
        hidden = model(torch.from_numpy(tokens.astype(np.int64))[None]).last_hidden_state[0]
    out = {"tokens": tokens, "embeddings": hidden.float().numpy()}
    # llama.cpp's BERT graph runs ggml_gelu (the F16 table above) whatever hidden_act says, here
    # the exact erf GELU (GELUActivation): the emulated reference, as for the tanh ones.
    for m in model.modules():
        if type(m).__name__ in (*TANH_GELUS, "GELUActivation"):
            m.register_forward_hook(ggml_gelu_table)
    with torch.no_grad():
        hidden = model(torch.from_numpy(tokens.astype(np.int64))[None]).last_hidden_state[0]
    out["embeddings_ggml_gelu"] = hidden.float().numpy()
    return out


def write_sentence_transformers_files(path: Path, hidden_size: int) -> None:
    """modules.json and 1_Pooling/config.json as sentence-transformers saves a mean-pooling model
    (all-MiniLM-L6-v2's): llama.cpp's converter takes the GGUF pooling type from them."""
    modules = [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
               {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]
    (path / "modules.json").write_text(json.dumps(modules, indent=2) + "\n")
    (path / "1_Pooling").mkdir()
    pooling = {"word_embedding_dimension": hidden_size, "pooling_mode_cls_token": False,
               "pooling_mode_mean_tokens": True, "pooling_mode_max_tokens": False,
               "pooling_mode_mean_sqrt_len_tokens": False}
    (path / "1_Pooling" / "config.json").write_text(json.dumps(pooling, indent=2) + "\n")


def make(name: str, variant: Variant) -> Path:
    dest = MODELS / name
    MODELS.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=MODELS, prefix=f".{name}-") as tmp:
        tmp = Path(tmp)
        model = build_model(variant)
        kwargs = {"max_shard_size": variant.max_shard_size} if variant.max_shard_size else {}
        model.save_pretrained(tmp, **kwargs)
        if variant.transformers4_config:
            rewrite_config_as_transformers4(tmp / "config.json")
        copy_tokenizer(variant.tokenizer, tmp)
        if variant.max_shard_size:
            assert (tmp / "model.safetensors.index.json").is_file(), "expected a sharded save"
        if variant.encoder:
            write_sentence_transformers_files(tmp, model.config.hidden_size)
        np.savez(tmp / "reference.npz", **(encoder_reference(tmp) if variant.encoder else reference(tmp)))
        if dest.exists():
            shutil.rmtree(dest)
        tmp.rename(dest)
        dest.chmod(0o755)  # TemporaryDirectory made it 0700
        tmp.mkdir()  # so TemporaryDirectory's cleanup finds something to remove
    return dest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("variants", nargs="*", metavar="VARIANT",
                        help=f"default: all of {', '.join(VARIANTS)}")
    names = parser.parse_args().variants or list(VARIANTS)
    if unknown := sorted(set(names) - set(VARIANTS)):
        parser.error(f"unknown variant(s) {unknown}; known: {', '.join(VARIANTS)}")
    torch.set_num_threads(1)  # the same float32 sums on every machine and rerun
    for name in names:
        start = time.perf_counter()
        dest = make(name, VARIANTS[name])
        size = sum(p.stat().st_size for p in dest.iterdir())
        files = ", ".join(sorted(p.name for p in dest.iterdir()))
        print(f"{name}: {size / 1e6:.2f} MB in {time.perf_counter() - start:.1f}s  [{files}]")


if __name__ == "__main__":
    main()
