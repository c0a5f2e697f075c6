"""The command line as a user runs it: quantize with a progress bar, inspect, python -m."""

from __future__ import annotations

from pathlib import Path

import gguf

from conftest import run_cli


def test_quantize_then_inspect(tiny_checkpoint: Path, tmp_path: Path):
    out = tmp_path / "tiny-q8.gguf"
    proc = run_cli("quantize", tiny_checkpoint, "-t", "q8_0", "-o", out, "--threads", "2")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(f"wrote {out} (") and "bits per weight" in proc.stdout
    assert "B/s" in proc.stderr or "100%" in proc.stderr  # tqdm's byte progress bar
    reader = gguf.GGUFReader(out)
    assert reader.fields["general.file_type"].contents() == gguf.LlamaFileType.MOSTLY_Q8_0

    shown = run_cli("inspect", out)
    assert shown.returncode == 0, shown.stderr
    assert "general.architecture = 'llama'" in shown.stdout
    assert "tokenizer.ggml.tokens = [" in shown.stdout and "items)" in shown.stdout
    row = next(line for line in shown.stdout.splitlines() if line.strip().startswith("blk.0.attn_q.weight"))
    assert row.split()[1:3] == ["Q8_0", "64x64"]


def test_default_output_name(tiny_checkpoint: Path, tmp_path: Path):
    import subprocess
    import sys
    proc = subprocess.run([sys.executable, "-m", "qconvert", "quantize", str(tiny_checkpoint), "-t", "F16",
                           "--no-progress"], cwd=tmp_path, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "tiny-F16.gguf").is_file()


def test_inspect_rejects_non_gguf(tmp_path: Path):
    bad = tmp_path / "x.gguf"
    bad.write_bytes(b"not a gguf file at all")
    proc = run_cli("inspect", bad)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr  # a damaged file is bad input, not usage
    assert proc.stderr.startswith("error: ") and "not a GGUF file" in proc.stderr


def test_help_lists_commands():
    proc = run_cli("--help")
    assert proc.returncode == 0 and "quantize" in proc.stdout and "inspect" in proc.stdout
