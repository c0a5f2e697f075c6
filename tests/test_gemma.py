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
from qconvert.reader import Checkpoint, TensorInfo

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

def multimodal_checkpoint(path: Path) -> Path:
    """The gemma3 fixture as Gemma3ForConditionalGeneration saves it: the language model under
    language_model., a (random, tiny) SigLIP tower and projector beside it, text_config nested."""
    path.mkdir()
    for f in GEMMA3.iterdir():
        if f.is_file() and f.suffix not in (".safetensors", ".npz") and f.name != "config.json":
            shutil.copy(f, path / f.name)
    text = config_of(GEMMA3)
    for key in ("architectures", "dtype", "transformers_version"):
        text.pop(key, None)
    vision = {"model_type": "siglip_vision_model", "hidden_size": 32, "intermediate_size": 64,
              "num_hidden_layers": 1, "num_attention_heads": 2, "image_size": 28, "patch_size": 14}
    (path / "config.json").write_text(json.dumps({
        "architectures": ["Gemma3ForConditionalGeneration"], "model_type": "gemma3", "dtype": "bfloat16",
        "text_config": text, "vision_config": vision, "mm_tokens_per_image": 1, "boi_token_index": 5,
        "eoi_token_index": 6, "image_token_index": 4, "tie_word_embeddings": True}))
    src = Checkpoint.open(GEMMA3)
    tensors = {"language_model." + name: src.load(name) for name in src.tensors}
    src.close()
    rng = np.random.default_rng(0)
    for name, shape in {"vision_tower.vision_model.embeddings.patch_embedding.weight": (32, 3, 14, 14),
                        "vision_tower.vision_model.encoder.layers.0.self_attn.q_proj.weight": (32, 32),
                        "vision_tower.vision_model.post_layernorm.weight": (32,),
                        "multi_modal_projector.mm_input_projection_weight": (32, 64),
                        "multi_modal_projector.mm_soft_emb_norm.weight": (32,)}.items():
        tensors[name] = rng.standard_normal(shape).astype(np.float32)
    save_file(tensors, str(path / "model.safetensors"))
    return path


def keys(reader: gguf.GGUFReader) -> dict:
    """Metadata but the header counts and what is named after the folder."""
    return {k: f.contents() for k, f in reader.fields.items()
            if not k.startswith(("GGUF.", "general.name", "general.size_label"))}


def test_gemma3_for_conditional_generation(tmp_path: Path):
    ckpt = multimodal_checkpoint(tmp_path / "gemma3-mm")
    convert(ckpt, tmp_path / "mm.gguf", "F32")
    convert(GEMMA3, tmp_path / "text.gguf", "F32")
    mm, text = gguf.GGUFReader(tmp_path / "mm.gguf"), gguf.GGUFReader(tmp_path / "text.gguf")
    # the same language model: tensors, bytes, and every key but the name
    assert [(t.name, t.data.tobytes()) for t in mm.tensors] == [(t.name, t.data.tobytes()) for t in text.tensors]
    assert keys(mm) == keys(text)
    ref = np.load(GEMMA3 / "reference.npz")
    assert relative_error(llama_logits(tmp_path / "mm.gguf", ref["tokens"]), ref["logits"]) <= 1e-4
    # and what llama.cpp's converter makes of the same checkpoint (its text model, F16)
    oracle_convert(ckpt, tmp_path / "theirs.gguf", "f16")
    convert(ckpt, tmp_path / "ours.gguf", "F16")
    ours, theirs = gguf.GGUFReader(tmp_path / "ours.gguf"), gguf.GGUFReader(tmp_path / "theirs.gguf")
    assert [(t.name, t.data.tobytes()) for t in ours.tensors] == [(t.name, t.data.tobytes()) for t in theirs.tensors]
    assert keys(ours) == keys(theirs)
