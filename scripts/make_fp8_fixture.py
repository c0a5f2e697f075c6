"""Make tests/fixtures/models/llama-fp8-e4m3: a tiny Llama stored as the FP8 releases store theirs.

Dev tool (torch, transformers). DeepSeek V3 and the "-FP8" checkpoints (transformers'
FineGrainedFP8) keep each linear layer's weight as float8 E4M3 with one float32 scale per block
of [128, 128] weights beside it:

    X.weight            F8_E4M3 [out, in]      round_to_nearest(w / scale), within +-448
    X.weight_scale_inv  F32 [ceil(out / 128), ceil(in / 128)]    scale = amax(|w| in the block) / 448

and announce it in config.json: "quantization_config": {"quant_method": "fp8", "weight_block_size":
[128, 128], "activation_scheme": "dynamic", "fmt": "e4m3"}. The real weight is each float8 value
times its block's scale. This script makes such a checkpoint from a tiny random Llama built as
scripts/make_tiny_models.py builds its variants (bf16, seeded): the attention and MLP matrices
are quantized that way, the embedding, the output matrix and the norms stay bf16, as in DeepSeek
V3. The sizes put the blocks' edges inside the tensors: hidden 256 (two column blocks), 320-wide
MLP (gate/up: 320 rows, the last block 64 rows; down: 320 columns, the last block 64 wide), k/v
of 128 rows (one block).

reference.npz holds the prompt's tokens (as make_tiny_models.py) and transformers' float32 logits
of the DEQUANTIZED model (float8 value times scale, in float32, loaded into a float32 Llama):
what the FP8 checkpoint means, computed without transformers' own FP8 path.

    python scripts/make_fp8_fixture.py
"""
from __future__ import annotations

import json
import math
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file
from transformers import LlamaConfig

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_tiny_models import MODELS, Variant, build_model, copy_tokenizer, reference  # noqa: E402

NAME = "llama-fp8-e4m3"
VARIANT = Variant(
    LlamaConfig, "tiny-bpe", torch.bfloat16, seed=81,
    config=dict(hidden_size=256, intermediate_size=320, num_hidden_layers=2,
                num_attention_heads=4, num_key_value_heads=2, rms_norm_eps=1e-5,
                rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
                tie_word_embeddings=False),
)
BLOCK = (128, 128)
E4M3_MAX = 448.0  # torch.finfo(torch.float8_e4m3fn).max
QUANTIZED = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
QUANTIZATION_CONFIG = {"activation_scheme": "dynamic", "fmt": "e4m3", "quant_method": "fp8",
                       "weight_block_size": list(BLOCK)}


def quantize(w: torch.Tensor, block: tuple[int, int] = BLOCK) -> tuple[torch.Tensor, torch.Tensor]:
    """(float8 E4M3 weight, float32 scales [ceil(out/bo), ceil(in/bi)]): per block, scale =
    amax / 448 and the weight divided by it, rounded to nearest E4M3."""
    w = w.float()
    (out, inp), (bo, bi) = w.shape, block
    rows, cols = math.ceil(out / bo), math.ceil(inp / bi)
    padded = torch.zeros(rows * bo, cols * bi)
    padded[:out, :inp] = w
    blocks = padded.reshape(rows, bo, cols, bi)
    scale = (blocks.abs().amax(dim=(1, 3)) / E4M3_MAX).clamp(min=1e-12)
    q = (blocks / scale[:, None, :, None]).clamp(-E4M3_MAX, E4M3_MAX).to(torch.float8_e4m3fn)
    return q.reshape(rows * bo, cols * bi)[:out, :inp].contiguous(), scale.contiguous()


def dequantize(q: torch.Tensor, scale: torch.Tensor, block: tuple[int, int] = BLOCK) -> torch.Tensor:
    """The weight an FP8 checkpoint means: each float8 value times its block's scale (float32)."""
    out, inp = q.shape
    full = scale.repeat_interleave(block[0], 0).repeat_interleave(block[1], 1)[:out, :inp]
    return q.float() * full


def make() -> Path:
    dest = MODELS / NAME
    with tempfile.TemporaryDirectory(dir=MODELS, prefix=f".{NAME}-") as tmp:
        tmp = Path(tmp)
        model = build_model(VARIANT)
        model.save_pretrained(tmp)  # config.json and generation_config.json as transformers writes them
        tensors, dequantized = {}, {}
        for name, param in model.state_dict().items():
            if name.endswith(tuple(f"{m}.weight" for m in QUANTIZED)):
                q, scale = quantize(param)
                tensors[name], tensors[name + "_scale_inv"] = q, scale
                dequantized[name] = dequantize(q, scale)
            else:
                tensors[name] = param.contiguous()
        save_file(tensors, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        config = json.loads((tmp / "config.json").read_text())
        config["quantization_config"] = QUANTIZATION_CONFIG
        (tmp / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
        copy_tokenizer(VARIANT.tokenizer, tmp)

        # the reference: the dequantized weights in a float32 model, saved and loaded back as
        # make_tiny_models.reference loads every fixture
        model = model.float()
        with torch.no_grad():
            for name, param in model.named_parameters():
                if name in dequantized:
                    param.copy_(dequantized[name])
        with tempfile.TemporaryDirectory() as plain:
            model.save_pretrained(plain)
            copy_tokenizer(VARIANT.tokenizer, Path(plain))
            np.savez(tmp / "reference.npz", **reference(Path(plain)))

        if dest.exists():
            shutil.rmtree(dest)
        tmp.rename(dest)
        dest.chmod(0o755)
        tmp.mkdir()  # so TemporaryDirectory's cleanup finds something to remove
    return dest


if __name__ == "__main__":
    torch.set_num_threads(1)  # the same float32 sums on every rerun
    path = make()
    print(f"{path}: {sum(p.stat().st_size for p in path.iterdir()) / 1e6:.2f} MB "
          f"[{', '.join(sorted(p.name for p in path.iterdir()))}]")
