"""qconvert verify: files made by qconvert, by llama.cpp's converter and by llama-quantize pass
against their checkpoint, bytes exact; damaged files, files missing or adding tensors, and files
of another model fail, naming the tensors."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import gguf
import numpy as np
import pytest
from gguf import GGMLQuantizationType as T
from safetensors.numpy import save_file

from conftest import (MODELS, ROOT, assert_generated_close, check_report, generated_tensors, memoized, oracle_vocab_pre,
                      report, run_cli_inprocess, run_json)
from qconvert import quants, verify as verify_mod
from qconvert.convert import convert, prepare_model
from qconvert.errors import GGUFError
from qconvert.gguf_read import read_gguf
from qconvert.reader import Checkpoint
from qconvert.verify import LIMITS, verify
from qconvert.writer import Split

sys.path.insert(0, str(ROOT / "scripts"))
from llama_quantize import llama_quantize  # noqa: E402
from oracle_convert import oracle_convert  # noqa: E402

K256 = MODELS / "llama-k256-bf16"  # rows of 256: every K-quant, as llama-quantize's mixes choose them
FIXTURE_MODELS = sorted(p.name for p in MODELS.iterdir() if (p / "config.json").is_file())


@pytest.fixture(scope="module")
def ours(tmp_path_factory):
    """(model, type) -> qconvert's file."""
    def make(model: str, qtype: str) -> Path:
        out = tmp_path_factory.mktemp("ours") / f"{model}-{qtype}.gguf"
        convert(MODELS / model, out, qtype, threads=2)
        return out

    return memoized(make)


@pytest.fixture(scope="module")
def theirs_f32(tmp_path_factory) -> Path:
    """llama.cpp's convert_hf_to_gguf.py output of K256, --outtype f32."""
    out = tmp_path_factory.mktemp("oracle") / "k256-f32.gguf"
    oracle_convert(K256, out, "f32", vocab_pre=oracle_vocab_pre(K256))
    return out


def json_inprocess(*args):
    """run_json's (process, validated report), run in this process (a new interpreter costs seconds)."""
    proc = run_cli_inprocess(*args, "--json")
    lines = proc.stdout.splitlines()
    assert len(lines) == 1, (proc.stdout[-2000:], proc.stderr[-2000:])
    return proc, check_report(json.loads(lines[0]))


def by_name(r) -> dict:
    return {t.name: t for t in r.tensors}


def copy_gguf(src: Path, out: Path, edit=None, extra: dict[str, np.ndarray] | None = None,
              split_max_tensors: int = 0) -> Path:
    """A GGUF written by gguf-py's GGUFWriter from the tensors of a real output (its architecture
    key kept): `edit(name, type, data)` returns the (type, data) to write, or None to leave the
    tensor out; `extra` tensors (F32) are added. With `split_max_tensors`, a split set as
    llama.cpp's converter writes one (--split-max-tensors), OUT-00001-of-0000N.gguf..."""
    reader = gguf.GGUFReader(src)
    arch = bytes(reader.fields["general.architecture"].parts[-1]).decode()
    w = gguf.GGUFWriter(out, arch, split_max_tensors=split_max_tensors)
    for t in reader.tensors:
        qtype, data = T(t.tensor_type), np.array(t.data)
        if edit is not None:
            got = edit(t.name, qtype, data)
            if got is None:
                continue
            qtype, data = got
        if qtype in (T.F32, T.F16, T.F64):
            w.add_tensor(t.name, data)
        else:
            w.add_tensor(t.name, data, raw_dtype=qtype)
    for name, data in (extra or {}).items():
        w.add_tensor(name, data)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return out


# -- files that must pass ------------------------------------------------------------------------

def test_qconvert_k_quant_mix_passes_exact(ours):
    r = verify(ours("llama-k256-bf16", "Q4_K_M"), K256, threads=2)
    assert r.ok and not r.failed and not r.problems, r.failed
    assert {t.type for t in r.tensors} == {"F32", "Q4_K", "Q6_K"}
    for t in r.tensors:
        assert t.exact is True and t.exact_unknown is None, t.name
        assert t.rel_rms <= t.limit == LIMITS[T[t.type]], t.name
        assert t.max_abs >= 0 and t.expected_shape == t.shape
    # quantization leaves an error, and the figures show it
    assert min(t.rel_rms for t in r.tensors if t.type == "Q4_K") > 0.01


@pytest.mark.parametrize("model", FIXTURE_MODELS)
def test_every_architecture_passes(model, ours):
    """Every adapter's transforms (Q/K row orders, stacked experts, norm offsets, transposed
    Conv1D weights, generated rope factors) are applied when reading the checkpoint: qconvert's
    Q4_K_M file of each fixture comes out exact."""
    r = verify(ours(model, "Q4_K_M"), MODELS / model, threads=2)
    assert r.ok, [(t.name, t.problem, t.rel_rms) for t in r.tensors if t.problem]
    assert all(t.exact for t in r.tensors), [t.name for t in r.tensors if not t.exact]
    assert r.architecture == r.expected_architecture


def test_llama_cpp_converter_and_llama_quantize_pass_exact(theirs_f32, tmp_path):
    """Files of llama.cpp's own tools: the converter's F32 file, and llama-quantize's Q4_K_M and
    Q2_K of it, pass against the checkpoint with every tensor byte-exact (qconvert's quantizers
    write ggml's bytes)."""
    files = {"converter F32": theirs_f32}
    for mix in ("Q4_K_M", "Q2_K"):
        files[f"llama-quantize {mix}"] = llama_quantize(theirs_f32, tmp_path / f"{mix}.gguf", mix, nthread=2)
    for what, path in files.items():
        r = verify(path, K256, threads=2)
        assert r.ok, (what, r.failed)
        assert all(t.exact for t in r.tensors), (what, [t.name for t in r.tensors if not t.exact])
        worst = max(r.tensors, key=lambda t: t.rel_rms / t.limit)
        report(f"verify {what} of llama-k256: worst tensor {worst.name} {worst.type} rel RMS {worst.rel_rms:.3g} "
               f"(limit {worst.limit})")
    assert {t.type for t in verify(files["llama-quantize Q2_K"], K256).tensors} >= {"Q2_K", "Q3_K"}


def test_requantized_from_f16_passes_not_exact(ours, tmp_path):
    """llama-quantize's Q8_0 of an F16 file of an F32 checkpoint: the F16 step rounds the
    values first, so the bytes are not qconvert's (exact false), but the file passes."""
    theirs = llama_quantize(ours("llama-spm-f32", "F16"), tmp_path / "q8.gguf", "Q8_0", nthread=2)
    r = verify(theirs, MODELS / "llama-spm-f32")
    assert r.ok, r.failed
    inexact = [t for t in r.tensors if t.exact is False]
    assert inexact and {t.type for t in inexact} == {"Q8_0"}
    assert all(t.exact for t in r.tensors if t.type == "F32")


def test_llama_only_types_pass_exact_unknown(theirs_f32, tmp_path):
    """Types only llama.cpp writes (IQ3_S of the IQ3_M mix) are judged by their error, their bytes
    not (exact null, type_not_written); TQ2_0, ternary, has no limit: only its bytes can judge it.
    IQ4_NL and IQ4_XS, which qconvert writes too, are judged by both: llama-quantize's bytes are
    the ones qconvert makes."""
    for mix, qtype in (("IQ4_NL", "IQ4_NL"), ("IQ4_XS", "IQ4_XS"), ("IQ3_M", "IQ3_S")):
        r = verify(llama_quantize(theirs_f32, tmp_path / f"{mix}.gguf", mix, nthread=2), K256)
        assert r.ok, (mix, r.failed)
        judged = [t for t in r.tensors if t.type == qtype]
        if T[qtype] in quants.REGISTRY:
            assert judged and all(t.exact is True and t.exact_unknown is None for t in judged)
        else:
            assert judged and all(t.exact is None and t.exact_unknown == "type_not_written" for t in judged)
        assert all(0 < t.rel_rms <= t.limit == LIMITS[T[qtype]] for t in judged)
        assert all(t.exact for t in r.tensors if T[t.type] in quants.REGISTRY)
    # TQ2_0, ternary, has no limit: its bytes, exactly qconvert's, pass it; one flipped trit fails it
    r = verify(llama_quantize(theirs_f32, tmp_path / "TQ2_0.gguf", "TQ2_0", nthread=2), K256)
    tq = [t for t in r.tensors if t.type == "TQ2_0"]
    assert r.ok and tq and all(t.exact and t.limit is None for t in tq)

    def flip(name, qtype, data):
        if name != "blk.0.attn_q.weight":
            return qtype, data
        data = np.array(data, copy=True)
        data.reshape(-1)[5] ^= 0x03
        return qtype, data

    r = verify(copy_gguf(tmp_path / "TQ2_0.gguf", tmp_path / "flipped.gguf", flip), K256)
    assert r.failed == ["blk.0.attn_q.weight"] and by_name(r)["blk.0.attn_q.weight"].problem == "unsupported_type"
    assert verify(tmp_path / "flipped.gguf").ok  # its structure and scales are sound


def test_a_type_without_decoder_is_unsupported_not_a_crash(ours, tmp_path):
    """An F64 tensor (gguf-py has no decoder for it): checked for NaN/Inf on its own, and with a
    model reported unsupported_type."""
    def edit(name, qtype, data):
        return (T.F64, np.ones(256, np.float64)) if name == "output_norm.weight" else (qtype, data)

    f64 = copy_gguf(ours("llama-k256-bf16", "Q8_0"), tmp_path / "f64.gguf", edit)
    assert by_name(verify(f64))["output_norm.weight"].type == "F64" and verify(f64).ok
    r = verify(f64, K256)
    assert r.failed == ["output_norm.weight"] and by_name(r)["output_norm.weight"].problem == "unsupported_type"


def test_without_model_a_sound_file_passes(ours):
    r = verify(ours("llama-k256-bf16", "Q4_K_M"))
    assert r.ok and r.model is None and r.expected_architecture is None
    assert all(t.exact is None and t.exact_unknown == "no_model" and t.rel_rms is None for t in r.tensors)
    assert all(t.nonfinite == 0 and t.limit is None for t in r.tensors)


def test_imatrix_file_passes_exact_unknown(tmp_path):
    from conftest import write_gguf_imatrix
    from qconvert.convert import prepare

    rows = prepare(K256, "Q4_K_M").rows
    rng = np.random.default_rng(0)
    entries = {r.gguf_name: (rng.uniform(0.1, 2, (1, r.shape[-1])), np.full((1, 1), 7.0))
               for r in rows if len(r.shape) == 2 and r.gguf_name != "token_embd.weight"}
    write_gguf_imatrix(tmp_path / "imatrix.gguf", entries)
    out = tmp_path / "q.gguf"
    convert(K256, out, "Q4_K_M", imatrix=tmp_path / "imatrix.gguf", threads=2)
    r = verify(out, K256)
    assert r.ok and r.imatrix
    # the quantized tensors' bytes depend on the matrix; the F32 norms' do not, and are exact
    assert all(t.exact is None and t.exact_unknown == "imatrix" for t in r.tensors if t.type in ("Q4_K", "Q6_K"))
    assert all(t.exact is True for t in r.tensors if t.type == "F32")
    assert all(t.rel_rms <= t.limit for t in r.tensors)
    # given the matrix, every tensor's bytes are checked: qconvert's weighted quantizers
    r = verify(out, K256, imatrix=tmp_path / "imatrix.gguf")
    assert r.ok and r.imatrix and all(t.exact is True for t in r.tensors)
    proc, data = json_inprocess("verify", out, K256, "--imatrix", tmp_path / "imatrix.gguf")
    assert proc.returncode == 0 and all(t["exact"] for t in data["tensors"])
    proc, data = json_inprocess("verify", out, "--imatrix", tmp_path / "imatrix.gguf")
    assert proc.returncode == 2 and data["error"]["kind"] == "usage" and "needs MODEL" in data["error"]["message"]
    # another matrix: the weighted tensors' bytes are not what it makes, and say so
    other = {name: (sums * rng.uniform(0.1, 10, sums.shape), counts) for name, (sums, counts) in entries.items()}
    write_gguf_imatrix(tmp_path / "other.gguf", other)
    r = verify(out, K256, imatrix=tmp_path / "other.gguf")
    assert r.ok and {t.type for t in r.tensors if t.exact is False} == {"Q4_K", "Q6_K"}
    # ggml's Q8_0 ignores an importance matrix: such a file is exact all through
    convert(K256, tmp_path / "q8.gguf", "Q8_0", imatrix=tmp_path / "imatrix.gguf", threads=2)
    r = verify(tmp_path / "q8.gguf", K256)
    assert r.ok and r.imatrix and all(t.exact for t in r.tensors)


def test_llama_quantize_with_imatrix(theirs_f32, tmp_path):
    """llama-quantize's Q4_K_M made with an importance matrix (and its quantize.imatrix.* record):
    verify passes it, exact unknown for the weighted types without the matrix, exact everywhere
    with it."""
    from conftest import write_gguf_imatrix
    from qconvert.convert import prepare
    from qconvert.imatrix import load_imatrix

    rng = np.random.default_rng(4)
    entries = {r.gguf_name: (rng.uniform(0.1, 2, (1, r.shape[-1])), np.full((1, 1), 5.0))
               for r in prepare(K256, "Q4_K_M").rows if len(r.shape) == 2}
    write_gguf_imatrix(tmp_path / "imatrix.gguf", entries)
    weights = load_imatrix(tmp_path / "imatrix.gguf").entries  # normalized as llama-quantize's binary does
    theirs = llama_quantize(theirs_f32, tmp_path / "q.gguf", "Q4_K_M", nthread=2, imatrix=weights,
                            kv_overrides=[("quantize.imatrix.file", "imatrix.gguf"),
                                          ("quantize.imatrix.entries_count", len(weights))])
    r = verify(theirs, K256)
    assert r.ok and r.imatrix
    assert {t.exact_unknown for t in r.tensors if t.type != "F32"} == {"imatrix"}
    r = verify(theirs, K256, imatrix=tmp_path / "imatrix.gguf")
    assert r.ok and all(t.exact for t in r.tensors), [t.name for t in r.tensors if not t.exact]


def test_imatrix_per_expert_exact(tmp_path):
    """A MoE model's expert stacks are quantized with one imatrix row per expert: verify, given
    the matrix, takes the same row for each expert's rows, and every tensor comes out exact."""
    from conftest import write_gguf_imatrix
    from qconvert.convert import prepare

    model = MODELS / "mixtral-bpe-bf16"
    rng = np.random.default_rng(2)
    entries = {}
    for r in prepare(model, "Q4_K_M").rows:
        if len(r.shape) >= 2 and r.gguf_name != "token_embd.weight":
            n = r.shape[0] if len(r.shape) == 3 else 1
            entries[r.gguf_name] = (rng.uniform(0.1, 2, (n, r.shape[-1])), np.full((n, 1), 7.0))
    write_gguf_imatrix(tmp_path / "imatrix.gguf", entries)
    out = tmp_path / "q.gguf"
    convert(model, out, "Q4_K_M", imatrix=tmp_path / "imatrix.gguf", threads=2)
    r = verify(out, model, imatrix=tmp_path / "imatrix.gguf")
    assert any(len(t.shape) == 3 for t in r.tensors)
    assert r.ok and all(t.exact for t in r.tensors), [t.name for t in r.tensors if not t.exact]


# -- files that must fail ------------------------------------------------------------------------

def test_flipped_bytes_exceed_the_limit(ours, tmp_path):
    """A Q4_K tensor whose quants are flipped (scales untouched): error far beyond the limit, not
    exact, named; the other tensors still pass."""
    src = ours("llama-k256-bf16", "Q4_K_M")
    bad = tmp_path / "flipped.gguf"
    shutil.copy(src, bad)
    g = read_gguf(src)
    info = next(t for t in g.tensors if t.name == "blk.0.ffn_up.weight")
    data_offset = g.data_offset
    raw = bytearray(bad.read_bytes())
    blocks = np.frombuffer(raw, np.uint8, info.nbytes, data_offset + info.offset).reshape(-1, 144).copy()
    blocks[:, 16:] ^= 0xFF  # every 4-bit level q becomes 15 - q
    raw[data_offset + info.offset:data_offset + info.offset + info.nbytes] = blocks.tobytes()
    bad.write_bytes(bytes(raw))

    assert verify(bad).ok  # the structure and scales are sound
    r = verify(bad, K256)
    t = by_name(r)["blk.0.ffn_up.weight"]
    assert not r.ok and r.failed == ["blk.0.ffn_up.weight"]
    assert t.problem == "error" and t.exact is False and t.rel_rms > 3 * t.limit
    proc = run_cli_inprocess("verify", bad, K256)
    assert proc.returncode == 1
    assert "blk.0.ffn_up.weight" in proc.stdout and "FAILED" in proc.stdout
    assert "error beyond the limit" in proc.stdout


@pytest.mark.parametrize("qtype,field", [("Q8_0", 0), ("Q4_K_M", 2), ("F16", None)])
def test_nonfinite_scale_or_value_is_a_structural_problem(qtype, field, ours, tmp_path):
    """A NaN fp16 scale (Q8_0's d, Q4_K's dmin) or a NaN in an F16 tensor is found without a
    model, counted per block, and fails."""
    src = ours("llama-k256-bf16", qtype)
    g = read_gguf(src)
    info = next(t for t in g.tensors if t.name == "blk.1.attn_q.weight")
    raw = bytearray(src.read_bytes())
    start = g.data_offset + info.offset
    type_size = gguf.GGML_QUANT_SIZES[info.type][1]
    for block in (3, 7):  # two blocks: 0x7E00, a quiet NaN, little-endian
        at = start + block * type_size + (field or 0)
        raw[at:at + 2] = b"\x00\x7e"
    bad = tmp_path / "nan.gguf"
    bad.write_bytes(bytes(raw))
    for model in (None, K256):
        r = verify(bad, model)
        t = by_name(r)["blk.1.attn_q.weight"]
        assert not r.ok and r.failed == ["blk.1.attn_q.weight"]
        assert t.problem == "nonfinite" and t.nonfinite == 2
    proc, data = json_inprocess("verify", bad)
    assert proc.returncode == 1 and data["ok"] is False and data["failed"] == ["blk.1.attn_q.weight"]


def test_missing_extra_and_misshaped_tensors_fail(ours, tmp_path):
    """Files written by gguf-py's GGUFWriter from a real output: one tensor left out, one added,
    one with rows dropped: each named with its problem."""
    src = ours("llama-k256-bf16", "Q4_K_M")

    def edit(name, qtype, data):
        if name == "blk.0.attn_v.weight":
            return None
        if name == "token_embd.weight":
            return qtype, data[:-1]  # 400 rows of the 401
        return qtype, data

    bad = copy_gguf(src, tmp_path / "edited.gguf", edit, extra={"blk.2.attn_norm.weight": np.ones(256, np.float32)})
    assert verify(bad).ok  # a sound file on its own
    r = verify(bad, K256)
    got = {t.name: t.problem for t in r.tensors if t.problem}
    assert got == {"blk.0.attn_v.weight": "missing", "blk.2.attn_norm.weight": "extra", "token_embd.weight": "shape"}
    assert sorted(r.failed) == sorted(got) and not r.ok
    t = by_name(r)["token_embd.weight"]
    assert t.shape == [256, 400] and t.expected_shape == [256, 401] and t.exact is None
    missing = by_name(r)["blk.0.attn_v.weight"]
    assert missing.type is None and missing.shape is None and missing.expected_shape == [256, 128]
    # every other tensor, copied unchanged, still passes exact
    assert all(t.exact for t in r.tensors if t.problem is None)


def test_file_without_the_qk_permutation_fails(ours, tmp_path):
    """A converter that forgot llama.cpp's Q/K row permutation: attn_q/attn_k in the checkpoint's
    row order fail, so verify does compare after the adapter's permutation."""
    ckpt = Checkpoint.open(K256)
    src = ours("llama-k256-bf16", "F16")

    def edit(name, qtype, data):
        if name in ("blk.0.attn_q.weight", "blk.0.attn_k.weight"):
            return qtype, ckpt.load(f"model.layers.0.self_attn.{name.split('.')[2][-1]}_proj.weight").astype(np.float16)
        return qtype, data

    r = verify(copy_gguf(src, tmp_path / "unpermuted.gguf", edit), K256)
    assert sorted(r.failed) == ["blk.0.attn_k.weight", "blk.0.attn_q.weight"]
    assert all(by_name(r)[n].problem == "error" for n in r.failed)


def test_gemma_norm_without_offset_fails(ours, tmp_path):
    """Gemma's norms are written as 1 + weight (the adapter's transform): a file that kept the
    checkpoint's value fails on those tensors."""
    model = "gemma2-spm-bf16"
    ckpt = Checkpoint.open(MODELS / model)
    src = ours(model, "F16")

    def edit(name, qtype, data):
        if name == "blk.0.attn_norm.weight":
            return qtype, ckpt.load("model.layers.0.input_layernorm.weight")
        return qtype, data

    r = verify(copy_gguf(src, tmp_path / "no-offset.gguf", edit), MODELS / model)
    assert r.failed == ["blk.0.attn_norm.weight"] and by_name(r)["blk.0.attn_norm.weight"].problem == "error"


def test_file_of_another_model_fails(ours, tmp_path):
    """Against another fixture (other shapes) every tensor is named; against a checkpoint of the
    same shapes and other weights, every weight tensor is beyond its limit; against another
    architecture, the file-level problem says so."""
    q4 = ours("llama-k256-bf16", "Q4_K_M")
    r = verify(q4, MODELS / "llama-spm-f32")
    assert not r.ok and len(r.failed) == len(r.tensors)
    assert {t.problem for t in r.tensors} <= {"shape", "extra", "missing"}

    other = tmp_path / "other-weights"
    shutil.copytree(K256, other)
    ckpt = Checkpoint.open(K256)
    rng = np.random.default_rng(1)
    tensors = {}
    for name in ckpt.tensors:  # float32: fresh weights of the same scale for the matrices
        v = ckpt.load(name)
        fresh = rng.standard_normal(v.shape) * np.abs(v).mean() * 1.25
        tensors[name] = fresh.astype(np.float32) if v.ndim == 2 else v
    save_file(tensors, other / "model.safetensors", metadata={"format": "pt"})
    r = verify(q4, other)
    matrices = {t.name for t in r.tensors if len(t.shape) == 2}
    assert set(r.failed) == matrices
    assert all(by_name(r)[n].rel_rms > 1 for n in matrices)

    r = verify(ours("qwen2-bpe-bf16", "F16"), MODELS / "llama-bpe-bf16-sharded")
    assert r.problems == ["architecture"] and r.architecture == "qwen2" and r.expected_architecture == "llama"
    assert not r.ok


def test_settings_that_differ_fail(ours, tmp_path):
    """A file whose tensors are right but whose hyper-parameters are not (a head count, the rope
    base, patched in place) is not its checkpoint's: the keys are named with both values."""
    import struct

    src = ours("llama-k256-bf16", "Q4_K_M")
    g = read_gguf(src)
    raw = bytearray(src.read_bytes())
    patched = {"llama.attention.head_count": ("<I", 8), "llama.rope.freq_base": ("<f", 5000.0)}
    for key, (fmt, value) in patched.items():
        f = g.fields[key]
        struct.pack_into(fmt, raw, f.offset + 8 + len(key.encode()) + 4, value)
    bad = tmp_path / "settings.gguf"
    bad.write_bytes(bytes(raw))
    r = verify(bad, K256)
    assert not r.ok and r.problems == ["metadata"] and not r.failed
    differs = {m.key: (m.found, m.expected) for m in r.metadata if m.problem == "differs"}
    assert differs == {"llama.attention.head_count": (8, g.fields["llama.attention.head_count"].value),
                       "llama.rope.freq_base": (5000.0, pytest.approx(g.fields["llama.rope.freq_base"].value))}
    proc = run_cli_inprocess("verify", bad, K256)
    assert proc.returncode == 1 and "llama.attention.head_count = 8, checkpoint" in proc.stdout
    assert verify(src, K256).metadata == []  # the unpatched file: every setting as expected


def test_not_a_gguf_file_is_an_error(tmp_path):
    bad = tmp_path / "x.gguf"
    bad.write_bytes(b"GGUF\x03\x00\x00\x00" + b"\xff" * 8)
    with pytest.raises(GGUFError):
        verify(bad)
    proc, data = json_inprocess("verify", bad)
    assert proc.returncode == 1 and data["error"]["kind"] == "gguf"


def test_a_read_error_mid_check_propagates(ours, monkeypatch):
    """A checkpoint read failing inside a worker reaches the caller as itself, not masked by
    the file's memory map being closed under live views."""
    real = verify_mod.source_rows

    def failing(ckpt, src, lo, hi):
        if src.gguf_name == "blk.1.ffn_up.weight":
            raise OSError(5, "Input/output error")
        return real(ckpt, src, lo, hi)

    monkeypatch.setattr(verify_mod, "source_rows", failing)
    with pytest.raises(OSError, match="Input/output error"):
        verify(ours("llama-k256-bf16", "Q4_K_M"), K256, threads=2)


# -- split sets ----------------------------------------------------------------------------------

def test_split_sets_are_read_whole(ours, tmp_path):
    """qconvert's split output (--split-max-tensors) and gguf-py's (llama.cpp's converter's
    --split-max-tensors) pass from any member, every tensor checked in its own file."""
    convert(K256, tmp_path / "ours.gguf", "Q4_K_M", threads=2, split=Split(max_tensors=8))
    ours_set = sorted(tmp_path.glob("ours-*-of-*.gguf"))
    copy_gguf(ours("llama-k256-bf16", "Q4_K_M"), tmp_path / "theirs.gguf", split_max_tensors=5)
    theirs_set = sorted(tmp_path.glob("theirs-*-of-*.gguf"))
    assert len(ours_set) == 3 and len(theirs_set) == 5
    for members in (ours_set, theirs_set):
        for given in (members[0], members[-1]):
            r = verify(given, K256)
            assert r.ok and r.files == members, r.failed
            assert len(r.tensors) == 21 and all(t.exact for t in r.tensors)
            assert {t.file for t in r.tensors} == set(range(len(members)))
    proc, data = json_inprocess("verify", ours_set[1], K256)
    assert proc.returncode == 0 and data["files"] == [str(p) for p in ours_set]
    text = run_cli_inprocess("verify", ours_set[1], K256).stdout.splitlines()
    assert text[0] == f"{ours_set[0]} (split set of 3 files) against {K256}" and text[-1].startswith("OK: 21 tensors")


def test_split_set_incomplete_or_damaged_fails(tmp_path):
    convert(K256, tmp_path / "m.gguf", "Q8_0", threads=2, split=Split(max_tensors=8))
    members = sorted(tmp_path.glob("m-*-of-*.gguf"))
    # a NaN scale in the last file: that tensor is named, with its file
    g = read_gguf(members[-1])
    info = g.tensors[-1] if g.tensors[-1].type == T.Q8_0 else next(t for t in g.tensors if t.type == T.Q8_0)
    raw = bytearray(members[-1].read_bytes())
    at = g.data_offset + info.offset
    raw[at:at + 2] = b"\x00\x7e"
    members[-1].write_bytes(bytes(raw))
    r = verify(members[0])
    assert r.failed == [info.name] and by_name(r)[info.name].file == len(members) - 1
    # a member gone: the set cannot be read, whichever member is given
    members[1].unlink()
    for given in (members[0], members[-1]):
        with pytest.raises(GGUFError, match="missing"):
            verify(given, K256)
    proc, data = json_inprocess("verify", members[0])
    assert proc.returncode == 1 and data["error"]["kind"] == "gguf" and members[1].name in data["error"]["message"]


def test_model_as_a_hub_id(ours, tmp_path):
    """MODEL may be a Hub id: resolved in the Hugging Face cache (offline here), the report
    keeps the id as given and the snapshot folder it read."""
    from hubfake import add_to_cache, commit_id, read_folder

    files = {k: v for k, v in read_folder(K256).items() if k != "reference.npz"}
    snapshot = add_to_cache(tmp_path / "hf" / "hub", "org/k256", commit_id("k256"), files)
    proc, data = run_json("verify", ours("llama-k256-bf16", "Q4_K_M"), "org/k256",
                          env={"HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 0 and data["ok"], proc.stderr
    assert data["model_ref"] == "org/k256" and Path(data["model"]) == snapshot
    assert all(t["exact"] for t in data["tensors"])


# -- limits, CLI, JSON -----------------------------------------------------------------------------

# Ternary types: three levels a block leave ordinary weights an error near an all-zero tensor's 1
# (0.81 on gaussian rows), so no limit can tell a right file from a wrong one (verify.py LIMITS).
NO_LIMIT = {T.TQ1_0, T.TQ2_0}


def test_every_written_type_but_the_ternary_ones_has_a_limit():
    assert set(quants.REGISTRY) - set(LIMITS) == NO_LIMIT


@pytest.mark.parametrize("qtype", sorted(set(quants.REGISTRY) - NO_LIMIT, key=lambda t: t.name), ids=lambda t: t.name)
def test_limits_have_margin_and_reject_wrong_data(qtype):
    """Each type's limit is at least twice its error on gaussian and heavy-tailed rows (the
    figures behind LIMITS), and below what zeros or unrelated weights of the same scale give."""
    rng = np.random.default_rng(7)
    for x in (rng.standard_normal((32, 1024)), rng.standard_t(3, (32, 1024))):
        x = x.astype(np.float32)
        y = gguf.quants.dequantize(quants.quantize_rows(qtype, x), qtype)
        err = float(np.sqrt(((y.astype(np.float64) - x) ** 2).sum() / (x.astype(np.float64) ** 2).sum()))
        assert err * 2 <= LIMITS[qtype] or (qtype == T.F32 and err == 0), (qtype.name, err)
    assert LIMITS[qtype] <= 0.75  # zeros: 1; an unrelated tensor of the same scale: about 1.4


def test_cli_text_and_json(ours):
    path = ours("llama-k256-bf16", "Q4_K_M")
    proc = run_cli_inprocess("verify", path, K256)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[1].split() == ["tensor", "type", "rel", "RMS", "max", "abs", "limit", "exact", "problem"]
    assert any(line.startswith("blk.0.attn_q.weight") and " yes" in line for line in lines)
    assert lines[-1].startswith("OK: 21 tensors")
    proc, data = run_json("verify", path, K256)  # the real command line, in a process of its own
    assert proc.returncode == 0 and data["ok"] is True and data["command"] == "verify"
    assert data["model"] == str(K256) and len(data["tensors"]) == 21
    assert all(t["exact"] is True for t in data["tensors"])
    assert run_cli_inprocess("verify", path, "--quiet").stdout == ""
    # a progress bar only when asked for (stderr is not a terminal here)
    assert "weights" not in proc.stderr
    assert "1.39M/1.39M" in run_cli_inprocess("verify", path, K256, "--progress").stderr


def test_json_nonfinite_figures_are_null():
    """A rel RMS that is infinite (a tensor of zeros in the checkpoint, not in the file) is null
    in JSON, as the schema says, and the report still validates."""
    from qconvert.report import as_document
    c = verify_mod.TensorCheck("a", "F32", [4], "error", rel_rms=float("inf"), max_abs=1.0, limit=1e-6, exact=False,
                               exact_unknown=None, expected_shape=[4])
    r = verify_mod.VerifyReport("verify", False, [Path("x.gguf")], Path("m"), "m", "llama", "llama", False, [], ["a"],
                                [c])
    data = check_report(json.loads(json.dumps(as_document(r))))
    assert data["tensors"][0]["rel_rms"] is None


# -- slow: a real model ----------------------------------------------------------------------------

@pytest.mark.slow
def test_smollm2_qconvert_and_llama_quantize_pass(smollm2_dir, tmp_path):
    """SmolLM2-135M: qconvert's Q4_K_M and llama-quantize's Q4_K_M of the converter's F32 file
    both pass, every tensor exact."""
    import time

    ours_path = tmp_path / "ours.gguf"
    convert(smollm2_dir, ours_path, "Q4_K_M", threads=2)
    f32 = tmp_path / "f32.gguf"
    oracle_convert(smollm2_dir, f32, "f32")
    theirs = llama_quantize(f32, tmp_path / "theirs.gguf", "Q4_K_M", nthread=2)
    for what, path in (("qconvert", ours_path), ("llama-quantize", theirs)):
        start = time.perf_counter()
        r = verify(path, smollm2_dir, threads=2)
        seconds = time.perf_counter() - start
        assert r.ok, (what, r.failed)
        assert all(t.exact for t in r.tensors), (what, [t.name for t in r.tensors if not t.exact])
        worst = max(r.tensors, key=lambda t: t.rel_rms / t.limit)
        report(f"verify SmolLM2 Q4_K_M by {what}: {len(r.tensors)} tensors in {seconds:.1f} s on 2 threads, worst "
               f"{worst.name} {worst.type} rel RMS {worst.rel_rms:.3g} (limit {worst.limit})")


@pytest.mark.slow
@pytest.mark.parametrize("model", FIXTURE_MODELS)
def test_converter_f16_of_every_fixture_passes(model, tmp_path):
    """llama.cpp's converter's F16 file of every fixture passes, exact: verify reads every
    architecture as llama.cpp's converter writes it."""
    out = tmp_path / "theirs.gguf"
    oracle_convert(MODELS / model, out, "f16", vocab_pre=oracle_vocab_pre(MODELS / model))
    r = verify(out, MODELS / model)
    assert r.ok, ([(t.name, t.problem) for t in r.tensors if t.problem], r.metadata)
    # generated tensors (rope_freqs) are the converter's float32 arithmetic: a few ulp from ours
    generated = generated_tensors(MODELS / model)
    assert all(t.exact for t in r.tensors if t.name not in generated), [t.name for t in r.tensors if not t.exact]
    if generated:
        model_sources = prepare_model(MODELS / model)
        model_sources.checkpoint.close()
        theirs = {t.name: t.data for t in gguf.GGUFReader(out).tensors}
        for s in model_sources.sources:
            if s.gguf_name in generated:
                assert_generated_close(s.gguf_name, s.generate(), theirs[s.gguf_name], f"verify {model}")
    if absent := [m.key for m in r.metadata if m.problem == "absent"]:
        report(f"verify: llama.cpp's converter leaves out of {model} what qconvert writes: {', '.join(absent)}")


@pytest.mark.slow
@pytest.mark.parametrize("outtype", ["q8_0", "bf16"])
def test_converter_q8_0_and_bf16_pass_exact(outtype, tmp_path):
    """The converter's own Q8_0 (gguf-py's quantizer) and BF16 files: exact against qconvert's."""
    out = tmp_path / f"{outtype}.gguf"
    oracle_convert(K256, out, outtype, vocab_pre=oracle_vocab_pre(K256))
    r = verify(out, K256)
    assert r.ok, r.failed
    assert {t.type for t in r.tensors} == {"F32", outtype.upper()}
    assert all(t.exact for t in r.tensors), [t.name for t in r.tensors if not t.exact]
