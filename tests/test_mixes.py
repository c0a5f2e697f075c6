"""The quantization mixes against llama-quantize itself: same types, same bytes, and they run.

For each checkpoint, llama.cpp's convert_hf_to_gguf.py writes an F32 GGUF (exact: bf16/f16 ->
f32 loses nothing), which llama-quantize's own code (`llama_model_quantize`, through
scripts/llama_quantize.py) turns into each mix. qconvert must produce, from the checkpoint
directly, the same file tensor by tensor:

- types: qconvert's plan (`prepare(...).rows`, nothing written) gives every tensor the type
  llama-quantize chose, fallbacks included; this needs no kernel;
- bytes: qconvert's file has the same tensors, types, shapes and bytes, and general.file_type;
  a mix whose kernels do not exist yet fails here with qconvert's "cannot write yet" error;
- llama.cpp loads qconvert's file and its logits are finite (their error against llama.cpp on
  the F32 file is printed in the "qconvert figures" section).

Checkpoints: the fixtures in tests/fixtures/models (llama-k256-bf16 has rows that are multiples
of 256, the others 64-wide rows, which force the K types' fallbacks), three made here whose
shapes force every other fallback path, and SmolLM2-135M (slow).
"""

from __future__ import annotations

import struct
import sys
from dataclasses import dataclass
from pathlib import Path

import gguf
import numpy as np
import pytest

from conftest import (MODELS, ROOT, assert_generated_close, generated_tensors, llama_outputs, memoized,
                      oracle_vocab_pre, reference_kind, relative_error, report, tiny_llama_config, tiny_llama_tensors,
                      tokenizer_vocab_size, write_checkpoint, write_gguf_imatrix)
from qconvert import quants
from qconvert.convert import convert, prepare
from qconvert.planner import RECIPES, Overrides

sys.path.insert(0, str(ROOT / "scripts"))
from llama_quantize import llama_quantize  # noqa: E402
from oracle_convert import oracle_convert  # noqa: E402

T = gguf.GGMLQuantizationType

# The mixes people use first, then the rest of llama-quantize's legacy and K mixes.
MIXES = ["Q4_K_M", "Q4_K_S", "Q5_K_M", "Q3_K_M", "Q6_K",
         "Q2_K", "Q3_K_S", "Q3_K_L", "Q5_K_S", "Q4_0", "Q8_0", "IQ4_XS"]

FIXTURE_MODELS = sorted(p.name for p in MODELS.glob("*") if (p / "config.json").is_file())

# Checkpoints made here (tiny_llama_config overrides), each for the rules and fallbacks the
# fixtures cannot reach:
GENERATED = {
    # rows of 96 (a multiple of 32 but not of 64 or 256): every 256-block type falls back to its
    # 32-block type (Q2_K/Q3_K->Q4_0, Q4_K->Q5_0, Q5_K->Q5_1, Q6_K->Q8_0) and the output tensor
    # goes to Q8_0 (Q6_K->Q8_0 for Q4_0); ffn_down rows of 200 (not a multiple of 32) fall back
    # to F16 in every mix. 16 layers put blk.10..15 between blk.1 and blk.2 in name order, so
    # counting attn_v tensors in name order and in layer order give different layers more bits;
    # 4 heads per KV head take Q2_K's GQA rule.
    "gen-rows96-16layers": dict(hidden_size=96, intermediate_size=200, num_hidden_layers=16,
                                num_attention_heads=4, num_key_value_heads=1),
    # tied embeddings with rows of 256: token_embd takes the output tensor's Q6_K; 12 layers (name
    # order and layer order differ for attn_v and ffn_down).
    "gen-tied-k256": dict(hidden_size=256, intermediate_size=512, num_hidden_layers=12,
                          num_attention_heads=4, num_key_value_heads=1, tie_word_embeddings=True),
    # tied, rows of 72 (not a multiple of 32): the tied output tensor's Q8_0 falls back to F16,
    # as does every matrix but ffn_down (rows of 96).
    "gen-tied-rows72": dict(hidden_size=72, intermediate_size=96, num_hidden_layers=2,
                            num_attention_heads=3, num_key_value_heads=3, tie_word_embeddings=True),
    # 80 layers with grouped-query attention: llama.cpp calls this LLM_TYPE_70B, and
    # llama-quantize then raises attn_v from Q3_K/Q4_K to Q5_K (rows of 256, so no fallback).
    "gen-70b-shape": dict(hidden_size=256, intermediate_size=256, num_hidden_layers=80,
                          num_attention_heads=4, num_key_value_heads=1),
    # Qwen1.5-72B's shape: 80 layers without GQA. llama.cpp's qwen2 loader calls any 80-layer
    # model LLM_TYPE_70B (llama's would call it 65B), so attn_v is raised to Q5_K here too.
    "gen-qwen2-80layers": dict(architectures=["Qwen2ForCausalLM"], model_type="qwen2",
                               hidden_size=256, intermediate_size=256, num_hidden_layers=80,
                               num_attention_heads=4, num_key_value_heads=4),
    # Mixtral with 8 experts and rows of 256: llama-quantize's 8-expert rules with nothing falling
    # back (the mixtral fixture's 64-wide rows turn attn_output's Q5_K into Q5_1): attn_v/attn_k
    # Q8_0 in every mix (over Q2_K's GQA >= 4 rule too), attn_output Q5_K in Q2_K, Q3_K_S/M and
    # Q4_K_S/M but not Q3_K_L; 3-D expert tensors of whole super-blocks.
    "gen-mixtral8x-k256": dict(architectures=["MixtralForCausalLM"], model_type="mixtral",
                               hidden_size=256, intermediate_size=256, num_hidden_layers=2,
                               num_attention_heads=4, num_key_value_heads=1,
                               num_local_experts=8, num_experts_per_tok=2),
}
SMOLLM2 = "smollm2-135m"
MODELS_UNDER_TEST = [*FIXTURE_MODELS, *GENERATED]

# The ternary mixes and MXFP4_MOE, on the models that reach their rules (not every model: each
# case is a llama-quantize run and a llama.cpp run). TQ1_0/TQ2_0: rows of 256 (the token embedding
# Q4_K, the output Q6_K), of 96 (TQ->Q4_0 and Q4_K->Q5_0 fallbacks, ffn_down F16), tied (Q6_K; rows
# of 72: F16), 8 experts (attn_v/attn_k Q8_0, 3-D TQ stacks), an MoE with 64-wide rows.
# MXFP4_MOE: the 3-D expert stacks MXFP4, every other matrix and the output Q8_0 (rows not whole
# blocks: F16), on MoE models and on dense ones (no expert: all Q8_0).
TERNARY_MODELS = ["llama-k256-bf16", "gen-rows96-16layers", "gen-tied-k256", "gen-tied-rows72",
                  "gen-mixtral8x-k256", "qwen3moe-bpe-bf16"]
IQ4_NL_MODELS = ("llama-k256-bf16", *GENERATED)
EXTRA_MIXES = {
    # elsewhere every IQ4_XS tensor falls back to IQ4_NL: the IQ4_NL file is the IQ4_XS one
    "IQ4_NL": IQ4_NL_MODELS,
    "TQ1_0": TERNARY_MODELS,
    "TQ2_0": TERNARY_MODELS,
    "MXFP4_MOE": ["mixtral-bpe-bf16", "qwen3moe-bpe-bf16", "gen-mixtral8x-k256", "llama-k256-bf16",
                  "gen-rows96-16layers", "gen-tied-rows72"],
}

# A sentence for the llama.cpp run, tokenized with each checkpoint's tokenizer.json.
PROMPT = "The capital of France is Paris. It has been the largest city of the country for centuries."


# Where rows are not whole 256-blocks, IQ4_XS falls back to IQ4_NL tensor by tensor, and the
# IQ4_NL mix then writes the same tensors (only general.file_type differs): IQ4_NL runs where it
# differs, on the checkpoints with rows of 256 (and the generated ones), not to repeat IQ4_XS's
# llama-quantize runs (ggml's IQ4 quantizers are its slowest). SmolLM2's IQ4_XS file holds both.


def cases() -> list:
    fast = [pytest.param(model, mix, id=f"{model}-{mix}") for model in MODELS_UNDER_TEST for mix in MIXES]
    fast += [pytest.param(model, mix, id=f"{model}-{mix}") for mix, models in EXTRA_MIXES.items() for model in models]
    # SmolLM2's IQ4_NL file is its IQ4_XS file but general.file_type (every IQ4_XS falls back to IQ4_NL)
    slow = [pytest.param(SMOLLM2, mix, id=f"{SMOLLM2}-{mix}", marks=pytest.mark.slow) for mix in (*MIXES, *EXTRA_MIXES)
            if mix != "IQ4_NL"]
    return fast + slow


# -- the files, each made once per session -------------------------------------------------------

@pytest.fixture(scope="session")
def model_dir(request, tmp_path_factory):
    """Model name -> checkpoint directory (SmolLM2 rebuilt only when a slow test asks for it)."""
    made: dict[str, Path] = {}

    def get(model: str) -> Path:
        if model not in made:
            if model == SMOLLM2:
                made[model] = request.getfixturevalue("smollm2_dir")
            elif model in GENERATED:
                cfg = tiny_llama_config(tokenizer_vocab_size("tiny-bpe"), **GENERATED[model])
                made[model] = write_checkpoint(tmp_path_factory.mktemp("ckpt") / model, cfg,
                                               tiny_llama_tensors(cfg, seed=list(GENERATED).index(model)))
            else:
                made[model] = MODELS / model
        return made[model]

    return get


@pytest.fixture(scope="session")
def f32_gguf(model_dir, tmp_path_factory):
    """Model -> llama.cpp's convert_hf_to_gguf.py output, --outtype f32."""
    def make(model: str) -> Path:
        out = tmp_path_factory.mktemp("f32") / f"{model}-f32.gguf"
        # The converter has no hash for the tiny BPE vocabularies (see scripts/oracle_convert.py);
        # SmolLM2's it has.
        oracle_convert(model_dir(model), out, "f32",
                       vocab_pre=None if model == SMOLLM2 else oracle_vocab_pre(model_dir(model)))
        return out

    return memoized(make)


@pytest.fixture(scope="session")
def theirs(f32_gguf, tmp_path_factory):
    """(model, mix) -> llama-quantize's file."""
    def make(model: str, mix: str) -> Path:
        out = tmp_path_factory.mktemp("llama-quantize") / f"{model}-{mix}.gguf"
        return llama_quantize(f32_gguf(model), out, mix, nthread=2)

    return memoized(make)


@pytest.fixture(scope="session")
def ours(model_dir, tmp_path_factory):
    """(model, mix) -> qconvert's file."""
    def make(model: str, mix: str) -> Path:
        out = tmp_path_factory.mktemp("qconvert") / f"{model}-{mix}.gguf"
        convert(model_dir(model), out, mix, threads=2)
        return out

    return memoized(make)


@dataclass(frozen=True)
class Tensor:
    name: str
    tensor_type: T
    shape: list[int]     # GGUF order (ne0 first)
    data: np.ndarray     # the bytes, memory-mapped


@dataclass(frozen=True)
class GGUF:
    file_type: int
    tensors: dict[str, Tensor]


# GGUF metadata value types (gguf.GGUFValueType) -> struct format of their scalars
SCALARS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}


def read_gguf(path: Path) -> GGUF:
    """general.file_type and the tensors of a GGUF (spec: ggml/docs/gguf.md). gguf.GGUFReader
    would do, but it makes a NumPy view of every vocabulary entry: 4 s per SmolLM2 file."""
    buf = np.memmap(path, dtype=np.uint8, mode="r")
    pos = 0

    def take(fmt: str) -> tuple:
        nonlocal pos
        values = struct.unpack_from("<" + fmt, buf, pos)
        pos += struct.calcsize("<" + fmt)
        return values

    def string() -> str:
        nonlocal pos
        (n,) = take("Q")
        pos += n
        return bytes(buf[pos - n:pos]).decode()

    def value(vtype: int):
        nonlocal pos
        if vtype == 8:
            return string()
        if vtype == 9:
            etype, n = take("IQ")
            if etype in SCALARS:  # skipped: only scalar keys are needed here
                pos += n * struct.calcsize(SCALARS[etype])
                return None
            return [value(etype) for _ in range(n)]
        return take(SCALARS[vtype])[0]

    magic, version, n_tensors, n_kv = take("4sIQQ")
    assert magic == b"GGUF" and version == 3, (path, magic, version)
    kv = {}
    for _ in range(n_kv):
        key = string()
        kv[key] = value(take("I")[0])
    infos = []
    for _ in range(n_tensors):
        name = string()
        shape = list(take(f"{take('I')[0]}Q"))
        qtype, offset = take("IQ")
        infos.append((name, shape, T(qtype), offset))
    align = kv.get("general.alignment", 32)
    start = -(-pos // align) * align
    tensors = {}
    for name, shape, qtype, offset in infos:
        block, size = gguf.GGML_QUANT_SIZES[qtype]
        nbytes = int(np.prod(shape, dtype=np.int64)) // block * size
        tensors[name] = Tensor(name, qtype, shape, buf[start + offset:start + offset + nbytes])
    return GGUF(int(kv["general.file_type"]), tensors)


# -- types -------------------------------------------------------------------------------------

@pytest.mark.parametrize("model,mix", cases())
def test_types_match_llama_quantize(model: str, mix: str, model_dir, theirs, monkeypatch):
    # The planner refuses to plan a type no kernel can write yet; widening SUPPORTED lets this
    # test check the plan itself, before every kernel exists.
    monkeypatch.setattr(quants, "SUPPORTED", tuple(T))
    job = prepare(model_dir(model), mix)
    job.checkpoint.close()
    theirs_file = read_gguf(theirs(model, mix))
    want = theirs_file.tensors
    plan = {r.gguf_name: r for r in job.rows}
    assert sorted(plan) == sorted(want), f"tensor names differ: {sorted(set(plan) ^ set(want))}"
    bad = []
    for name, t in want.items():
        row = plan[name]
        if row.qtype != t.tensor_type or list(reversed(row.shape)) != t.shape:
            bad.append(f"{name}{list(reversed(row.shape))}: ours {row.qtype.name} ({row.reason}), "
                       f"llama-quantize {t.tensor_type.name}{t.shape}")
    if bad:
        pytest.fail(f"{len(bad)} of {len(want)} tensor types differ from llama-quantize's {mix}:\n"
                    + "\n".join(bad), pytrace=False)
    assert int(RECIPES[mix].file_type) == theirs_file.file_type


# -- bytes -------------------------------------------------------------------------------------

def first_difference(mine: np.ndarray, want: np.ndarray, qtype: T) -> str:
    """Where two tensors' bytes first differ: the block, and how many bits differ in all."""
    block_bytes = gguf.GGML_QUANT_SIZES[qtype][1]
    diff = np.flatnonzero(mine != want)
    bits = int(np.unpackbits(mine ^ want).sum())
    block = int(diff[0]) // block_bytes
    return (f"{diff.size} bytes ({bits} bits) differ; first in block {block} "
            f"(byte {int(diff[0]) % block_bytes} of {block_bytes}): "
            f"ours {mine[block * block_bytes:(block + 1) * block_bytes].tobytes().hex()} "
            f"vs {want[block * block_bytes:(block + 1) * block_bytes].tobytes().hex()}")


@pytest.mark.parametrize("model,mix", cases())
def test_bytes_match_llama_quantize(model: str, mix: str, ours, theirs, model_dir):
    ours_file, theirs_file = read_gguf(ours(model, mix)), read_gguf(theirs(model, mix))
    mine, want = ours_file.tensors, theirs_file.tensors
    assert sorted(mine) == sorted(want), f"tensor names differ: {sorted(set(mine) ^ set(want))}"
    # llama-quantize copies the converter's generated tensors (F32): a few ulp from ours
    generated = generated_tensors(model_dir(model))
    bad = []
    for name, t in want.items():
        m = mine[name]
        if (m.tensor_type, m.shape) != (t.tensor_type, t.shape):
            bad.append(f"{name}: ours {m.tensor_type.name}{m.shape}, llama-quantize {t.tensor_type.name}{t.shape}")
        elif name in generated and t.tensor_type == T.F32:
            assert_generated_close(name, m.data.view(np.float32), t.data.view(np.float32), f"{model} {mix}")
        elif not np.array_equal(m.data, t.data):
            bad.append(f"{name} ({t.tensor_type.name}): {first_difference(m.data, t.data, t.tensor_type)}")
    if bad:
        pytest.fail(f"{len(bad)} of {len(want)} tensors differ from llama-quantize's {mix}:\n"
                    + "\n".join(bad), pytrace=False)
    assert ours_file.file_type == theirs_file.file_type == int(RECIPES[mix].file_type)


# -- llama.cpp runs it -------------------------------------------------------------------------

_ERRORS: dict[tuple[str, str], float] = {}


@pytest.fixture(scope="module", autouse=True)
def error_table():
    """Print, after the module, each mix's logit error per model (the 'qconvert figures')."""
    yield
    if not _ERRORS:
        return
    models = [m for m in [*MODELS_UNDER_TEST, SMOLLM2] if any(k[0] == m for k in _ERRORS)]
    report("qconvert mixes in llama.cpp: max |logits - logits of the F32 file| / max |logit| "
           "(an encoder's: its per-token embeddings)")
    mixes = [mix for mix in (*MIXES, *EXTRA_MIXES) if any(k[1] == mix for k in _ERRORS)]
    report(f"{'':<26}" + "".join(f"{mix:>10}" for mix in mixes))
    for m in models:
        report(f"{m:<26}" + "".join(f"{_ERRORS[m, mix]:10.3f}" if (m, mix) in _ERRORS else f"{'-':>10}"
                                    for mix in mixes))


@pytest.fixture(scope="session")
def prompt_logits(model_dir, f32_gguf):
    """Model -> (tokens of PROMPT, llama.cpp's logits on the F32 file; an encoder's per-token
    embeddings), and which of the two."""
    from tokenizers import Tokenizer

    def make(model: str) -> tuple[list[int], np.ndarray, str]:
        tokens = Tokenizer.from_file(str(model_dir(model) / "tokenizer.json")).encode(PROMPT).ids
        kind = reference_kind(model_dir(model))
        return tokens, llama_outputs(f32_gguf(model), tokens, kind), kind

    return memoized(make)


@pytest.mark.parametrize("model,mix", cases())
def test_llama_cpp_runs_the_mix(model: str, mix: str, ours, prompt_logits):
    tokens, ref, kind = prompt_logits(model)
    got = llama_outputs(ours(model, mix), tokens, kind)
    assert got.shape == ref.shape
    assert np.all(np.isfinite(got)), f"{model} {mix}: non-finite logits"
    _ERRORS[model, mix] = relative_error(got, ref)


# -- llama-quantize's options and an importance matrix -------------------------------------------
#
# The same comparison for runs with options. llama-quantize's binary reads the imatrix file and
# passes the library normalized weights plus quantize.imatrix.* kv overrides; the test builds
# those independently from the file's contents (sums / counts, as tools/quantize does) and
# gives them to llama_model_quantize, and qconvert reads the file itself.

OPTION_RUNS = {
    "imatrix": {},
    "pure": {"pure": True},
    "output-q8_0-embd-q5_k": {"output_tensor_type": "Q8_0", "token_embedding_type": "Q5_K"},
    "tensor-types": {"tensor_types": [("attn_q", "Q8_0"), ("FFN_(UP|GATE)", "Q5_K"), ("ffn", "Q2_K")]},
}
IMATRIX_MIXES = ["Q4_K_M", "Q4_K_S", "Q5_K_M", "Q3_K_M", "Q2_K", "Q6_K", "Q4_0", "Q5_0", "Q4_1", "Q8_0",
                 "IQ4_NL", "IQ4_XS"]
MOE_IMATRIX_MIXES = ["Q4_K_M", "Q2_K", "Q4_0", "Q3_K_S", "IQ4_XS"]


def option_cases() -> list:
    out = [pytest.param(model, mix, "imatrix", id=f"{model}-{mix}-imatrix")
           for model in ("llama-k256-bf16", "gen-rows96-16layers") for mix in IMATRIX_MIXES]
    # (a Q5_K token embedding does not fit rows of 96: llama-quantize fails on it, qconvert says
    # so before writing; see test_overrides)
    out += [pytest.param(model, mix, run, id=f"{model}-{mix}-{run}")
            for model in ("llama-k256-bf16", "gen-rows96-16layers") for mix in ("Q4_K_M", "Q3_K_M")
            for run in OPTION_RUNS
            if run != "imatrix" and not (model.startswith("gen-rows96") and run.startswith("output"))]
    # MoE: 3-D expert stacks, each expert quantized with its own imatrix row (llama-quant.cpp
    # llama_tensor_quantize_impl, imatrix_for_row); rows of 256 (K-quants weight every super-block)
    # and the fixtures' 64/32-wide rows (K types fall back to the weighted legacy types)
    out += [pytest.param(model, mix, "imatrix", id=f"{model}-{mix}-imatrix")
            for model in ("gen-mixtral8x-k256", "mixtral-bpe-bf16", "qwen3moe-bpe-bf16")
            for mix in MOE_IMATRIX_MIXES]
    # ggml's TQ and MXFP4 quantizers ignore an imatrix, but these mixes' Q4_K token embedding, Q6_K
    # output and Q4_0 fallbacks use it (and the file records it)
    out += [pytest.param(model, mix, "imatrix", id=f"{model}-{mix}-imatrix")
            for model in ("llama-k256-bf16", "gen-rows96-16layers") for mix in ("TQ1_0", "TQ2_0")]
    out += [pytest.param(model, "MXFP4_MOE", "imatrix", id=f"{model}-MXFP4_MOE-imatrix")
            for model in ("gen-mixtral8x-k256", "qwen3moe-bpe-bf16")]
    out += [pytest.param(SMOLLM2, mix, "imatrix", id=f"{SMOLLM2}-{mix}-imatrix", marks=pytest.mark.slow)
            for mix in ("Q4_K_M", "Q4_0", "IQ4_XS")]
    return out


def imatrix_entry(rng: np.random.Generator, shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """(in_sum2, counts) for one weight tensor, shaped as llama-imatrix's save_imatrix writes
    them: in_sum2 [n_mat, n_per_row], counts [n_mat, 1] (tools/imatrix/imatrix.cpp).

    A matrix (n_mat 1) saw 10 tokens. A 3-D expert stack gets one count per expert, as
    collect_imatrix counts MUL_MAT_ID routings: different for every expert, and 0 for one
    expert the tokens never reached, whose sums stay 0 (save_imatrix writes such partial
    entries; llama-quantize then weights that expert with ones)."""
    if len(shape) == 2:
        return (rng.random(shape[-1]).astype(np.float32) * 40 + 0.1)[None], np.array([[10.0]])
    n_expert, cols = shape[0], shape[-1]
    counts = rng.permutation(np.arange(n_expert) * 7 + 1).astype(np.float64)
    counts[n_expert // 2] = 0
    sums = (rng.random((n_expert, cols)) * 4 + 0.01) * counts[:, None]
    return sums.astype(np.float32), counts[:, None]


def normalized(sums: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """llama-quantize's weights for an entry (tools/quantize/quantize.cpp load_imatrix, GGUF
    format): each expert's sums / (float) its count, all ones for an expert with count 0."""
    out = np.ones_like(sums, dtype=np.float32)
    for j, c in enumerate(counts.reshape(-1)):
        if c > 0:
            out[j] = sums[j] / np.float32(c)
    return out.reshape(-1)


@pytest.fixture(scope="session")
def imatrix_file(model_dir, tmp_path_factory):
    """Model -> (imatrix file, {tensor: normalized weights}): random positive sums for every
    matrix and expert stack (imatrix_entry), and for an MoE model's routers too: llama-imatrix
    records them (they are MUL_MATs), llama-quantize keeps them F32 and never looks them up."""
    def make(model: str) -> tuple[Path, dict]:
        rows = prepare(model_dir(model), "Q8_0").rows
        rng = np.random.default_rng(11)
        entries = {r.gguf_name: imatrix_entry(rng, r.shape) for r in rows
                   if len(r.shape) == 3 or len(r.shape) == 2 and (r.qtype != T.F32 or "ffn_gate_inp" in r.gguf_name)}
        path = tmp_path_factory.mktemp("imatrix") / f"{model}.imatrix.gguf"
        write_gguf_imatrix(path, entries, chunks=3)
        return path, {k: normalized(s, c) for k, (s, c) in entries.items()}

    return memoized(make)


@pytest.mark.parametrize("model,mix,run", option_cases())
def test_option_runs_match_llama_quantize(model: str, mix: str, run: str, model_dir, f32_gguf,
                                          imatrix_file, tmp_path):
    opts = dict(OPTION_RUNS[run])
    theirs_out, ours_out = tmp_path / "theirs.gguf", tmp_path / "ours.gguf"
    overrides = Overrides(
        pure=opts.get("pure", False),
        output_tensor_type=T[opts["output_tensor_type"]] if "output_tensor_type" in opts else None,
        token_embedding_type=T[opts["token_embedding_type"]] if "token_embedding_type" in opts else None,
        tensor_types=tuple((p, T[t]) for p, t in opts.get("tensor_types", ())))
    imatrix = None
    if run == "imatrix":
        imatrix, weights = imatrix_file(model)
        opts["imatrix"] = weights
        opts["kv_overrides"] = [("quantize.imatrix.file", str(imatrix)),
                                ("quantize.imatrix.dataset", "wiki.train.raw"),
                                ("quantize.imatrix.entries_count", len(weights)),
                                ("quantize.imatrix.chunks_count", 3)]
    llama_quantize(f32_gguf(model), theirs_out, mix, nthread=2, **opts)
    convert(model_dir(model), ours_out, mix, threads=2, overrides=overrides, imatrix=imatrix)

    ours_file, theirs_file = read_gguf(ours_out), read_gguf(theirs_out)
    mine, want = ours_file.tensors, theirs_file.tensors
    assert sorted(mine) == sorted(want)
    bad = [f"{name}: ours {mine[name].tensor_type.name}, llama-quantize {t.tensor_type.name}"
           if mine[name].tensor_type != t.tensor_type else
           f"{name} ({t.tensor_type.name}): {first_difference(mine[name].data, t.data, t.tensor_type)}"
           for name, t in want.items()
           if mine[name].tensor_type != t.tensor_type or not np.array_equal(mine[name].data, t.data)]
    if bad:
        pytest.fail(f"{len(bad)} of {len(want)} tensors differ from llama-quantize's {mix} {run}:\n"
                    + "\n".join(bad), pytrace=False)
    if run == "imatrix":
        a, b = gguf.GGUFReader(ours_out).fields, gguf.GGUFReader(theirs_out).fields
        keys = [k for k in b if k.startswith("quantize.imatrix.")]
        assert len(keys) == 4
        for k in keys:
            assert (a[k].contents(), a[k].types) == (b[k].contents(), b[k].types), k
