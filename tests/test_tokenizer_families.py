"""Real tokenizer families, proven on the real vocabularies llama.cpp ships.

llama.cpp's source tree holds vocab-only GGUFs of Llama 3, Qwen2 (Qwen1.5), GPT-2, Llama 2 and
Phi-3, each with a test corpus and the ids the real Hugging Face tokenizer gave for it
(models/ggml-vocab-NAME.gguf, .inp, .out). scripts/make_family_tokenizers.py rebuilds each
family's Hugging Face files from them (cached under ~/.cache/qconvert/family-tokenizers/; the
script refuses a rebuild that does not reproduce the .out ids). Here, for every family:

* a tiny random-weight checkpoint of the family's architecture with the real tokenizer files,
  converted by qconvert, is tokenized by llama.cpp: the .out ids for llama.cpp's corpus, the
  `tokenizers` library's ids for ours, special tokens in text parsed or not, BOS as HF adds it;
* every tokenizer.* key equals llama.cpp's converter's (--vocab-only) on the same files;
* the pre-tokenizer we name from tokenizer.json's regexes is the one llama.cpp's converter finds
  in its hash table, and that table entry is the family's real repository.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import gguf
import numpy as np
import pytest

from conftest import (CACHE, ROOT, TOKENIZERS, memoized, run_script, tiny_llama_config, tiny_llama_tensors,
                      write_vocab_gguf)
from qconvert.arch import REGISTRY
from qconvert.convert import convert
from qconvert.options import parse_kv_override
from qconvert.tokenizer import (BYTE, CONTROL, NORMAL, UNKNOWN, UNUSED, USER_DEFINED, identify_pre_tokenizer,
                                load_tokenizer)

sys.path.insert(0, str(ROOT / "scripts"))
from llama_cpp_src import llama_cpp_src  # noqa: E402
from make_family_tokenizers import read_cases  # noqa: E402

FAMILY_CACHE = CACHE / "family-tokenizers"
# family -> the repository llama.cpp made the vocab GGUF from (convert_hf_to_gguf_update.py)
FAMILIES = {
    "llama-bpe": "https://huggingface.co/meta-llama/Meta-Llama-3-8B",
    "qwen2": "https://huggingface.co/Qwen/Qwen1.5-7B",
    "gpt-2": "https://huggingface.co/openai-community/gpt2",
    "llama-spm": "https://huggingface.co/meta-llama/Llama-2-7b-hf",
    "phi-3": "https://huggingface.co/microsoft/Phi-3-mini-4k-instruct",
}
BPE_FAMILIES = ["llama-bpe", "qwen2", "gpt-2"]
# The folder name a user would have: general.name is derived from it, and llama.cpp reads that.
CHECKPOINT_NAMES = {f: r.rsplit("/", 1)[1] for f, r in FAMILIES.items()}

# Chat-formatted text with the family's special tokens.
SPECIAL_TEXT = {
    "llama-bpe": "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHello there<|eot_id|>"
                 "<|start_header_id|>assistant<|end_header_id|>\n\n",
    "qwen2": "<|im_start|>user\nHello there<|im_end|>\n<|im_start|>assistant\nHi<|im_end|>\n<|endoftext|>",
    "gpt-2": "Hello<|endoftext|>world <|endoftext|> again",
    "llama-spm": "<s>[INST] Hello there [/INST] Hi</s><s>[INST] Again [/INST]",
    "phi-3": "<s><|user|>\nHello there<|end|>\n<|assistant|>\nHi<|end|>\n<|endoftext|>",
}

# --------------------------------------------------------------------------------------------
# the rebuilt families and their corpora


@pytest.fixture(scope="session")
def families() -> Path:
    """The rebuilt Hugging Face tokenizer files of every family (built once, cached)."""
    run_script(ROOT / "scripts" / "make_family_tokenizers.py", "--out", FAMILY_CACHE)
    return FAMILY_CACHE


def vocab_cases(family: str) -> list[tuple[str, list[int]]]:
    """llama.cpp's corpus for a family: (text, ids the real Hugging Face tokenizer gave)."""
    return read_cases(llama_cpp_src() / "models", family)


# The 35 strings every fixture tokenizer is checked on (scripts/make_tokenizer_fixtures.py).
CORPUS = [c["text"] for c in
          json.loads((TOKENIZERS / "tiny-bpe" / "expected.json").read_text(encoding="utf-8"))["cases"]]


@pytest.fixture(scope="module")
def hf(families):
    """family -> the `tokenizers` library on the rebuilt tokenizer.json."""
    import tokenizers
    return memoized(lambda family: tokenizers.Tokenizer.from_file(str(families / family / "tokenizer.json")))


def real_config(families: Path, family: str) -> dict:
    return json.loads((families / family / "config.json").read_text(encoding="utf-8"))


# --------------------------------------------------------------------------------------------
# tiny checkpoints of each family's architecture

SPECIAL_ID_NAMES = ("bos_token_id", "eos_token_id", "pad_token_id")
SMALL = dict(hidden_size=16, intermediate_size=32, num_attention_heads=2, num_key_value_heads=2,
             max_position_embeddings=64)


def w(rng, *shape):
    return (rng.standard_normal(shape) * 0.05).astype(np.float32)


def tiny_llama(n_vocab: int, ids: dict) -> tuple[dict, dict]:
    # Tied: Llama 3's 128256-row embedding is then 8 MB once, not twice.
    cfg = tiny_llama_config(n_vocab, **SMALL, tie_word_embeddings=True, **ids)
    return cfg, tiny_llama_tensors(cfg)


def tiny_qwen2(n_vocab: int, ids: dict) -> tuple[dict, dict]:
    cfg = tiny_llama_config(n_vocab, **SMALL, tie_word_embeddings=True, **ids,
                            architectures=["Qwen2ForCausalLM"], model_type="qwen2", rms_norm_eps=1e-6)
    t = tiny_llama_tensors(cfg)
    rng = np.random.default_rng(1)
    for name in [n for n in t if n.endswith(("q_proj.weight", "k_proj.weight", "v_proj.weight"))]:
        t[name.replace(".weight", ".bias")] = w(rng, t[name].shape[0])
    return cfg, t


def tiny_gpt2(n_vocab: int, ids: dict) -> tuple[dict, dict]:
    n, ctx = 16, 64
    cfg = {"architectures": ["GPT2LMHeadModel"], "model_type": "gpt2", "n_embd": n, "n_head": 2, "n_layer": 1,
           "n_positions": ctx, "n_ctx": ctx, "n_inner": None, "layer_norm_epsilon": 1e-5, "vocab_size": n_vocab,
           "activation_function": "gelu_new", "torch_dtype": "float32", **ids}
    rng = np.random.default_rng(0)
    # Conv1D weights are stored [in, out]; names without the `transformer.` prefix, as gpt2's.
    t = {"wte.weight": w(rng, n_vocab, n), "wpe.weight": w(rng, ctx, n),
         "ln_f.weight": 1 + w(rng, n), "ln_f.bias": w(rng, n)}
    shapes = {"attn.c_attn": (n, 3 * n), "attn.c_proj": (n, n), "mlp.c_fc": (n, 4 * n), "mlp.c_proj": (4 * n, n)}
    for layer, (i, o) in shapes.items():
        t[f"h.0.{layer}.weight"], t[f"h.0.{layer}.bias"] = w(rng, i, o), w(rng, o)
    for ln in ("ln_1", "ln_2"):
        t[f"h.0.{ln}.weight"], t[f"h.0.{ln}.bias"] = 1 + w(rng, n), w(rng, n)
    return cfg, t


def tiny_phi3(n_vocab: int, ids: dict) -> tuple[dict, dict]:
    cfg = tiny_llama_config(n_vocab, **SMALL, **ids, architectures=["Phi3ForCausalLM"], model_type="phi3",
                            original_max_position_embeddings=64, sliding_window=None, rope_scaling=None)
    llama = tiny_llama_tensors(cfg)
    t = {}
    for name, value in llama.items():
        if ".k_proj." in name or ".v_proj." in name or ".up_proj." in name:
            continue
        if ".q_proj." in name:  # Phi-3's fused Q|K|V rows
            name, value = name.replace("q_proj", "qkv_proj"), np.concatenate(
                [value, llama[name.replace("q_proj", "k_proj")], llama[name.replace("q_proj", "v_proj")]])
        elif ".gate_proj." in name:  # and gate|up rows
            name, value = name.replace("gate_proj", "gate_up_proj"), np.concatenate(
                [value, llama[name.replace("gate_proj", "up_proj")]])
        t[name] = value
    return cfg, t


TINY = {"LlamaForCausalLM": tiny_llama, "Qwen2ForCausalLM": tiny_qwen2,
        "GPT2LMHeadModel": tiny_gpt2, "Phi3ForCausalLM": tiny_phi3}


def family_arch(config: dict) -> str:
    """The family's architecture; Llama's where qconvert has no adapter for it (GPT-2 and Phi-3
    came later): the tokenizer files are what these tests are about."""
    arch = config["architectures"][0]
    return arch if arch in REGISTRY else "LlamaForCausalLM"


def make_checkpoint(families: Path, family: str, root: Path) -> Path:
    from safetensors.numpy import save_file

    real = real_config(families, family)
    ids = {k: real[k] for k in SPECIAL_ID_NAMES if k in real}
    cfg, tensors = TINY[family_arch(real)](real["vocab_size"], ids)
    path = root / CHECKPOINT_NAMES[family]
    path.mkdir(parents=True)
    (path / "config.json").write_text(json.dumps(cfg, indent=2))
    save_file(tensors, str(path / "model.safetensors"))
    for f in (families / family).iterdir():
        if f.is_file() and f.name != "config.json" and not f.name.startswith("."):
            (path / f.name).write_bytes(f.read_bytes())
    return path


@pytest.fixture(scope="module")
def converted(families, tmp_path_factory):
    """(family, *--override-kv) -> (checkpoint, F32 GGUF converted by qconvert)."""
    def make(family: str, *overrides: str) -> tuple[Path, Path]:
        root = tmp_path_factory.mktemp(family)
        ckpt = make_checkpoint(families, family, root)
        out = root / "model.gguf"
        convert(ckpt, out, qtype="F32", kv_overrides=tuple(parse_kv_override(o) for o in overrides))
        return ckpt, out
    return memoized(make)


@pytest.fixture(scope="module")
def llama_cpp(converted):
    """(family, *overrides) -> llama.cpp's vocab of our GGUF."""
    import llama_cpp

    def load(family: str, *overrides: str):
        return llama_cpp.Llama(model_path=str(converted(family, *overrides)[1]), vocab_only=True, verbose=False)
    return memoized(load)


def tokenize(llm, text: str, special: bool, add_bos: bool = False) -> list[int]:
    return llm.tokenize(text.encode("utf-8"), add_bos=add_bos, special=special)


def llama_cpp_attr(name: str) -> int:
    import llama_cpp
    return getattr(llama_cpp, f"LLAMA_TOKEN_ATTR_{name}")


def tok_added(tok) -> list[dict]:
    """The added tokens of a `tokenizers` tokenizer: [{"id", "content", "special"}]."""
    return [{"id": i, "content": a.content, "special": a.special} for i, a in tok.get_added_tokens_decoder().items()]


# --------------------------------------------------------------------------------------------
# llama.cpp on our GGUF against the real tokenizers


@pytest.mark.parametrize("family", FAMILIES)
def test_llama_cpp_gives_the_real_tokenizers_ids(llama_cpp, family):
    """llama.cpp's own corpus (ASCII, accents, Cyrillic, Khmer, CJK, emoji, code, whitespace runs,
    digit runs, contractions): on our GGUF, llama.cpp gives the ids the real Hugging Face
    tokenizer gave when llama.cpp recorded them -- an oracle independent of our rebuild."""
    llm = llama_cpp(family)
    cases = vocab_cases(family)
    assert len(cases) == 46
    bad = [f"{text!r}: llama.cpp {got} != recorded {want}" for text, want in cases
           if (got := tokenize(llm, text, special=False)) != want]
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize("family", FAMILIES)
def test_llama_cpp_tokenizes_the_corpus_like_tokenizers(llama_cpp, hf, family):
    llm, tok = llama_cpp(family), hf(family)
    bad = []
    for text in CORPUS:
        want = tok.encode(text, add_special_tokens=False).ids
        for special in (False, True):  # the corpus holds no special tokens: the same either way
            if (got := tokenize(llm, text, special)) != want:
                bad.append(f"{text!r} special={special}: llama.cpp {got} != tokenizers {want}")
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize("family", [f for f in FAMILIES if f != "phi-3"])  # phi-3: see below
def test_special_tokens_in_text(llama_cpp, hf, family):
    llm, tok = llama_cpp(family), hf(family)
    text = SPECIAL_TEXT[family]
    want = tok.encode(text, add_special_tokens=False).ids
    # special=True: control tokens in the text are parsed, as `tokenizers` always does
    assert tokenize(llm, text, special=True) == want
    control = {i for i in want if llm._model.token_get_attr(i) & llama_cpp_attr("CONTROL")}
    assert control == {a["id"] for a in tok_added(tok) if a["special"] and a["id"] in want}
    assert control
    # special=False: they are plain text
    assert not control & set(tokenize(llm, text, special=False))


@pytest.mark.parametrize("family", FAMILIES)
def test_bos_added_as_hugging_face_adds_it(llama_cpp, hf, family):
    """Llama 2/3 and Phi-3 put BOS first (their post-processor's template); GPT-2 and Qwen add
    nothing (a ByteLevel post-processor): llama.cpp's add_bos must do the same."""
    llm, tok = llama_cpp(family), hf(family)
    for text in ("Hello world", " leading space", ""):
        want = tok.encode(text, add_special_tokens=True).ids
        assert tokenize(llm, text, special=False, add_bos=True) == want, text
    assert (tok.encode("Hello", add_special_tokens=True).ids[0] == llm.token_bos()) == (
        family in ("llama-bpe", "llama-spm", "phi-3"))


def test_qwen2_nfc_is_not_applied_by_llama_cpp(llama_cpp, hf, families):
    """Documented difference. Qwen's tokenizer.json normalizes text to NFC first; llama.cpp has no
    NFC step (llama-vocab.cpp normalizes only for WordPiece, NFD), so text with decomposed
    accents (e + U+0301) tokenizes as Hugging Face would without the normalizer. On NFC text --
    what almost all text is, and all of the corpora above -- both agree."""
    import unicodedata

    import tokenizers

    llm, tok = llama_cpp("qwen2"), hf("qwen2")
    text = "Cafe\u0301 na\u0308ive"
    composed = unicodedata.normalize("NFC", text)
    assert composed != text
    want = tok.encode(text, add_special_tokens=False).ids
    got = tokenize(llm, text, special=False)
    assert got != want and want == tokenize(llm, composed, special=False)
    tj = json.loads((families / "qwen2" / "tokenizer.json").read_text(encoding="utf-8"))
    assert tj["normalizer"] == {"type": "NFC"}
    tj["normalizer"] = None
    assert got == tokenizers.Tokenizer.from_str(json.dumps(tj)).encode(text, add_special_tokens=False).ids


# --------------------------------------------------------------------------------------------
# SentencePiece: byte fallback, user-defined and control added tokens (Llama 2, Phi-3)


def gguf_token_types(path: Path) -> list[int]:
    return tokenizer_fields(path)["tokenizer.ggml.token_type"][1]


@pytest.mark.parametrize("family", ["llama-spm", "phi-3"])
def test_sentencepiece_byte_tokens_and_types(converted, llama_cpp, hf, family):
    ckpt, path = converted(family)
    config = json.loads((ckpt / "config.json").read_text())
    tok = load_tokenizer(ckpt, config, REGISTRY[config["architectures"][0]].llama_set_vocab)
    types = gguf_token_types(path)
    assert tok.token_types == types
    assert tok.tokens[3:259] == [f"<0x{b:02X}>" for b in range(256)] and set(types[3:259]) == {BYTE}
    # Characters outside the 32000 pieces fall back to their UTF-8 bytes (🦙 is F0 9F A6 99).
    ids = tokenize(llama_cpp(family), "a 🦙", special=False)
    assert ids == hf(family).encode("a 🦙", add_special_tokens=False).ids
    assert [tok.tokens[i] for i in ids if types[i] == BYTE] == ["<0xF0>", "<0x9F>", "<0xA6>", "<0x99>"]
    if family == "llama-spm":  # sentencepiece's own types; no added tokens
        assert types[:3] == [UNKNOWN, CONTROL, CONTROL] and types.count(NORMAL) == 32000 - 259
    else:
        # Phi-3: tokenizer_config's added_tokens_decoder makes <unk> control, and </s> -- flagged
        # not special there -- user-defined; its 11 added tokens are special, so control; the
        # embedding's last 53 rows have no token.
        assert types[:3] == [CONTROL, CONTROL, USER_DEFINED]
        assert tok.tokens[32000:32011] == ["<|endoftext|>", "<|assistant|>", "<|placeholder1|>", "<|placeholder2|>",
                                           "<|placeholder3|>", "<|placeholder4|>", "<|system|>", "<|end|>",
                                           "<|placeholder5|>", "<|placeholder6|>", "<|user|>"]
        assert set(types[32000:32011]) == {CONTROL} and set(types[32011:]) == {UNUSED} and len(types) == 32064
        assert tok.scores[32000:32011] == [-1000.0] * 11 and tok.scores[32011:] == [-10000.0] * 53


def test_phi3_user_defined_eos_text(llama_cpp, hf, converted):
    """Documented difference. Phi-3's </s> is an added token not flagged special, so Hugging Face
    matches it in any text, and the GGUF types it user-defined (as the converter does), which
    llama.cpp also matches in any text. But llama.cpp turns every token spelled like an
    end-of-generation token ("</s>", "<|endoftext|>", ...) into a control token when it loads the
    vocab (llama_vocab::impl::load, "control-looking token ... will be overridden"), and control
    tokens are only parsed with special=True."""
    assert gguf_token_types(converted("phi-3")[1])[2] == USER_DEFINED
    llm = llama_cpp("phi-3", "general.name=str:Phi3")  # with Phi-3's rstrip (see below)
    text = "one</s>two"
    want = hf("phi-3").encode(text, add_special_tokens=False).ids
    assert 2 in want
    assert tokenize(llm, text, special=True) == want
    as_text = tokenize(llm, text, special=False)
    assert 2 not in as_text and "".join(hf("phi-3").id_to_token(i) for i in as_text) == "\u2581one</s>two"


def test_phi3_rstrip_follows_the_model_name(llama_cpp, hf, families):
    """Documented difference. Phi-3's added tokens strip the whitespace on their right
    (tokenizer.json rstrip: <|user|>\\n is one token). GGUF has no key for that: llama.cpp sets
    the attribute itself, for every control/user-defined token but <unk> <s> <|endoftext|>, only
    when general.name contains "phi3" or "phi-3" (llama_vocab::impl::load). qconvert, like
    llama.cpp's converter, names the model from its folder (gguf.Metadata): for
    Phi-3-mini-4k-instruct that is "Phi 3 Mini 4k Instruct", so llama.cpp keeps the newline after
    <|user|> as a token of its own, exactly as Hugging Face would without rstrip.
    `--override-kv general.name=str:Phi3` gives llama.cpp the rule, and Hugging Face's ids."""
    import tokenizers

    text = SPECIAL_TEXT["phi-3"] + " and</s> more"
    want = hf("phi-3").encode(text, add_special_tokens=False).ids
    name = llama_cpp("phi-3").metadata["general.name"]
    assert name == "Phi 3 Mini 4k Instruct" and "phi3" not in name.lower() and "phi-3" not in name.lower()
    got = tokenize(llama_cpp("phi-3"), text, special=True)
    assert got != want
    tj = json.loads((families / "phi-3" / "tokenizer.json").read_text(encoding="utf-8"))
    for a in tj["added_tokens"]:
        a["rstrip"] = False
    no_rstrip = tokenizers.Tokenizer.from_str(json.dumps(tj)).encode(text, add_special_tokens=False).ids
    assert got == no_rstrip
    # with the name llama.cpp looks for, the same file tokenizes as Hugging Face does
    assert tokenize(llama_cpp("phi-3", "general.name=str:Phi3"), text, special=True) == want


# --------------------------------------------------------------------------------------------
# every tokenizer.* key against llama.cpp's converter; the pre-tokenizer against its hash table


def tokenizer_fields(path: Path) -> dict[str, tuple]:
    """{key: (value types, value)} of every tokenizer.* key of a GGUF file.

    Read here rather than with gguf.GGUFReader, which takes 20 s on Llama 3's 128256 tokens and
    280147 merges: the KV section is a flat sequence of (key, type, value) (gguf-py
    constants.GGUFValueType; gguf.md in ggml)."""
    T = gguf.GGUFValueType
    scalars = {T.UINT8: "<u1", T.INT8: "<i1", T.UINT16: "<u2", T.INT16: "<i2", T.UINT32: "<u4", T.INT32: "<i4",
               T.FLOAT32: "<f4", T.BOOL: "?", T.UINT64: "<u8", T.INT64: "<i8", T.FLOAT64: "<f8"}
    data = path.read_bytes()
    pos = 0

    def take(n: int) -> bytes:
        nonlocal pos
        pos += n
        return data[pos - n:pos]

    def u(n: int) -> int:
        return int.from_bytes(take(n), "little")

    def string() -> str:
        return take(u(8)).decode("utf-8")

    def value(vtype: int, count: int | None = None):
        if vtype == T.STRING:
            return string() if count is None else [string() for _ in range(count)]
        dtype = np.dtype(scalars[T(vtype)])
        values = np.frombuffer(take(dtype.itemsize * (count or 1)), dtype).tolist()
        return values[0] if count is None else values

    assert take(4) == b"GGUF" and u(4) == 3
    u(8)  # tensor count
    fields = {}
    for _ in range(u(8)):
        key, vtype = string(), T(u(4))
        if vtype == T.ARRAY:
            etype = T(u(4))
            fields[key] = ((vtype, etype), value(etype, u(8)))
        else:
            fields[key] = ((vtype,), value(vtype))
    return {k: v for k, v in fields.items() if k.startswith("tokenizer.")}


@pytest.mark.slow  # runs llama.cpp's converter (torch + transformers), ~10 s per family
@pytest.mark.parametrize("family", FAMILIES)
def test_every_key_equals_llama_cpp_converter(families, tmp_path, family):
    """On the real files with the real config.json, with no --vocab-pre: for the BPE families the
    converter names the pre-tokenizer from its own hash table."""
    folder = families / family
    config = real_config(families, family)
    ref = tmp_path / "ref.gguf"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "oracle_convert.py"), str(folder), str(ref), "--vocab-only"],
        capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    tok = load_tokenizer(folder, config, REGISTRY[family_arch(config)].llama_set_vocab)
    theirs = tokenizer_fields(ref)
    ours = tokenizer_fields(write_vocab_gguf(tok, tmp_path / "ours.gguf"))
    assert sorted(ours) == sorted(theirs)
    for key in theirs:
        assert ours[key] == theirs[key], key


@pytest.mark.slow  # imports llama.cpp's converter (torch + transformers)
def test_pre_tokenizer_name_equals_llama_cpp_hash_table(families):
    """The test-time cross-check of identify_pre_tokenizer. llama.cpp's converter hashes the ids of
    a probe text (get_vocab_base_pre), which needs the tokenizer run by transformers; qconvert
    does not depend on either, so it reads the regexes instead, and this proves that on every real
    BPE family here both give the same name, and that the hash is the very one llama.cpp recorded
    for the family's repository (so the rebuilt files tokenize as the real ones, BOS included).

    Documented difference: a tokenizer the table does not list (tiny-bpe, trained here with
    SmolLM's pre-tokenizer) makes the converter give up; we still name it."""
    dirs = {f: families / f for f in BPE_FAMILIES}
    dirs["smollm2"] = TOKENIZERS / "smollm2"
    dirs["tiny-bpe"] = TOKENIZERS / "tiny-bpe"
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "oracle_pre_hash.py"), *map(str, dirs.values())],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    answers = {Path(a["dir"]): a for a in map(json.loads, proc.stdout.splitlines())}
    repos = {**FAMILIES, "smollm2": "https://huggingface.co/HuggingFaceTB/SmolLM-135M", "tiny-bpe": None}
    for name, folder in dirs.items():
        answer = answers[folder]
        ours = identify_pre_tokenizer(json.loads((folder / "tokenizer.json").read_text(encoding="utf-8")))
        assert answer["ref"] == repos[name], (name, answer)
        if name == "tiny-bpe":
            assert answer["pre"] is None and ours == "smollm"
        else:
            assert answer["pre"] == ours, (name, answer, ours)


# --------------------------------------------------------------------------------------------
# a pre-tokenizer llama.cpp has none for


def test_unknown_pre_tokenizer_is_one_line_error_with_the_regex(families, tmp_path):
    """Llama 3's tokenizer with the digit rule changed to DeepSeek-style runs of up to 4: a
    pre-tokenizer that qconvert cannot map to one llama.cpp implements. The CLI says so on one
    line, showing the regex, and writes nothing."""
    from conftest import run_cli
    from test_cli_errors import assert_clean_failure

    ckpt = make_checkpoint(families, "llama-bpe", tmp_path)
    tj = json.loads((ckpt / "tokenizer.json").read_text(encoding="utf-8"))
    split = tj["pre_tokenizer"]["pretokenizers"][0]
    odd = split["pattern"]["Regex"].replace(r"\p{N}{1,3}", r"\p{N}{1,4}")
    assert odd != split["pattern"]["Regex"]
    split["pattern"]["Regex"] = odd
    (ckpt / "tokenizer.json").write_text(json.dumps(tj, ensure_ascii=False), encoding="utf-8")
    out = tmp_path / "out.gguf"
    proc = run_cli("quantize", ckpt, "-t", "F16", "-o", out, "--no-progress")
    assert_clean_failure(proc, out, str(ckpt / "tokenizer.json"), repr(odd), "ByteLevel(", "llama-bpe", "qwen2",
                         "gpt-2", code=1)
