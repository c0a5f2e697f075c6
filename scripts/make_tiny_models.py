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
from dataclasses import dataclass, field
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
from transformers import (ApertusConfig, Ernie4_5Config, Exaone4Config, GraniteConfig, HunYuanDenseV1Config,
                          Qwen2MoeConfig, SeedOssConfig)
from transformers import DeepseekV3Config, Gemma3nTextConfig, Glm4MoeConfig, GptOssConfig, Llama4TextConfig
from transformers import (GraniteMoeHybridConfig, Lfm2Config, MiniMaxM2Config, Qwen3_5MoeTextConfig, Qwen3_5TextConfig,
                          Qwen3NextConfig)

ROOT = Path(__file__).resolve().parents[1]
TOKENIZERS = ROOT / "tests" / "fixtures" / "tokenizers"
MODELS = ROOT / "tests" / "fixtures" / "models"
PENDING = ROOT / "tests" / "fixtures" / "pending"  # fixtures of architectures without an adapter yet

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
    # MoE router weights (by name suffix), drawn with ROUTER_STD.
    routers: tuple[str, ...] = (".mlp.gate.weight",)
    # Parameters (by name suffix) that transformers starts at a constant, which would hide a
    # dropped or misplaced tensor: drawn from normal(mean, std) instead.
    draws: tuple[tuple[str, float, float], ...] = ()
    # Special tokens appended to the fixture tokenizer's, for converters that look up their
    # family's control tokens by name (GLM's [gMASK], <|user|>...).
    added_tokens: tuple[str, ...] = ()
    # Keys set in config.json after save_pretrained: values as the released checkpoints spell them
    # where transformers 5 saves another spelling or drops a key (a converter reads the file).
    config_edits: dict = field(default_factory=dict)


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

# Qwen3.5 ropes a quarter of each head as interleaved MRoPE, its sections (pairs of dimensions
# for time, height, width) summing to that quarter's pairs: [11, 11, 10] for the released 256-wide
# heads, [4, 2, 2] for these 64-wide ones. Text positions are equal in all three, so MRoPE is then
# the plain rope; sections that do not sum to the rotary pairs would index past the frequencies.
QWEN35_ROPE = {"rope_type": "default", "rope_theta": 10000000.0, "partial_rotary_factor": 0.25,
               "mrope_section": [4, 2, 2], "mrope_interleaved": True}

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
    # --- issue 13's architectures: hidden 256 and heads of 64, so that the rows of every matrix
    # whose input is the residual stream are whole K-quant super-blocks; 2 layers unless a layer
    # pattern needs more. docs/architectures-survey.md says what llama.cpp's converter does with each.
    #
    # GraniteForCausalLM (Granite 3.x): Llama plus four multipliers, at Granite-3.3-2B's values
    # (embedding x12, attention scale 1/64 instead of 1/sqrt(64), residual x0.22, logits / 8);
    # tied output as in Granite 3.3. No head_dim: the converter drops it for Granite.
    "granite-bpe-bf16": Variant(
        GraniteConfig, "tiny-bpe", torch.bfloat16, seed=81,
        config=dict(hidden_size=256, intermediate_size=256, num_hidden_layers=2,
                    num_attention_heads=4, num_key_value_heads=2, rms_norm_eps=1e-5,
                    rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
                    embedding_multiplier=12.0, attention_multiplier=0.015625, residual_multiplier=0.22,
                    logits_scaling=8.0, tie_word_embeddings=True),
    ),
    # Qwen2MoeForCausalLM (Qwen1.5-MoE, Qwen2-57B-A14B): 4 experts of width 64, top-2 without
    # renormalizing (norm_topk_prob false, as Qwen1.5-MoE-A2.7B), a shared expert of width 128
    # behind its sigmoid gate (shared_expert_gate), q/k/v biases, untied.
    "qwen2moe-bpe-bf16": Variant(
        Qwen2MoeConfig, "tiny-bpe", torch.bfloat16, seed=182,
        config=dict(hidden_size=256, intermediate_size=256, moe_intermediate_size=64,
                    shared_expert_intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                    num_key_value_heads=2, rms_norm_eps=1e-6, num_experts=4, num_experts_per_tok=2,
                    norm_topk_prob=False, qkv_bias=True,
                    rope_parameters={"rope_type": "default", "rope_theta": 1000000.0},
                    use_sliding_window=False, tie_word_embeddings=False),
    ),
    # Ernie4_5ForCausalLM (ERNIE-4.5-0.3B): the converter reads a SentencePiece tokenizer.model
    # only, hence tiny-spm; tied output, head_dim 64, GQA 4/2, no biases, theta 500000.
    "ernie45-spm-bf16": Variant(
        Ernie4_5Config, "tiny-spm", torch.bfloat16, seed=83,
        config=dict(hidden_size=256, intermediate_size=256, num_hidden_layers=2,
                    num_attention_heads=4, num_key_value_heads=2, head_dim=64, rms_norm_eps=1e-5,
                    rope_parameters={"rope_type": "default", "rope_theta": 500000.0},
                    use_bias=False, pad_token_id=0, tie_word_embeddings=True),
    ),
    # SeedOssForCausalLM (Seed-OSS-36B): q/k/v biases but none on o_proj (attention_out_bias
    # false), head_dim 64, GQA 4/2, untied.
    "seedoss-bpe-bf16": Variant(
        SeedOssConfig, "tiny-bpe", torch.bfloat16, seed=84,
        config=dict(hidden_size=256, intermediate_size=256, num_hidden_layers=2,
                    num_attention_heads=4, num_key_value_heads=2, head_dim=64, rms_norm_eps=1e-6,
                    rope_parameters={"rope_type": "default", "rope_theta": 10000000.0},
                    attention_bias=True, attention_out_bias=False, attention_dropout=0.0,
                    residual_dropout=0.0, pad_token_id=0, tie_word_embeddings=False),
    ),
    # Exaone4ForCausalLM (EXAONE-4.0-32B's hybrid attention): per-head q/k norms, norms after
    # attention and FFN (no pre-norms); layer 0 slides over a 4-token window with rope, layer 1
    # is global and without rope (EXAONE 4 ropes only its sliding layers when it has any).
    "exaone4-bpe-bf16": Variant(
        Exaone4Config, "tiny-bpe", torch.bfloat16, seed=85,
        config=dict(hidden_size=256, intermediate_size=256, num_hidden_layers=2,
                    num_attention_heads=4, num_key_value_heads=2, head_dim=64, rms_norm_eps=1e-5,
                    rope_parameters={"rope_type": "default", "rope_theta": 1000000.0},
                    sliding_window=4, layer_types=["sliding_attention", "full_attention"],
                    tie_word_embeddings=False),
    ),
    # HunYuanDenseV1ForCausalLM (Hunyuan-7B): per-head q/k norms (query_/key_layernorm), NTK
    # alpha rope as the released configs spell it ("dynamic" with alpha 1000: a fixed base
    # 10000 * 1000^(64/62)); max_position_embeddings 32768 because the converter asserts it.
    "hunyuan-bpe-bf16": Variant(
        HunYuanDenseV1Config, "tiny-bpe", torch.bfloat16, seed=86,
        config=dict(hidden_size=256, intermediate_size=256, num_hidden_layers=2,
                    num_attention_heads=4, num_key_value_heads=2, head_dim=64, rms_norm_eps=1e-5,
                    max_position_embeddings=32768,
                    rope_parameters={"rope_type": "dynamic", "rope_theta": 10000.0, "alpha": 1000.0,
                                     "factor": 1.0},
                    tie_word_embeddings=False),
    ),
    # ApertusForCausalLM (Apertus-8B): xIELU activation with per-layer learned alpha_p, alpha_n,
    # beta, eps (drawn away from their init), up/down MLP without a gate, per-head q/k norms,
    # llama3 rope (theta 12e6, as Apertus), untied.
    "apertus-bpe-bf16": Variant(
        ApertusConfig, "tiny-bpe", torch.bfloat16, seed=87,
        draws=((".act_fn.alpha_p", 0.8, 0.1), (".act_fn.alpha_n", 0.8, 0.1)),
        config=dict(hidden_size=256, intermediate_size=256, num_hidden_layers=2,
                    num_attention_heads=4, num_key_value_heads=2, rms_norm_eps=1e-5,
                    rope_parameters={"rope_type": "llama3", "rope_theta": 12000000.0, "factor": 8.0,
                                     "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                                     "original_max_position_embeddings": 64},
                    tie_word_embeddings=False),
    ),
    # Glm4MoeForCausalLM (GLM-4.5): layer 0 dense (first_k_dense_replace 1), layer 1 MoE with 4
    # routed experts of width 64, top-2 by sigmoid score plus a drawn e_score_correction_bias,
    # renormalized and scaled by 2.5 (GLM-4.5's routed_scaling_factor), one shared expert;
    # q/k/v biases and q/k norms (GLM-4.5, not Air), rope on half of each head (partial 0.5);
    # no MTP layer. GLM's control tokens appended, because the converter looks them up by name.
    "glm4moe-bpe-bf16": Variant(
        Glm4MoeConfig, "tiny-bpe", torch.bfloat16, seed=88,
        draws=(("e_score_correction_bias", 0.0, 0.05),),
        added_tokens=("[gMASK]", "<sop>", "<|user|>", "<|assistant|>", "<|observation|>"),
        config=dict(hidden_size=256, intermediate_size=256, moe_intermediate_size=64, num_hidden_layers=2,
                    num_attention_heads=4, num_key_value_heads=2, head_dim=64, rms_norm_eps=1e-5,
                    n_routed_experts=4, num_experts_per_tok=2, n_shared_experts=1, first_k_dense_replace=1,
                    n_group=1, topk_group=1, norm_topk_prob=True, routed_scaling_factor=2.5,
                    attention_bias=True, use_qk_norm=True, num_nextn_predict_layers=0,
                    rope_parameters={"rope_type": "default", "rope_theta": 1000000.0, "partial_rotary_factor": 0.5},
                    tie_word_embeddings=False),
    ),
    # DeepseekV3ForCausalLM: MLA with a q LoRA (q_lora_rank 128, kv_lora_rank 128, nope 32 + rope 32
    # per query/key head, v 32), layer 0 dense, layer 1 MoE: 8 routed experts of width 32 in 4
    # groups, top-2 groups then top-2 experts by sigmoid score + e_score_correction_bias,
    # renormalized, x2.5, one shared expert; interleaved rope (rope_interleave, as V3's).
    # config.json states the routing as DeepSeek-V3's does (scoring_func, topk_method): transformers
    # always routes V3 by sigmoid and does not save them, and the converter writes the gating
    # function only from scoring_func (without it llama.cpp's deepseek2 uses softmax).
    "deepseek3-bpe-bf16": Variant(
        DeepseekV3Config, "tiny-bpe", torch.bfloat16, seed=89,
        draws=(("e_score_correction_bias", 0.0, 0.05),),
        config_edits={"scoring_func": "sigmoid", "topk_method": "noaux_tc"},
        config=dict(hidden_size=256, intermediate_size=256, moe_intermediate_size=32, num_hidden_layers=2,
                    num_attention_heads=4, num_key_value_heads=4, q_lora_rank=128, kv_lora_rank=128,
                    qk_nope_head_dim=32, qk_rope_head_dim=32, v_head_dim=32, rms_norm_eps=1e-6,
                    n_routed_experts=8, num_experts_per_tok=2, n_shared_experts=1, first_k_dense_replace=1,
                    n_group=4, topk_group=2, norm_topk_prob=True, routed_scaling_factor=2.5,
                    rope_interleave=True, num_nextn_predict_layers=0,
                    rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
                    tie_word_embeddings=False),
    ),
    # GptOssForCausalLM in bf16 (the released experts are MXFP4; a later fixture): attention sinks
    # (drawn), layer 0 slides over 4 tokens and layer 1 is global (transformers' alternation),
    # q/k/v/o biases, 4 experts of width 64 with biases, fused and interleaved gate_up_proj,
    # clamped SwiGLU (alpha 1.702, limit 7), router with a bias, top-2 softmax over the chosen;
    # YaRN x32 over 4096 as gpt-oss-20b.
    "gptoss-bpe-bf16": Variant(
        GptOssConfig, "tiny-bpe", torch.bfloat16, seed=190, routers=(".mlp.router.weight",),
        draws=((".self_attn.sinks", 0.0, 1.0), ("_proj_bias", 0.0, 0.1)),
        config=dict(hidden_size=256, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                    num_key_value_heads=2, head_dim=64, rms_norm_eps=1e-5, num_local_experts=4,
                    num_experts_per_tok=2, sliding_window=4, attention_bias=True,
                    rope_parameters={"rope_type": "yarn", "rope_theta": 150000.0, "factor": 32.0,
                                     "beta_fast": 32.0, "beta_slow": 1.0, "truncate": False,
                                     "original_max_position_embeddings": 4096},
                    tie_word_embeddings=False),
    ),
    # Llama4ForCausalLM (Llama 4's text model): four layers, because llama.cpp places NoPE layers
    # by a fixed step of 4 (layer 3 here, as transformers' no_rope_layer_interval 4); MoE every
    # second layer (interleave_moe_layer_step 2: layers 1 and 3) with 4 experts of width 32, top-1
    # by sigmoid, plus a shared expert; dense layers of width 64 (intermediate_size_mlp); L2 q/k
    # norm on the rope layers; temperature tuning (no effect below position 8192).
    "llama4-bpe-bf16": Variant(
        Llama4TextConfig, "tiny-bpe", torch.bfloat16, seed=91, routers=(".feed_forward.router.weight",),
        config=dict(hidden_size=256, intermediate_size=32, intermediate_size_mlp=64, num_hidden_layers=4,
                    num_attention_heads=4, num_key_value_heads=1, head_dim=64, rms_norm_eps=1e-5,
                    num_local_experts=4, num_experts_per_tok=1, interleave_moe_layer_step=2,
                    use_qk_norm=True, no_rope_layer_interval=4, attention_chunk_size=8192,
                    rope_parameters={"rope_type": "llama3", "rope_theta": 500000.0, "factor": 16.0,
                                     "low_freq_factor": 1.0, "high_freq_factor": 1.0,
                                     "original_max_position_embeddings": 64},
                    tie_word_embeddings=False),
    ),
    # Lfm2ForCausalLM (LFM2): layer 0 a gated short convolution (kernel 3, conv_L_cache), layer 1
    # attention with q/k norms; the FFN width auto-adjusted as LFM2 does (2/3 of 384, rounded up
    # to a multiple of 256: 256); tied output.
    "lfm2-bpe-bf16": Variant(
        Lfm2Config, "tiny-bpe", torch.bfloat16, seed=92,
        config=dict(hidden_size=256, intermediate_size=384, num_hidden_layers=2, num_attention_heads=4,
                    num_key_value_heads=2, norm_eps=1e-5, conv_L_cache=3, conv_bias=False,
                    block_multiple_of=256, block_ffn_dim_multiplier=1.0, block_auto_adjust_ff_dim=True,
                    layer_types=["conv", "full_attention"],
                    rope_parameters={"rope_type": "default", "rope_theta": 1000000.0},
                    tie_word_embeddings=True),
    ),
    # GraniteMoeHybridForCausalLM (Granite 4.0-H): layer 0 Mamba2 (8 heads of 64: expand 2, which
    # llama.cpp's granite-hybrid asserts; d_state 64, one group, conv 4; A_log, D and dt_bias
    # drawn), layer 1 attention without positions
    # (position_embedding_type "nope", as Granite 4.0-H); both with 4 experts of width 32, top-2,
    # and a shared MLP of width 64; Granite's four multipliers; tied output. config.json spells
    # the layer types "mamba"/"attention" as the released ones do (transformers 5 saves
    # "linear_attention"/"full_attention", which llama.cpp's converter does not read as attention).
    # The embedding is padded to 408 rows, a multiple of 8 as Granite 4.0-H's 100352: the converter
    # pads a hybrid's vocabulary to a multiple of 8 but not its embedding, and llama.cpp refuses
    # 401 rows for 408 tokens.
    "granite4-bpe-bf16": Variant(
        GraniteMoeHybridConfig, "tiny-bpe", torch.bfloat16, seed=93,
        routers=(".block_sparse_moe.router.weight",),
        draws=((".A_log", 0.5, 0.5), (".D", 1.0, 0.3), (".dt_bias", 0.0, 0.5)),
        config_edits={"layer_types": ["mamba", "attention"]},
        config=dict(vocab_size=408, hidden_size=256, intermediate_size=32, shared_intermediate_size=64,
                    num_hidden_layers=2,
                    num_attention_heads=4, num_key_value_heads=2, rms_norm_eps=1e-5,
                    num_local_experts=4, num_experts_per_tok=2, layer_types=["linear_attention", "full_attention"],
                    mamba_n_heads=8, mamba_d_head=64, mamba_n_groups=1, mamba_d_state=64, mamba_d_conv=4,
                    mamba_expand=2, mamba_chunk_size=256, mamba_conv_bias=True, mamba_proj_bias=False,
                    position_embedding_type="nope", embedding_multiplier=12.0, attention_multiplier=0.015625,
                    residual_multiplier=0.22, logits_scaling=8.0,
                    rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
                    tie_word_embeddings=True),
    ),
    # Qwen3NextForCausalLM: layer 0 Gated DeltaNet (2 key heads and 4 value heads of 64, conv 4;
    # dt_bias drawn), layer 1 gated attention (q_proj twice as wide: query and output gate) with
    # q/k norms and rope on a quarter of each head; both MoE with 4 experts of width 32, top-2
    # renormalized, and a gated shared expert of width 64. Norms apply 1 + w, but the DeltaNet's
    # gated norm applies w.
    "qwen3next-bpe-bf16": Variant(
        Qwen3NextConfig, "tiny-bpe", torch.bfloat16, seed=194, norm_offset=1.0,
        norm_ranges=(("linear_attn.norm.weight", 1.5, 2.5),), draws=((".dt_bias", 1.0, 0.5),),
        config=dict(hidden_size=256, intermediate_size=256, moe_intermediate_size=32,
                    shared_expert_intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                    num_key_value_heads=2, head_dim=64, rms_norm_eps=1e-6, num_experts=4, num_experts_per_tok=2,
                    norm_topk_prob=True, decoder_sparse_step=1, layer_types=["linear_attention", "full_attention"],
                    linear_num_key_heads=2, linear_num_value_heads=4, linear_key_head_dim=64,
                    linear_value_head_dim=64, linear_conv_kernel_dim=4,
                    rope_parameters={"rope_type": "default", "rope_theta": 10000000.0, "partial_rotary_factor": 0.25},
                    tie_word_embeddings=False),
    ),
    # Qwen3_5ForCausalLM (Qwen3.5 dense, text): Qwen3-Next's layer pair with a dense FFN; rope
    # as QWEN35_ROPE says.
    "qwen35-bpe-bf16": Variant(
        Qwen3_5TextConfig, "tiny-bpe", torch.bfloat16, seed=95, norm_offset=1.0,
        norm_ranges=(("linear_attn.norm.weight", 1.5, 2.5),), draws=((".dt_bias", 1.0, 0.5),),
        config=dict(hidden_size=256, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4,
                    num_key_value_heads=2, head_dim=64, rms_norm_eps=1e-6,
                    layer_types=["linear_attention", "full_attention"],
                    linear_num_key_heads=2, linear_num_value_heads=4, linear_key_head_dim=64,
                    linear_value_head_dim=64, linear_conv_kernel_dim=4,
                    rope_parameters=QWEN35_ROPE, tie_word_embeddings=False),
    ),
    # Qwen3_5MoeForCausalLM (Qwen3.5 MoE, text): the layer pair with Qwen3-Next's MoE.
    "qwen35moe-bpe-bf16": Variant(
        Qwen3_5MoeTextConfig, "tiny-bpe", torch.bfloat16, seed=96, norm_offset=1.0,
        norm_ranges=(("linear_attn.norm.weight", 1.5, 2.5),), draws=((".dt_bias", 1.0, 0.5),),
        config=dict(hidden_size=256, moe_intermediate_size=32, shared_expert_intermediate_size=64,
                    num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, head_dim=64,
                    rms_norm_eps=1e-6, num_experts=4, num_experts_per_tok=2,
                    layer_types=["linear_attention", "full_attention"],
                    linear_num_key_heads=2, linear_num_value_heads=4, linear_key_head_dim=64,
                    linear_value_head_dim=64, linear_conv_kernel_dim=4,
                    rope_parameters=QWEN35_ROPE, tie_word_embeddings=False),
    ),
    # MiniMaxM2ForCausalLM: 4 experts of width 64, top-2 by sigmoid score + e_score_correction_bias
    # (drawn), renormalized; q/k norms over all heads at once (width 4 x 64, not per head); rope on
    # half of each head, stated as the released config does (rotary_dim, which the converter reads;
    # and scoring_func, from which alone it writes the gating function).
    "minimaxm2-bpe-bf16": Variant(
        MiniMaxM2Config, "tiny-bpe", torch.bfloat16, seed=97,
        draws=(("e_score_correction_bias", 0.0, 0.05),),
        config_edits={"rotary_dim": 32, "scoring_func": "sigmoid"},
        config=dict(hidden_size=256, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                    num_key_value_heads=2, head_dim=64, rms_norm_eps=1e-6, num_local_experts=4,
                    num_experts_per_tok=2,
                    rope_parameters={"rope_type": "default", "rope_theta": 5000000.0, "partial_rotary_factor": 0.5},
                    tie_word_embeddings=False),
    ),
    # Gemma3nForCausalLM (Gemma 3n's text model): AltUp over 4 copies of the residual stream (its
    # correct_output_scale drawn: transformers starts it at zero), LAuReL (rank 64), per-layer
    # embeddings (256 a layer), q/k/v norms, GELU (tanh) with a 0.95 activation-sparsity cutoff on
    # layer 0, final soft-cap 30; layer 0 slides over 4 tokens, layer 1 is global. llama.cpp fixes
    # the per-layer width at 256 and the LAuReL rank at 64 (llama-hparams.h: n_embd_altup,
    # laurel_rank), hence this fixture's size (2.7 MB with 64 and 32, which llama.cpp refused to
    # load). No KV sharing: llama.cpp's gemma3n shares from layer 20 on, whatever
    # num_kv_shared_layers says.
    "gemma3n-spm-bf16": Variant(
        Gemma3nTextConfig, "tiny-gemma", torch.bfloat16, seed=98, draws=(("correct_output_scale", 0.0, 0.5),),
        config=dict(hidden_size=256, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                    num_key_value_heads=2, head_dim=64, rms_norm_eps=1e-6, sliding_window=4,
                    layer_types=["sliding_attention", "full_attention"], hidden_activation="gelu_pytorch_tanh",
                    final_logit_softcapping=30.0, hidden_size_per_layer_input=256, laurel_rank=64,
                    vocab_size_per_layer_input=500,  # tiny-gemma's whole vocabulary
                    altup_num_inputs=4, altup_active_idx=0, altup_coef_clip=120.0, altup_correct_scale=True,
                    num_kv_shared_layers=0, activation_sparsity_pattern=[0.95, 0.0],
                    rope_parameters={
                        "full_attention": {"rope_type": "default", "rope_theta": 1000000.0},
                        "sliding_attention": {"rope_type": "default", "rope_theta": 10000.0}},
                    bos_token_id=2, eos_token_id=1, pad_token_id=0, tie_word_embeddings=True),
    ),
}


def tokenizer_dir(name: str) -> Path:
    src = TOKENIZERS / name
    if not (src / "tokenizer.json").is_file():
        sys.exit(f"{src}/tokenizer.json is missing; make the fixture tokenizers first")
    return src


def copy_tokenizer(name: str, dest: Path, added: tuple[str, ...] = ()) -> None:
    """The fixture tokenizer's files into dest, with `added` special tokens after its last id."""
    src = tokenizer_dir(name)
    for fname in TOKENIZER_FILES:
        if (src / fname).is_file():
            shutil.copy2(src / fname, dest / fname)
    if not added:
        return
    tokenizer = json.loads((dest / "tokenizer.json").read_text(encoding="utf-8"))
    config = json.loads((dest / "tokenizer_config.json").read_text(encoding="utf-8"))
    first = Tokenizer.from_file(str(src / "tokenizer.json")).get_vocab_size(with_added_tokens=True)
    for tid, content in enumerate(added, start=first):
        entry = {"content": content, "lstrip": False, "normalized": False, "rstrip": False,
                 "single_word": False, "special": True}
        tokenizer["added_tokens"].append({"id": tid, **entry})
        config.setdefault("added_tokens_decoder", {})[str(tid)] = entry
    (dest / "tokenizer.json").write_text(json.dumps(tokenizer, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    (dest / "tokenizer_config.json").write_text(json.dumps(config, ensure_ascii=False, indent=2) + "\n",
                                                encoding="utf-8")


def edit_config(path: Path, edits: dict) -> None:
    config = json.loads(path.read_text())
    config.update(edits)
    path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


def build_model(variant: Variant):
    # The embedding has one row per token, added tokens included, as in a real checkpoint.
    vocab = Tokenizer.from_file(str(tokenizer_dir(variant.tokenizer) / "tokenizer.json"))
    # A variant may override COMMON, and pad the vocab_size (as Phi-3's embedding is padded).
    n_vocab = vocab.get_vocab_size(with_added_tokens=True) + len(variant.added_tokens)
    config = variant.config_class(**{"vocab_size": n_vocab, **COMMON, **variant.config})
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
            elif name.endswith(variant.routers):
                param.normal_(0.0, ROUTER_STD)
            elif draw := next(((mean, std) for suffix, mean, std in variant.draws if name.endswith(suffix)), None):
                param.normal_(*draw)
        # Buffers saved with the weights (DeepSeek's and GLM's e_score_correction_bias)
        for name, buffer in model.named_buffers():
            if draw := next(((mean, std) for suffix, mean, std in variant.draws if name.endswith(suffix)), None):
                buffer.normal_(*draw)
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
            # TopKRouter, and DeepSeek's and GLM's TopkRouter
            if type(module).__name__.lower().endswith("topkrouter"):
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


def fixture_folder(checkpoint: Path) -> Path:
    """tests/fixtures/models/ for an architecture qconvert converts (every test over the fixtures
    takes it), tests/fixtures/pending/ until its adapter exists (CONTRIBUTING.md: the adapter's
    commit moves the fixture)."""
    sys.path.insert(0, str(ROOT))
    from qconvert.arch import REGISTRY

    architecture = json.loads((checkpoint / "config.json").read_text())["architectures"][0]
    return MODELS if architecture in REGISTRY else PENDING


def make(name: str, variant: Variant) -> Path:
    MODELS.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=MODELS, prefix=f".{name}-") as tmp:
        tmp = Path(tmp)
        model = build_model(variant)
        kwargs = {"max_shard_size": variant.max_shard_size} if variant.max_shard_size else {}
        model.save_pretrained(tmp, **kwargs)
        if variant.transformers4_config:
            rewrite_config_as_transformers4(tmp / "config.json")
        if variant.config_edits:
            edit_config(tmp / "config.json", variant.config_edits)
        copy_tokenizer(variant.tokenizer, tmp, variant.added_tokens)
        if variant.max_shard_size:
            assert (tmp / "model.safetensors.index.json").is_file(), "expected a sharded save"
        if variant.encoder:
            write_sentence_transformers_files(tmp, model.config.hidden_size)
        np.savez(tmp / "reference.npz", **(encoder_reference(tmp) if variant.encoder else reference(tmp)))
        dest = fixture_folder(tmp) / name
        for old in (MODELS / name, PENDING / name):  # a fixture whose adapter came since moves over
            if old.exists():
                shutil.rmtree(old)
        dest.parent.mkdir(parents=True, exist_ok=True)
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
