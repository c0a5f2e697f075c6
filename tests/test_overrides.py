"""llama-quantize's overrides in the planner, --no-fallback, --override-kv, imatrix files."""

from __future__ import annotations

import struct
from pathlib import Path

import gguf
import numpy as np
import pytest

from conftest import MODELS, run_cli, write_gguf_imatrix
from qconvert.errors import QuantizationError, UsageError
from qconvert.imatrix import load_imatrix
from qconvert.options import parse_kv_override, parse_tensor_type, parse_type
from qconvert.planner import Overrides, plan, recipe_for, summarize, use_more_bits
from qconvert.report import fallback_line, tensor_reports
from qconvert.types import ModelFacts, SourceTensor

T = gguf.GGMLQuantizationType


def src(name: str, *shape: int, dtype: str = "BF16") -> SourceTensor:
    return SourceTensor(name, tuple(shape), name, dtype)


def model(n_layer: int, cols: int = 512, ff: int = 1024, tied: bool = False) -> list[SourceTensor]:
    t = [src("token_embd.weight", 1000, cols)]
    for i in range(n_layer):
        p = f"blk.{i}."
        t += [src(p + "attn_norm.weight", cols), src(p + "attn_q.weight", cols, cols),
              src(p + "attn_k.weight", cols // 4, cols), src(p + "attn_v.weight", cols // 4, cols),
              src(p + "attn_output.weight", cols, cols), src(p + "ffn_gate.weight", ff, cols),
              src(p + "ffn_up.weight", ff, cols), src(p + "ffn_down.weight", cols, ff)]
    t.append(src("output_norm.weight", cols))
    return t if tied else t + [src("output.weight", 1000, cols)]


def types(tensors, mix: str, n_layer: int | None = None, **opts) -> dict[str, T]:
    facts = ModelFacts(n_layer=n_layer or 0, n_gqa=4) if n_layer else None
    return {r.gguf_name: r.qtype for r in plan(tensors, recipe_for(mix), facts, Overrides(**opts))}


def test_use_more_bits_layers():
    # llama-quantize's choice for 32 layers: the first 4, the last 4, and every third between
    assert [i for i in range(32) if use_more_bits(i, 32)] == [0, 1, 2, 3, 6, 9, 12, 15, 18, 21, 24, 27, 28, 29, 30, 31]


def test_q4_k_m_mix_rules():
    got = types(model(8), "Q4_K_M", 8)
    assert got["output.weight"] == T.Q6_K and got["token_embd.weight"] == T.Q4_K
    assert [got[f"blk.{i}.attn_v.weight"] for i in range(8)] == [
        T.Q6_K if use_more_bits(i, 8) else T.Q4_K for i in range(8)]
    assert got["blk.3.attn_q.weight"] == got["blk.3.ffn_up.weight"] == T.Q4_K


def test_counters_follow_layer_numbers_not_file_order():
    # written as the converter writes them (blk.10 before blk.2); llama-quantize walks its
    # weights map in layer order, so its counters, and ours, follow layer numbers
    layers = sorted(range(16), key=str)
    tensors = [t for i in layers for t in model(16)[1 + 8 * i: 9 + 8 * i]]
    got = types(tensors, "Q4_K_M", 16)
    for layer in range(16):
        want = T.Q6_K if use_more_bits(layer, 16) else T.Q4_K
        assert got[f"blk.{layer}.ffn_down.weight"] == got[f"blk.{layer}.attn_v.weight"] == want, layer


def test_overridden_tensors_do_not_advance_the_counters():
    # blk.0.attn_v is set by --tensor-type, so llama-quantize's attn_v counter starts at blk.1
    got = types(model(8), "Q4_K_M", 8, tensor_types=(("blk\\.0\\.attn_v", T.Q8_0),))
    assert got["blk.0.attn_v.weight"] == T.Q8_0
    assert [got[f"blk.{i}.attn_v.weight"] for i in range(1, 8)] == [
        T.Q6_K if use_more_bits(i, 8) else T.Q4_K for i in range(7)]


def test_overrides_in_llama_quantize_order():
    got = types(model(2), "Q4_K_M", 2, output_tensor_type=T.Q8_0, token_embedding_type=T.Q5_K,
                tensor_types=(("attn_q", T.Q8_0), ("ATTN_Q|attn_k", T.Q5_K)))
    assert got["output.weight"] == T.Q8_0 and got["token_embd.weight"] == T.Q5_K
    assert got["blk.0.attn_q.weight"] == T.Q8_0       # the first matching pattern wins
    assert got["blk.0.attn_k.weight"] == T.Q5_K       # patterns are lower-cased
    assert got["blk.0.attn_norm.weight"] == T.F32     # never quantized, whatever the patterns


def test_pure_leave_output_and_tied_output():
    got = types(model(8), "Q4_K_M", 8, pure=True)
    assert set(got[f"blk.{i}.attn_v.weight"] for i in range(8)) == {T.Q4_K}
    assert got["output.weight"] == T.Q4_K
    assert types(model(2), "Q4_K_M", 2, leave_output_tensor=True)["output.weight"] == T.BF16
    tied = types(model(2, tied=True), "Q4_K_M", 2, output_tensor_type=T.Q8_0)
    assert tied["token_embd.weight"] == T.Q8_0


def test_imatrix_changes_q4_0_ffn_down():
    plain = types(model(8), "Q4_0", 8)
    weighted = types(model(8), "Q4_0", 8, has_imatrix=True)
    assert plain["blk.0.ffn_down.weight"] == T.Q4_0
    assert weighted["blk.0.ffn_down.weight"] == T.Q4_1 and weighted["blk.1.ffn_down.weight"] == T.Q4_0


def test_fallbacks_and_no_fallback():
    tensors = model(2, cols=576, ff=1536)
    rows = plan(tensors, recipe_for("Q4_K_M"), ModelFacts(n_layer=2))
    q = next(r for r in rows if r.gguf_name == "blk.1.attn_q.weight")
    assert (q.qtype, q.wanted) == (T.Q5_0, T.Q4_K) and "row length 576" in q.reason
    down = next(r for r in rows if r.gguf_name == "blk.1.ffn_down.weight")  # rows of 1536 = 6 x 256
    assert not down.fell_back
    line = fallback_line(tensor_reports(rows), summarize(rows)[1])
    # per layer: q, k, v, output, gate, up (rows of 576); plus token_embd; output.weight goes straight
    # to Q8_0 (not a fallback); blk.1.attn_v is a use_more_bits layer (Q6_K)
    assert line.startswith("13 of 19 tensors fell back (Q4_K->Q5_0 x12, Q6_K->Q8_0 x1): ")
    assert "bits per weight instead of" in line
    with pytest.raises(QuantizationError, match="--no-fallback: 13 tensors would fall back"):
        plan(tensors, recipe_for("Q4_K_M"), ModelFacts(n_layer=2), Overrides(no_fallback=True))


def test_named_type_that_does_not_fit_is_an_error():
    with pytest.raises(QuantizationError, match="--token-embedding-type Q4_K: token_embd.weight has rows of 576"):
        plan(model(1, cols=576), recipe_for("Q4_K_M"), None, Overrides(token_embedding_type=T.Q4_K))


def test_option_parsing():
    assert parse_type("q4_k", "-x") == T.Q4_K
    assert parse_tensor_type("attn_v=q8_0") == ("attn_v", T.Q8_0)
    kv = parse_kv_override("general.name=str:Mine")
    assert (kv.key, kv.value, kv.vtype) == ("general.name", "Mine", gguf.GGUFValueType.STRING)
    assert parse_kv_override("x.n=int:-5").value == 5  # llama-quantize writes |value| as uint32
    assert parse_kv_override("x.b=bool:true").value is True
    for bad in ("nokey", "x=int", "x=int:abc", "x=bool:yes", "x=str:" + "a" * 128, "x=list:1"):
        with pytest.raises(UsageError):
            parse_kv_override(bad)
    for bad in ("attn_v", "=q8_0", "attn_v=", "attn_v=q9_9", "attn_(=q8_0"):
        with pytest.raises(UsageError):
            parse_tensor_type(bad)


def test_override_kv_written(tmp_path: Path):
    out = tmp_path / "o.gguf"
    proc = run_cli("quantize", MODELS / "llama-spm-f32", "-t", "F16", "-o", out, "--no-progress",
                   "--override-kv", "general.name=str:Renamed", "--override-kv", "llama.context_length=int:64")
    assert proc.returncode == 0, proc.stderr
    fields = gguf.GGUFReader(out).fields
    assert fields["general.name"].contents() == "Renamed"
    assert fields["llama.context_length"].contents() == 64
    assert fields["llama.context_length"].types == [gguf.GGUFValueType.UINT32]


# -- imatrix files --------------------------------------------------------------------------------

def test_gguf_imatrix_divides_by_rounded_counts(tmp_path: Path):
    sums = np.arange(1, 9, dtype=np.float32).reshape(2, 4)
    path = tmp_path / "m.gguf"
    write_gguf_imatrix(path, {"blk.0.ffn_down.weight": (sums, np.array([2.4, 0.0])),
                              "blk.0.attn_q.weight": (np.full(4, 6.0), np.array([3.0]))})
    m = load_imatrix(path)
    w = m.for_tensor("blk.0.ffn_down.weight", 4, n_expert=2)
    assert np.array_equal(w, np.array([[0.5, 1.0, 1.5, 2.0], [1, 1, 1, 1]], dtype=np.float32))
    assert np.array_equal(m.for_tensor("blk.0.attn_q.weight", 4), np.full((1, 4), 2.0, np.float32))
    assert m.for_tensor("blk.9.attn_q.weight", 4) is None
    with pytest.raises(UsageError, match="has 4 weights, the tensor needs 8"):
        m.for_tensor("blk.0.attn_q.weight", 8)
    assert m.metadata() == [
        ("quantize.imatrix.file", str(path), gguf.GGUFValueType.STRING),
        ("quantize.imatrix.dataset", "wiki.train.raw", gguf.GGUFValueType.STRING),
        ("quantize.imatrix.entries_count", 2, gguf.GGUFValueType.UINT32),
        ("quantize.imatrix.chunks_count", 7, gguf.GGUFValueType.UINT32)]


def test_legacy_imatrix(tmp_path: Path):
    path = tmp_path / "m.dat"
    name = b"blk.0.attn_v.weight"
    vals = np.array([3.0, 6.0, 9.0], dtype=np.float32)
    data = struct.pack("<i", 1) + struct.pack("<i", len(name)) + name + struct.pack("<ii", 3, 3) + vals.tobytes()
    data += struct.pack("<i", 12) + struct.pack("<i", 4) + b"wiki"
    path.write_bytes(data)
    m = load_imatrix(path)
    assert np.array_equal(m.entries["blk.0.attn_v.weight"], vals / np.float32(3))
    assert (m.chunk_count, m.datasets) == (12, ["wiki"])


def test_imatrix_for_expert_stack(tmp_path: Path):
    """A 3-D expert tensor's entry as llama-imatrix writes it (save_imatrix: in_sum2
    [n_expert, n_per_row], counts [n_expert, 1], one count per expert) gives one row of weights
    per expert: sums / lround(count), ones where the count rounds to 0 (tools/quantize load_imatrix)."""
    name = "blk.1.ffn_up_exps.weight"
    sums = np.array([[3, 6, 9, 12],       # count 3   -> 1, 2, 3, 4
                     [0, 0, 0, 0],        # count 0   -> an expert no token reached: ones
                     [3, 7.5, 1.5, 30],   # count 2.5 -> lround 3 (half away from zero) -> 1, 2.5, 0.5, 10
                     [8, 8, 8, 8]],       # count 0.4 -> lround 0: ones
                    dtype=np.float32)
    path = tmp_path / "moe.gguf"
    write_gguf_imatrix(path, {name: (sums, np.array([[3.0], [0.0], [2.5], [0.4]]))})
    m = load_imatrix(path)
    assert np.array_equal(m.for_tensor(name, 4, n_expert=4),
                          np.array([[1, 2, 3, 4], [1, 1, 1, 1], [1, 2.5, 0.5, 10], [1, 1, 1, 1]], np.float32))
    with pytest.raises(UsageError, match="has 16 weights, the tensor needs 8"):
        m.for_tensor(name, 4, n_expert=2)

    # the legacy format stores (sums / count) * ncall per expert, and 1 * ncall for an expert
    # with count 0 (save_imatrix_legacy); the loader divides by ncall
    legacy = tmp_path / "moe.dat"
    vals = np.array([4.0, 8.0, 4.0, 4.0], dtype=np.float32)  # 2 experts x 2 columns, ncall 4
    legacy.write_bytes(struct.pack("<ii", 1, len(name)) + name.encode() + struct.pack("<ii", 4, 4)
                       + vals.tobytes())
    assert np.array_equal(load_imatrix(legacy).for_tensor(name, 2, n_expert=2),
                          np.array([[1, 2], [1, 1]], np.float32))


@pytest.mark.parametrize("content", [b"", b"\x05\x00\x00\x00abc", b"GGUFnot really"])
def test_bad_imatrix_files(tmp_path: Path, content: bytes):
    path = tmp_path / "bad.dat"
    path.write_bytes(content)
    with pytest.raises(UsageError, match="imatrix"):
        load_imatrix(path)


def test_gguf_imatrix_without_metadata_is_refused(tmp_path: Path):
    path = tmp_path / "m.gguf"
    w = gguf.GGUFWriter(path, "imatrix")
    w.add_tensor("a.in_sum2", np.ones(4, np.float32))
    w.add_tensor("a.counts", np.ones(1, np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    with pytest.raises(UsageError, match="lacks imatrix.datasets"):
        load_imatrix(path)


def test_gguf_imatrix_sums_not_per_count_are_refused(tmp_path: Path):
    path = tmp_path / "m.gguf"
    write_gguf_imatrix(path, {"blk.0.ffn_up_exps.weight": (np.ones(6, np.float32), np.ones(4))})
    with pytest.raises(UsageError, match="has 6 sums for 4 counts"):
        load_imatrix(path)


def test_imatrix_conversion_end_to_end(tmp_path: Path):
    """--imatrix through the CLI: weighted bytes where ggml weights, metadata as llama-quantize."""
    from qconvert.convert import prepare
    model_dir = MODELS / "llama-k256-bf16"
    job = prepare(model_dir, "Q4_K_M")
    rng = np.random.default_rng(3)
    entries = {r.gguf_name: (rng.random(r.shape[-1]).astype(np.float32) * 10, np.array([10.0]))
               for r in job.rows if r.qtype not in (T.F32,)}
    imatrix = tmp_path / "imatrix.gguf"
    write_gguf_imatrix(imatrix, entries)

    plain, weighted = tmp_path / "plain.gguf", tmp_path / "weighted.gguf"
    for out, extra in ((plain, ()), (weighted, ("--imatrix", imatrix))):
        proc = run_cli("quantize", model_dir, "-t", "Q4_K_M", "-o", out, "--no-progress", *extra)
        assert proc.returncode == 0, proc.stderr
    a, b = gguf.GGUFReader(plain), gguf.GGUFReader(weighted)
    fields = b.fields
    assert fields["quantize.imatrix.file"].contents() == str(imatrix)
    assert fields["quantize.imatrix.entries_count"].contents() == len(entries)
    assert fields["quantize.imatrix.chunks_count"].contents() == 7
    assert "quantize.imatrix.file" not in a.fields
    ta, tb = {t.name: t for t in a.tensors}, {t.name: t for t in b.tensors}
    from qconvert import quants
    changed = 0
    for name, t in tb.items():
        assert t.tensor_type == ta[name].tensor_type
        if quants.get(t.tensor_type).imatrix == "weighted" and name in entries:
            changed += not np.array_equal(np.asarray(t.data), np.asarray(ta[name].data))
    assert changed >= 10


def test_imatrix_for_another_model_fails_cleanly(tmp_path: Path):
    imatrix = tmp_path / "imatrix.gguf"
    write_gguf_imatrix(imatrix, {"blk.0.attn_q.weight": (np.ones(100, np.float32), np.array([1.0]))})
    out = tmp_path / "o.gguf"
    proc = run_cli("quantize", MODELS / "llama-k256-bf16", "-t", "Q4_K_M", "-o", out, "--imatrix", imatrix)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "blk.0.attn_q.weight has 100 weights, the tensor needs 256" in proc.stderr
    assert not out.exists()


def test_70b_attn_v_gets_q5_k():
    # llama.cpp's LLM_TYPE_70B (80 layers, grouped-query attention): attn_v Q3_K/Q4_K -> Q5_K
    tensors = model(80, cols=256, ff=256)
    big = {r.gguf_name: r.qtype for r in plan(tensors, recipe_for("Q4_K_M"),
                                              ModelFacts(n_layer=80, n_gqa=4, is_70b=True))}
    small = types(tensors, "Q4_K_M", 80)
    more = [i for i in range(80) if use_more_bits(i, 80)]
    assert {big[f"blk.{i}.attn_v.weight"] for i in range(80) if i not in more} == {T.Q5_K}
    assert {small[f"blk.{i}.attn_v.weight"] for i in range(80) if i not in more} == {T.Q4_K}
    assert {big[f"blk.{i}.attn_v.weight"] for i in more} == {T.Q6_K}
    assert big["blk.5.attn_q.weight"] == T.Q4_K


def test_llama_adapter_recognizes_the_70b_shape():
    from qconvert.arch import for_config
    cfg = {"architectures": ["LlamaForCausalLM"], "num_hidden_layers": 80, "hidden_size": 8192,
           "num_attention_heads": 64, "num_key_value_heads": 8, "vocab_size": 32000}
    assert for_config(cfg).model_facts().is_70b
    assert not for_config({**cfg, "num_key_value_heads": 64}).model_facts().is_70b  # 65B


def test_70b_is_decided_per_architecture():
    """llama.cpp's loaders decide LLM_TYPE_70B each their own way (arch/base.py LLM_TYPE_70B):
    qwen2's calls any 80-layer model 70B (Qwen1.5-72B has no GQA), qwen3's and the others never."""
    from qconvert.arch import for_config
    qwen15_72b = {"architectures": ["Qwen2ForCausalLM"], "num_hidden_layers": 80, "hidden_size": 8192,
                  "intermediate_size": 24576, "num_attention_heads": 64, "num_key_value_heads": 64,
                  "vocab_size": 152064}
    assert for_config(qwen15_72b).model_facts().is_70b
    big = {"num_hidden_layers": 80, "hidden_size": 8192, "intermediate_size": 28672, "num_attention_heads": 64,
           "num_key_value_heads": 8}
    assert not for_config({**big, "architectures": ["Qwen3ForCausalLM"]}).model_facts().is_70b
    for arch in ("Phi3ForCausalLM", "Gemma2ForCausalLM"):
        assert not for_config({**big, "architectures": [arch], "head_dim": 128,
                               "query_pre_attn_scalar": 128}).model_facts().is_70b, arch
    assert for_config({**big, "architectures": ["MistralForCausalLM"]}).model_facts().is_70b  # llama's loader
