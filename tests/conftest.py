"""Shared test helpers: tiny checkpoints made on the fly, the CLI as a user runs it, llama.cpp."""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
from pathlib import Path

import gguf
import numpy as np
import pytest
from safetensors.numpy import save_file

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures"
MODELS = FIXTURES / "models"
TOKENIZERS = FIXTURES / "tokenizers"
CACHE = Path(os.environ.get("QCONVERT_CACHE", Path.home() / ".cache" / "qconvert"))


def tiny_llama_config(vocab_size: int, **over) -> dict:
    cfg = {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama",
        "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 1,
        "num_attention_heads": 2, "num_key_value_heads": 2, "vocab_size": vocab_size,
        "max_position_embeddings": 128, "rms_norm_eps": 1e-5, "rope_theta": 10000.0,
        "tie_word_embeddings": False, "torch_dtype": "float32",
    }
    cfg.update(over)
    return cfg


def tiny_llama_tensors(cfg: dict, seed: int = 0) -> dict[str, np.ndarray]:
    """Random float32 weights with Hugging Face Llama names for `cfg` (Mixtral's per-expert
    names when it has num_local_experts, Qwen2's q/k/v biases for Qwen2ForCausalLM)."""
    rng = np.random.default_rng(seed)
    h, f, v = cfg["hidden_size"], cfg["intermediate_size"], cfg["vocab_size"]
    hd = cfg.get("head_dim", h // cfg["num_attention_heads"])
    nq, nkv = cfg["num_attention_heads"] * hd, cfg["num_key_value_heads"] * hd

    def w(*shape):
        return (rng.standard_normal(shape) * 0.05).astype(np.float32)

    t = {"model.embed_tokens.weight": w(v, h), "model.norm.weight": 1 + w(h)}
    if not cfg.get("tie_word_embeddings"):
        t["lm_head.weight"] = w(v, h)
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}."
        t.update({
            p + "self_attn.q_proj.weight": w(nq, h), p + "self_attn.k_proj.weight": w(nkv, h),
            p + "self_attn.v_proj.weight": w(nkv, h), p + "self_attn.o_proj.weight": w(h, nq),
        })
        if n_expert := cfg.get("num_local_experts"):  # Mixtral: a router, w1 = gate, w2 = down, w3 = up
            t[p + "block_sparse_moe.gate.weight"] = w(n_expert, h)
            for e in range(n_expert):
                q = f"{p}block_sparse_moe.experts.{e}."
                t.update({q + "w1.weight": w(f, h), q + "w2.weight": w(h, f), q + "w3.weight": w(f, h)})
        else:
            t.update({p + "mlp.gate_proj.weight": w(f, h), p + "mlp.up_proj.weight": w(f, h),
                      p + "mlp.down_proj.weight": w(h, f)})
        t.update({p + "input_layernorm.weight": 1 + w(h), p + "post_attention_layernorm.weight": 1 + w(h)})
    if cfg["architectures"][0] == "Qwen2ForCausalLM":  # Qwen2's q/k/v always have biases (drawn last:
        for i in range(cfg["num_hidden_layers"]):      # the weights above stay what they were)
            p = f"model.layers.{i}.self_attn."
            t.update({p + "q_proj.bias": w(nq), p + "k_proj.bias": w(nkv), p + "v_proj.bias": w(nkv)})
    return t


def write_checkpoint(path: Path, cfg: dict, tensors: dict[str, np.ndarray],
                     tokenizer: str | Path | None = "tiny-bpe") -> Path:
    """A checkpoint folder: config.json, model.safetensors, and a fixture tokenizer's files."""
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text(json.dumps(cfg, indent=2))
    save_file(tensors, str(path / "model.safetensors"))
    if tokenizer is not None:
        src = TOKENIZERS / tokenizer if isinstance(tokenizer, str) else Path(tokenizer)
        for f in src.iterdir():
            if f.is_file() and f.name != "expected.json":
                (path / f.name).write_bytes(f.read_bytes())
    return path


def tokenizer_vocab_size(name: str = "tiny-bpe") -> int:
    tok = json.loads((TOKENIZERS / name / "tokenizer.json").read_text())
    ids = list(tok["model"]["vocab"].values()) if isinstance(tok["model"]["vocab"], dict) else \
        range(len(tok["model"]["vocab"]))
    ids = list(ids) + [a["id"] for a in tok.get("added_tokens", [])]
    return max(ids) + 1


@pytest.fixture
def tiny_checkpoint(tmp_path: Path) -> Path:
    """A valid one-layer random Llama with the tiny-bpe tokenizer."""
    cfg = tiny_llama_config(tokenizer_vocab_size("tiny-bpe"))
    return write_checkpoint(tmp_path / "tiny", cfg, tiny_llama_tensors(cfg))


def memoized(make):
    """`get(*key)` that calls `make(*key)` once per key: the session fixtures that build files."""
    cache: dict = {}

    def get(*key):
        if key not in cache:
            cache[key] = make(*key)
        return cache[key]

    return get


def run_script(*args) -> None:
    """`python SCRIPT ARGS`, failing the test if it fails."""
    subprocess.run([sys.executable, *map(str, args)], check=True)


@pytest.fixture(scope="session")
def smollm2_dir() -> Path:
    """SmolLM2-135M-Instruct as a Hugging Face checkpoint, rebuilt once and cached (slow tests)."""
    out = CACHE / "smollm2-135m-hf"
    run_script(ROOT / "scripts" / "make_smollm2_checkpoint.py", out)
    return out


def write_gguf_imatrix(path: Path, entries: dict[str, tuple[np.ndarray, np.ndarray]], chunks: int = 7) -> None:
    """An imatrix file as llama-imatrix writes it: {tensor: (in_sum2, counts)} and its metadata."""
    w = gguf.GGUFWriter(path, "imatrix")
    w.add_array("imatrix.datasets", ["wiki.train.raw"])
    w.add_uint32("imatrix.chunk_count", chunks)
    w.add_uint32("imatrix.chunk_size", 512)
    for name, (sums, counts) in entries.items():
        w.add_tensor(name + ".in_sum2", sums.astype(np.float32))
        w.add_tensor(name + ".counts", counts.astype(np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def write_vocab_gguf(tok, path: Path) -> Path:
    """A metadata-only GGUF holding just the tokenizer keys of `tok` (a qconvert GGUFTokenizer)."""
    writer = gguf.GGUFWriter(str(path), "llama")
    tok.write_to(writer)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.close()
    return path


def run_cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """`python -m qconvert ARGS` as a user runs it: real exit code, real stderr."""
    e = {k: v for k, v in os.environ.items() if k != "QCONVERT_DEBUG"}
    e.update(env or {})
    return subprocess.run([sys.executable, "-m", "qconvert", *map(str, args)],
                          capture_output=True, text=True, env=e, timeout=600)


def llama_logits(gguf_path: Path, tokens: list[int] | np.ndarray) -> np.ndarray:
    """llama.cpp's logits for every position of `tokens`, with an F32 KV cache (the default F16
    cache alone adds about 1e-3 relative error)."""
    from llama_cpp import Llama

    tokens = [int(t) for t in tokens]
    llm = Llama(model_path=str(gguf_path), n_ctx=max(64, len(tokens) + 8), n_batch=512,
                logits_all=True, type_k=0, type_v=0, n_threads=2, verbose=False)
    try:
        llm.eval(tokens)
        return np.array(llm.scores[:len(tokens)], dtype=np.float32)
    finally:
        llm.close()


def llama_embeddings(gguf_path: Path, tokens: list[int] | np.ndarray, pooled: bool = False) -> np.ndarray:
    """llama.cpp's output embeddings of `tokens` as one sequence, special tokens as given: each
    token's hidden state [n, n_embd] (pooling forced to none), or with `pooled` the one vector of
    the pooling type the GGUF names [n_embd]. An encoder attends over the whole sequence at once,
    so it is decoded in one batch (as Llama.embed does; Llama.embed itself takes text only)."""
    import llama_cpp

    tokens = [int(t) for t in tokens]
    pooling = llama_cpp.LLAMA_POOLING_TYPE_UNSPECIFIED if pooled else llama_cpp.LLAMA_POOLING_TYPE_NONE
    llm = llama_cpp.Llama(model_path=str(gguf_path), embedding=True, pooling_type=pooling,
                          n_ctx=max(64, len(tokens) + 8), n_batch=512, n_ubatch=512, n_threads=2, verbose=False)
    try:
        llm._batch.reset()
        llm._batch.add_sequence(tokens, 0, True)
        llm._ctx.decode(llm._batch)
        n = llm.n_embd()
        if pooled:
            return np.ctypeslib.as_array(llama_cpp.llama_get_embeddings_seq(llm._ctx.ctx, 0), shape=(n,)).copy()
        return np.ctypeslib.as_array(llama_cpp.llama_get_embeddings(llm._ctx.ctx), shape=(len(tokens), n)).copy()
    finally:
        llm.close()


def reference_kind(model_dir: Path) -> str:
    """What a fixture's reference.npz holds: "embeddings" (an encoder's last hidden states) or
    "logits" (a causal LM's; also the answer for a checkpoint without a reference)."""
    ref = model_dir / "reference.npz"
    return "embeddings" if ref.is_file() and "embeddings" in np.load(ref).files else "logits"


def llama_outputs(gguf_path: Path, tokens: list[int] | np.ndarray, kind: str = "logits") -> np.ndarray:
    """llama.cpp's logits, or per-token embeddings for an encoder (`kind` from reference_kind)."""
    return llama_embeddings(gguf_path, tokens) if kind == "embeddings" else llama_logits(gguf_path, tokens)


def oracle_vocab_pre(model_dir: Path) -> str | None:
    """scripts/oracle_convert.py's --vocab-pre for a fixture checkpoint: llama.cpp's converter names
    a BPE or WordPiece pre-tokenizer from a hash table that has no entry for the tiny fixture
    vocabularies. None for SentencePiece (no name needed); for WordPiece "jina-v2-en", the name the
    converter gives BERT's uncased vocabulary (test_bert.py checks it on all-MiniLM-L6-v2); for
    byte-level BPE the name of what its pre_tokenizer does (qconvert's identify_pre_tokenizer,
    checked against llama.cpp's tokenization in test_tokenizer.py): "smollm" for tiny-bpe,
    "gpt-2" for tiny-gpt2."""
    from qconvert.tokenizer import identify_pre_tokenizer

    if (model_dir / "tokenizer.model").is_file():
        return None
    tokenizer = json.loads((model_dir / "tokenizer.json").read_text(encoding="utf-8"))
    return "jina-v2-en" if tokenizer["model"]["type"] == "WordPiece" else identify_pre_tokenizer(tokenizer)


def relative_error(got: np.ndarray, want: np.ndarray) -> float:
    """max |got - want| relative to the scale of the reference (max |want|: logits or embeddings)."""
    return float(np.max(np.abs(got - want)) / np.max(np.abs(want)))


# Figures worth reading in the test log (quantization error per model and type): collected by
# tests through `report`, printed at the end of the run.
_REPORT: list[str] = []


def report(line: str) -> None:
    _REPORT.append(line)


def pytest_terminal_summary(terminalreporter):
    if _REPORT:
        terminalreporter.section("qconvert figures")
        for line in _REPORT:
            terminalreporter.write_line(line)


class CliTimeout(Exception):
    """run_cli_inprocess's alarm: the command ran longer than its timeout (a hang)."""


def run_cli_inprocess(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    """What `run_cli` returns, without a new interpreter (milliseconds instead of seconds: for
    fuzz loops and long catalogs): qconvert.cli.main with sys.argv set, stdout and stderr
    captured, its SystemExit turned into the return code. An exception main lets through is
    what Python would print for it, a traceback on stderr and exit 1. The main thread's SIGALRM
    raises CliTimeout after `timeout` seconds (a blocking open or read is interrupted too)."""
    import contextlib
    import io
    import signal
    import traceback
    from unittest import mock

    from qconvert.cli import main

    out, err = io.StringIO(), io.StringIO()
    argv = ["qconvert", *map(str, args)]

    def alarm(signum, frame):
        raise CliTimeout(f"{' '.join(argv)} ran longer than {timeout} s")

    previous = signal.signal(signal.SIGALRM, alarm)
    signal.setitimer(signal.ITIMER_REAL, timeout)
    try:
        with mock.patch.object(sys, "argv", argv), mock.patch.dict(os.environ), \
                contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            os.environ.pop("QCONVERT_DEBUG", None)
            try:
                main()
                code = 0
            except SystemExit as e:
                code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
                if isinstance(e.code, str):
                    err.write(e.code + "\n")
            except CliTimeout:
                raise
            except BaseException:  # noqa: BLE001 - what the interpreter would print
                err.write(traceback.format_exc())
                code = 1
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    return subprocess.CompletedProcess(argv, code, out.getvalue(), err.getvalue())


@functools.lru_cache(maxsize=1)
def _report_validator():
    import jsonschema

    from qconvert.report import SCHEMA_PATH
    schema = json.loads(SCHEMA_PATH.read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def check_report(data: dict) -> dict:
    """Validate a --json report against the shipped schema (every JSON output in the tests goes
    through here); returns it."""
    errors = sorted(_report_validator().iter_errors(data), key=lambda e: list(e.absolute_path))
    assert not errors, "report does not follow the schema:\n" + "\n".join(
        f"  at {'/'.join(map(str, e.absolute_path)) or '(root)'}: {e.message[:300]}" for e in errors[:10])
    return data


def run_json(*args: str, env: dict | None = None) -> tuple[subprocess.CompletedProcess, dict]:
    """`qconvert ARGS --json`: the process and its stdout parsed (exactly one JSON object) and
    validated against the schema."""
    proc = run_cli(*args, "--json", env=env)
    lines = proc.stdout.splitlines()
    assert len(lines) == 1, f"--json printed {len(lines)} lines on stdout:\n{proc.stdout[:2000]}\n{proc.stderr[-2000:]}"
    return proc, check_report(json.loads(lines[0]))


def conversion_content(path: Path) -> tuple:
    """What a GGUF file holds but the provenance record (which names where it was converted
    from: folder, Hub id, file mtimes): every other metadata key and value, the tensor infos and
    the data section's bytes. Two conversions of the same model from different copies of it
    have equal content and differ only in that record."""
    r = gguf.GGUFReader(path)
    keys = tuple((k, f.types[0].name if f.types else None, repr(f.contents())) for k, f in r.fields.items()
                 if not k.startswith("GGUF.") and k != "qconvert.provenance")
    tensors = tuple((t.name, t.tensor_type.name, tuple(int(d) for d in t.shape), int(t.data_offset) - r.data_offset)
                    for t in r.tensors)
    with open(path, "rb") as f:
        f.seek(r.data_offset)
        data = f.read()
    return keys, tensors, data, "qconvert.provenance" in r.fields


def assert_same_conversion(a: Path, b: Path) -> None:
    """Two GGUF files hold the same model: equal `conversion_content`."""
    ca, cb = conversion_content(a), conversion_content(b)
    assert ca[0] == cb[0], "metadata differs"
    assert ca[1] == cb[1], "tensor infos differ"
    assert ca[2] == cb[2], "tensor data differs"
    assert ca[3] == cb[3], "one holds a provenance record, the other not"


# Generated tensors (rope_freqs, rope_factors_long/short: computed from config.json, not read) are
# the correctly rounded float32 of their formula (qconvert/exact.py); llama.cpp's converter computes
# them in float32 with torch, whose pow differs by CPU. Comparisons with the converter's files allow
# them this many float32 ulp; every other tensor must be equal byte for byte.
GENERATED_ULPS = 4


@functools.lru_cache(maxsize=None)
def generated_tensors(model_dir: Path) -> frozenset[str]:
    """The GGUF names of the tensors qconvert generates for a checkpoint (no checkpoint source)."""
    from qconvert.convert import prepare_model

    model = prepare_model(model_dir)
    model.checkpoint.close()
    return frozenset(s.gguf_name for s in model.sources if s.generate is not None)


def ulp_distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """How many float32 values lie between each pair of a and b (0: equal; +0 and -0 are 0 apart),
    on the integer line where float32 bit patterns are ordered as their values."""
    def ordered(x: np.ndarray) -> np.ndarray:
        bits = np.ascontiguousarray(x, dtype=np.float32).view(np.int32).astype(np.int64)
        return np.where(bits < 0, -(bits & 0x7FFFFFFF), bits)

    return np.abs(ordered(a) - ordered(b))


def assert_generated_close(name: str, got: np.ndarray, want: np.ndarray, where: str = "") -> int:
    """A generated tensor against the converter's: float32 values at most GENERATED_ULPS ulp apart.
    Returns the largest distance, and reports it (with how many values differ) in the test log."""
    got, want = np.asarray(got).reshape(-1), np.asarray(want).reshape(-1)
    assert got.shape == want.shape, (name, got.shape, want.shape)
    ulps = ulp_distance(got.view(np.float32), want.view(np.float32))
    worst = int(ulps.max(initial=0))
    report(f"{where:<28} {name}: {int((ulps > 0).sum())} of {ulps.size} values differ from the converter's, "
           f"by at most {worst} ulp (allowed {GENERATED_ULPS})")
    assert worst <= GENERATED_ULPS, f"{where}: {name} is {worst} ulp from the converter's (allowed {GENERATED_ULPS})"
    return worst
