"""Pre-quantized checkpoints: what config.json's `quantization_config` announces, and the block
scales of FP8 weights. The one place that knows which quantizations qconvert reads.

qconvert reads one kind of pre-quantized checkpoint, DeepSeek V3's and the "-FP8" releases'
(transformers' FineGrainedFP8, `quant_method` "fp8"): weights stored as float8 (safetensors
dtype F8_E4M3 or F8_E5M2), each with a tensor of block scales beside it,

    X.weight            F8_E4M3 [out, in]
    X.weight_scale_inv  F32 or BF16 [ceil(out / bo), ceil(in / bi)]

where [bo, bi] is `quantization_config.weight_block_size`; the real weight is each float8 value
times the scale of its block (llama.cpp's converter, conversion/base.py ModelBase.dequant_model,
"fp8": the scale repeated over its block, cut at the tensor's edge, multiplied in float32). The
pairing follows that converter: a tensor whose name ends in `_scale_inv` scales the tensor of
the name without that ending.

Everything else `quantization_config` can announce (GPTQ, AWQ, bitsandbytes, NVIDIA ModelOpt's
NVFP4, compressed-tensors, MXFP4, ...) is refused, naming the method and the key, before any
tensor is read; so is ModelOpt's own `hf_quant_config.json`, which the converter reads as a
quantization_config too.

The functions here are pure: the reader hands over the config and the tensors' dtypes and shapes.
"""

from __future__ import annotations

from typing import Any, Mapping

from ..errors import CheckpointError, UnsupportedError
from ..types import BlockScales
from .safetensors import show

KEY = "quantization_config"
# ModelOpt's checkpoint-wide quantization record (NVFP4 releases), read by the converter's
# prepare_tensors as a quantization_config
MODELOPT_FILE = "hf_quant_config.json"

# The float8 dtypes of the safetensors format qconvert decodes (reader.F8_FORMATS has their bits).
FP8_DTYPES = ("F8_E4M3", "F8_E5M2")
# Dtypes a block scale may have: the float dtypes qconvert decodes exactly to float32 (DeepSeek V3
# stores F32; BF16 scales occur in re-saved checkpoints).
SCALE_DTYPES = ("F32", "BF16", "F16")
# The converter's pairing rule (dequant_model, "fp8": name.endswith("_scale_inv"))
SCALE_SUFFIX = "_scale_inv"

# quant_method values qconvert refuses, with what they are, for the message (transformers'
# QuantizationMethod names and the converter's). Any other value is refused as unknown.
REFUSED_METHODS: dict[str, str] = {
    "gptq": "GPTQ packed integer weights",
    "awq": "AWQ packed integer weights",
    "bitsandbytes": "bitsandbytes",
    "modelopt": "NVIDIA ModelOpt (NVFP4/FP8)",
    "nvfp4": "NVFP4",
    "compressed-tensors": "compressed-tensors (llm-compressor)",
    # gpt-oss's experts (`*_blocks` / `*_scales`): refused until qconvert writes them as GGUF MXFP4
    "mxfp4": "MXFP4 (gpt-oss's experts)",
    "hqq": "HQQ", "eetq": "EETQ", "fbgemm_fp8": "FBGEMM per-channel FP8", "torchao": "torchao",
    "quanto": "optimum-quanto", "aqlm": "AQLM", "vptq": "VPTQ", "higgs": "HIGGS", "bitnet": "BitNet ternary",
    "spqr": "SpQR", "fp_quant": "FP-Quant", "auto-round": "AutoRound", "quark": "AMD Quark",
}
SUPPORTED_METHODS = ("fp8",)


def check_quantization(config: Mapping[str, Any], has_modelopt_file: bool = False) -> BlockScales | None:
    """What config.json's quantization_config says about the stored weights: None for none,
    the FP8 block size for quant_method "fp8"; anything else is refused (UnsupportedError, the
    exit code of an unsupported input), naming the method and the key.

    >>> check_quantization({})
    >>> check_quantization({"quantization_config": {"quant_method": "fp8", "weight_block_size": [128, 128]}})
    BlockScales(rows=128, cols=128)
    """
    qc = config.get(KEY)
    if qc is None:
        if has_modelopt_file:
            raise UnsupportedError(f"{MODELOPT_FILE}: the checkpoint is quantized by NVIDIA ModelOpt (NVFP4/FP8), "
                                   "which qconvert does not convert; it converts unquantized checkpoints and FP8 ones "
                                   '(quant_method "fp8")')
        return None
    if not isinstance(qc, dict):
        raise CheckpointError(f"config.json: {KEY} is {type(qc).__name__}; expected an object")
    method = qc.get("quant_method")
    key = f"{KEY}.quant_method"
    if method is None:
        # bitsandbytes configs of transformers < 4.30 carried only the flags
        flag = next((f for f in ("load_in_4bit", "load_in_8bit") if qc.get(f) is True), None)
        if flag is None:
            raise CheckpointError(f"config.json: {KEY} has no quant_method; cannot tell how the weights are stored")
        method, key = "bitsandbytes", f"{KEY}.{flag}"
    if not isinstance(method, str):
        raise CheckpointError(f"config.json: {key} is {method!r}; expected a string")
    if method.lower() not in SUPPORTED_METHODS:
        what = REFUSED_METHODS.get(method.lower())
        if method.lower() == "bitsandbytes":
            bits = "4-bit" if qc.get("load_in_4bit") is True else "8-bit" if qc.get("load_in_8bit") is True else None
            what = f"bitsandbytes {bits}" if bits else what
        about = f" ({what})" if what else ", a quantization qconvert does not know"
        shown = f'"{method}"' if key.endswith("quant_method") else "true"
        raise UnsupportedError(f"config.json: {key} is {shown}{about}, which qconvert does not convert; it converts "
                               'unquantized checkpoints and FP8 ones (quant_method "fp8")')
    block = qc.get("weight_block_size")
    if not (isinstance(block, list) and len(block) == 2
            and all(isinstance(n, int) and not isinstance(n, bool) and 1 <= n <= 1 << 20 for n in block)):
        found = "missing" if block is None else f"{block!r}"
        raise UnsupportedError(f"config.json: {KEY}.weight_block_size is {found}; qconvert dequantizes FP8 "
                               "weights by blocks of scales, [rows, columns] per block (DeepSeek V3's [128, 128])")
    return BlockScales(block[0], block[1])


def pair_block_scales(tensors: Mapping[str, tuple[str, tuple[int, ...]]], blocks: BlockScales | None
                      ) -> dict[str, str]:
    """{weight: its scale tensor} for the FP8 weights of a checkpoint ({name: (dtype, shape)}),
    every pair checked: each float8 tensor has its scales, each scale tensor a float8 weight of
    two dimensions, in a dtype and of the shape the block size gives. Refused in one line naming
    the tensor: a float8 tensor without quantization_config or without its scales, a scale
    without its weight, a scale of the wrong dtype or shape.

    >>> pair_block_scales({"w": ("F8_E4M3", (320, 256)), "w_scale_inv": ("F32", (3, 2))}, BlockScales(128, 128))
    {'w': 'w_scale_inv'}
    """
    pairs: dict[str, str] = {}
    for name, (dtype, shape) in tensors.items():
        if not name.endswith(SCALE_SUFFIX):
            continue
        weight = name[:-len(SCALE_SUFFIX)]
        if blocks is None:
            raise CheckpointError(f"tensor {show(name)} holds block scales of {show(weight)}, but config.json has no "
                                  f'{KEY} (quant_method "fp8" and weight_block_size say how to apply them)')
        if weight not in tensors:
            raise CheckpointError(f"tensor {show(name)} holds block scales of {show(weight)}, which the checkpoint "
                                  "does not have")
        w_dtype, w_shape = tensors[weight]
        if w_dtype not in FP8_DTYPES:
            raise CheckpointError(f"tensor {show(name)} holds block scales of {show(weight)}, which is {w_dtype}; "
                                  f"expected a float8 weight ({' or '.join(FP8_DTYPES)})")
        if len(w_shape) != 2:
            raise UnsupportedError(f"tensor {show(weight)} is a float8 tensor of shape {list(w_shape)}; qconvert "
                                   "dequantizes block-scaled matrices of two dimensions")
        if dtype not in SCALE_DTYPES:
            raise CheckpointError(f"tensor {show(name)} has dtype {dtype}; expected block scales in "
                                  f"{', '.join(SCALE_DTYPES)}")
        want = blocks.grid(w_shape)
        if tuple(shape) != want:
            raise CheckpointError(
                f"tensor {show(name)} has shape {list(shape)}; expected {list(want)}, one scale per block of "
                f"{blocks.rows}x{blocks.cols} ({KEY}.weight_block_size) of {show(weight)} {list(w_shape)}")
        pairs[weight] = name
    for name, (dtype, _) in tensors.items():
        if dtype in FP8_DTYPES and name not in pairs:
            if blocks is None:
                raise CheckpointError(f"tensor {show(name)} has dtype {dtype}, but config.json has no {KEY} "
                                      '(quant_method "fp8" and weight_block_size say how float8 weights are scaled)')
            raise CheckpointError(f"tensor {show(name)} has dtype {dtype} but no {show(name + SCALE_SUFFIX)} "
                                  "(its block scales)")
    return pairs
