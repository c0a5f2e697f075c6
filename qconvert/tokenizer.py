"""Tokenizer files -> `tokenizer.*` GGUF metadata, as llama.cpp's converter writes them.

The kinds, chosen the way llama.cpp's `LlamaModel.set_vocab` chooses (conversion/llama.py):

* ``tokenizer.model`` present -> SentencePiece, ``tokenizer.ggml.model = "llama"``: pieces, scores
  and types read straight from the protobuf (no sentencepiece import), then overridden by
  ``added_tokens.json`` and ``tokenizer_config.json``'s ``added_tokens_decoder``
  (``_create_vocab_sentencepiece`` in conversion/base.py).
* otherwise ``tokenizer.json`` with a byte-level BPE -> ``tokenizer.ggml.model = "gpt2"``: tokens,
  types, merges and ``tokenizer.ggml.pre`` (``get_vocab_base`` / ``_set_vocab_gpt2``).
* a WordPiece ``tokenizer.json`` (or a bare ``vocab.txt``) -> ``tokenizer.ggml.model = "bert"``,
  as the converter's ``BertModel.set_vocab`` writes it (conversion/bert.py): word-start tokens
  with a "▁" phantom space, "##" continuations without it (``_load_wordpiece``).

Special token ids, add_bos/add_eos, merges and the chat template come from ``gguf.SpecialVocab``,
the very class the converter uses, topped up with the rules newer gguf-py versions added.

One deliberate difference: llama.cpp names the pre-tokenizer by hashing the token ids of a probe
string (``get_vocab_base_pre``, needs the `tokenizers` runtime); we read what tokenizer.json's
``pre_tokenizer`` actually does and map it to the llama.cpp pre-tokenizer with the same regexes
(llama-vocab.cpp, ``llm_tokenizer_bpe``). Same tokenization; for models that share a regex with
another (e.g. DBRX and Llama 3) the name can differ from the one the hash table picks. The hash
needs the tokenizer run (transformers, which qconvert does not depend on), so the table serves as
a cross-check at test time: on the real Llama 3, Qwen2, GPT-2 and SmolLM vocabularies, the name
read from the regexes is the one llama.cpp's table gives (tests/test_tokenizer_families.py).
A pre-tokenizer that matches none is an error that shows its steps and regexes: guessing would
make llama.cpp split text unlike Hugging Face.

Every file is checked (qconvert/validate/tokenizer.py) before what it holds is used: where the
converter would warn and write a file llama.cpp refuses or runs wrongly (ids beyond the embedding
rows, special tokens that point nowhere, duplicate token texts, merges of unknown tokens), we
refuse, naming the file and the entry.
"""

from __future__ import annotations

import json
import logging
import re
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gguf

from .errors import TokenizerError
from .reader import read_json
from .validate import tokenizer as check

# gguf.SpecialVocab reports through `logging` what its rough reading of a post-processor template
# does not recognise ("Unknown separator token '<s>' in TemplateProcessing<pair>" for every
# Llama/Gemma SentencePiece tokenizer, whose pair template repeats BOS): notes on a guess that
# llama.cpp's converter makes too, not problems. With no handler anywhere, Python's last-resort
# handler would print them on stderr; this library handler swallows them there while they still
# propagate to whatever handlers an application puts on the root logger. What SpecialVocab would
# only warn about and that does matter (special ids out of range, bad merges) is refused before
# it runs (validate/tokenizer.py).
logging.getLogger("gguf.vocab").addHandler(logging.NullHandler())

NORMAL = int(gguf.TokenType.NORMAL)
UNKNOWN = int(gguf.TokenType.UNKNOWN)
CONTROL = int(gguf.TokenType.CONTROL)
USER_DEFINED = int(gguf.TokenType.USER_DEFINED)
UNUSED = int(gguf.TokenType.UNUSED)
BYTE = int(gguf.TokenType.BYTE)

# Special-token kinds written as `tokenizer.ggml.<kind>_token_id`, in SpecialVocab's order. `cls`
# is left out: gguf's writer has no key for it, so SpecialVocab skips it (with a warning).
SPECIAL_ID_KEYS = {
    "bos": gguf.Keys.Tokenizer.BOS_ID,
    "eos": gguf.Keys.Tokenizer.EOS_ID,
    "unk": gguf.Keys.Tokenizer.UNK_ID,
    "sep": gguf.Keys.Tokenizer.SEP_ID,
    "pad": gguf.Keys.Tokenizer.PAD_ID,
    "mask": gguf.Keys.Tokenizer.MASK_ID,
    "eot": gguf.Keys.Tokenizer.EOT_ID,
    "eom": gguf.Keys.Tokenizer.EOM_ID,
}
ADD_TOKEN_KEYS = {
    "bos": gguf.Keys.Tokenizer.ADD_BOS,
    "eos": gguf.Keys.Tokenizer.ADD_EOS,
    "sep": gguf.Keys.Tokenizer.ADD_SEP,
}
# Written by gguf-py >= 0.18's SpecialVocab; spelled out because older gguf has no constant.
NORMALIZER_KEYS = {
    "lowercase": "tokenizer.ggml.normalizer.lowercase",
    "strip_accents": "tokenizer.ggml.normalizer.strip_accents",
}

TOKENIZER_FILES = ("tokenizer.model", "tokenizer.json", "vocab.txt")


@dataclass
class GGUFTokenizer:
    """Everything the GGUF `tokenizer.*` keys hold, as plain Python data.

    `tokens[i]`, `token_types[i]` (and `scores[i]` for SentencePiece) describe token id i; the
    lists are padded to config.json's vocab_size with unused ``[PAD{i}]`` tokens, as llama.cpp's
    converter pads them.
    """

    kind: str  # "gpt2" (byte-level BPE) | "llama" (SentencePiece) | "bert" (WordPiece)
    pre: str  # tokenizer.ggml.pre
    tokens: list[str]
    token_types: list[int]
    scores: list[float] | None = None
    merges: list[str] = field(default_factory=list)
    special_ids: dict[str, int] = field(default_factory=dict)  # {"bos": 1, "eos": 2, ...}
    add_special: dict[str, bool] = field(default_factory=dict)  # {"bos": False, ...}
    chat_template: str | list[dict[str, str]] | None = None
    add_space_prefix: bool | None = None
    normalizer: dict[str, bool] = field(default_factory=dict)  # {"lowercase": True, ...}

    def metadata(self) -> dict[str, Any]:
        """The GGUF key -> value pairs `write_to` writes, in the converter's order."""
        md: dict[str, Any] = {}
        if self.add_space_prefix is not None:
            md[gguf.Keys.Tokenizer.ADD_PREFIX] = self.add_space_prefix
        md[gguf.Keys.Tokenizer.MODEL] = self.kind
        md[gguf.Keys.Tokenizer.PRE] = self.pre
        md[gguf.Keys.Tokenizer.LIST] = self.tokens
        if self.scores is not None:
            md[gguf.Keys.Tokenizer.SCORES] = self.scores
        md[gguf.Keys.Tokenizer.TOKEN_TYPE] = self.token_types
        if self.merges:
            md[gguf.Keys.Tokenizer.MERGES] = self.merges
        for kind, tid in self.special_ids.items():
            md[SPECIAL_ID_KEYS[kind]] = tid
        for kind, value in self.add_special.items():
            md[ADD_TOKEN_KEYS[kind]] = value
        if self.chat_template is not None:
            md[gguf.Keys.Tokenizer.CHAT_TEMPLATE] = self.chat_template
        for name, value in self.normalizer.items():
            md[NORMALIZER_KEYS[name]] = value
        return md

    def write_to(self, writer: gguf.GGUFWriter) -> None:
        """Add every `tokenizer.*` key to `writer`."""
        for key, value in self.metadata().items():
            if key == gguf.Keys.Tokenizer.CHAT_TEMPLATE:
                writer.add_chat_template(value)  # also writes named templates
            elif isinstance(value, bool):
                writer.add_bool(key, value)
            elif isinstance(value, int):
                writer.add_uint32(key, value)
            elif isinstance(value, str):
                writer.add_string(key, value)
            elif key == gguf.Keys.Tokenizer.SCORES:
                writer.add_array(key, [float(s) for s in value])  # float32 array
            else:
                writer.add_array(key, value)  # tokens/merges: strings; token_type: int32


def load_tokenizer(model_dir: Path, config: dict, llama_rules: bool = True,
                   spm_add_space_prefix: bool | None = None) -> GGUFTokenizer:
    """Read the tokenizer files of the checkpoint in `model_dir`.

    `config` is the parsed config.json; its ``vocab_size`` (the embedding rows) fixes the length
    of the token list. `llama_rules` adds what the converter's LlamaModel.set_vocab adds to the
    plain vocab (architectures converted by other classes, e.g. Qwen2Model, do not get it).
    `spm_add_space_prefix`, when not None, is written as tokenizer.ggml.add_space_prefix for a
    SentencePiece vocab (Gemma2Model/Gemma3Model.set_vocab write False).
    Raises TokenizerError when the files are missing or cannot be exported.
    """
    model_dir = Path(model_dir)
    vocab_size = config.get("vocab_size")
    check.check_vocab_size(model_dir / "config.json", vocab_size)
    # Before anything is opened: a FIFO named tokenizer.json would block the run for ever.
    check.check_regular_files(model_dir)
    # Each file is parsed once, here, and handed down (Llama 3's tokenizer.json is 9 MB).
    # gguf.SpecialVocab still reads both for itself, as it does in the converter; both are
    # checked first, so that what it indexes into is there.
    tokenizer_json = read_json(model_dir / "tokenizer.json", missing_ok=True, error=TokenizerError)
    if tokenizer_json is not None:
        check.check_tokenizer_json(model_dir / "tokenizer.json", tokenizer_json)
    tokenizer_config = read_json(model_dir / "tokenizer_config.json", missing_ok=True, error=TokenizerError) or {}
    if "added_tokens_decoder" in tokenizer_config:
        check.check_added_tokens_decoder(model_dir / "tokenizer_config.json", tokenizer_config["added_tokens_decoder"],
                                         vocab_size)
    check.check_special_token_ids(model_dir / "config.json", config, None)
    model_type = ((tokenizer_json or {}).get("model") or {}).get("type")
    if (model_dir / "tokenizer.model").is_file():
        tok, known = _load_sentencepiece(model_dir, vocab_size, tokenizer_json or {}, tokenizer_config)
        source = model_dir / "tokenizer.model"
    elif model_type == "WordPiece":
        wordpiece = _wordpiece_from_json(model_dir / "tokenizer.json", tokenizer_json, vocab_size)
        tok, known = _load_wordpiece(model_dir, vocab_size, wordpiece, tokenizer_json, tokenizer_config)
        source = wordpiece.source
    elif tokenizer_json is not None:  # a BPE, or an error naming the model type
        tok, known = _load_bpe(model_dir, vocab_size, tokenizer_json, tokenizer_config)
        source = model_dir / "tokenizer.json"
    elif (model_dir / "vocab.txt").is_file():
        wordpiece = _wordpiece_from_vocab_txt(model_dir / "vocab.txt", tokenizer_config)
        tok, known = _load_wordpiece(model_dir, vocab_size, wordpiece, {}, tokenizer_config)
        source = wordpiece.source
    else:
        raise TokenizerError(
            f"no tokenizer in {model_dir}: looked for {' and '.join(TOKENIZER_FILES)}; "
            "copy the tokenizer files of the original checkpoint next to config.json"
        )
    # Special tokens point at tokens, and every token text is there once (llama.cpp aborts
    # otherwise): checked on what is exported, whichever file it came from.
    if tokenizer_json is not None:
        check.check_added_token_ids(model_dir / "tokenizer.json", tokenizer_json.get("added_tokens", []),
                                    len(tok.tokens))
    check.check_special_token_entries(model_dir / "tokenizer_config.json", tokenizer_config, known)
    check.check_special_token_ids(model_dir / "config.json", config, len(tok.tokens))
    check.check_unique_tokens(source, tok.tokens)

    if spm_add_space_prefix is not None and tok.kind == "llama":
        tok.add_space_prefix = spm_add_space_prefix
    if llama_rules:
        # LlamaModel.set_vocab: tokenizer_config's add_prefix_space, whatever the tokenizer kind.
        if (add_prefix_space := tokenizer_config.get("add_prefix_space")) is not None:
            tok.add_space_prefix = bool(add_prefix_space)
        # LlamaModel.set_vocab's rule for 49152-token vocabularies (Granite's small models; it also
        # covers SmolLM2): never add BOS.
        if vocab_size == 49152:
            tok.add_special["bos"] = False
    # Last, on the final add_bos: a token Hugging Face puts before every text must be the BOS.
    if tokenizer_json is not None:
        check.check_template_first_token(model_dir / "tokenizer.json", tokenizer_json, tokenizer_config,
                                         tok.tokens, tok.special_ids, tok.add_special)
    return tok


# --------------------------------------------------------------------------------------------
# SentencePiece (tokenizer.model)


def _load_sentencepiece(model_dir: Path, vocab_size: int | None, tokenizer_json: dict,
                        tokenizer_config: dict) -> tuple[GGUFTokenizer, set[str]]:
    """The "llama" vocab, and the texts of its tokens as the tokenizer files spell them."""
    pieces = read_sentencepiece_model(model_dir / "tokenizer.model")
    check.check_sentencepiece_pieces(model_dir / "tokenizer.model", pieces, vocab_size)
    # added_tokens.json: tokens added on top of the sentencepiece model. The converter skips those
    # beyond vocab_size with a warning; they have no embedding row, so we refuse them, as any
    # token id beyond the rows.
    added_tokens = read_json(model_dir / "added_tokens.json", missing_ok=True, error=TokenizerError) or {}
    check.check_added_tokens_json(model_dir / "added_tokens.json", added_tokens, vocab_size)
    decoder = tokenizer_config.get("added_tokens_decoder", {})  # checked in load_tokenizer
    # Without a vocab_size (the embedding rows) to hold them to, the ids of the added tokens count.
    n_vocab = vocab_size or max([len(pieces) - 1, *added_tokens.values(), *map(int, decoder)]) + 1

    # The converter starts from n_vocab unused "[PAD{id}]" slots and fills them in.
    tokens = [f"[PAD{i}]" for i in range(n_vocab)]
    scores = [-10000.0] * n_vocab
    types = [UNUSED] * n_vocab
    for i, (piece, score, sp_type) in enumerate(pieces):  # no more pieces than n_vocab: checked
        tokens[i] = piece
        scores[i] = score
        types[i] = _SP_TYPE_TO_GGUF.get(sp_type, NORMAL)

    for text, tid in added_tokens.items():
        tokens[tid], scores[tid], types[tid] = text, -1000.0, USER_DEFINED

    # tokenizer_config.json's added_tokens_decoder has the last word on added tokens' types.
    for tid_str, data in decoder.items():
        tid = int(tid_str)
        text, ttype = _added_token_text_and_type(data["content"], bool(data.get("special")))
        tokens[tid], scores[tid], types[tid] = text, -1000.0, ttype

    special = _special_vocab(model_dir, load_merges=False, n_vocab=len(tokens))
    tok = GGUFTokenizer(kind="llama", pre="default", tokens=tokens, token_types=types, scores=scores)
    _take_special_vocab(tok, special, tokenizer_json, tokenizer_config)
    known = {p for p, _, _ in pieces} | set(added_tokens) | {d["content"] for d in decoder.values()}
    known |= {a["content"] for a in tokenizer_json.get("added_tokens", [])}
    return tok, known


# sentencepiece's ModelProto.SentencePiece.Type -> the converter's type. USER_DEFINED pieces of
# the model stay NORMAL: the converter only asks IsUnknown/IsControl/IsUnused/IsByte.
_SP_TYPE_TO_GGUF = {1: NORMAL, 2: UNKNOWN, 3: CONTROL, 4: NORMAL, 5: UNUSED, 6: BYTE}


def read_sentencepiece_model(path: Path) -> list[tuple[str, float, int]]:
    """(piece, score, type) of every piece of a sentencepiece ModelProto, in id order.

    Only the fields we need are decoded (sentencepiece_model.proto): ModelProto field 1 is the
    repeated SentencePiece message, whose fields are 1 piece (string), 2 score (float),
    3 type (enum, NORMAL=1 when absent). Everything else is skipped by wire type.
    """
    data = Path(path).read_bytes()
    pieces = []
    try:
        for fnum, wtype, value in _proto_fields(data):
            if fnum == 1 and wtype == 2:
                piece, score, ptype = "", 0.0, 1
                for f, w, v in _proto_fields(value):
                    if f == 1 and w == 2:
                        piece = v.decode("utf-8")
                    elif f == 2 and w == 5:
                        score = struct.unpack("<f", v)[0]
                    elif f == 3 and w == 0:
                        ptype = v
                pieces.append((piece, score, ptype))
    except (ValueError, IndexError, UnicodeDecodeError, struct.error) as e:
        raise TokenizerError(
            f"{path} is not a sentencepiece model ({e}); llama.cpp needs one for a 'llama' vocab") from e
    if not pieces:
        raise TokenizerError(f"{path} holds no sentencepiece pieces; is it a sentencepiece model?")
    return pieces


def _proto_fields(buf: bytes):
    """Yield (field number, wire type, value) of a protobuf message; value is int or bytes."""
    pos, end = 0, len(buf)
    while pos < end:
        key, pos = _varint(buf, pos)
        fnum, wtype = key >> 3, key & 7
        if wtype == 0:
            value, pos = _varint(buf, pos)
        elif wtype == 1:
            value, pos = buf[pos:pos + 8], pos + 8
        elif wtype == 2:
            size, pos = _varint(buf, pos)
            value, pos = buf[pos:pos + size], pos + size
        elif wtype == 5:
            value, pos = buf[pos:pos + 4], pos + 4
        else:
            raise ValueError(f"unsupported protobuf wire type {wtype} at byte {pos}")
        if pos > end:
            raise ValueError("truncated protobuf message")
        yield fnum, wtype, value


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7


# --------------------------------------------------------------------------------------------
# Byte-level BPE (tokenizer.json)


def _load_bpe(model_dir: Path, vocab_size: int | None, tj: dict,
              tokenizer_config: dict) -> tuple[GGUFTokenizer, set[str]]:
    """The "gpt2" vocab, and the texts of its tokens as tokenizer.json spells them."""
    path = model_dir / "tokenizer.json"
    model = tj["model"]
    # Files written before tokenizers tagged the model (GPT-2's own, 2020) have no "type"; the
    # library then reads a model with vocab and merges as a BPE, and so do we.
    kind = model.get("type") or ("BPE" if "vocab" in model and "merges" in model else None)
    if kind != "BPE":
        raise TokenizerError(
            f"{path}: model type {kind!r} is not supported without tokenizer.model; "
            "qconvert exports byte-level BPE or WordPiece (tokenizer.json) and SentencePiece (tokenizer.model)"
        )
    if model.get("byte_fallback"):
        # llama.cpp's converter would go through LlamaHfVocab here, which writes every score as
        # -1000 and leaves llama.cpp's SentencePiece merge order undefined: refuse instead.
        raise TokenizerError(
            f"{path} is a SentencePiece-style BPE (byte_fallback) but tokenizer.model is missing; "
            "put the checkpoint's tokenizer.model next to it"
        )
    try:
        pre = identify_pre_tokenizer(tj)
    except TokenizerError as e:
        raise TokenizerError(f"{path}: {e}") from e

    check.check_vocab(path, model.get("vocab"), vocab_size)
    check.check_merges(path, model)
    added = _added_tokens(tj)
    tokens, types = _vocab_base(path, model["vocab"], added, vocab_size)
    special = _special_vocab(model_dir, load_merges=True)
    tok = GGUFTokenizer(kind="gpt2", pre=pre, tokens=tokens, token_types=types)
    _take_special_vocab(tok, special, tj, tokenizer_config)
    return tok, set(model["vocab"]) | {text for text, _ in added.values()}


# What llama.cpp's BPE pre-tokenizers do, in tokenizer.json terms (llama-vocab.cpp lists the
# original tokenizer.json regex beside each adapted one). Keys are the normalized
# pre_tokenizer steps (see _pre_tokenizer_steps); values are llama.cpp's `tokenizer.ggml.pre`.
_LLAMA3_REGEX = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_QWEN2_REGEX = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_QWEN35_REGEX = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?[\p{L}\p{M}]+|\p{N}| ?[^\s\p{L}\p{M}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_BYTE_LEVEL_ONLY = ("ByteLevel", False, False)  # byte mapping after a Split did the splitting
KNOWN_PRE_TOKENIZERS: dict[tuple, str] = {
    # GPT-2: ByteLevel's own regex does the splitting.
    (("ByteLevel", False, True),): "gpt-2",
    # SmolLM2 (and StarCoder): every digit alone, then GPT-2's regex.
    (("Digits", True), ("ByteLevel", False, True)): "smollm",
    # Llama 3: one Split with its regex, ByteLevel only maps bytes.
    (("Split", _LLAMA3_REGEX, "Isolated", False), _BYTE_LEVEL_ONLY): "llama-bpe",
    (("Split", _QWEN2_REGEX, "Isolated", False), _BYTE_LEVEL_ONLY): "qwen2",
    (("Split", _QWEN35_REGEX, "Isolated", False), _BYTE_LEVEL_ONLY): "qwen35",
}


def identify_pre_tokenizer(tokenizer_json: dict) -> str:
    """llama.cpp's name (`tokenizer.ggml.pre`) for what tokenizer.json's pre_tokenizer does.

    >>> identify_pre_tokenizer({"pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False,
    ...                                           "trim_offsets": True, "use_regex": True}})
    'gpt-2'
    """
    steps = _pre_tokenizer_steps(tokenizer_json.get("pre_tokenizer"))
    if steps in KNOWN_PRE_TOKENIZERS:
        return KNOWN_PRE_TOKENIZERS[steps]
    described = " + ".join(_describe_step(s) for s in steps) if steps else "none"
    raise TokenizerError(
        f"the pre-tokenizer matches none of llama.cpp's "
        f"({', '.join(sorted(set(KNOWN_PRE_TOKENIZERS.values())))}): "
        f"{described}; naming another would make llama.cpp split text unlike Hugging Face, so nothing was written"
    )


def _pre_tokenizer_steps(pt: dict | None) -> tuple:
    """Flatten a pre_tokenizer to comparable tuples, keeping only settings that change output."""
    if not pt:
        return ()
    kind = pt.get("type")
    if kind == "Sequence":
        return tuple(s for p in pt.get("pretokenizers", []) for s in _pre_tokenizer_steps(p))
    if kind == "ByteLevel":
        # tokenizers' defaults: add_prefix_space=True, use_regex=True.
        return (("ByteLevel", bool(pt.get("add_prefix_space", True)), bool(pt.get("use_regex", True))),)
    if kind == "Digits":
        return (("Digits", bool(pt.get("individual_digits", False))),)
    if kind == "Split":
        pattern = pt.get("pattern", {})
        regex = pattern.get("Regex", re.escape(pattern.get("String", "")))
        return (("Split", regex, pt.get("behavior"), bool(pt.get("invert", False))),)
    return ((kind,) + tuple(sorted((k, json.dumps(v)) for k, v in pt.items() if k != "type")),)


def _describe_step(step: tuple) -> str:
    if step[0] == "Split":
        return f"Split(regex={step[1]!r}, behavior={step[2]}, invert={step[3]})"
    if step[0] == "ByteLevel":
        return f"ByteLevel(add_prefix_space={step[1]}, use_regex={step[2]})"
    if step[0] == "Digits":
        return f"Digits(individual_digits={step[1]})"
    return f"{step[0]}({', '.join(f'{k}={v}' for k, v in step[1:])})"


# --------------------------------------------------------------------------------------------
# WordPiece (BERT: tokenizer.json with a WordPiece model, or a bare vocab.txt)

# llama.cpp ignores tokenizer.ggml.pre for a "bert" (WPM) vocab: its WPM tokenizer always splits
# as BertPreTokenizer does (llama-vocab.cpp, llm_tokenizer_wpm_session::preprocess; the WPM branch
# of llama_vocab::impl::load sets LLAMA_VOCAB_PRE_TYPE_DEFAULT whatever the name). The converter
# names it by hashing token ids; on the uncased English BERT vocabulary (BERT, bge-small/base,
# MiniLM, jina-v2-en) that hash is listed twice, as "bert-bge" and "jina-v2-en", and the later
# entry wins, so it writes "jina-v2-en". We write that name for every WordPiece vocabulary.
WORDPIECE_PRE = "jina-v2-en"
# What BertTokenizer (transformers) calls its special tokens when tokenizer_config does not say.
_BERT_SPECIALS = {"unk": "[UNK]", "sep": "[SEP]", "pad": "[PAD]", "cls": "[CLS]", "mask": "[MASK]"}


@dataclass
class _WordPiece:
    """A WordPiece vocabulary as tokenizer.json or a bare vocab.txt gives it."""

    source: Path  # the file it came from, for messages
    vocab: dict[str, int]  # the model's own tokens: text -> id
    prefix: str  # continuing_subword_prefix: marks a piece that continues a word ("##")
    added: dict[int, tuple[str, bool]]  # id -> (content, special), as transformers adds them
    special_ids: dict[str, int] | None  # None: gguf.SpecialVocab reads them from tokenizer.json
    normalizer: dict[str, bool]  # {"lowercase": ..., "strip_accents": ...}


def _wordpiece_from_json(path: Path, tj: dict, vocab_size: int | None) -> _WordPiece:
    pre = (tj.get("pre_tokenizer") or {}).get("type")
    if pre != "BertPreTokenizer":
        # llama.cpp's WPM tokenizer can only split words as BertPreTokenizer does.
        raise TokenizerError(
            f"{path}: a WordPiece model with pre-tokenizer {pre!r}; "
            "llama.cpp's BERT tokenizer splits as BertPreTokenizer only")
    model = tj["model"]
    check.check_vocab(path, model.get("vocab"), vocab_size)
    if tj.get("normalizer") is None:
        # llama.cpp lowercases and strips accents unless told not to; this tokenizer does neither
        normalizer = {"lowercase": False, "strip_accents": False}
    else:
        normalizer = _normalizer_flags(tj["normalizer"])
    return _WordPiece(source=path, vocab=model["vocab"],
                      prefix=model.get("continuing_subword_prefix") or "##",
                      added=_added_tokens(tj), special_ids=None, normalizer=normalizer)


def _wordpiece_from_vocab_txt(path: Path, tokenizer_config: dict) -> _WordPiece:
    # BertTokenizer's vocab.txt: one token a line, the id is the line number.
    vocab = {text: i for i, text in enumerate(check.check_vocab_txt(path))}
    named = {kind: _token_content(tokenizer_config.get(f"{kind}_token", default))
             for kind, default in _BERT_SPECIALS.items()}
    ids = {kind: vocab[text] for kind, text in named.items() if text in vocab}
    # transformers turns BertTokenizer's special tokens into added, special ones
    added = {tid: (named[kind], True) for kind, tid in ids.items()}
    for tid, data in tokenizer_config.get("added_tokens_decoder", {}).items():
        added[int(tid)] = (data["content"], bool(data.get("special")))
    # gguf.SpecialVocab resolves special tokens through tokenizer.json only, and would leave
    # llama.cpp's defaults for bert-base-uncased's ids (101, 102, ...): look them up instead,
    # [CLS] as the BOS. No add_* keys: llama.cpp's WPM defaults (add [CLS] first, [SEP] last)
    # are BERT's.
    special_ids = {"bos": ids["cls"]} if "cls" in ids else {}
    special_ids.update((kind, ids[kind]) for kind in ("unk", "sep", "pad", "mask") if kind in ids)
    normalizer = {"lowercase": bool(tokenizer_config.get("do_lower_case", True))}  # BertTokenizer's default
    if (strip := tokenizer_config.get("strip_accents")) is not None:
        normalizer["strip_accents"] = bool(strip)
    return _WordPiece(source=path, vocab=vocab, prefix="##", added=added, special_ids=special_ids,
                      normalizer=normalizer)


def _load_wordpiece(model_dir: Path, vocab_size: int | None, wp: _WordPiece, tokenizer_json: dict,
                    tokenizer_config: dict) -> tuple[GGUFTokenizer, set[str]]:
    """A "bert" vocab as the converter's BertModel.set_vocab writes it (conversion/bert.py).

    llama.cpp's WPM tokenizer puts a phantom space "▁" before each word and matches pieces
    greedily, so every token that can start a word is stored with "▁" in front and every
    continuation piece without its "##"; control tokens stay as they are. Normalization
    (lowercase, strip accents) is llama.cpp's own, switched by tokenizer.ggml.normalizer.*.
    """
    def phantom(text: str, ttype: int) -> str:
        """BertModel.set_vocab's phantom(), with the tokenizer's own prefix where it says "##"."""
        if ttype == CONTROL:
            return text
        return text[len(wp.prefix):] if text.startswith(wp.prefix) else "\u2581" + text

    # as the converter: get_vocab_base's tokens ("[PAD{i}]" fillers too), then phantom()
    tokens, types = _vocab_base(wp.source, wp.vocab, wp.added, vocab_size)
    tokens = list(map(phantom, tokens, types))
    tok = GGUFTokenizer(kind="bert", pre=WORDPIECE_PRE, tokens=tokens, token_types=types)
    if wp.special_ids is None:
        _take_special_vocab(tok, _special_vocab(model_dir, n_vocab=len(tokens)), tokenizer_json, tokenizer_config)
    else:
        tok.special_ids = wp.special_ids
    tok.normalizer = wp.normalizer
    return tok, set(wp.vocab) | {text for text, _ in wp.added.values()}


def _token_content(entry: Any) -> str | None:
    """A tokenizer_config token entry: a string or an AddedToken dict."""
    return entry.get("content") if isinstance(entry, dict) else entry


# --------------------------------------------------------------------------------------------
# Shared


def _does_token_look_special(text: str) -> bool:
    """Added tokens some models forget to flag as special (the converter's does_token_look_special)."""
    return (
        text in ("<pad>", "<mask>", "<2mass>", "[@BOS@]")
        or (text.startswith("<|") and text.endswith("|>"))
        or (text.startswith("<\uff5c") and text.endswith("\uff5c>"))  # deepseek-coder's fullwidth bars
        or (text.startswith("<unused") and text.endswith(">"))
    )


def _added_token_text_and_type(text: str, special: bool) -> tuple[str, int]:
    """Control if special (or looks it), else user-defined with sentencepiece's '▁' as a space."""
    if special or _does_token_look_special(text):
        return text, CONTROL
    return text.replace("\u2581", " "), USER_DEFINED


def _added_tokens(tokenizer_json: dict) -> dict[int, tuple[str, bool]]:
    """tokenizer.json's added tokens: id -> (content, special)."""
    return {a["id"]: (a["content"], bool(a.get("special"))) for a in tokenizer_json.get("added_tokens", [])}


def _vocab_base(source: Path, vocab: dict[str, int], added: dict[int, tuple[str, bool]],
                vocab_size: int | None) -> tuple[list[str], list[int]]:
    """Token texts and types for ids 0..vocab_size-1, as the converter's get_vocab_base lists them
    (conversion/base.py): the model's vocab, then the added tokens over it (transformers'
    get_vocab() merges both), "[PAD{i}]" for the ids neither has."""
    id_to_token = {tid: text for text, tid in vocab.items()}
    id_to_token.update((tid, text) for tid, (text, _) in added.items())
    if not id_to_token:
        raise TokenizerError(f"{source} has an empty vocabulary")
    n_vocab = vocab_size or max(len(id_to_token), max(id_to_token) + 1)
    if (top := max(id_to_token)) >= n_vocab:
        raise TokenizerError(
            f"{source}: token {id_to_token[top]!r} has id {top} but config.json's vocab_size is {n_vocab}; "
            "the embedding must have a row for every token"
        )
    tokens: list[str] = []
    types: list[int] = []
    for i in range(n_vocab):
        if i not in id_to_token:
            text, ttype = f"[PAD{i}]", UNUSED
        elif i in added:
            # llama.cpp matches control and user-defined tokens on raw text, so they are stored
            # as their content, not byte-level encoded. (The converter round-trips unnormalized
            # added tokens through encode/decode; for byte-level BPE that is the identity.)
            text, ttype = _added_token_text_and_type(*added[i])
        else:
            text, ttype = id_to_token[i], NORMAL
        tokens.append(text)
        types.append(ttype)
    return tokens, types


def _special_vocab(model_dir: Path, **kwargs) -> gguf.SpecialVocab:
    try:
        return gguf.SpecialVocab(model_dir, **kwargs)
    except ValueError as e:  # bad merges format, negative special token id
        raise TokenizerError(f"{model_dir}: cannot read special tokens/merges: {e}") from e


def _take_special_vocab(tok: GGUFTokenizer, special: gguf.SpecialVocab, tokenizer_json: dict,
                        tokenizer_config: dict) -> None:
    """Copy what gguf.SpecialVocab found, adding the rules of newer gguf-py releases."""
    tok.merges = list(special.merges)
    tok.special_ids = {k: int(v) for k, v in special.special_token_ids.items() if k in SPECIAL_ID_KEYS}
    tok.add_special = {k: bool(v) for k, v in special.add_special_token.items() if k in ADD_TOKEN_KEYS}
    # gguf-py >= 0.18: a ByteLevel post-processor adds no BOS/EOS, and tokenizer_config's
    # add_*_token cannot say otherwise; only a Template/Roberta processor beside it can.
    for kind, value in _byte_level_post_processor_defaults(tokenizer_json.get("post_processor")).items():
        tok.add_special[kind] = value
    # gguf-py >= 0.18: what a Template/Roberta post-processor says about BOS/EOS also wins over
    # tokenizer_config's add_*_token (Phi-3's config says add_bos_token false, its template <s> A).
    for kind, value in _post_processor_decisions(tokenizer_json.get("post_processor"), tokenizer_config).items():
        tok.add_special[kind] = value
    tok.chat_template = special.chat_template
    tok.normalizer = _normalizer_flags(tokenizer_json.get("normalizer"))


def _byte_level_post_processor_defaults(pp: dict | None) -> dict[str, bool]:
    if not pp:
        return {}
    procs = pp.get("processors", [pp])
    if not any(p.get("type") == "ByteLevel" for p in procs):
        return {}
    decided = set()
    for p in procs:
        if p.get("type") == "RobertaProcessing":
            decided |= {"bos", "eos"}
        elif p.get("type") == "TemplateProcessing":
            single = p.get("single", [])
            if len(single) > 1:
                if single[0].get("SpecialToken", {}).get("id"):
                    decided.add("bos")
                if single[-1].get("SpecialToken", {}).get("id"):
                    decided.add("eos")
    return {k: False for k in ("bos", "eos") if k not in decided}


def _post_processor_decisions(pp: dict | None, config: dict) -> dict[str, bool]:
    """add_bos/add_eos where the post-processor and tokenizer_config's add_*_token disagree, as
    gguf-py >= 0.18's SpecialVocab settles them (_try_load_from_tokenizer_json): RobertaProcessing
    adds both; a TemplateProcessing whose single sequence starts with a special token adds BOS if
    that token is the BOS or CLS token (or either is unset: it then becomes them), and one that
    ends with the EOS token adds EOS. (Ending with another token, gguf-py renames EOS: not
    mirrored, so tokenizer_config decides there as before.)"""
    if not pp:
        return {}
    bos, cls = _token_content(config.get("bos_token")), _token_content(config.get("cls_token"))
    eos = _token_content(config.get("eos_token")) or _token_content(config.get("sep_token"))
    decided: dict[str, bool] = {}
    for p in pp.get("processors", [pp]):
        if p.get("type") == "RobertaProcessing":
            decided.update(bos=True, eos=True)
        elif p.get("type") == "TemplateProcessing" and len(single := p.get("single", [])) > 1:
            if first := single[0].get("SpecialToken", {}).get("id"):
                decided["bos"] = first in (bos, cls) or not (bos and cls)
            if (last := single[-1].get("SpecialToken", {}).get("id")) and last == eos:
                decided["eos"] = True
    return {k: v for k, v in decided.items()
            if isinstance(config.get(f"add_{k}_token"), bool) and config[f"add_{k}_token"] != v}


def _normalizer_flags(normalizer: dict | None) -> dict[str, bool]:
    """Lowercase / StripAccents flags, as gguf-py >= 0.18's SpecialVocab reads them."""
    flags: dict[str, bool] = {}

    def visit(n: dict) -> None:
        kind = n.get("type")
        if kind == "Lowercase":
            flags["lowercase"] = True
        elif kind == "StripAccents":
            flags["strip_accents"] = True
        elif kind == "BertNormalizer":
            for name in ("lowercase", "strip_accents"):
                if name in n:
                    flags[name] = n[name]
        elif kind == "Sequence":
            for sub in n.get("normalizers", []):
                visit(sub)

    if normalizer:
        visit(normalizer)
    return {k: v for k, v in flags.items() if v is not None}
