"""Mixture-of-experts layers, and Mixtral (llama.cpp's `llama` arch with experts).

llama.cpp's MoE graphs (`build_moe_ffn`) take each layer's experts as one 3-D tensor per
projection, ffn_gate_exps / ffn_up_exps / ffn_down_exps of NumPy shape [n_expert, rows, cols].
Checkpoints, transformers 5's `save_pretrained` included, store one 2-D tensor per expert. The
converter (conversion/llama.py LlamaModel.modify_tensors for Mixtral, conversion/qwen.py
Qwen2MoeModel.modify_tensors for Qwen3-MoE) holds a layer's expert tensors back until it has
seen all of them, then writes one stack per kind, experts in order. `Experts.tensors` does the
same with `SourceTensor.stack`, reading nothing until the pipeline writes the stack, so the
stacks land where the converter puts them: at the last of the layer's expert tensors in the
checkpoint's order. It is a pure function of the config and the tensor list (`expert_layers`
groups the list first), and keeps nothing between calls.

Checkpoints saved from transformers 5's in-memory layout instead hold each layer's experts
already fused: mlp.experts.gate_up_proj [n_expert, 2 * n_ff, n_embd] (per expert, the gate rows
then the up rows) and mlp.experts.down_proj [n_expert, n_embd, n_ff]. The converter splits
gate_up_proj in halves for Qwen2MoeModel's family (Qwen3-MoE); `Experts.split_fused` does it with
row selections, and for Mixtral too.

The router (block_sparse_moe.gate / mlp.gate -> ffn_gate_inp) needs nothing here: gguf's name
map names it, and the planner keeps it F32 as llama-quantize does (NEVER_QUANTIZED). Nor do
shared experts (Qwen2-MoE's mlp.shared_expert.*, DeepSeek's mlp.shared_experts.*): one 2-D
tensor each, named ffn_*_shexp by the name map; a family lists SHARED_EXPERT_FFN among its
layer tensors, names their width (`shared_ff_key`) and adds SHARED_EXPERTS / EXPERT_GROUPS to
`expert_keys`, the keys its converter class writes.
"""

from __future__ import annotations

import re
from functools import partial
from pathlib import Path
from typing import ClassVar

import gguf
import numpy as np

from ..errors import CheckpointError
from ..types import Metadata, SourceTensor, TensorInfo
from ..validate.model import Dim, listing
from .base import ATTENTION, TextModel, W
from .llama import Llama

K = gguf.Keys
T = gguf.MODEL_TENSOR

# An MoE layer's FFN as llama.cpp loads it: the norm, the router, one 3-D stack per projection.
MOE_FFN = (
    W(T.FFN_NORM, "embd"), W(T.FFN_GATE_INP, "expert", "embd"),
    W(T.FFN_GATE_EXP, "expert", "ff_exp", "embd"), W(T.FFN_UP_EXP, "expert", "ff_exp", "embd"),
    W(T.FFN_DOWN_EXP, "expert", "embd", "ff_exp"),
)
# Shared experts beside the routed ones: a dense FFN of their own width.
SHARED_EXPERT_FFN = (W(T.FFN_GATE_SHEXP, "ff_shexp", "embd"), W(T.FFN_UP_SHEXP, "ff_shexp", "embd"),
                     W(T.FFN_DOWN_SHEXP, "embd", "ff_shexp"))

# Expert keys beyond TextModel's expert_count / expert_used_count: GGUF key, config spellings.
SHARED_EXPERTS = ((K.LLM.EXPERT_SHARED_COUNT, ("n_shared_experts", "num_shared_experts")),)
EXPERT_GROUPS = ((K.LLM.EXPERT_GROUP_COUNT, ("n_group",)), (K.LLM.EXPERT_GROUP_USED_COUNT, ("topk_group",)))

# A layer's expert tensors: (expert number, kind) -> (checkpoint name, info), in checkpoint order.
Layer = dict[tuple[int, str], tuple[str, TensorInfo]]


class Experts(TextModel):
    """Mixin for adapters whose FFN is a mixture of experts, stored one tensor per expert or
    fused per layer (see the module docstring)."""

    # One expert's tensor: named groups `bid` (layer), `xid` (expert) and `kind` (projection).
    expert_pattern: ClassVar[re.Pattern]
    # The kinds, in the order the converter writes a layer's stacks.
    expert_kinds: ClassVar[tuple[str, ...]]
    # The name the converter gives a stack before mapping it to GGUF ({bid}, {kind}).
    stack_name: ClassVar[str]
    # The kinds that are the gate, up and down projections (for fused checkpoints).
    gate_up_down: ClassVar[tuple[str, str, str]]
    # The config key of one expert's FFN width, and of the shared experts' (None: no shared ones).
    expert_ff_key: ClassVar[str] = "intermediate_size"
    shared_ff_key: ClassVar[str | None] = None
    # Integer keys the family's converter writes when the config has the setting (see above).
    expert_keys: ClassVar[tuple[tuple[str, tuple[str, ...]], ...]] = ()
    layer_tensors = ATTENTION + MOE_FFN
    fused_pattern: ClassVar[re.Pattern] = re.compile(
        r"\.layers\.(?P<bid>\d+)\.mlp\.experts\.(?P<kind>gate_up_proj|down_proj)(?:\.weight)?$")

    def __init__(self, config: dict, model_dir: Path | None = None):
        super().__init__(config, model_dir)
        # (expert_count and expert_used_count are TextModel keys: TextModel.text_model_metadata)
        self.n_expert = int(self.hp.require("num_local_experts", "num_experts"))

    def dims(self) -> dict[str, Dim]:
        dims = {**super().dims(), "expert": Dim(self.n_expert, self.hp.which("num_local_experts", "num_experts")),
                "ff_exp": Dim(int(self.hp.require(self.expert_ff_key)), self.expert_ff_key)}
        if self.shared_ff_key is not None:
            dims["ff_shexp"] = Dim(int(self.hp.require(self.shared_ff_key)), self.shared_ff_key)
        return dims

    def metadata(self) -> Metadata:
        md = super().metadata()
        for template, names in self.expert_keys:
            if (value := self.hp.get(*names)) is not None:
                md.add(self.key(template), int(value))
        return md

    def expert_layers(self, infos: dict[str, TensorInfo]) -> dict[int, Layer]:
        """The per-expert tensors of each layer (not the fused ones), in checkpoint order; an
        expert number beyond the config's count is left out (`expert_sources` refuses it)."""
        layers: dict[int, Layer] = {}
        for name, info in infos.items():
            m = self.expert_pattern.search(name)
            if m is None or self.skipped(name) or int(m["xid"]) >= self.n_expert:
                continue
            layers.setdefault(int(m["bid"]), {})[int(m["xid"]), m["kind"]] = (name, info)
        return layers

    def complete(self, layer: Layer) -> bool:
        return len(layer) == self.n_expert * len(self.expert_kinds)

    def tensors(self, infos: dict[str, TensorInfo]) -> list[SourceTensor]:
        layers = self.expert_layers(infos)
        out = self.collect(infos, partial(self.expert_sources, layers))
        if (bid := next((b for b, layer in layers.items() if not self.complete(layer)), None)) is not None:
            have = layers[bid]
            # the missing ones, spelled as the layer's others (expert number and kind replaced)
            name, _ = next(iter(have.values()))
            m = self.expert_pattern.search(name)
            lacking = [name[:m.start("xid")] + str(x) + name[m.end("xid"):m.start("kind")] + kind + name[m.end("kind"):]
                       for x in range(self.n_expert) for kind in self.expert_kinds if (x, kind) not in have]
            raise CheckpointError(
                f"checkpoint lacks {listing(lacking)}: "
                f"layer {bid} has {len(have)} of its {self.n_expert * len(self.expert_kinds)} expert "
                f"tensors ({self.n_expert} experts x {', '.join(self.expert_kinds)}); is a shard missing?")
        return out

    def expert_sources(self, layers: dict[int, Layer], name: str, info: TensorInfo) -> list[SourceTensor]:
        """`sources_for` with the layers' experts known: a layer's stacks at its last expert
        tensor, nothing at the others."""
        if (fused := self.fused_pattern.search(name)) is not None:
            return self.split_fused(int(fused["bid"]), fused["kind"], name, info)
        m = self.expert_pattern.search(name)
        if m is None:
            return self.sources_for(name, info)
        bid, xid = int(m["bid"]), int(m["xid"])
        if xid >= self.n_expert:
            raise CheckpointError(f"{name}: expert {xid}, but config.json says {self.n_expert} experts")
        layer = layers[bid]
        if not self.complete(layer) or next(reversed(layer.values()))[0] != name:
            return []
        return [self.stack(bid, kind, [layer[x, kind] for x in range(self.n_expert)])
                for kind in self.expert_kinds]

    def stack(self, bid: int, kind: str, parts: list[tuple[str, TensorInfo]]) -> SourceTensor:
        shapes = {info.shape for _, info in parts}
        if len(shapes) != 1:
            raise CheckpointError(f"layer {bid}'s {kind} experts differ in shape: {sorted(shapes)}")
        first, info = parts[0]
        return SourceTensor(self.stack_gguf_name(bid, kind), (self.n_expert, *info.shape), first, info.dtype,
                            stack=tuple(name for name, _ in parts))

    def stack_gguf_name(self, bid: int, kind: str) -> str:
        return self.map_name(self.stack_name.format(bid=bid, kind=kind))

    def split_fused(self, bid: int, kind: str, name: str, info: TensorInfo) -> list[SourceTensor]:
        """A fused expert tensor: down_proj is already llama.cpp's stack; gate_up_proj gives the
        gate stack (each expert's first half of rows), then the up stack (Qwen2MoeModel's order)."""
        shape = info.shape
        if len(shape) != 3 or shape[0] != self.n_expert or (kind == "gate_up_proj" and shape[1] % 2):
            raise CheckpointError(f"{name} has shape {list(shape)}; expected [{self.n_expert} experts, "
                                  f"{'2 * ffn' if kind == 'gate_up_proj' else 'rows'}, cols]")
        gate, up, down = self.gate_up_down
        if kind == "down_proj":
            return [SourceTensor(self.stack_gguf_name(bid, down), shape, name, info.dtype)]
        n_ff = shape[1] // 2
        rows = np.arange(self.n_expert * 2 * n_ff).reshape(self.n_expert, 2, n_ff)
        return [SourceTensor(self.stack_gguf_name(bid, part), (self.n_expert, n_ff, shape[2]), name, info.dtype,
                             row_order=rows[:, half].reshape(-1))
                for half, part in enumerate((gate, up))]


class Mixtral(Experts, Llama):
    """MixtralForCausalLM: Llama attention (Q/K permuted as LlamaModel does) and a sparse MoE FFN
    (w1 = gate, w2 = down, w3 = up), converted by LlamaModel as arch `llama`."""

    hf_architectures = ("MixtralForCausalLM",)
    expert_pattern = re.compile(r"\.layers\.(?P<bid>\d+)\.block_sparse_moe\.experts\.(?P<xid>\d+)\."
                                r"(?P<kind>w[123])\.weight$")
    expert_kinds = ("w1", "w2", "w3")
    stack_name = "layers.{bid}.feed_forward.experts.{kind}.weight"
    gate_up_down = ("w1", "w3", "w2")
    # MixtralAttention and MixtralBlockSparseTop2MLP have no biases
    tensor_flag_keys: ClassVar[dict] = {"qkv_bias": False, "out_bias": False, "mlp_bias": False}

    # MixtralConfig's; it has no head_dim (so the converter writes no key_length unless
    # config.json gives one) and its __post_init__ replaces a null num_key_value_heads by the
    # head count
    defaults: ClassVar[dict] = dict(
        vocab_size=32000, max_position_embeddings=131072, num_attention_heads=32, num_key_value_heads=8,
        rms_norm_eps=1e-5, rope_theta=1_000_000.0, num_local_experts=8, num_experts_per_tok=2,
        tie_word_embeddings=False)
