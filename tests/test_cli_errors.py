"""Bad input: one line on stderr, a non-zero exit, no traceback, nothing at the target path."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
from safetensors.numpy import save_file

from conftest import run_cli, tiny_llama_config, tiny_llama_tensors, tokenizer_vocab_size, write_checkpoint


def assert_clean_failure(proc, out: Path, *phrases: str, code: int | None = None) -> None:
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode != 0, proc.stdout
    if code is not None:
        assert proc.returncode == code
    assert "Traceback" not in proc.stderr, proc.stderr
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    for p in phrases:
        assert p in lines[0], lines[0]
    assert not out.exists()
    leftovers = [p.name for p in out.parent.iterdir() if p.name.startswith(f".{out.name}")]
    assert leftovers == []


def quantize(model: Path, out: Path, *extra: str):
    return run_cli("quantize", model, "-t", "Q8_0", "-o", out, "--no-progress", *extra)


def sharded(tmp_path: Path) -> Path:
    """A valid two-shard checkpoint."""
    cfg = tiny_llama_config(tokenizer_vocab_size())
    tensors = tiny_llama_tensors(cfg)
    model = write_checkpoint(tmp_path / "sharded", cfg, tensors)
    (model / "model.safetensors").unlink()
    names = sorted(tensors)
    half = {"model-00001-of-00002.safetensors": names[: len(names) // 2],
            "model-00002-of-00002.safetensors": names[len(names) // 2:]}
    for shard, keys in half.items():
        save_file({k: tensors[k] for k in keys}, str(model / shard))
    index = {"metadata": {}, "weight_map": {k: s for s, keys in half.items() for k in keys}}
    (model / "model.safetensors.index.json").write_text(json.dumps(index))
    return model


def test_missing_config(tiny_checkpoint: Path, tmp_path: Path):
    (tiny_checkpoint / "config.json").unlink()
    out = tmp_path / "out.gguf"
    assert_clean_failure(quantize(tiny_checkpoint, out), out, "no config.json")


def test_not_a_directory(tmp_path: Path):
    out = tmp_path / "out.gguf"
    assert_clean_failure(quantize(tmp_path / "nowhere", out), out, "is not a directory")


def test_unknown_architecture_lists_supported(tiny_checkpoint: Path, tmp_path: Path):
    cfg = json.loads((tiny_checkpoint / "config.json").read_text())
    cfg["architectures"] = ["FancyNewForCausalLM"]
    (tiny_checkpoint / "config.json").write_text(json.dumps(cfg))
    out = tmp_path / "out.gguf"
    assert_clean_failure(quantize(tiny_checkpoint, out), out,
                         "FancyNewForCausalLM is not supported", "LlamaForCausalLM", "MistralForCausalLM",
                         "Qwen2ForCausalLM", "Qwen3ForCausalLM")


def test_missing_shard(tmp_path: Path):
    model = sharded(tmp_path)
    (model / "model-00002-of-00002.safetensors").unlink()
    out = tmp_path / "out.gguf"
    assert_clean_failure(quantize(model, out), out, "missing shard model-00002-of-00002.safetensors")


def test_truncated_shard(tmp_path: Path):
    model = sharded(tmp_path)
    shard = model / "model-00001-of-00002.safetensors"
    data = shard.read_bytes()
    shard.write_bytes(data[: len(data) - 100])
    out = tmp_path / "out.gguf"
    assert_clean_failure(quantize(model, out), out, "model-00001-of-00002.safetensors is truncated")


def test_corrupt_header(tiny_checkpoint: Path, tmp_path: Path):
    f = tiny_checkpoint / "model.safetensors"
    data = bytearray(f.read_bytes())
    (n,) = struct.unpack("<Q", data[:8])
    data[8:8 + n] = b"{ not json" + b" " * (n - 10)
    f.write_bytes(bytes(data))
    out = tmp_path / "out.gguf"
    assert_clean_failure(quantize(tiny_checkpoint, out), out, "corrupt safetensors header")


def test_header_length_beyond_file(tiny_checkpoint: Path, tmp_path: Path):
    f = tiny_checkpoint / "model.safetensors"
    data = bytearray(f.read_bytes())
    data[:8] = struct.pack("<Q", len(data) * 2)
    f.write_bytes(bytes(data))
    out = tmp_path / "out.gguf"
    assert_clean_failure(quantize(tiny_checkpoint, out), out, "corrupt safetensors header")


def test_unsupported_dtype(tiny_checkpoint: Path, tmp_path: Path):
    f = tiny_checkpoint / "model.safetensors"
    from safetensors.numpy import load_file
    tensors = load_file(str(f))
    tensors["model.norm.weight"] = tensors["model.norm.weight"].astype(np.float64)
    save_file(tensors, str(f))
    out = tmp_path / "out.gguf"
    assert_clean_failure(quantize(tiny_checkpoint, out), out, "model.norm.weight has dtype F64", "BF16")


def test_output_exists_without_overwrite(tiny_checkpoint: Path, tmp_path: Path):
    out = tmp_path / "out.gguf"
    out.write_bytes(b"precious")
    proc = quantize(tiny_checkpoint, out)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip() == f"error: {out} exists; pass --overwrite to replace it"
    assert out.read_bytes() == b"precious"


def test_overwrite_replaces(tiny_checkpoint: Path, tmp_path: Path):
    out = tmp_path / "out.gguf"
    out.write_bytes(b"old")
    proc = quantize(tiny_checkpoint, out, "--overwrite")
    assert proc.returncode == 0, proc.stderr
    assert out.read_bytes()[:4] == b"GGUF"


def test_unknown_type_lists_supported(tiny_checkpoint: Path, tmp_path: Path):
    out = tmp_path / "out.gguf"
    proc = run_cli("quantize", tiny_checkpoint, "-t", "Q9_9", "-o", out, "--no-progress")
    assert_clean_failure(proc, out, "Q9_9", "Q8_0", "Q4_0", "F16")


def test_missing_output_folder(tiny_checkpoint: Path, tmp_path: Path):
    out = tmp_path / "no" / "such" / "out.gguf"
    proc = quantize(tiny_checkpoint, out)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "does not exist" in proc.stderr and not out.exists()


def test_debug_variable_shows_traceback(tiny_checkpoint: Path, tmp_path: Path):
    (tiny_checkpoint / "config.json").unlink()
    proc = run_cli("quantize", tiny_checkpoint, "-o", tmp_path / "x.gguf", env={"QCONVERT_DEBUG": "1"})
    assert proc.returncode != 0 and "Traceback" in proc.stderr and "CheckpointError" in proc.stderr


def test_no_tokenizer_files(tmp_path: Path):
    cfg = tiny_llama_config(tokenizer_vocab_size())
    model = write_checkpoint(tmp_path / "notok", cfg, tiny_llama_tensors(cfg), tokenizer=None)
    out = tmp_path / "out.gguf"
    assert_clean_failure(quantize(model, out), out, "tokenizer")


def test_vocab_and_embedding_rows_must_agree(tmp_path: Path):
    """llama.cpp loads token_embd and output with one row per token and refuses the file when they
    differ: here config.json's vocab_size (the tokenizer pads to it with [PAD{i}] tokens, as the
    converter does) is 8 more than the embedding's rows: refused by the tensors-against-config check
    (qconvert/validate/model.py), before the tokenizer pads. Nothing is written."""
    n_rows = tokenizer_vocab_size()
    cfg = tiny_llama_config(n_rows)
    model = write_checkpoint(tmp_path / "padded", {**cfg, "vocab_size": n_rows + 8}, tiny_llama_tensors(cfg))
    out = tmp_path / "out.gguf"
    assert_clean_failure(quantize(model, out), out, f"lm_head.weight is [{n_rows}, 64]",
                         f"vocab_size {n_rows + 8}", code=1)


def test_broken_tokenizer_json_names_the_file(tmp_path: Path):
    """A tokenizer.json or tokenizer_config.json that is not JSON, or not a JSON object, is one
    line naming the file (not SpecialVocab's vague message, not an AttributeError)."""
    cfg = tiny_llama_config(tokenizer_vocab_size())
    for fname, text in (("tokenizer.json", "{not json"), ("tokenizer.json", "null"),
                        ("tokenizer_config.json", "[1, 2]")):
        model = write_checkpoint(tmp_path / f"{fname}-{len(text)}", cfg, tiny_llama_tensors(cfg))
        (model / fname).write_text(text)
        out = tmp_path / "out.gguf"
        assert_clean_failure(quantize(model, out), out, fname, code=1)
