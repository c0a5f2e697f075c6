"""Tokenizer files checked before anything is exported: each failure a TokenizerError naming the
file and the entry, what was expected and what was found.

What is refused is what llama.cpp would refuse, or load and run wrongly, and what Hugging Face's
own loaders refuse (the checkpoint is broken for both); llama.cpp's rules are in its
src/llama-vocab.cpp (`llama_vocab::impl::load`):

- every token text once: `token_to_id` is a map, and load ends with
  `GGML_ASSERT(id_to_token.size() == token_to_id.size())`, an abort, not an error;
- a BPE vocabulary needs `tokenizer.ggml.merges` ("cannot find tokenizer merges in model file");
- a special token id beyond the token list is dropped with a warning ("bad special token ...
  using default id"), so the model would stop, pad or start on the wrong token;
- a merge whose parts or result are not tokens is refused by the `tokenizers` library
  (BpeBuilder: MergeTokenOutOfVocabulary); llama.cpp loads it and silently drops the text the
  merge produces (llm_tokenizer_bpe_session::tokenize skips a symbol it finds no token for);
- a token id at or beyond config.json's vocab_size has no embedding row.

The checks take the parsed JSON (reader.read_json already refused what does not parse) and only
look at it: the loaders in qconvert/tokenizer.py call them before they index into it.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ..errors import TokenizerError
from ..reader import file_kind

# Every file that qconvert or gguf.SpecialVocab opens when it is present (SpecialVocab reads
# merges.txt and the chat template files too). Opening a FIFO blocks until a writer comes, and a
# device can be endless: each is checked to be a regular file (through symlinks, as in the
# Hugging Face cache) before anything is read.
TOKENIZER_INPUT_FILES = (
    "tokenizer.model", "tokenizer.json", "tokenizer_config.json", "added_tokens.json", "vocab.txt",
    "special_tokens_map.json", "merges.txt", "chat_template.json", "chat_template.jinja",
)

# tokenizer_config.json's `<kind>_token` entries and config.json's `<kind>_token_id`: the kinds
# gguf.SpecialVocab reads (its special_token_types) and turns into tokenizer.ggml.<kind>_token_id.
SPECIAL_KINDS = ("bos", "eos", "unk", "sep", "pad", "cls", "mask")


def _kind(value: Any) -> str:
    """A JSON value's kind for messages, with the value when it is short."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"the boolean {str(value).lower()}"
    if isinstance(value, (int, float)):
        return f"the number {value}"
    if isinstance(value, str):
        return f"the string {value[:40]!r}"
    if isinstance(value, list):
        return "an array"
    return "an object"


def is_id(value: Any) -> bool:
    """A JSON integer: Python reads `true` as an int too, which no tokenizer means as an id.

    >>> is_id(3), is_id(True), is_id(3.0)
    (True, False, False)
    """
    return type(value) is int


# --------------------------------------------------------------------------------------------
# Files


def check_regular_files(model_dir: Path, names: Iterable[str] = TOKENIZER_INPUT_FILES) -> None:
    """Each tokenizer file that exists is a regular file (after symlinks), checked before it is
    opened: a FIFO named tokenizer.json would hang the run, a directory or device would fail
    with a traceback, and a dangling symlink (an interrupted download in the Hugging Face cache)
    would be read as "no such file" and the next tokenizer kind silently chosen."""
    for name in names:
        path = Path(model_dir) / name
        try:
            st = os.stat(path)
        except FileNotFoundError:
            if os.path.islink(path):
                raise TokenizerError(f"{path} is a symlink to {os.readlink(path)}, which does not exist; "
                                     "download the tokenizer files again") from None
            continue
        except OSError as e:
            raise TokenizerError(f"{path} cannot be read ({e.strerror})") from None
        if not stat.S_ISREG(st.st_mode):
            raise TokenizerError(f"{path} is {file_kind(st.st_mode)}, not a regular file; "
                                 "tokenizer files must be plain files")


def check_vocab_size(path: Path, vocab_size: Any) -> None:
    """config.json's vocab_size, which every token id is held to: absent, or a positive integer.
    (The config checks of validate/model.py may refuse it first; the loaders must not meet a
    string or a float either way.)"""
    if vocab_size is not None and (not is_id(vocab_size) or vocab_size < 1):
        raise TokenizerError(f"{path}: \"vocab_size\" is {_kind(vocab_size)}, expected a positive integer "
                             "(the embedding's rows, one per token)")


# --------------------------------------------------------------------------------------------
# tokenizer.json


# The sections of tokenizer.json that qconvert and gguf.SpecialVocab walk, and the members of
# each that must be objects (or lists of objects) for the walk to make sense.
_OBJECT_SECTIONS = ("model", "normalizer", "pre_tokenizer", "post_processor")
_NESTED_LISTS = {"normalizer": "normalizers", "pre_tokenizer": "pretokenizers", "post_processor": "processors"}


def check_tokenizer_json(path: Path, tj: dict) -> None:
    """The structure of tokenizer.json: `model` an object, the normalizer, pre-tokenizer and
    post-processor objects (or null) whose sequences hold objects, `added_tokens` a list of
    {"id": int >= 0, "content": non-empty string} objects with distinct ids."""
    for section in _OBJECT_SECTIONS:
        value = tj.get(section)
        if value is None and section != "model":
            continue
        if not isinstance(value, dict):
            raise TokenizerError(f"{path}: \"{section}\" is {_kind(value)}, expected an object")
        if section != "model":
            _check_component(path, section, section, value)
    model = tj["model"]
    for key in ("type", "continuing_subword_prefix"):
        if model.get(key) is not None and not isinstance(model[key], str):
            raise TokenizerError(f"{path}: \"model.{key}\" is {_kind(model[key])}, expected a string")
    if (pp := tj.get("post_processor")) is not None:
        for i, proc in enumerate(pp.get("processors", [pp])):
            for seq in ("single", "pair"):
                items = proc.get(seq, [])
                if not isinstance(items, list) or not all(
                        isinstance(it, dict) and all(isinstance(v, dict) for v in it.values()) for it in items):
                    where = f"post_processor.processors[{i}].{seq}" if "processors" in pp else f"post_processor.{seq}"
                    raise TokenizerError(f"{path}: \"{where}\" must be a list of "
                                         "{\"SpecialToken\": {...}} or {\"Sequence\": {...}} objects")
    check_added_tokens(path, tj.get("added_tokens", []))


def _check_component(path: Path, section: str, where: str, value: dict) -> None:
    """One normalizer, pre-tokenizer or post-processor: a string "type", a Split's pattern an
    object holding a "Regex" or "String" string, a Sequence's steps objects (checked in turn)."""
    if "type" in value and not isinstance(value["type"], str):
        raise TokenizerError(f"{path}: \"{where}.type\" is {_kind(value['type'])}, expected a string")
    if value.get("type") == "Split":
        pattern = value.get("pattern")
        if not isinstance(pattern, dict) or not any(isinstance(pattern.get(k), str) for k in ("Regex", "String")):
            raise TokenizerError(f"{path}: \"{where}.pattern\" is {_kind(pattern)}, "
                                 "expected {\"Regex\": \"...\"} or {\"String\": \"...\"}")
    key = _NESTED_LISTS.get(section)
    if key is None or key not in value:
        return
    items = value[key]
    if not isinstance(items, list):
        raise TokenizerError(f"{path}: \"{where}.{key}\" is {_kind(items)}, expected a list of objects")
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise TokenizerError(f"{path}: \"{where}.{key}[{i}]\" is {_kind(item)}, expected an object")
        _check_component(path, section, f"{where}.{key}[{i}]", item)  # a Sequence may hold a Sequence


def check_added_tokens(path: Path, added: Any) -> None:
    """tokenizer.json's `added_tokens`: objects with an int id >= 0 and a non-empty string content;
    two entries with one id would leave one of them out of the vocabulary."""
    if not isinstance(added, list):
        raise TokenizerError(f"{path}: \"added_tokens\" is {_kind(added)}, expected a list of objects")
    seen: dict[int, str] = {}
    for i, entry in enumerate(added):
        where = f"added_tokens[{i}]"
        if not isinstance(entry, dict):
            raise TokenizerError(f"{path}: \"{where}\" is {_kind(entry)}, "
                                 "expected an object with \"id\" and \"content\"")
        content, tid = entry.get("content"), entry.get("id")
        if not isinstance(content, str) or not content:
            raise TokenizerError(f"{path}: \"{where}\" has content {_kind(content)}, expected a non-empty string")
        if not is_id(tid) or tid < 0:
            raise TokenizerError(f"{path}: added token {content!r} ({where}) has id {_kind(tid)}, "
                                 "expected an integer >= 0")
        if tid in seen:
            raise TokenizerError(f"{path}: added tokens {seen[tid]!r} and {content!r} both have id {tid}")
        seen[tid] = content


def check_added_token_ids(path: Path, added: list[dict], n_tokens: int) -> None:
    """Added tokens of tokenizer.json within the exported token list (for SentencePiece, whose
    list comes from tokenizer.model; gguf.SpecialVocab looks special tokens up among them and
    would drop one beyond the list with only a warning)."""
    for entry in added:
        if entry["id"] >= n_tokens:
            raise TokenizerError(_beyond(path, f"added token {entry['content']!r}", entry["id"], n_tokens))


def check_vocab(path: Path, vocab: Any, n_vocab: int | None, where: str = "model.vocab") -> None:
    """A {token: id} vocabulary (BPE and WordPiece): not empty, every id an int >= 0, each id once
    (two tokens with one id: llama.cpp's token list can hold only one of them), and below
    config.json's vocab_size, the embedding's rows, when it says."""
    if not isinstance(vocab, dict):
        raise TokenizerError(f"{path}: \"{where}\" is {_kind(vocab)}, expected an object of token: id")
    if not vocab:
        raise TokenizerError(f"{path}: \"{where}\" is empty; a vocabulary needs at least one token")
    seen: dict[int, str] = {}
    for text, tid in vocab.items():
        if not is_id(tid) or tid < 0:
            raise TokenizerError(f"{path}: token {text!r} in \"{where}\" has id {_kind(tid)}, expected an integer >= 0")
        if tid in seen:
            raise TokenizerError(f"{path}: tokens {seen[tid]!r} and {text!r} in \"{where}\" both have id {tid}")
        seen[tid] = text
        if n_vocab is not None and tid >= n_vocab:
            raise TokenizerError(_beyond(path, f"token {text!r}", tid, n_vocab))


def _beyond(path: Path, what: str, tid: int, n_vocab: int) -> str:
    return (f"{path}: {what} has id {tid} but config.json's vocab_size is {n_vocab}; "
            "the embedding must have a row for every token")


def check_merges(path: Path, model: dict) -> None:
    """A BPE's merges, as the `tokenizers` library loads them (models/bpe: convert_merges_to_hashmap
    and BpeBuilder::build): a non-empty list whose entries are "a b" strings (one space) or
    ["a", "b"] pairs, both parts tokens of the vocab and so is their merge (a followed by b
    without the continuing_subword_prefix). llama.cpp cannot load a BPE without merges."""
    merges, vocab = model.get("merges"), model["vocab"]
    if merges is None or merges == []:
        raise TokenizerError(f"{path}: \"model.merges\" is missing or empty; llama.cpp cannot load a BPE "
                             "vocabulary without merges")
    if not isinstance(merges, list):
        raise TokenizerError(f"{path}: \"model.merges\" is {_kind(merges)}, expected a list of merges")
    prefix = model.get("continuing_subword_prefix") or ""
    for i, merge in enumerate(merges):
        if isinstance(merge, str) and len(parts := merge.split(" ")) == 2:
            a, b = parts
        elif isinstance(merge, list) and len(merge) == 2 and all(isinstance(p, str) for p in merge):
            a, b = merge
        else:
            found = repr(merge) if isinstance(merge, str) else _kind(merge)
            raise TokenizerError(f"{path}: \"model.merges[{i}]\" is {found}, "
                                 "expected \"a b\" (one space) or [\"a\", \"b\"]")
        for part in (a, b, a + b[len(prefix):]):
            if part not in vocab:
                raise TokenizerError(f"{path}: \"model.merges[{i}]\" ({a!r} + {b!r}) uses {part!r}, which is not "
                                     "in the vocab; the tokenizers library refuses such a merge")


# --------------------------------------------------------------------------------------------
# Other files


def check_added_tokens_json(path: Path, added: dict, n_vocab: int | None) -> None:
    """added_tokens.json: {token: id}, ids ints within the vocabulary."""
    for text, tid in added.items():
        if not is_id(tid) or tid < 0:
            raise TokenizerError(f"{path}: token {text!r} has id {_kind(tid)}, expected an integer >= 0")
        if n_vocab is not None and tid >= n_vocab:
            raise TokenizerError(_beyond(path, f"added token {text!r}", tid, n_vocab))


def check_added_tokens_decoder(path: Path, decoder: Any, n_vocab: int | None) -> None:
    """tokenizer_config.json's `added_tokens_decoder`: {"<id>": {"content": str, ...}}, with
    decimal ids within the vocabulary, as transformers reads it (int(key), AddedToken(**value))."""
    if not isinstance(decoder, dict):
        raise TokenizerError(f"{path}: \"added_tokens_decoder\" is {_kind(decoder)}, expected an object")
    for key, data in decoder.items():
        where = f"added_tokens_decoder[{key!r}]"
        if not (key.isascii() and key.isdigit()):
            raise TokenizerError(f"{path}: \"{where}\": the key must be a token id (decimal digits)")
        if not isinstance(data, dict) or not isinstance(data.get("content"), str) or not data["content"]:
            raise TokenizerError(f"{path}: \"{where}\" must be an object with a non-empty string \"content\"")
        if n_vocab is not None and int(key) >= n_vocab:
            raise TokenizerError(_beyond(path, f"added token {data['content']!r}", int(key), n_vocab))


def check_vocab_txt(path: Path) -> list[str]:
    """vocab.txt's lines (BertTokenizer: the id is the line number), refusing an empty file, one
    that is not UTF-8, and a token on two lines (transformers keeps the later line, so the
    earlier id would become an unused filler)."""
    try:
        with open(path, encoding="utf-8") as f:  # as transformers' load_vocab
            lines = [line.rstrip("\n") for line in f]
    except UnicodeDecodeError as e:
        raise TokenizerError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    if not lines:
        raise TokenizerError(f"{path} is empty; a vocabulary needs at least one token")
    first: dict[str, int] = {}
    for i, text in enumerate(lines):
        if text in first:
            raise TokenizerError(f"{path}: token {text!r} is on line {first[text] + 1} and line {i + 1}; "
                                 "each token must be on one line only")
        first[text] = i
    return lines


def check_sentencepiece_pieces(path: Path, pieces: list[tuple[str, float, int]], n_vocab: int | None) -> None:
    """Pieces of tokenizer.model as sentencepiece itself accepts them (model_interface.cc:
    "piece must not be empty", "already defined"), with a type of the proto's enum, and no more
    of them than config.json's vocab_size (the embedding's rows)."""
    seen: dict[str, int] = {}
    for i, (piece, _score, ptype) in enumerate(pieces):
        if not piece:
            raise TokenizerError(f"{path}: piece {i} is empty; is it a sentencepiece model?")
        if piece in seen:
            raise TokenizerError(f"{path}: piece {piece!r} is both id {seen[piece]} and id {i}")
        if ptype not in range(1, 7):
            raise TokenizerError(f"{path}: piece {i} ({piece!r}) has type {ptype}, expected 1 to 6 "
                                 "(sentencepiece's NORMAL..BYTE)")
        seen[piece] = i
    if n_vocab is not None and len(pieces) > n_vocab:
        raise TokenizerError(_beyond(path, f"piece {pieces[n_vocab][0]!r}", n_vocab, n_vocab))


# --------------------------------------------------------------------------------------------
# Special tokens and the final token list


def check_special_token_entries(path: Path, tokenizer_config: dict, known: set[str]) -> None:
    """tokenizer_config.json's `<kind>_token` entries (a string, an {"content": ...} object, or
    null) name tokens of the vocabulary: transformers would add a missing one as a new token,
    with an id the embedding has no row for, and llama.cpp would have no id for it."""
    for kind in SPECIAL_KINDS:
        key = f"{kind}_token"
        entry = tokenizer_config.get(key)
        if entry is None:
            continue
        content = entry.get("content") if isinstance(entry, dict) else entry
        if not isinstance(content, str):
            raise TokenizerError(f"{path}: \"{key}\" is {_kind(entry)}, expected a string, "
                                 "an object with a string \"content\", or null")
        if content not in known:
            raise TokenizerError(f"{path}: \"{key}\" is {content!r}, which is not a token of the vocabulary")


def check_special_token_ids(path: Path, config: dict, n_tokens: int | None) -> None:
    """config.json's `<kind>_token_id` (and text_config's, as gguf.SpecialVocab reads them):
    null, an id, or (eos) a list of ids, each an integer in [0, n_tokens) (only >= 0 while the
    token count is not known yet: gguf.SpecialVocab fails on a negative one)."""
    nested = config.get("text_config") if isinstance(config.get("text_config"), dict) else {}
    sections = [("text_config.", nested), ("", config)]
    for prefix, section in sections:
        for kind in SPECIAL_KINDS:
            key = f"{kind}_token_id"
            value = section.get(key)
            if value is None or (not prefix and key in nested and nested[key] == value):
                continue  # (the adapters' config has text_config merged in: named where it was)
            ids = value if isinstance(value, list) else [value]
            if not ids:
                raise TokenizerError(f"{path}: \"{prefix}{key}\" is an empty list, expected an id or a list of ids")
            for tid in ids:
                if not is_id(tid) or tid < 0:
                    raise TokenizerError(f"{path}: \"{prefix}{key}\" is {_kind(value)}, expected a token id "
                                         "(an integer >= 0) or a list of them")
                if n_tokens is not None and tid >= n_tokens:
                    raise TokenizerError(f"{path}: \"{prefix}{key}\" is {tid}, but the vocabulary has "
                                         f"{n_tokens} tokens (0 to {n_tokens - 1}); llama.cpp would ignore it")


def check_template_first_token(path: Path, tokenizer_json: dict, tokenizer_config: dict, tokens: list[str],
                               special_ids: dict[str, int], add_special: dict[str, bool]) -> None:
    """A TemplateProcessing post-processor whose single sequence starts with a special token that
    is neither tokenizer_config.json's bos_token nor its cls_token: Hugging Face puts that token
    before every text, and llama.cpp can only add the BOS token (add_bos). gguf.SpecialVocab
    only warns ("Unknown leading special token ... in TemplateProcessing<single>") and writes
    add_bos false. Accepted when the exported BOS is that very token and is added anyway (a
    bos_token_id in config.json can make it so)."""
    pp = tokenizer_json.get("post_processor")
    if not pp or not tokenizer_config:  # without a tokenizer_config, SpecialVocab takes it as the BOS
        return
    bos, cls = (_content(tokenizer_config.get(k)) for k in ("bos_token", "cls_token"))
    for proc in pp.get("processors", [pp]):
        single = proc.get("single", []) if proc.get("type") == "TemplateProcessing" else []
        first = (single[0].get("SpecialToken") or {}).get("id") if len(single) > 1 else None
        if not first or first in (bos, cls):
            continue
        bos_id = special_ids.get("bos")
        if bos_id is not None and bos_id < len(tokens) and tokens[bos_id] == first and add_special.get("bos", True):
            continue
        raise TokenizerError(
            f"{path}: the post_processor puts {first!r} before every text, but tokenizer_config.json's bos_token "
            f"is {bos!r} (cls_token {cls!r}); llama.cpp can only add the BOS token, so its tokens would "
            f"differ from Hugging Face's for every prompt")


def _content(entry: Any) -> str | None:
    """A tokenizer_config token entry: a string or an AddedToken object."""
    return entry.get("content") if isinstance(entry, dict) else entry


def check_unique_tokens(source: Path, tokens: list[str]) -> None:
    """Every token text once in the exported list: llama.cpp maps text -> id and aborts the load
    (GGML_ASSERT id_to_token.size() == token_to_id.size()) when two ids share a text."""
    first: dict[str, int] = {}
    for i, text in enumerate(tokens):
        if not text:
            continue  # llama.cpp renames each empty token "[EMPTY_<id>]" (llama_vocab::impl::load)
        j = first.setdefault(text, i)
        if j != i:
            raise TokenizerError(f"{source}: tokens {j} and {i} are both {text!r} once exported; llama.cpp "
                                 "needs every token text once (it aborts loading such a file)")
