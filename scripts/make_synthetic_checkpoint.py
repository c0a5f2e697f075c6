"""Make a llama-shaped random-weight bf16 checkpoint of a requested size, for benchmarks.

Dev tool (NumPy only, no torch). The shapes are TinyLlama-1.1B's (hidden 2048, intermediate 5632,
32 heads over 4 KV heads, an untied 32000-row embedding and output), with as many layers as
bring the safetensors files nearest to the requested size; the weights are N(0, 0.02) rounded
to bf16, the norms 1. It is written as save_pretrained writes a real one: shards of at most
--shard-gb with model.safetensors.index.json, a transformers-4 config.json and
generation_config.json, and the tokenizer files of tests/fixtures/tokenizers/tiny-bpe (401
tokens): config.json's vocab_size (32000) is larger, and the converters pad the vocabulary
with unused [PAD{id}] tokens up to it, as they do for real models whose embedding is padded.

    python scripts/make_synthetic_checkpoint.py SIZE_GB [--out DIR] [--seed 0] [--shard-gb 0.4]

Prints the checkpoint's folder: by default ~/.cache/qconvert/bench/llama-h2048-L<layers>-bf16,
reused if it is already complete (the folder is renamed into place only when every file is
written). Importable: `make_checkpoint(size_gb) -> Path`.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import struct
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
TOKENIZER = ROOT / "tests" / "fixtures" / "tokenizers" / "tiny-bpe"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")
BENCH_CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "qconvert" / "bench"

# TinyLlama-1.1B's shape: a real model of this size class, with an embedding as wide as real ones.
HIDDEN, INTERMEDIATE, HEADS, KV_HEADS, VOCAB = 2048, 5632, 32, 4, 32000
HEAD_DIM = HIDDEN // HEADS
BF16 = 2  # bytes per weight
CHUNK = 1 << 24  # weights generated at a time: memory stays ~100 MB whatever the tensor


def layer_shapes(i: int) -> list[tuple[str, tuple[int, ...]]]:
    p = f"model.layers.{i}."
    return [
        (p + "input_layernorm.weight", (HIDDEN,)),
        (p + "mlp.down_proj.weight", (HIDDEN, INTERMEDIATE)),
        (p + "mlp.gate_proj.weight", (INTERMEDIATE, HIDDEN)),
        (p + "mlp.up_proj.weight", (INTERMEDIATE, HIDDEN)),
        (p + "post_attention_layernorm.weight", (HIDDEN,)),
        (p + "self_attn.k_proj.weight", (KV_HEADS * HEAD_DIM, HIDDEN)),
        (p + "self_attn.o_proj.weight", (HIDDEN, HIDDEN)),
        (p + "self_attn.q_proj.weight", (HIDDEN, HIDDEN)),
        (p + "self_attn.v_proj.weight", (KV_HEADS * HEAD_DIM, HIDDEN)),
    ]


def tensor_shapes(n_layers: int) -> list[tuple[str, tuple[int, ...]]]:
    """Every tensor, in the order save_pretrained writes them (module order)."""
    shapes = [("model.embed_tokens.weight", (VOCAB, HIDDEN))]
    for i in range(n_layers):
        shapes += layer_shapes(i)
    return shapes + [("model.norm.weight", (HIDDEN,)), ("lm_head.weight", (VOCAB, HIDDEN))]


def nbytes(shape: tuple[int, ...]) -> int:
    return int(np.prod(shape)) * BF16


def layers_for(size_gb: float) -> int:
    """The layer count whose checkpoint is nearest to size_gb (1 GB = 1e9 bytes), at least 1."""
    fixed = sum(nbytes(s) for _, s in tensor_shapes(0))
    per_layer = sum(nbytes(s) for _, s in layer_shapes(0))
    return max(1, round((size_gb * 1e9 - fixed) / per_layer))


def config(n_layers: int) -> dict:
    # As TinyLlama's config.json (transformers 4), bos/eos the tokenizer's <|im_start|>/<|im_end|>.
    return {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama",
        "hidden_size": HIDDEN, "intermediate_size": INTERMEDIATE, "num_hidden_layers": n_layers,
        "num_attention_heads": HEADS, "num_key_value_heads": KV_HEADS, "hidden_act": "silu",
        "max_position_embeddings": 2048, "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "rope_scaling": None,
        "attention_bias": False, "mlp_bias": False, "initializer_range": 0.02, "pretraining_tp": 1,
        "tie_word_embeddings": False, "torch_dtype": "bfloat16", "use_cache": True,
        "vocab_size": VOCAB, "bos_token_id": 1, "eos_token_id": 2, "transformers_version": "4.46.0",
    }


def shard_plan(shapes: list[tuple[str, tuple[int, ...]]], shard_bytes: int) -> list[list]:
    """Tensors grouped into shards of at most shard_bytes (a larger tensor gets its own shard),
    greedily in order, as save_pretrained's max_shard_size does."""
    shards: list[list] = [[]]
    size = 0
    for name, shape in shapes:
        if shards[-1] and size + nbytes(shape) > shard_bytes:
            shards.append([])
            size = 0
        shards[-1].append((name, shape))
        size += nbytes(shape)
    return shards


def write_weights(f, shape: tuple[int, ...], rng: np.random.Generator) -> None:
    """bf16 values of one tensor (N(0, 0.02), or 1 for a norm), generated and written in chunks."""
    n = int(np.prod(shape))
    if len(shape) == 1:
        f.write(np.full(n, 0x3F80, dtype="<u2").tobytes())  # bf16 1.0
        return
    for lo in range(0, n, CHUNK):
        x = rng.standard_normal(min(CHUNK, n - lo), dtype=np.float32)
        x *= 0.02
        f.write((x.view(np.uint32) >> 16).astype("<u2").tobytes())


def write_shard(path: Path, tensors: list, rng: np.random.Generator) -> None:
    """One safetensors file: 8-byte header length, JSON header padded with spaces to 8 bytes,
    the data in header order."""
    header: dict = {"__metadata__": {"format": "pt"}}
    offset = 0
    for name, shape in tensors:
        header[name] = {"dtype": "BF16", "shape": list(shape), "data_offsets": [offset, offset + nbytes(shape)]}
        offset += nbytes(shape)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text)
        for _, shape in tensors:
            write_weights(f, shape, rng)


def default_dir(n_layers: int) -> Path:
    return BENCH_CACHE / f"llama-h{HIDDEN}-L{n_layers}-bf16"


def is_complete(path: Path) -> bool:
    index = path / "model.safetensors.index.json"
    if not (index.is_file() and (path / "config.json").is_file()):
        return False
    files = set(json.loads(index.read_text())["weight_map"].values())
    return all((path / f).is_file() for f in files)


def make_checkpoint(size_gb: float, out: Path | None = None, seed: int = 0, shard_gb: float = 0.4,
                    quiet: bool = False) -> Path:
    """The checkpoint folder for size_gb, written if it is not there yet."""
    n_layers = layers_for(size_gb)
    out = (out or default_dir(n_layers)).expanduser().resolve()
    if is_complete(out):
        return out
    start = time.perf_counter()
    shapes = tensor_shapes(n_layers)
    shards = shard_plan(shapes, int(shard_gb * 1e9))
    rng = np.random.default_rng(seed)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=f".{out.name}-") as tmp:
        tmp = Path(tmp)
        weight_map = {}
        for i, tensors in enumerate(shards, 1):
            fname = f"model-{i:05d}-of-{len(shards):05d}.safetensors"
            write_shard(tmp / fname, tensors, rng)
            weight_map.update({name: fname for name, _ in tensors})
        total = sum(nbytes(s) for _, s in shapes)
        (tmp / "config.json").write_text(json.dumps(config(n_layers), indent=2) + "\n")
        (tmp / "generation_config.json").write_text(json.dumps(
            {"bos_token_id": 1, "eos_token_id": 2, "transformers_version": "4.46.0"}, indent=2) + "\n")
        for name in TOKENIZER_FILES:
            shutil.copy2(TOKENIZER / name, tmp / name)
        (tmp / "model.safetensors.index.json").write_text(json.dumps(
            {"metadata": {"total_size": total}, "weight_map": weight_map}, indent=2) + "\n")
        if out.exists():  # an incomplete earlier attempt
            shutil.rmtree(out)
        tmp.rename(out)
        out.chmod(0o755)  # TemporaryDirectory made it 0700
        tmp.mkdir()  # for TemporaryDirectory's cleanup
    if not quiet:
        print(f"wrote {out}: {n_layers} layers, {total / 1e9:.2f} GB in {len(shards)} shards, "
              f"{time.perf_counter() - start:.0f}s", file=sys.stderr)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("size_gb", type=float, help="approximate size of the safetensors files, in GB (1e9 bytes)")
    parser.add_argument("--out", type=Path, help=f"folder to write (default {BENCH_CACHE}/llama-h2048-L<n>-bf16)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--shard-gb", type=float, default=0.4, help="largest shard, GB (default 0.4)")
    args = parser.parse_args()
    if args.size_gb <= 0:
        parser.error("SIZE_GB must be positive")
    print(make_checkpoint(args.size_gb, args.out, args.seed, args.shard_gb))


if __name__ == "__main__":
    main()
