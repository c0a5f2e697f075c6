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

ROOT = Path(__file__).resolve().parents[1]
TOKENIZERS = ROOT / "tests" / "fixtures" / "tokenizers"
MODELS = ROOT / "tests" / "fixtures" / "models"

# The files of a fixture tokenizer that a real checkpoint ships (not its expected.json).
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model",
                   "special_tokens_map.json")
PROMPT = "Hello, world! How are you?"


@dataclass(frozen=True)
class Variant:
    config_class: type
    tokenizer: str
    dtype: torch.dtype
    seed: int
    config: dict
    max_shard_size: str | None = None  # None: one model.safetensors
    transformers4_config: bool = False  # rewrite config.json as transformers 4.x wrote it


# Shared by all variants: small context, and an initializer wider than the default 0.02 so the
# logits of a 64-wide model spread enough to tell a wrong conversion from rounding noise.
COMMON = dict(max_position_embeddings=256, initializer_range=0.05, bos_token_id=1, eos_token_id=2)

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
    config = variant.config_class(vocab_size=vocab.get_vocab_size(with_added_tokens=True),
                                  **COMMON, **variant.config)
    torch.manual_seed(variant.seed)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    with torch.no_grad():
        # RMSNorm weights start at exactly 1.0, which would hide a norm tensor that is dropped or
        # swapped in conversion; spread them.
        for name, param in model.named_parameters():
            if name.endswith("norm.weight"):
                param.uniform_(0.5, 1.5)
            # Linear biases (Qwen2's q/k/v) start at zero, which would hide a dropped or
            # misordered bias. No Llama variant has any, so their draws are unchanged.
            elif name.endswith(".bias"):
                param.normal_(0.0, 0.5)
    return model.to(variant.dtype)


def rewrite_config_as_transformers4(path: Path) -> None:
    """config.json as transformers 4.x saved it: rope_theta and rope_scaling at top level,
    torch_dtype instead of dtype, no rope_parameters."""
    config = json.loads(path.read_text())
    rope = config.pop("rope_parameters")
    config["rope_theta"] = rope.pop("rope_theta")
    rope_type = rope.get("rope_type", "default")
    config["rope_scaling"] = None if rope_type == "default" else rope
    config["torch_dtype"] = config.pop("dtype")
    config["transformers_version"] = "4.46.3"
    if config.get("pad_token_id", 0) is None:  # 4.x left out values equal to its defaults
        del config["pad_token_id"]
    path.write_text(json.dumps(dict(sorted(config.items())), indent=2) + "\n")


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
    with torch.no_grad():
        logits = model(torch.from_numpy(tokens.astype(np.int64))[None]).logits[0]
    assert logits.shape == (len(tokens), model.config.vocab_size)
    return {"tokens": tokens, "logits": logits.float().numpy()}


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
        np.savez(tmp / "reference.npz", **reference(tmp))
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
