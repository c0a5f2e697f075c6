"""Gemma 2 / Gemma 3: what the fixture models (tests/fixtures/models/gemma*) do not show by
themselves. The fixtures go through test_llama_e2e, test_converter_equality and test_mixes like
every other model; here: the sliding-window layout when it is not llama.cpp's assumed one, the
configs llama.cpp cannot run, transformers-4 configs, and Gemma3ForConditionalGeneration."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import gguf
import numpy as np
import pytest
from safetensors.numpy import save_file

from conftest import MODELS, ROOT, llama_logits, relative_error, report
from qconvert.arch import for_config
from qconvert.convert import convert
from qconvert.errors import UnsupportedError
from qconvert.types import TensorInfo

sys.path.insert(0, str(ROOT / "scripts"))
from oracle_convert import oracle_convert  # noqa: E402

GEMMA2, GEMMA3 = MODELS / "gemma2-spm-bf16", MODELS / "gemma3-spm-bf16"
SWA_KEY = "{arch}.attention.sliding_window_pattern"


def config_of(model: Path, **over) -> dict:
    cfg = json.loads((model / "config.json").read_text())
    cfg.update(over)
    return cfg


def metadata(cfg: dict) -> dict:
    return {k: v for k, (v, _) in for_config(cfg).metadata().items.items()}


# -- the sliding-window layout -------------------------------------------------------------------

def test_default_layouts_write_no_layer_list():
    for model, arch in ((GEMMA2, "gemma2"), (GEMMA3, "gemma3")):
        md = metadata(config_of(model))
        assert md[f"{arch}.attention.sliding_window"] == 4
        assert SWA_KEY.format(arch=arch) not in md  # what the converter writes, and llama.cpp assumes


def test_other_layouts_are_listed_per_layer():
    types = ["full_attention", "sliding_attention", "sliding_attention",
             "full_attention", "sliding_attention", "sliding_attention"]
    md = metadata(config_of(GEMMA3, layer_types=types))
    assert md[SWA_KEY.format(arch="gemma3")] == [t == "sliding_attention" for t in types]
    # no sliding layer at all: no window, so llama.cpp runs every layer global
    md = metadata(config_of(GEMMA3, layer_types=["full_attention"] * 6))
    assert "gemma3.attention.sliding_window" not in md and SWA_KEY.format(arch="gemma3") not in md
    md = metadata(config_of(GEMMA2, layer_types=["full_attention", "sliding_attention"]))
    assert md[SWA_KEY.format(arch="gemma2")] == [False, True]


def write_reference(ckpt: Path) -> dict:
    """transformers' logits for the fixture prompt (scripts/make_tiny_models.py's reference())."""
    code = ("import sys, numpy as np; from pathlib import Path; sys.path.insert(0, sys.argv[1]); "
            "import make_tiny_models as m; np.savez(sys.argv[2], **m.reference(Path(sys.argv[3])))")
    out = ckpt / "reference.npz"
    subprocess.run([sys.executable, "-c", code, str(ROOT / "scripts"), str(out), str(ckpt)], check=True)
    return dict(np.load(out))


def test_listed_layout_runs_in_llama_cpp(tmp_path: Path):
    """The gemma3 fixture with its global layer moved to the front: llama.cpp follows the list,
    and the file the converter would write (no list: layers 0-4 sliding, 5 global) does not."""
    ckpt = tmp_path / "gemma3-global-first"
    shutil.copytree(GEMMA3, ckpt)
    types = ["full_attention"] + ["sliding_attention"] * 5
    (ckpt / "config.json").write_text(json.dumps(config_of(GEMMA3, layer_types=types)))
    ref = write_reference(ckpt)
    convert(ckpt, tmp_path / "ours.gguf", "F32")
    assert gguf.GGUFReader(tmp_path / "ours.gguf").fields[SWA_KEY.format(arch="gemma3")].contents() == \
        [False] + [True] * 5
    err = relative_error(llama_logits(tmp_path / "ours.gguf", ref["tokens"]), ref["logits"])
    assert err <= 1e-4, err
    oracle_convert(ckpt, tmp_path / "theirs.gguf", "f32")
    err_theirs = relative_error(llama_logits(tmp_path / "theirs.gguf", ref["tokens"]), ref["logits"])
    report(f"gemma3 global-layer-first layout, F32: qconvert {err:.2e}, converter (no layer list) {err_theirs:.2e}")
    assert err_theirs > 100 * err, (err_theirs, err)


# -- configs llama.cpp cannot run ------------------------------------------------------------------

@pytest.mark.parametrize("model,over,match", [
    (GEMMA2, {"query_pre_attn_scalar": 256}, "query_pre_attn_scalar 256"),
    (GEMMA3, {"query_pre_attn_scalar": 64}, "1/sqrt\\(32\\)"),
    (GEMMA2, {"hidden_activation": "gelu"}, "activation 'gelu'"),
    (GEMMA3, {"attn_logit_softcapping": 50.0}, "attn_logit_softcapping"),
    (GEMMA3, {"rope_parameters": {"full_attention": {"rope_type": "default", "rope_theta": 1e6},
                                  "sliding_attention": {"rope_type": "linear", "factor": 2.0,
                                                        "rope_theta": 1e4}}}, "sliding-window layers"),
])
def test_unrunnable_configs_are_refused(model: Path, over: dict, match: str):
    with pytest.raises(UnsupportedError, match=match) as e:
        for_config(config_of(model, **over)).metadata()
    assert "\n" not in str(e.value)


def test_gemma2_without_soft_cap_is_refused():
    with pytest.raises(UnsupportedError, match="final_logit_softcapping"):
        for_config(config_of(GEMMA2, final_logit_softcapping=None)).metadata()


def test_27b_attention_scale_rule():
    # llama.cpp scales by 1/sqrt(n_embd / n_head) for 46-layer Gemma 2 (27B): 4608 / 32 = 144
    cfg = config_of(GEMMA2, num_hidden_layers=46, hidden_size=4608, num_attention_heads=32,
                    head_dim=128, query_pre_attn_scalar=144, layer_types=None)
    assert metadata(cfg)["gemma2.block_count"] == 46
    with pytest.raises(UnsupportedError, match="1/sqrt\\(144\\)"):
        for_config({**cfg, "query_pre_attn_scalar": 128})


# -- transformers-4 configs ------------------------------------------------------------------------

def test_transformers4_gemma3_config():
    """Gemma 3 as transformers 4 saved it: top-level rope_theta, rope_scaling for the global
    layers, rope_local_base_freq, sliding_window_pattern instead of layer_types."""
    cfg = config_of(GEMMA3)
    for key in ("rope_parameters", "layer_types", "_sliding_window_pattern"):
        cfg.pop(key, None)
    cfg.update(rope_theta=1e6, rope_local_base_freq=10000.0, sliding_window_pattern=6,
               rope_scaling={"factor": 8.0, "rope_type": "linear"})
    ours = metadata(cfg)
    assert ours == metadata(config_of(GEMMA3))
    assert ours["gemma3.rope.freq_base"] == 1e6 and ours["gemma3.rope.freq_base_swa"] == 10000.0
    assert ours["gemma3.rope.scaling.factor"] == 8.0
    cfg["sliding_window_pattern"] = 3  # layers 2 and 5 global
    assert metadata(cfg)[SWA_KEY.format(arch="gemma3")] == [True, True, False] * 2


def test_gemma2_lm_head_is_skipped():
    adapter = for_config(config_of(GEMMA2))
    info = TensorInfo("lm_head.weight", "BF16", (500, 64), Path("x"), 0, 64000)
    norm = TensorInfo("model.norm.weight", "BF16", (64,), Path("x"), 0, 128)
    out = adapter.tensors({"lm_head.weight": info, "model.norm.weight": norm})
    assert [t.gguf_name for t in out] == ["output_norm.weight"]
    assert out[0].transform is not None  # the (1 + w) offset


# -- Gemma3ForConditionalGeneration ----------------------------------------------------------------

# google/gemma-3-4b-it's text_config as the hub has it (transformers 4.50): the sizes, the global
# layers' rope scaling and the window, nothing else. Gemma3TextConfig fills in the rest, for the
# converter (AutoConfig) and transformers alike: vocab_size 262208 (the embedding's rows; the
# tokenizer has 262144 pieces), 8 heads, 4 KV heads, head_dim 256, query_pre_attn_scalar 256,
# rope theta 1e6 (global) and 10000 (local), 131072 positions, rms_norm_eps 1e-6.
HUB_4B_TEXT_CONFIG = {"hidden_size": 2560, "intermediate_size": 10240, "model_type": "gemma3_text",
                      "num_hidden_layers": 34, "rope_scaling": {"factor": 8.0, "rope_type": "linear"},
                      "sliding_window": 1024}
# The same keys with tiny sizes (and the gemma3 fixture's window of 4, so that it matters); the
# defaulted shapes, 262208 x 64 embedding and 8 x 256 query rows, make it some 20M parameters.
TINY_TEXT_CONFIG = {**HUB_4B_TEXT_CONFIG, "hidden_size": 64, "intermediate_size": 96, "num_hidden_layers": 6,
                    "sliding_window": 4}
N_VOCAB, N_HEAD, N_HEAD_KV, HEAD_DIM = 262208, 8, 4, 256


def multimodal_checkpoint(path: Path) -> Path:
    """A random Gemma3ForConditionalGeneration as the hub's 4B is saved: config.json with the
    sparse text_config, the language model under language_model., a (partial, tiny) SigLIP
    tower and projector beside it, float32 weights; gemma3 fixture's tokenizer."""
    path.mkdir()
    for name in ("tokenizer.model", "tokenizer.json", "tokenizer_config.json"):
        shutil.copy(GEMMA3 / name, path / name)
    vision = {"model_type": "siglip_vision_model", "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
              "num_attention_heads": 2, "image_size": 28, "patch_size": 14, "vision_use_head": False}
    (path / "config.json").write_text(json.dumps({
        "architectures": ["Gemma3ForConditionalGeneration"], "boi_token_index": 255999, "eoi_token_index": 256000,
        "eos_token_id": [1, 106], "image_token_index": 262144, "initializer_range": 0.02, "mm_tokens_per_image": 1,
        "model_type": "gemma3", "text_config": TINY_TEXT_CONFIG, "torch_dtype": "bfloat16",
        "transformers_version": "4.50.0.dev0", "vision_config": vision}, indent=2))
    rng = np.random.default_rng(3)

    def w(*shape):
        return (rng.standard_normal(shape) * 0.05).astype(np.float32)

    def norm(n, lo=0.5, hi=1.5):  # applied gains in [lo, hi), stored as gain - 1 (Gemma applies 1 + w)
        return rng.uniform(lo - 1, hi - 1, n).astype(np.float32)

    h, ff = TINY_TEXT_CONFIG["hidden_size"], TINY_TEXT_CONFIG["intermediate_size"]
    q, kv = N_HEAD * HEAD_DIM, N_HEAD_KV * HEAD_DIM
    lm = "language_model.model."
    tensors = {lm + "embed_tokens.weight": w(N_VOCAB, h), lm + "norm.weight": norm(h)}
    for i in range(TINY_TEXT_CONFIG["num_hidden_layers"]):
        p = f"{lm}layers.{i}."
        tensors.update({p + "self_attn.q_proj.weight": w(q, h), p + "self_attn.k_proj.weight": w(kv, h),
                        p + "self_attn.v_proj.weight": w(kv, h), p + "self_attn.o_proj.weight": w(h, q),
                        p + "self_attn.q_norm.weight": norm(HEAD_DIM), p + "self_attn.k_norm.weight": norm(HEAD_DIM),
                        p + "mlp.gate_proj.weight": w(ff, h), p + "mlp.up_proj.weight": w(ff, h),
                        p + "mlp.down_proj.weight": w(h, ff)})
        for name in ("input_layernorm", "post_attention_layernorm", "pre_feedforward_layernorm"):
            tensors[f"{p}{name}.weight"] = norm(h)
        # small, as in the fixtures (scripts/make_tiny_models.py GEMMA_FFN_POST_NORM): the FFN's
        # share keeps llama.cpp's F16-table GELU error far below the F32 bound
        tensors[f"{p}post_feedforward_layernorm.weight"] = norm(h, 0.02, 0.08)
    tensors.update({"vision_tower.vision_model.embeddings.patch_embedding.weight": w(32, 3, 14, 14),
                    "vision_tower.vision_model.encoder.layers.0.self_attn.q_proj.weight": w(32, 32),
                    "vision_tower.vision_model.post_layernorm.weight": norm(32),
                    "multi_modal_projector.mm_input_projection_weight": w(32, h),
                    "multi_modal_projector.mm_soft_emb_norm.weight": norm(32)})
    save_file(tensors, str(path / "model.safetensors"))
    return path


# transformers' logits for the multimodal checkpoint (text only), in a subprocess: tests never
# import torch themselves.
MM_LOGITS = """
import sys, numpy as np, torch
from transformers import AutoModelForImageTextToText
model = AutoModelForImageTextToText.from_pretrained(sys.argv[1], dtype=torch.float32, attn_implementation="eager")
tokens = torch.from_numpy(np.load(sys.argv[2]).astype(np.int64))[None]
with torch.no_grad():
    np.save(sys.argv[3], model.eval()(input_ids=tokens).logits[0].float().numpy())
"""


def transformers_logits(ckpt: Path, tokens: np.ndarray, work: Path) -> np.ndarray:
    np.save(work / "tokens.npy", tokens)
    proc = subprocess.run([sys.executable, "-c", MM_LOGITS, str(ckpt), str(work / "tokens.npy"),
                           str(work / "logits.npy")], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return np.load(work / "logits.npy")


def keys(reader: gguf.GGUFReader) -> dict:
    """Metadata but the header counts and what is named after the folder."""
    return {k: f.contents() for k, f in reader.fields.items()
            if not k.startswith(("GGUF.", "general.name", "general.size_label", "qconvert."))}


def test_gemma3_for_conditional_generation(tmp_path: Path):
    """The hub's sparse text_config: transformers' defaults apply (the vocabulary padded to the
    embedding's 262208 rows, 8 heads of 256, ...); llama.cpp computes transformers' logits, and
    the file equals the converter's, which reads the config through transformers."""
    assert TINY_TEXT_CONFIG.keys() == HUB_4B_TEXT_CONFIG.keys()
    ckpt = multimodal_checkpoint(tmp_path / "gemma3-mm")
    tokens = np.load(GEMMA3 / "reference.npz")["tokens"]
    want = transformers_logits(ckpt, tokens, tmp_path)
    assert want.shape == (len(tokens), N_VOCAB)

    convert(ckpt, tmp_path / "mm.gguf", "F32")
    reader = gguf.GGUFReader(tmp_path / "mm.gguf")
    md = keys(reader)
    assert (md["gemma3.attention.head_count"], md["gemma3.attention.head_count_kv"],
            md["gemma3.attention.key_length"], md["gemma3.context_length"]) == (N_HEAD, N_HEAD_KV, HEAD_DIM, 131072)
    assert (md["gemma3.rope.freq_base"], md["gemma3.rope.freq_base_swa"]) == (1e6, 1e4)
    assert len(md["tokenizer.ggml.tokens"]) == N_VOCAB  # tokenizer.model's pieces, padded with [PAD{i}]
    tensors = {t.name: t for t in reader.tensors}
    assert list(tensors["token_embd.weight"].shape) == [64, N_VOCAB]
    assert len(tensors) == 1 + 1 + 6 * 13  # embedding, output norm, 13 a layer: no vision tensor
    err = relative_error(llama_logits(tmp_path / "mm.gguf", tokens), want)
    report(f"gemma3 ConditionalGeneration (hub's sparse config), F32: {err:.2e}")
    assert err <= 1e-4, err

    oracle_convert(ckpt, tmp_path / "theirs.gguf", "f16")
    convert(ckpt, tmp_path / "ours.gguf", "F16")
    ours, theirs = gguf.GGUFReader(tmp_path / "ours.gguf"), gguf.GGUFReader(tmp_path / "theirs.gguf")
    assert [(t.name, t.data.tobytes()) for t in ours.tensors] == [(t.name, t.data.tobytes()) for t in theirs.tensors]
    assert keys(ours) == keys(theirs)
