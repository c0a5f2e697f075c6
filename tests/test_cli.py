"""The command line as a user runs it: quantize with a progress bar, inspect, python -m."""

from __future__ import annotations

from pathlib import Path

import gguf

from conftest import run_cli


def test_quantize_then_inspect(tiny_checkpoint: Path, tmp_path: Path):
    out = tmp_path / "tiny-q8.gguf"
    proc = run_cli("quantize", tiny_checkpoint, "-t", "q8_0", "-o", out, "--threads", "2", "--progress")
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


# --- exit codes: 0 done, 1 bad input or failed conversion, 2 usage, 130/143 interrupted (cli.py) ---

def assert_usage_error(proc, *phrases: str) -> str:
    """Exit 2, exactly one stderr line `error: ...` (with a pointer to --help), no traceback."""
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    assert "Traceback" not in proc.stderr and len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: ") and "--help" in lines[0], lines[0]
    for p in phrases:
        assert p in lines[0], lines[0]
    assert proc.stdout == ""
    return lines[0]


def test_version():
    from qconvert import __version__
    proc = run_cli("--version")
    assert proc.returncode == 0 and proc.stdout == f"qconvert {__version__}\n" and proc.stderr == ""


def test_no_arguments_is_a_usage_error():
    assert_usage_error(run_cli(), "missing command", "qconvert --help")


def test_unknown_option():
    assert_usage_error(run_cli("--bogus"), "--bogus")
    assert_usage_error(run_cli("quantize", "x", "--bogus"), "--bogus", "qconvert quantize --help")


def test_unknown_command():
    assert_usage_error(run_cli("frobnicate"), "frobnicate")


def test_missing_argument(tmp_path: Path):
    assert_usage_error(run_cli("quantize"), "missing argument", "qconvert quantize --help")
    assert_usage_error(run_cli("inspect"), "missing argument", "qconvert inspect --help")
    assert list(tmp_path.iterdir()) == []


def test_bad_int_for_threads(tiny_checkpoint: Path, tmp_path: Path):
    out = tmp_path / "out.gguf"
    assert_usage_error(run_cli("quantize", tiny_checkpoint, "-o", out, "--threads", "many"), "--threads")
    assert_usage_error(run_cli("quantize", tiny_checkpoint, "-o", out, "--threads", "0"), "--threads")
    assert not out.exists()


def test_option_missing_its_value(tiny_checkpoint: Path):
    assert_usage_error(run_cli("quantize", tiny_checkpoint, "-o"), "-o")


def test_bad_input_is_exit_1_and_usage_is_exit_2(tiny_checkpoint: Path, tmp_path: Path):
    """The scheme's two failure codes side by side: a checkpoint problem is 1, a command-line
    problem (an existing output without --overwrite) is 2."""
    (tiny_checkpoint / "config.json").write_text("{broken")
    proc = run_cli("quantize", tiny_checkpoint, "-o", tmp_path / "a.gguf", "--no-progress")
    assert proc.returncode == 1 and proc.stderr.startswith("error: ") and len(proc.stderr.splitlines()) == 1
    (tmp_path / "b.gguf").write_bytes(b"keep")
    proc = run_cli("quantize", tiny_checkpoint, "-o", tmp_path / "b.gguf", "--no-progress")
    assert proc.returncode == 2 and (tmp_path / "b.gguf").read_bytes() == b"keep"


def test_subcommand_help_exits_0():
    proc = run_cli("quantize", "--help")
    assert proc.returncode == 0 and "--overwrite" in proc.stdout and proc.stderr == ""
