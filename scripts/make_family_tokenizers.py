"""Rebuild real tokenizer families' Hugging Face files from the vocab GGUFs llama.cpp ships.

Dev tool (tokenizers, transformers, sentencepiece, protobuf). The model hub is out of reach, but
llama.cpp's source tree (scripts/llama_cpp_src.py) holds vocab-only GGUFs of real tokenizers,
converted from the real Hugging Face files, with a test corpus and the ids the real Hugging Face
tokenizer gave for it (`models/ggml-vocab-NAME.gguf` + `.gguf.inp` / `.gguf.out`, written by
convert_hf_to_gguf_update.py). From each GGUF this script writes the files the real checkpoint
ships: the vocabulary, merges and scores come from the GGUF; the sections a GGUF does not keep
(normalizer, pre_tokenizer, post_processor, decoder, added-token flags, tokenizer_config.json,
special_tokens_map.json, config.json) are written as the real repositories have them.

Families (the repository llama.cpp made each GGUF from, per convert_hf_to_gguf_update.py):

  llama-bpe  meta-llama/Meta-Llama-3-8B        byte-level BPE, Split regex, ignore_merges, 128256
  qwen2      Qwen/Qwen1.5-7B                   byte-level BPE, NFC, Split regex, padded to 151936
  gpt-2      openai-community/gpt2             byte-level BPE, ByteLevel regex; 2020 file format
  llama-spm  meta-llama/Llama-2-7b-hf          SentencePiece BPE, byte fallback, 32000
  phi-3      microsoft/Phi-3-mini-4k-instruct  Llama 2's tokenizer.model + 11 added tokens, 32064

The rebuild is checked before it is kept: the `tokenizers` library on the rebuilt tokenizer.json
must give exactly llama.cpp's .out ids for every .inp case, and so must what llama.cpp's
converter reads: transformers' AutoTokenizer on the folder for BPE (get_vocab_base), sentencepiece
on the rebuilt tokenizer.model for SentencePiece. Any mismatch stops the script, nothing written.
(scripts/oracle_pre_hash.py then shows the converter hashing each BPE rebuild to the table entry
of its real repository.)

    python scripts/make_family_tokenizers.py [--out DIR] [FAMILY...]   # default: all, into
                                                                        # ~/.cache/qconvert/family-tokenizers/

A family folder is rebuilt only when missing or made by another version of this script (a stamp
file holds this file's hash), so the tests can call the script every session for free.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import gguf

sys.path.insert(0, str(Path(__file__).resolve().parent))
from llama_cpp_src import llama_cpp_src  # noqa: E402

CACHE = Path(os.environ.get("QCONVERT_CACHE", Path.home() / ".cache" / "qconvert"))
DEFAULT_OUT = CACHE / "family-tokenizers"
STAMP = ".made-by"
SEPARATOR = "\n__ggml_vocab_test__\n"  # tests/test-tokenizer-0.cpp, read_tests


# --------------------------------------------------------------------------------------------
# what the GGUF holds, and its test corpus


class Vocab:
    """The tokenizer.* keys of a llama.cpp vocab GGUF."""

    def __init__(self, path: Path):
        reader = gguf.GGUFReader(str(path))
        fields = reader.fields

        def get(key: str, default=None):
            return fields[key].contents() if key in fields else default

        self.tokens: list[str] = get("tokenizer.ggml.tokens")
        self.types: list[int] = get("tokenizer.ggml.token_type")
        self.scores: list[float] | None = get("tokenizer.ggml.scores")
        self.merges: list[str] = get("tokenizer.ggml.merges", [])
        self.chat_template: str | None = get("tokenizer.chat_template")
        self.bos, self.eos = get("tokenizer.ggml.bos_token_id"), get("tokenizer.ggml.eos_token_id")


def read_cases(src: Path, family: str) -> list[tuple[str, list[int]]]:
    """(text, ids) pairs of ggml-vocab-FAMILY.gguf.inp/.out, split as test-tokenizer-0 splits them."""
    raw = (src / f"ggml-vocab-{family}.gguf.inp").read_text(encoding="utf-8")
    texts = raw.split(SEPARATOR)
    if texts and texts[-1] == "":  # the file ends with a separator
        texts.pop()
    outs = (src / f"ggml-vocab-{family}.gguf.out").read_text(encoding="utf-8").splitlines()
    if len(texts) != len(outs):
        sys.exit(f"{family}: {len(texts)} inputs but {len(outs)} outputs")
    return [(t, [int(x) for x in o.split()]) for t, o in zip(texts, outs)]


# --------------------------------------------------------------------------------------------
# tokenizer.json pieces shared by the families


def added_token(tid: int, content: str, special: bool = True, normalized: bool = False,
                rstrip: bool = False) -> dict:
    return {"id": tid, "content": content, "single_word": False, "lstrip": False, "rstrip": rstrip,
            "normalized": normalized, "special": special}


def token_dict(content: str) -> dict:
    """special_tokens_map.json's long form of a token (Llama 2, Qwen1.5, Phi-3 files)."""
    return {"content": content, "lstrip": False, "normalized": False, "rstrip": False, "single_word": False}


def decoder_entry(a: dict) -> dict:
    """tokenizer_config.json's added_tokens_decoder value for a tokenizer.json added token."""
    return {k: a[k] for k in ("content", "lstrip", "normalized", "rstrip", "single_word", "special")}


def byte_level(add_prefix_space: bool, trim_offsets: bool, use_regex: bool) -> dict:
    return {"type": "ByteLevel", "add_prefix_space": add_prefix_space, "trim_offsets": trim_offsets,
            "use_regex": use_regex}


def split_regex(regex: str) -> dict:
    return {"type": "Split", "pattern": {"Regex": regex}, "behavior": "Isolated", "invert": False}


def bos_template(bos: str, bos_id: int) -> dict:
    """TemplateProcessing that puts BOS before each sequence (Llama 2 and Llama 3 files)."""
    return {
        "type": "TemplateProcessing",
        "single": [{"SpecialToken": {"id": bos, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
        "pair": [{"SpecialToken": {"id": bos, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                 {"SpecialToken": {"id": bos, "type_id": 1}}, {"Sequence": {"id": "B", "type_id": 1}}],
        "special_tokens": {bos: {"id": bos, "ids": [bos_id], "tokens": [bos]}},
    }


def tokenizer_json(added: list[dict], normalizer, pre_tokenizer, post_processor, decoder, model: dict) -> dict:
    return {"version": "1.0", "truncation": None, "padding": None, "added_tokens": added,
            "normalizer": normalizer, "pre_tokenizer": pre_tokenizer, "post_processor": post_processor,
            "decoder": decoder, "model": model}


def bpe_vocab(v: Vocab, n: int) -> dict[str, int]:
    vocab = {v.tokens[i]: i for i in range(n)}
    assert len(vocab) == n, "duplicate tokens in the GGUF"
    return vocab


# --------------------------------------------------------------------------------------------
# the families

LLAMA3_REGEX = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)
QWEN2_REGEX = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)
BIG = 1000000000000000019884624838656  # transformers' VERY_LARGE_INTEGER, as saved model_max_length


def llama_bpe(v: Vocab) -> dict[str, object]:
    """meta-llama/Meta-Llama-3-8B: 128000 BPE tokens, then 256 special tokens."""
    n = 128000
    added = [added_token(i, v.tokens[i]) for i in range(n, len(v.tokens))]
    bos, eos = v.tokens[v.bos], v.tokens[v.eos]
    tj = tokenizer_json(
        added,
        normalizer=None,
        pre_tokenizer={"type": "Sequence", "pretokenizers": [
            split_regex(LLAMA3_REGEX), byte_level(False, True, False)]},
        post_processor={"type": "Sequence", "processors": [
            byte_level(True, False, True), bos_template(bos, v.bos)]},
        decoder=byte_level(True, True, True),
        model={"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
               "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False, "ignore_merges": True,
               "vocab": bpe_vocab(v, n), "merges": v.merges},
    )
    config = {
        "added_tokens_decoder": {str(a["id"]): decoder_entry(a) for a in added},
        "bos_token": bos, "clean_up_tokenization_spaces": True, "eos_token": eos,
        "model_input_names": ["input_ids", "attention_mask"], "model_max_length": BIG,
        "tokenizer_class": "PreTrainedTokenizerFast",
    }
    model_config = {
        "architectures": ["LlamaForCausalLM"], "attention_bias": False, "attention_dropout": 0.0,
        "bos_token_id": v.bos, "eos_token_id": v.eos, "hidden_act": "silu", "hidden_size": 4096,
        "initializer_range": 0.02, "intermediate_size": 14336, "max_position_embeddings": 8192,
        "model_type": "llama", "num_attention_heads": 32, "num_hidden_layers": 32, "num_key_value_heads": 8,
        "pretraining_tp": 1, "rms_norm_eps": 1e-05, "rope_scaling": None, "rope_theta": 500000.0,
        "tie_word_embeddings": False, "torch_dtype": "bfloat16", "transformers_version": "4.40.0.dev0",
        "use_cache": True, "vocab_size": 128256,
    }
    return {"tokenizer.json": tj, "tokenizer_config.json": config,
            "special_tokens_map.json": {"bos_token": bos, "eos_token": eos}, "config.json": model_config}


def qwen2(v: Vocab) -> dict[str, object]:
    """Qwen/Qwen1.5-7B: 151643 BPE tokens, 3 special tokens, embedding padded to 151936 rows."""
    n = 151643
    specials = [i for i in range(n, len(v.tokens)) if not v.tokens[i].startswith("[PAD")]
    assert [v.tokens[i] for i in specials] == ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    added = [added_token(i, v.tokens[i]) for i in specials]
    # Qwen's byte-level steps all say add_prefix_space/trim_offsets/use_regex false.
    no_flags = byte_level(False, False, False)
    tj = tokenizer_json(
        added,
        normalizer={"type": "NFC"},
        pre_tokenizer={"type": "Sequence", "pretokenizers": [split_regex(QWEN2_REGEX), no_flags]},
        post_processor=no_flags,
        decoder=no_flags,
        model={"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": "",
               "end_of_word_suffix": "", "fuse_unk": False, "byte_fallback": False,
               "vocab": bpe_vocab(v, n), "merges": v.merges},
    )
    config = {
        "add_prefix_space": False,
        "added_tokens_decoder": {str(a["id"]): decoder_entry(a) for a in added},
        "additional_special_tokens": ["<|im_start|>", "<|im_end|>"],
        "bos_token": None, "chat_template": v.chat_template, "clean_up_tokenization_spaces": False,
        "eos_token": "<|endoftext|>", "errors": "replace", "model_max_length": 32768,
        "pad_token": "<|endoftext|>", "split_special_tokens": False, "tokenizer_class": "Qwen2Tokenizer",
        "unk_token": None,
    }
    special_map = {"additional_special_tokens": ["<|im_start|>", "<|im_end|>"],
                   "eos_token": token_dict("<|endoftext|>"), "pad_token": token_dict("<|endoftext|>")}
    model_config = {
        "architectures": ["Qwen2ForCausalLM"], "attention_dropout": 0.0, "bos_token_id": 151643,
        "eos_token_id": 151643, "hidden_act": "silu", "hidden_size": 4096, "initializer_range": 0.02,
        "intermediate_size": 11008, "max_position_embeddings": 32768, "max_window_layers": 28,
        "model_type": "qwen2", "num_attention_heads": 32, "num_hidden_layers": 32, "num_key_value_heads": 32,
        "rms_norm_eps": 1e-06, "rope_theta": 1000000.0, "sliding_window": 32768, "tie_word_embeddings": False,
        "torch_dtype": "bfloat16", "transformers_version": "4.37.0", "use_cache": True,
        "use_sliding_window": False, "vocab_size": 151936,
    }
    files: dict[str, object] = {"tokenizer.json": tj, "tokenizer_config.json": config,
                                "special_tokens_map.json": special_map, "config.json": model_config}
    files.update(slow_bpe_files(tj))
    return files


def gpt_2(v: Vocab) -> dict[str, object]:
    """openai-community/gpt2, whose tokenizer.json predates tokenizers' `type` tag on the model and
    `use_regex` on ByteLevel: both missing, as in the real file (the library fills in BPE and true)."""
    n = 50256
    added = [{"id": n, "special": True, "content": v.tokens[n], "single_word": False, "lstrip": False,
              "rstrip": False, "normalized": True}]
    tj = tokenizer_json(
        added,
        normalizer=None,
        pre_tokenizer={"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True},
        post_processor={"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": False},
        decoder={"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True},
        model={"dropout": None, "unk_token": None, "continuing_subword_prefix": "", "end_of_word_suffix": "",
               "fuse_unk": False, "vocab": bpe_vocab(v, n + 1), "merges": v.merges},
    )
    model_config = {
        "activation_function": "gelu_new", "architectures": ["GPT2LMHeadModel"], "attn_pdrop": 0.1,
        "bos_token_id": 50256, "embd_pdrop": 0.1, "eos_token_id": 50256, "initializer_range": 0.02,
        "layer_norm_epsilon": 1e-05, "model_type": "gpt2", "n_ctx": 1024, "n_embd": 768, "n_head": 12,
        "n_layer": 12, "n_positions": 1024, "resid_pdrop": 0.1, "summary_activation": None,
        "summary_first_dropout": 0.1, "summary_proj_to_labels": True, "summary_type": "cls_index",
        "summary_use_proj": True, "task_specific_params": {"text-generation": {"do_sample": True, "max_length": 50}},
        "vocab_size": 50257,
    }
    # No special_tokens_map.json in that repository: bos/eos come from config.json's ids.
    files: dict[str, object] = {"tokenizer.json": tj, "tokenizer_config.json": {"model_max_length": 1024},
                                "config.json": model_config}
    files.update(slow_bpe_files(tj))
    return files


def slow_bpe_files(tj: dict) -> dict[str, object]:
    """vocab.json and merges.txt, which GPT-2 and Qwen ship beside tokenizer.json."""
    merges = "#version: 0.2\n" + "".join(m + "\n" for m in tj["model"]["merges"])
    return {"vocab.json": tj["model"]["vocab"], "merges.txt": merges}


# -- SentencePiece: Llama 2 and Phi-3


def sentencepiece_model(v: Vocab) -> bytes:
    """Llama 2's tokenizer.model: the GGUF's pieces, scores and types (the GGUF types are
    sentencepiece's enum values), with Llama 2's trainer and normalizer settings."""
    from sentencepiece import sentencepiece_model_pb2 as pb

    m = pb.ModelProto()
    for piece, score, ttype in zip(v.tokens, v.scores, v.types):
        p = m.pieces.add()
        p.piece, p.score = piece, score
        if ttype != pb.ModelProto.SentencePiece.NORMAL:
            p.type = ttype
    t = m.trainer_spec
    t.input.append("/large_experiments/theorem/datasets/MERGED/all.test1.merged")
    t.model_prefix = "spm_model_32k_200M_charcov099995_allowWSO__v2"
    t.model_type = pb.TrainerSpec.BPE
    t.vocab_size = 32000
    t.self_test_sample_size = 0
    t.input_format = "text"
    t.character_coverage = 0.99995
    t.input_sentence_size = 200000000
    t.seed_sentencepiece_size = 1000000
    t.shrinking_factor = 0.75
    t.num_threads = 80
    t.num_sub_iterations = 2
    t.max_sentence_length = 4192
    t.shuffle_input_sentence = True
    t.max_sentencepiece_length = 16
    t.split_by_unicode_script = True
    t.split_by_whitespace = True
    t.split_by_number = True
    t.treat_whitespace_as_suffix = False
    t.split_digits = True
    t.allow_whitespace_only_pieces = True
    t.vocabulary_output_piece_score = True
    t.hard_vocab_limit = True
    t.use_all_vocab = False
    t.byte_fallback = True
    t.unk_id, t.bos_id, t.eos_id, t.pad_id = 0, 1, 2, -1
    t.unk_surface = " \u2047 "
    t.unk_piece, t.bos_piece, t.eos_piece, t.pad_piece = "<unk>", "<s>", "</s>", "<pad>"
    t.train_extremely_large_corpus = False
    nm = m.normalizer_spec
    nm.name = "identity"
    nm.precompiled_charsmap = b""
    nm.add_dummy_prefix = True
    nm.remove_extra_whitespaces = False
    nm.escape_whitespaces = True
    nm.normalization_rule_tsv = ""
    return m.SerializeToString()


def spm_tokenizer_json(v: Vocab, added: list[dict]) -> dict:
    """tokenizer.json as transformers' LlamaConverter derived it from tokenizer.model, with the
    sections Llama 2's published file has: the dummy prefix prepended in the normalizer
    (unconditionally, as sentencepiece does), no pre-tokenizer, a BOS template, byte fallback,
    and the ▁-to-space decoder.

    Merges are ranked by the merged piece's score, as LlamaConverter ranked them (it passes the
    scores to SentencePieceExtractor), not by its id: Llama 2's whitespace-only pieces ("▁▁",
    "▁▁▁", ...) have ids from 259 but score -1e9, so they merge last, and " Hello" becomes
    "▁" "▁Hello" as in sentencepiece, not "▁▁" "Hello"."""
    from transformers.tokenization_utils_base import generate_merges

    vocab = bpe_vocab(v, 32000)
    scores = {v.tokens[i]: v.scores[i] for i in range(32000)}
    merges = [f"{a} {b}" for a, b in generate_merges(vocab, vocab_scores=scores)]
    return tokenizer_json(
        added,
        normalizer={"type": "Sequence", "normalizers": [
            {"type": "Prepend", "prepend": "\u2581"},
            {"type": "Replace", "pattern": {"String": " "}, "content": "\u2581"}]},
        pre_tokenizer=None,
        post_processor=bos_template("<s>", 1),
        decoder={"type": "Sequence", "decoders": [
            {"type": "Replace", "pattern": {"String": "\u2581"}, "content": " "},
            {"type": "ByteFallback"}, {"type": "Fuse"},
            {"type": "Strip", "content": " ", "start": 1, "stop": 0}]},
        model={"type": "BPE", "dropout": None, "unk_token": "<unk>", "continuing_subword_prefix": None,
               "end_of_word_suffix": None, "fuse_unk": True, "byte_fallback": True,
               "vocab": vocab, "merges": merges},
    )


def llama_spm(v: Vocab) -> dict[str, object]:
    """meta-llama/Llama-2-7b-hf. Its tokenizer_config.json predates added_tokens_decoder (the
    special tokens are AddedToken dicts), so <unk> <s> </s> keep sentencepiece's types."""
    added = [added_token(i, v.tokens[i]) for i in range(3)]
    tok = {name: {"__type": "AddedToken", **token_dict(t)}
           for name, t in (("bos_token", "<s>"), ("eos_token", "</s>"), ("unk_token", "<unk>"))}
    config = {
        "add_bos_token": True, "add_eos_token": False, "bos_token": tok["bos_token"],
        "clean_up_tokenization_spaces": False, "eos_token": tok["eos_token"], "legacy": False,
        "model_max_length": BIG, "pad_token": None, "padding_side": "right", "sp_model_kwargs": {},
        "tokenizer_class": "LlamaTokenizer", "unk_token": tok["unk_token"],
    }
    model_config = {
        "architectures": ["LlamaForCausalLM"], "bos_token_id": 1, "eos_token_id": 2, "hidden_act": "silu",
        "hidden_size": 4096, "initializer_range": 0.02, "intermediate_size": 11008,
        "max_position_embeddings": 4096, "model_type": "llama", "num_attention_heads": 32,
        "num_hidden_layers": 32, "num_key_value_heads": 32, "pretraining_tp": 1, "rms_norm_eps": 1e-05,
        "rope_scaling": None, "tie_word_embeddings": False, "torch_dtype": "float16",
        "transformers_version": "4.31.0.dev0", "use_cache": True, "vocab_size": 32000,
    }
    return {"tokenizer.model": sentencepiece_model(v), "tokenizer.json": spm_tokenizer_json(v, added),
            "tokenizer_config.json": config,
            "special_tokens_map.json": {k: token_dict(t["content"]) for k, t in tok.items()},
            "config.json": model_config}


PHI3_ADDED = ["<|endoftext|>", "<|assistant|>", "<|placeholder1|>", "<|placeholder2|>", "<|placeholder3|>",
              "<|placeholder4|>", "<|system|>", "<|end|>", "<|placeholder5|>", "<|placeholder6|>", "<|user|>"]


def phi_3(v: Vocab, llama2: Vocab) -> dict[str, object]:
    """microsoft/Phi-3-mini-4k-instruct: Llama 2's tokenizer.model, 11 added tokens at 32000-32010
    (all special; all but <|endoftext|> strip whitespace on their right), and the quirk that
    </s> is flagged not special (rstrip) -- so llama.cpp's converter types it user-defined.
    The embedding has 32064 rows."""
    assert v.tokens[:32000] == llama2.tokens and v.tokens[32000:32011] == PHI3_ADDED
    added = [added_token(0, "<unk>"), added_token(1, "<s>"), added_token(2, "</s>", special=False, rstrip=True)]
    added += [added_token(32000 + i, t, rstrip=(t != "<|endoftext|>")) for i, t in enumerate(PHI3_ADDED)]
    config = {
        "add_bos_token": True, "add_eos_token": False,
        "added_tokens_decoder": {str(a["id"]): decoder_entry(a) for a in added},
        "bos_token": "<s>", "chat_template": v.chat_template, "clean_up_tokenization_spaces": False,
        "eos_token": "<|endoftext|>", "legacy": False, "model_max_length": 4096, "pad_token": "<|endoftext|>",
        "padding_side": "left", "sp_model_kwargs": {}, "tokenizer_class": "LlamaTokenizer",
        "unk_token": "<unk>", "use_default_system_prompt": False,
    }
    special_map = {"bos_token": token_dict("<s>"), "eos_token": token_dict("<|endoftext|>"),
                   "pad_token": token_dict("<|endoftext|>"), "unk_token": token_dict("<unk>")}
    model_config = {
        "_name_or_path": "Phi-3-mini-4k-instruct", "architectures": ["Phi3ForCausalLM"],
        "attention_dropout": 0.0, "bos_token_id": 1, "embd_pdrop": 0.0, "eos_token_id": 32000,
        "hidden_act": "silu", "hidden_size": 3072, "initializer_range": 0.02, "intermediate_size": 8192,
        "max_position_embeddings": 4096, "model_type": "phi3", "num_attention_heads": 32,
        "num_hidden_layers": 32, "num_key_value_heads": 32, "original_max_position_embeddings": 4096,
        "pad_token_id": 32000, "resid_pdrop": 0.0, "rms_norm_eps": 1e-05, "rope_scaling": None,
        "rope_theta": 10000.0, "sliding_window": 2047, "tie_word_embeddings": False, "torch_dtype": "bfloat16",
        "transformers_version": "4.40.2", "use_cache": True, "vocab_size": 32064,
    }
    return {"tokenizer.model": sentencepiece_model(llama2), "tokenizer.json": spm_tokenizer_json(llama2, added),
            "added_tokens.json": {t: 32000 + i for i, t in enumerate(PHI3_ADDED)},
            "tokenizer_config.json": config, "special_tokens_map.json": special_map, "config.json": model_config}


# family -> (builder, vocab GGUFs it reads)
FAMILIES: dict[str, tuple[Callable[..., dict[str, object]], tuple[str, ...]]] = {
    "llama-bpe": (llama_bpe, ("llama-bpe",)),
    "qwen2": (qwen2, ("qwen2",)),
    "gpt-2": (gpt_2, ("gpt-2",)),
    "llama-spm": (llama_spm, ("llama-spm",)),
    "phi-3": (phi_3, ("phi-3", "llama-spm")),
}


# --------------------------------------------------------------------------------------------
# validation and writing


def mismatches(encode: Callable[[str], list[int]], cases: list[tuple[str, list[int]]]) -> list[str]:
    bad = []
    for text, want in cases:
        got = encode(text)
        if got != want:
            bad.append(f"    {text[:60]!r}: got {got[:12]}... want {want[:12]}...")
    return bad


def validate(folder: Path, family: str, cases: list[tuple[str, list[int]]]) -> None:
    """The rebuilt files tokenize every .inp case into the .out ids, or exit with the misses."""
    from tokenizers import Tokenizer
    from transformers import AutoTokenizer

    checks: dict[str, Callable[[str], list[int]]] = {}
    tok = Tokenizer.from_file(str(folder / "tokenizer.json"))
    checks["tokenizers (tokenizer.json)"] = lambda t: tok.encode(t, add_special_tokens=False).ids
    if (folder / "tokenizer.model").is_file():
        # What llama.cpp's converter reads for these. (transformers 5's LlamaTokenizer is not
        # asked: it ignores tokenizer.json's normalizer and builds its own Metaspace step, which
        # does not prepend "▁" to text starting with a space, so it no longer reproduces the
        # .out files that the transformers of 2024 wrote from the same files.)
        import sentencepiece as spm
        sp = spm.SentencePieceProcessor(model_file=str(folder / "tokenizer.model"))
        checks["sentencepiece (tokenizer.model)"] = lambda t: sp.encode(t)
    else:
        # What llama.cpp's converter loads (get_vocab_base) and hashes (get_vocab_base_pre).
        auto = AutoTokenizer.from_pretrained(str(folder))
        checks[f"transformers {type(auto).__name__}"] = lambda t: auto.encode(t, add_special_tokens=False)
    failed = False
    for name, encode in checks.items():
        bad = mismatches(encode, cases)
        print(f"  {family}: {name}: {len(cases) - len(bad)}/{len(cases)} cases equal llama.cpp's .out")
        if bad:
            failed = True
            print("\n".join(bad))
    if failed:
        sys.exit(f"{family}: the rebuilt tokenizer is not faithful; nothing written")


def write_files(folder: Path, files: dict[str, object]) -> None:
    for name, content in files.items():
        path = folder / name
        if isinstance(content, bytes):
            path.write_bytes(content)
        elif isinstance(content, str):
            path.write_text(content, encoding="utf-8")
        else:
            path.write_text(json.dumps(content, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")


def stamp() -> str:
    return hashlib.sha256(Path(__file__).read_bytes()).hexdigest()[:16]


def is_current(folder: Path) -> bool:
    s = folder / STAMP
    return s.is_file() and s.read_text().strip() == stamp()


def build(family: str, out: Path, src: Path) -> None:
    folder = out / family
    if is_current(folder):
        print(f"{folder} is up to date")
        return
    start = time.perf_counter()
    builder, ggufs = FAMILIES[family]
    files = builder(*(Vocab(src / f"ggml-vocab-{g}.gguf") for g in ggufs))
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out, prefix=f".{family}-") as tmp:
        tmp = Path(tmp)
        write_files(tmp, files)
        validate(tmp, family, read_cases(src, family))
        (tmp / STAMP).write_text(stamp() + "\n")
        if folder.exists():
            shutil.rmtree(folder)
        tmp.rename(folder)
        folder.chmod(0o755)
        tmp.mkdir()  # for TemporaryDirectory's cleanup
    print(f"{folder}: {', '.join(sorted(files))} in {time.perf_counter() - start:.0f}s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("families", nargs="*", metavar="FAMILY",
                        help=f"some of {', '.join(FAMILIES)} (default: all)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"folder to write into (default {DEFAULT_OUT})")
    args = parser.parse_args()
    if unknown := [f for f in args.families if f not in FAMILIES]:
        parser.error(f"unknown families {unknown}; choose from {', '.join(FAMILIES)}")
    src = llama_cpp_src() / "models"
    for family in args.families or list(FAMILIES):
        build(family, args.out.expanduser().resolve(), src)


if __name__ == "__main__":
    main()
