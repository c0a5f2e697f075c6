"""Tokenizer files that llama.cpp would refuse or run wrongly are refused before anything is
written (qconvert/validate/tokenizer.py), and a good conversion prints nothing on stderr.

The catalog runs the command line's entry point in this process (an interpreter start costs
2-4 s on the test machines, the check milliseconds): exit code, stderr, target and checkpoint are
what a user gets. A few cases, FIFOs among them, also run as a real subprocess.
"""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest
import tokenizers

from conftest import MODELS, TOKENIZERS, run_cli, tiny_llama_config, tiny_llama_tensors, tokenizer_vocab_size
from conftest import assert_same_conversion, write_checkpoint
from test_cli_errors import assert_clean_failure

# --------------------------------------------------------------------------------------------
# helpers


def checkpoint(tmp_path: Path, tokenizer: str = "tiny-bpe", vocab_size: int | None = None) -> Path:
    """A one-layer random Llama with a fixture tokenizer, whose rows match the vocabulary."""
    cfg = tiny_llama_config(vocab_size or tokenizer_vocab_size(tokenizer))
    return write_checkpoint(tmp_path / "ckpt", cfg, tiny_llama_tensors(cfg), tokenizer)


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every regular file of the checkpoint, by name (FIFOs and folders are left alone)."""
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


def edit_json(path: Path, edit: Callable[[dict], object]) -> None:
    data = json.loads(path.read_text(encoding="utf-8"))
    edit(data)
    path.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")


@dataclass
class Proc:
    """What a run of the command line gave: subprocess.CompletedProcess's fields."""

    returncode: int
    stdout: str
    stderr: str


def run_in_process(capsys, *args: str) -> Proc:
    """`qconvert ARGS` through its console entry point, in this process."""
    from qconvert.cli import main

    saved = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    argv, sys.argv = sys.argv, ["qconvert", *map(str, args)]
    capsys.readouterr()
    try:
        main()
        code = 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    finally:
        sys.argv = argv
        for s, handler in saved.items():  # in case the entry point installs its own
            signal.signal(s, handler)
    out = capsys.readouterr()
    return Proc(code, out.out, out.err)


def quantize_args(model: Path, out: Path) -> tuple:
    return ("quantize", model, "-t", "Q8_0", "-o", out, "--no-progress")


def llama_vocab(path: Path):
    """llama.cpp's vocabulary of a GGUF: what a file we accept must load as."""
    import llama_cpp

    return llama_cpp.Llama(model_path=str(path), vocab_only=True, verbose=False)


def run_subprocess(*args, timeout: float = 120) -> subprocess.CompletedProcess:
    """conftest.run_cli with a short timeout: a hang on a FIFO must fail the test, not stall it."""
    env = {k: v for k, v in os.environ.items() if k != "QCONVERT_DEBUG"}
    return subprocess.run([sys.executable, "-m", "qconvert", *map(str, args)], capture_output=True, text=True,
                          env=env, timeout=timeout)


# --------------------------------------------------------------------------------------------
# mutations: each takes the checkpoint folder and damages one entry of one file


def tokenizer_json(edit: Callable[[dict], object]) -> Callable[[Path], None]:
    return lambda ckpt: edit_json(ckpt / "tokenizer.json", edit)


def tokenizer_config(edit: Callable[[dict], object]) -> Callable[[Path], None]:
    return lambda ckpt: edit_json(ckpt / "tokenizer_config.json", edit)


def config_json(edit: Callable[[dict], object]) -> Callable[[Path], None]:
    return lambda ckpt: edit_json(ckpt / "config.json", edit)


def write_bytes(name: str, data: bytes | Callable[[bytes], bytes]) -> Callable[[Path], None]:
    def mutate(ckpt: Path) -> None:
        path = ckpt / name
        path.write_bytes(data(path.read_bytes()) if callable(data) else data)
    return mutate


def vocab_txt_only(data: bytes) -> Callable[[Path], None]:
    """A bare vocab.txt BERT checkpoint (tokenizer.json removed) with this vocab.txt."""
    def mutate(ckpt: Path) -> None:
        (ckpt / "tokenizer.json").unlink()
        (ckpt / "vocab.txt").write_bytes(data)
    return mutate


def set_vocab_id(token: str, value) -> Callable[[dict], None]:
    return lambda tj: tj["model"]["vocab"].__setitem__(token, value)


def set_merge(i: int, value) -> Callable[[dict], None]:
    return lambda tj: tj["model"]["merges"].__setitem__(i, value)


def set_added(i: int, key: str, value) -> Callable[[dict], None]:
    return lambda tj: tj["added_tokens"][i].__setitem__(key, value)


def set_key(key: str, value) -> Callable[[dict], None]:
    return lambda d: d.__setitem__(key, value)


def del_key(key: str) -> Callable[[dict], None]:
    return lambda d: d.pop(key)


def template(first: str) -> dict:
    """A TemplateProcessing post-processor that puts `first` before every text."""
    return {"type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": first, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
            "pair": [{"SpecialToken": {"id": first, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                     {"Sequence": {"id": "B", "type_id": 1}}],
            "special_tokens": {first: {"id": first, "ids": [1 if first == "<|im_start|>" else 0], "tokens": [first]}}}


def append_duplicate_piece(model: bytes) -> bytes:
    """tokenizer.model with its first piece (ModelProto field 1) repeated at the end."""
    assert model[0] == 0x0A  # field 1, length-delimited
    size, pos, shift = 0, 1, 0
    while True:
        b = model[pos]
        size |= (b & 0x7F) << shift
        pos += 1
        shift += 7
        if not b & 0x80:
            break
    return model + model[:pos + size]


BPE_N = tokenizer_vocab_size("tiny-bpe")  # 401: ids 0..399 in the vocab, <tool> = 400 added
SPM_N = tokenizer_vocab_size("tiny-spm")


@dataclass
class Case:
    id: str
    mutate: Callable[[Path], None]
    phrases: tuple[str, ...]  # in the error line: the file, the entry, what was found
    tokenizer: str = "tiny-bpe"
    vocab_size: int | None = None  # config.json's (and the embedding's rows), when not the fixture's
    blocks: bool = False  # a FIFO: a regression would block, so only run in a subprocess with a timeout


CASES = [
    # tokenizer.json: the vocabulary
    Case("vocab-empty", tokenizer_json(lambda tj: tj["model"].update(vocab={}, merges=[])),
         ("tokenizer.json", '"model.vocab" is empty')),
    Case("vocab-not-object", tokenizer_json(lambda tj: tj["model"].update(vocab=[["a", 0]])),
         ("tokenizer.json", '"model.vocab" is an array', "expected an object")),
    Case("vocab-id-negative", tokenizer_json(set_vocab_id("he", -1)), ("tokenizer.json", "'he'", "the number -1")),
    Case("vocab-id-bool", tokenizer_json(set_vocab_id("he", True)), ("tokenizer.json", "'he'", "the boolean true")),
    Case("vocab-id-string", tokenizer_json(set_vocab_id("he", "7")), ("tokenizer.json", "'he'", "the string '7'")),
    Case("vocab-id-float", tokenizer_json(set_vocab_id("he", 7.0)), ("tokenizer.json", "'he'", "the number 7.0")),
    Case("vocab-id-duplicate", tokenizer_json(set_vocab_id("he", 3)),
         ("tokenizer.json", "'!'", "'he'", "both have id 3")),
    Case("vocab-id-beyond-rows", tokenizer_json(set_vocab_id("he", BPE_N + 5)),
         ("tokenizer.json", "'he'", f"id {BPE_N + 5}", f"vocab_size is {BPE_N}")),
    Case("model-not-object", tokenizer_json(set_key("model", "BPE")), ("tokenizer.json", '"model" is the string')),
    # tokenizer.json: merges
    Case("merges-missing", tokenizer_json(lambda tj: tj["model"].pop("merges")),
         ("tokenizer.json", '"model.merges" is missing or empty')),
    Case("merges-empty", tokenizer_json(lambda tj: tj["model"].update(merges=[])),
         ("tokenizer.json", '"model.merges" is missing or empty')),
    Case("merges-not-list", tokenizer_json(lambda tj: tj["model"].update(merges="h e")),
         ("tokenizer.json", '"model.merges" is the string')),
    Case("merge-three-parts", tokenizer_json(set_merge(2, "h e l")),
         ("tokenizer.json", '"model.merges[2]"', "'h e l'")),
    Case("merge-no-space", tokenizer_json(set_merge(2, "he")), ("tokenizer.json", '"model.merges[2]"', "'he'")),
    Case("merge-one-item", tokenizer_json(set_merge(2, ["h"])), ("tokenizer.json", '"model.merges[2]"', "an array")),
    Case("merge-ints", tokenizer_json(set_merge(2, [1, 2])), ("tokenizer.json", '"model.merges[2]"', "an array")),
    Case("merge-part-unknown", tokenizer_json(set_merge(2, ["h", "\u00e9\u00e9"])),
         ("tokenizer.json", '"model.merges[2]"', "'éé'", "not in the vocab")),
    Case("merge-result-unknown", tokenizer_json(set_merge(2, ["!", "!"])),
         ("tokenizer.json", '"model.merges[2]"', "'!!'", "not in the vocab")),
    # tokenizer.json: added tokens
    Case("added-not-list", tokenizer_json(set_key("added_tokens", {"<tool>": 400})),
         ("tokenizer.json", '"added_tokens" is an object')),
    Case("added-entry-not-object", tokenizer_json(lambda tj: tj["added_tokens"].append("<x>")),
         ("tokenizer.json", '"added_tokens[4]"', "the string '<x>'")),
    Case("added-id-negative", tokenizer_json(set_added(3, "id", -4)), ("tokenizer.json", "'<tool>'", "the number -4")),
    Case("added-id-bool", tokenizer_json(set_added(3, "id", False)),
         ("tokenizer.json", "'<tool>'", "the boolean false")),
    Case("added-id-missing", tokenizer_json(lambda tj: tj["added_tokens"][3].pop("id")),
         ("tokenizer.json", "'<tool>'", "null")),
    Case("added-id-duplicate", tokenizer_json(set_added(3, "id", 2)),
         ("tokenizer.json", "'<|im_end|>'", "'<tool>'", "both have id 2")),
    Case("added-id-beyond-rows", tokenizer_json(set_added(3, "id", BPE_N + 2)),
         ("tokenizer.json", "'<tool>'", f"id {BPE_N + 2}", f"vocab_size is {BPE_N}")),
    Case("added-content-empty", tokenizer_json(set_added(3, "content", "")),
         ("tokenizer.json", '"added_tokens[3]"', "the string ''")),
    Case("added-content-not-string", tokenizer_json(set_added(3, "content", 5)),
         ("tokenizer.json", '"added_tokens[3]"', "the number 5")),
    Case("added-same-text-as-vocab", tokenizer_json(set_added(3, "content", "he")),
         ("tokenizer.json", "'he'", "400", "once exported")),
    Case("post-processor-not-object", tokenizer_json(set_key("post_processor", ["ByteLevel"])),
         ("tokenizer.json", '"post_processor" is an array')),
    Case("template-not-objects", tokenizer_json(set_key("post_processor", {"type": "TemplateProcessing",
                                                                           "single": ["<s>", "$A"]})),
         ("tokenizer.json", '"post_processor.single"')),
    Case("normalizer-sequence-not-objects", tokenizer_json(set_key("normalizer", {"type": "Sequence",
                                                                                  "normalizers": ["NFC"]})),
         ("tokenizer.json", '"normalizer.normalizers[0]"', "the string 'NFC'")),
    Case("model-type-not-string", tokenizer_json(lambda tj: tj["model"].update(type=["BPE"])),
         ("tokenizer.json", '"model.type" is an array')),
    Case("pre-tokenizer-type-not-string", tokenizer_json(set_key("pre_tokenizer", {"type": ["Split"]})),
         ("tokenizer.json", '"pre_tokenizer.type" is an array')),
    Case("split-pattern-not-object", tokenizer_json(set_key("pre_tokenizer", {"type": "Split", "pattern": "x"})),
         ("tokenizer.json", '"pre_tokenizer.pattern" is the string')),
    Case("wpm-subword-prefix-not-string", tokenizer_json(lambda tj: tj["model"].update(continuing_subword_prefix=5)),
         ("tokenizer.json", '"model.continuing_subword_prefix" is the number 5'), tokenizer="tiny-wpm"),
    Case("template-first-token-not-bos", tokenizer_json(set_key("post_processor", template("<|endoftext|>"))),
         ("tokenizer.json", "'<|endoftext|>' before every text", "bos_token is '<|im_start|>'")),
    # tokenizer_config.json: special tokens and added_tokens_decoder
    Case("special-token-nowhere", tokenizer_config(set_key("eos_token", "<|nothing|>")),
         ("tokenizer_config.json", '"eos_token"', "'<|nothing|>'", "not a token")),
    Case("special-token-object-nowhere", tokenizer_config(set_key("bos_token", {"content": "<|nothing|>"})),
         ("tokenizer_config.json", '"bos_token"', "'<|nothing|>'", "not a token")),
    Case("special-token-wrong-type", tokenizer_config(set_key("pad_token", 2)),
         ("tokenizer_config.json", '"pad_token"', "the number 2")),
    Case("decoder-not-object", tokenizer_config(set_key("added_tokens_decoder", [])),
         ("tokenizer_config.json", '"added_tokens_decoder" is an array')),
    Case("decoder-key-not-id", tokenizer_config(lambda c: c["added_tokens_decoder"].update(
        {"x1": {"content": "<x>"}})), ("tokenizer_config.json", "added_tokens_decoder['x1']", "token id")),
    Case("decoder-content-missing", tokenizer_config(lambda c: c["added_tokens_decoder"]["400"].pop("content")),
         ("tokenizer_config.json", "added_tokens_decoder['400']", '"content"')),
    Case("decoder-id-beyond-rows", tokenizer_config(lambda c: c["added_tokens_decoder"].update(
        {str(BPE_N + 9): {"content": "<x>"}})), ("tokenizer_config.json", "'<x>'", f"id {BPE_N + 9}")),
    # config.json: vocab_size (refused by the config rules, validate/model.py, before the tokenizer
    # reads it), then special token ids
    Case("config-vocab-size-string", config_json(set_key("vocab_size", str(BPE_N))),
         ("config.json", "vocab_size is", f"'{BPE_N}' (str)")),
    Case("config-vocab-size-float", config_json(set_key("vocab_size", float(BPE_N))),
         ("config.json", "vocab_size is", f"{float(BPE_N)} (float)")),
    Case("config-vocab-size-zero", config_json(set_key("vocab_size", 0)),
         ("config.json", "vocab_size is 0", "expected an integer from 1")),
    Case("config-eos-beyond", config_json(set_key("eos_token_id", BPE_N + 3)),
         ("config.json", '"eos_token_id" is', str(BPE_N + 3), f"{BPE_N} tokens")),
    Case("config-eos-list-beyond", config_json(set_key("eos_token_id", [2, BPE_N])),
         ("config.json", '"eos_token_id" is', str(BPE_N))),
    Case("config-eos-list-empty", config_json(set_key("eos_token_id", [])), ("config.json", '"eos_token_id"', "empty")),
    Case("config-bos-bool", config_json(set_key("bos_token_id", True)),
         ("config.json", '"bos_token_id"', "the boolean true")),
    Case("config-pad-negative", config_json(set_key("pad_token_id", -1)),
         ("config.json", '"pad_token_id"', "the number -1")),
    Case("config-text-config-bos", config_json(set_key("text_config", {"bos_token_id": 10**6})),
         ("config.json", '"text_config.bos_token_id"', str(10**6))),
    # tokenizer.model (SentencePiece)
    Case("spm-truncated", write_bytes("tokenizer.model", lambda b: b[: len(b) // 2 + 3]),
         ("tokenizer.model", "not a sentencepiece model"), tokenizer="tiny-spm"),
    Case("spm-garbage", write_bytes("tokenizer.model", bytes(range(256)) * 8),
         ("tokenizer.model", "not a sentencepiece model"), tokenizer="tiny-spm"),
    Case("spm-json-text", write_bytes("tokenizer.model", b'{"model": {"type": "Unigram"}}'),
         ("tokenizer.model", "not a sentencepiece model"), tokenizer="tiny-spm"),
    Case("spm-empty", write_bytes("tokenizer.model", b""), ("tokenizer.model", "no sentencepiece pieces"),
         tokenizer="tiny-spm"),
    Case("spm-duplicate-piece", write_bytes("tokenizer.model", append_duplicate_piece),
         ("tokenizer.model", "'<unk>'", "both id 0 and id"), tokenizer="tiny-spm"),
    Case("spm-more-pieces-than-rows", lambda ckpt: None, ("tokenizer.model", "id 300", "vocab_size is 300"),
         tokenizer="tiny-spm", vocab_size=300),
    Case("spm-added-tokens-json-beyond", write_bytes("added_tokens.json", json.dumps({"<x>": SPM_N}).encode()),
         ("added_tokens.json", "'<x>'", f"id {SPM_N}"), tokenizer="tiny-spm"),
    Case("spm-added-tokens-json-bool", write_bytes("added_tokens.json", b'{"<x>": true}'),
         ("added_tokens.json", "'<x>'", "the boolean true"), tokenizer="tiny-spm"),
    Case("spm-tokenizer-json-added-beyond", tokenizer_json(lambda tj: tj["added_tokens"].append(
        {"id": SPM_N + 1, "content": "<x>"})), ("tokenizer.json", "'<x>'", f"id {SPM_N + 1}"), tokenizer="tiny-spm"),
    Case("spm-special-token-nowhere", tokenizer_config(set_key("unk_token", "<oov>")),
         ("tokenizer_config.json", '"unk_token"', "'<oov>'"), tokenizer="tiny-spm"),
    # WordPiece: tokenizer.json and a bare vocab.txt
    Case("wpm-vocab-not-object", tokenizer_json(lambda tj: tj["model"].update(vocab=["[PAD]", "[UNK]"])),
         ("tokenizer.json", '"model.vocab" is an array'), tokenizer="tiny-wpm"),
    Case("wpm-vocab-id-duplicate", tokenizer_json(set_vocab_id("[MASK]", 3)),
         ("tokenizer.json", "'[SEP]'", "'[MASK]'", "both have id 3"), tokenizer="tiny-wpm"),
    Case("vocab-txt-empty", vocab_txt_only(b""), ("vocab.txt", "is empty"), tokenizer="tiny-wpm"),
    Case("vocab-txt-duplicate-line", vocab_txt_only(b"[PAD]\n[UNK]\n[CLS]\n[SEP]\nthe\n[MASK]\nthe\n"),
         ("vocab.txt", "'the'", "line 5 and line 7"), tokenizer="tiny-wpm"),
    Case("vocab-txt-not-utf8", vocab_txt_only(b"[PAD]\n[UNK]\n\xff\xfe\n"), ("vocab.txt", "not UTF-8"),
         tokenizer="tiny-wpm"),
    # files that are not regular files
    Case("tokenizer-json-directory", lambda ckpt: ((ckpt / "tokenizer.json").unlink(),
                                                   (ckpt / "tokenizer.json").mkdir()),
         ("tokenizer.json", "is a directory")),
    Case("tokenizer-json-dangling-symlink", lambda ckpt: ((ckpt / "tokenizer.json").unlink(),
                                                          (ckpt / "tokenizer.json").symlink_to(ckpt / "gone.json")),
         ("tokenizer.json", "gone.json", "does not exist")),
    Case("tokenizer-model-fifo", lambda ckpt: ((ckpt / "tokenizer.model").unlink(),
                                               os.mkfifo(ckpt / "tokenizer.model")),
         ("tokenizer.model", "FIFO"), tokenizer="tiny-spm", blocks=True),
    Case("tokenizer-json-fifo", lambda ckpt: ((ckpt / "tokenizer.json").unlink(), os.mkfifo(ckpt / "tokenizer.json")),
         ("tokenizer.json", "FIFO"), blocks=True),
    Case("tokenizer-config-fifo", lambda ckpt: ((ckpt / "tokenizer_config.json").unlink(),
                                                os.mkfifo(ckpt / "tokenizer_config.json")),
         ("tokenizer_config.json", "FIFO"), blocks=True),
]


IN_PROCESS = [c for c in CASES if not c.blocks]


@pytest.mark.parametrize("case", IN_PROCESS, ids=[c.id for c in IN_PROCESS])
def test_refused(case: Case, tmp_path: Path, capsys):
    ckpt = checkpoint(tmp_path, case.tokenizer, case.vocab_size)
    case.mutate(ckpt)
    before = snapshot(ckpt)
    out = tmp_path / "out.gguf"
    proc = run_in_process(capsys, *quantize_args(ckpt, out))
    assert_clean_failure(proc, out, *case.phrases, code=1)
    assert snapshot(ckpt) == before


# The same through a real interpreter, one case per file: what a CI job sees, FIFOs included
# (a run that opened one would block: the timeout fails the test).
SUBPROCESS = [c for c in CASES if c.blocks or c.id in (
    "vocab-id-bool", "merge-part-unknown", "special-token-nowhere", "config-eos-list-beyond", "spm-truncated",
    "vocab-txt-duplicate-line")]


@pytest.mark.parametrize("case", SUBPROCESS, ids=[c.id for c in SUBPROCESS])
def test_refused_by_the_command(case: Case, tmp_path: Path):
    ckpt = checkpoint(tmp_path, case.tokenizer, case.vocab_size)
    case.mutate(ckpt)
    before = snapshot(ckpt)
    out = tmp_path / "out.gguf"
    assert_clean_failure(run_subprocess(*quantize_args(ckpt, out), timeout=60), out, *case.phrases, code=1)
    assert snapshot(ckpt) == before


def test_catalog_cases_are_valid_without_the_damage(tmp_path: Path, capsys):
    """Each fixture the catalog damages converts as it is, so each refusal is the mutation's."""
    for name, vocab_txt in (("tiny-bpe", False), ("tiny-spm", False), ("tiny-wpm", False), ("tiny-wpm", True)):
        ckpt = checkpoint(tmp_path / f"{name}-{vocab_txt}", name)
        if vocab_txt:
            (ckpt / "tokenizer.json").unlink()
        out = tmp_path / f"{name}-{vocab_txt}.gguf"
        proc = run_in_process(capsys, *quantize_args(ckpt, out))
        assert proc.returncode == 0 and proc.stderr == "", (name, proc.stderr)
        assert out.is_file()


# --------------------------------------------------------------------------------------------
# what is accepted


def test_merges_as_strings_or_pairs_give_the_same_file(tmp_path: Path):
    """tokenizers writes ["a", "b"] pairs since 0.20 and "a b" strings before: both load, and the
    GGUF holds the same "a b" merges either way."""
    from qconvert.convert import convert

    pairs = checkpoint(tmp_path / "pairs")
    strings = checkpoint(tmp_path / "strings")
    merges = json.loads((pairs / "tokenizer.json").read_text(encoding="utf-8"))["model"]["merges"]
    assert all(isinstance(m, list) for m in merges)
    edit_json(strings / "tokenizer.json", lambda tj: tj["model"].update(merges=[" ".join(m) for m in merges]))
    a = convert(pairs, tmp_path / "pairs.gguf", qtype="F32").path
    b = convert(strings, tmp_path / "strings.gguf", qtype="F32").path
    assert_same_conversion(a, b)  # but the provenance record: the tokenizer files differ
    # and the file tokenizes as the `tokenizers` library does with the "a b" spelling
    text = "the theme of these threads"
    hf = tokenizers.Tokenizer.from_file(str(strings / "tokenizer.json")).encode(text, add_special_tokens=False).ids
    assert llama_vocab(tmp_path / "strings.gguf").tokenize(text.encode(), add_bos=False, special=False) == hf


def test_eos_id_list_accepted(tmp_path: Path, capsys):
    """config.json's eos_token_id may list several ids (Llama 3.1): accepted when each is a token."""
    ckpt = checkpoint(tmp_path)
    edit_json(ckpt / "config.json", set_key("eos_token_id", [0, 2]))
    proc = run_in_process(capsys, *quantize_args(ckpt, tmp_path / "out.gguf"))
    assert proc.returncode == 0 and proc.stderr == ""
    assert llama_vocab(tmp_path / "out.gguf").token_eos() == 2  # tokenizer_config's eos_token, <|im_end|>


def test_template_first_token_that_is_the_bos_accepted(tmp_path: Path, capsys):
    """The post-processor's leading token is tokenizer_config's BOS: llama.cpp adds it as
    Hugging Face does."""
    ckpt = checkpoint(tmp_path)
    edit_json(ckpt / "tokenizer.json", set_key("post_processor", template("<|im_start|>")))
    proc = run_in_process(capsys, *quantize_args(ckpt, tmp_path / "out.gguf"))
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    text = "the theme of these threads"
    hf = tokenizers.Tokenizer.from_file(str(ckpt / "tokenizer.json")).encode(text).ids
    assert hf[0] == 1
    assert llama_vocab(tmp_path / "out.gguf").tokenize(text.encode(), add_bos=True, special=False) == hf


def test_symlinked_tokenizer_files_accepted(tmp_path: Path, capsys):
    """As in the Hugging Face cache: every file a symlink into a blob folder."""
    ckpt = checkpoint(tmp_path)
    blobs = tmp_path / "blobs"
    blobs.mkdir()
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (ckpt / name).rename(blobs / name)
        (ckpt / name).symlink_to(blobs / name)
    proc = run_in_process(capsys, *quantize_args(ckpt, tmp_path / "out.gguf"))
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr


# --------------------------------------------------------------------------------------------
# no stray lines on stderr

TOKENIZER_KINDS = {  # every tokenizer fixture, and WordPiece both from tokenizer.json and vocab.txt
    "tiny-bpe": "tiny-bpe", "smollm2": "smollm2", "tiny-gpt2": "tiny-gpt2", "tiny-spm": "tiny-spm",
    "tiny-phi3": "tiny-phi3", "tiny-gemma": "tiny-gemma", "tiny-wpm": "tiny-wpm", "tiny-wpm-vocab-txt": "tiny-wpm",
}


def assert_only_summary(stdout: str, out: Path) -> None:
    """The run's summary: the "wrote ..." line, and the fallback line when types fell back."""
    first, *rest = stdout.splitlines()
    assert first.startswith(f"wrote {out} ("), stdout
    assert all(re.match(r"\d+ of \d+ tensors fell back \(", line) for line in rest), stdout


@pytest.mark.parametrize("kind", TOKENIZER_KINDS)
def test_conversion_prints_only_the_summary(kind: str, tmp_path: Path):
    """A good conversion with --no-progress: exit 0, nothing on stderr (gguf.SpecialVocab's
    "Unknown separator token '<s>' in TemplateProcessing<pair>" for SentencePiece tokenizers
    was one), one summary line on stdout."""
    name = TOKENIZER_KINDS[kind]
    ckpt = checkpoint(tmp_path, name)
    if kind.endswith("vocab-txt"):
        (ckpt / "tokenizer.json").unlink()
    out = tmp_path / "out.gguf"
    proc = run_cli(*quantize_args(ckpt, out))
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    assert_only_summary(proc.stdout, out)


@pytest.mark.parametrize("model", ["llama-spm-f32", "gemma3-spm-bf16", "phi3-spm-bf16", "bert-wpm-f32"])
def test_fixture_model_conversion_prints_only_the_summary(model: str, tmp_path: Path):
    """The fixture models whose tokenizers made gguf-py warn (and BERT's WordPiece)."""
    out = tmp_path / "out.gguf"
    proc = run_cli(*quantize_args(MODELS / model, out))
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    assert_only_summary(proc.stdout, out)


def test_gguf_warnings_still_reach_an_application_handler(caplog):
    """Silenced on stderr only: an application that configures logging still gets them."""
    from qconvert.tokenizer import load_tokenizer

    with caplog.at_level(logging.WARNING, logger="gguf.vocab"):
        load_tokenizer(TOKENIZERS / "tiny-spm", {"vocab_size": SPM_N})
    assert any("Unknown separator token" in r.getMessage() for r in caplog.records)


# --------------------------------------------------------------------------------------------
# seeded random mutations: every damaged file is refused with one line naming it, or loads


JSON_VALUES = [None, True, False, 0, -1, 10**9, 1.5, "", "x", "<s>", [], [1], ["a", "b"], {}, {"a": 1}, {"content": 3}]


def json_paths(value, path=()):
    """Paths to the members of a tokenizer file worth damaging (a few vocab entries and merges)."""
    yield path
    if isinstance(value, dict):
        for k, v in value.items():
            if path == ("model",) and k in ("vocab", "merges"):
                yield from (path + (k, key) for key in list(v if isinstance(v, dict) else range(len(v)))[:4])
            else:
                yield from json_paths(v, path + (k,))
    elif isinstance(value, list):
        for i, v in enumerate(value[:4]):
            yield from json_paths(v, path + (i,))


def assert_loads_or_refuses(folder: Path, vocab_size: int, what: str) -> bool:
    """load_tokenizer either succeeds (True) or raises a one-line TokenizerError naming a file."""
    from qconvert.errors import TokenizerError
    from qconvert.tokenizer import load_tokenizer

    try:
        load_tokenizer(folder, {"vocab_size": vocab_size})
        return True
    except TokenizerError as e:
        assert "\n" not in str(e) and str(folder) in str(e), (what, str(e))
        return False


@pytest.mark.parametrize("name", ["tiny-bpe", "tiny-spm", "tiny-wpm"])
def test_mutated_json_files_refused_or_loaded(name: str, tmp_path: Path):
    """300 seeded mutations of tokenizer.json and tokenizer_config.json: a member replaced by
    another JSON value or removed. No exception but TokenizerError. (A longer run found two, now
    catalog cases: a list as a pre-tokenizer's type, a number as continuing_subword_prefix.)"""
    import random
    import shutil

    rng = random.Random(f"tok-{name}")
    n_vocab = tokenizer_vocab_size(name)
    refused = 0
    for i in range(300):
        folder = tmp_path / str(i)
        shutil.copytree(TOKENIZERS / name, folder)
        fname = rng.choice(["tokenizer.json", "tokenizer_config.json"])
        doc = json.loads((folder / fname).read_text(encoding="utf-8"))
        path = rng.choice([p for p in json_paths(doc) if p])
        parent = doc
        for key in path[:-1]:
            parent = parent[key]
        if isinstance(parent, dict) and rng.random() < 0.2:
            del parent[path[-1]]
        else:
            parent[path[-1]] = rng.choice(JSON_VALUES)
        (folder / fname).write_text(json.dumps(doc), encoding="utf-8")
        refused += not assert_loads_or_refuses(folder, n_vocab, f"{fname} {path}")
        shutil.rmtree(folder)
    assert refused > 50  # the mutations do reach the checks


@pytest.mark.parametrize("name", ["tiny-spm", "tiny-gemma"])
def test_mutated_sentencepiece_model_refused_or_loaded(name: str, tmp_path: Path):
    """300 seeded byte-level mutations of tokenizer.model (bytes changed, cut out, inserted)."""
    import random
    import shutil

    rng = random.Random(f"spm-{name}")
    n_vocab = tokenizer_vocab_size(name)
    original = (TOKENIZERS / name / "tokenizer.model").read_bytes()
    folder = tmp_path / "ckpt"
    shutil.copytree(TOKENIZERS / name, folder)
    refused = 0
    for _ in range(300):
        data = bytearray(original)
        for _ in range(rng.randint(1, 4)):
            at, op = rng.randrange(len(data)), rng.random()
            if op < 0.5:
                data[at] = rng.randrange(256)
            elif op < 0.75:
                del data[at:at + rng.randint(1, 50)]
            else:
                data[at:at] = rng.randbytes(rng.randint(1, 8))
        (folder / "tokenizer.model").write_bytes(bytes(data))
        refused += not assert_loads_or_refuses(folder, n_vocab, "tokenizer.model")
    assert refused > 100
