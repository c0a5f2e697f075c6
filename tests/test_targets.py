"""Targets that cannot destroy anything: `-o` is never an input, a folder, a device, a FIFO or a
socket; the temporary file is synced before the rename and removed on SIGINT, SIGTERM and write
errors; a later run removes the temporaries of dead runs. Each refusal: exit 2, one line naming
the path, nothing written, the input byte-identical afterwards."""

from __future__ import annotations

import os
import resource
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import (run_cli, tiny_llama_config, tiny_llama_tensors, tokenizer_vocab_size, write_checkpoint,
                      write_gguf_imatrix)
from test_cli_errors import assert_clean_failure

from qconvert import convert as conv
from qconvert.errors import UsageError
from qconvert.writer import temporary_path


def quantize(model: Path, out: Path | str, *extra: str, **kw):
    return run_cli("quantize", model, "-t", "Q8_0", "-o", out, "--no-progress", *extra, **kw)


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file of a checkpoint folder and its bytes (symlinks followed)."""
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


def assert_refused(proc, out: Path, *phrases: str) -> None:
    """A usage refusal: exit 2, one line naming the culprit, no traceback, no temporary left."""
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    assert "Traceback" not in proc.stderr and len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    for p in phrases:
        assert p in lines[0], lines[0]
    assert [p.name for p in out.parent.iterdir() if p.name.endswith(".partial")] == []


# --- the output is an input ---------------------------------------------------------------------

@pytest.mark.parametrize("name", ["config.json", "model.safetensors", "tokenizer.json"])
def test_output_that_is_an_input_is_refused_even_with_overwrite(tiny_checkpoint: Path, name: str):
    before = snapshot(tiny_checkpoint)
    out = tiny_checkpoint / name
    proc = quantize(tiny_checkpoint, out, "--overwrite")
    assert_refused(proc, out, f"output {out} is an input of this conversion", "even with --overwrite")
    assert snapshot(tiny_checkpoint) == before


def test_input_reached_through_a_symlink_or_hard_link_is_refused(tiny_checkpoint: Path, tmp_path: Path):
    """Compared by device and inode: another name for a shard (a symlink, as in the Hugging Face
    cache, or a hard link elsewhere) is the shard."""
    before = snapshot(tiny_checkpoint)
    shard = tiny_checkpoint / "model.safetensors"
    link = tmp_path / "link.gguf"
    link.symlink_to(shard)
    hard = tmp_path / "hard.gguf"
    os.link(shard, hard)
    for out in (link, hard):
        proc = quantize(tiny_checkpoint, out, "--overwrite")
        assert_refused(proc, out, f"output {out} is an input", f"the same file as {shard}")
    assert snapshot(tiny_checkpoint) == before and link.is_symlink()


def test_hugging_face_cache_layout(tmp_path: Path):
    """A snapshot folder of symlinks into blobs/: -o naming the blob itself is refused."""
    cfg = tiny_llama_config(tokenizer_vocab_size())
    blobs = write_checkpoint(tmp_path / "blobs", cfg, tiny_llama_tensors(cfg))
    snap = tmp_path / "snapshots" / "abc123"
    snap.mkdir(parents=True)
    for f in blobs.iterdir():
        (snap / f.name).symlink_to(f)
    before = snapshot(blobs)
    out = blobs / "model.safetensors"
    assert_refused(quantize(snap, out, "--overwrite"), out, "is an input", str(snap / "model.safetensors"))
    assert snapshot(blobs) == before
    ok = quantize(snap, tmp_path / "ok.gguf")
    assert ok.returncode == 0, ok.stderr


def test_imatrix_is_an_input(tiny_checkpoint: Path, tmp_path: Path):
    cfg = tiny_llama_config(tokenizer_vocab_size())
    h, f = cfg["hidden_size"], cfg["intermediate_size"]
    imatrix = tmp_path / "imatrix.gguf"
    write_gguf_imatrix(imatrix, {"blk.0.ffn_down.weight": (np.ones(f), np.ones(1)),
                                 "blk.0.attn_q.weight": (np.ones(h), np.ones(1))})
    before = imatrix.read_bytes()
    proc = run_cli("quantize", tiny_checkpoint, "-t", "Q4_K_M", "-o", imatrix, "--imatrix", imatrix,
                   "--overwrite", "--no-progress")
    assert_refused(proc, imatrix, f"output {imatrix} is an input")
    assert imatrix.read_bytes() == before


def test_a_gguf_in_the_checkpoint_folder_may_be_overwritten(tiny_checkpoint: Path):
    """Outputs are often written into the model folder and rewritten: GGUF files there are not
    inputs. Without --overwrite an existing file is still refused."""
    out = tiny_checkpoint / "tiny-Q8_0.gguf"
    out.write_bytes(b"old")
    assert quantize(tiny_checkpoint, out).returncode == 2 and out.read_bytes() == b"old"
    proc = quantize(tiny_checkpoint, out, "--overwrite")
    assert proc.returncode == 0, proc.stderr
    assert out.read_bytes()[:4] == b"GGUF"


def test_library_write_checks_the_prepared_inputs(tiny_checkpoint: Path):
    """`write` itself refuses an input (a library caller may skip `convert`'s early check)."""
    job = conv.prepare(tiny_checkpoint, "Q8_0")
    assert tiny_checkpoint / "model.safetensors" in job.input_paths
    assert tiny_checkpoint / "config.json" in job.input_paths
    before = snapshot(tiny_checkpoint)
    with pytest.raises(UsageError, match="is an input of this conversion"):
        conv.write(job, tiny_checkpoint / "config.json", overwrite=True)
    assert snapshot(tiny_checkpoint) == before


# --- folders, devices, FIFOs, sockets -------------------------------------------------------------

def test_output_folder_gets_the_default_name(tiny_checkpoint: Path, tmp_path: Path):
    """`-o DIR` (existing) and `-o DIR/` write DIR/<model folder>-<TYPE>.gguf, as without -o."""
    folder = tmp_path / "outs"
    folder.mkdir()
    proc = quantize(tiny_checkpoint, folder)
    assert proc.returncode == 0, proc.stderr
    assert (folder / "tiny-Q8_0.gguf").read_bytes()[:4] == b"GGUF"
    assert quantize(tiny_checkpoint, f"{folder}{os.sep}", "--overwrite").returncode == 0
    # a trailing separator means a folder even when it does not exist: refused, not a file "outs2"
    missing = tmp_path / "outs2"
    proc = quantize(tiny_checkpoint, f"{missing}{os.sep}")
    assert_refused(proc, tmp_path / "x", f"output folder {missing} does not exist")
    assert not missing.exists()


def test_library_convert_into_a_folder(tiny_checkpoint: Path, tmp_path: Path):
    result = conv.convert(tiny_checkpoint, tmp_path, "F16")
    assert result.path == tmp_path / "tiny-F16.gguf" and result.path.is_file()


def test_directory_at_the_default_name_is_refused(tiny_checkpoint: Path, tmp_path: Path):
    (tmp_path / "tiny-Q8_0.gguf").mkdir()
    proc = quantize(tiny_checkpoint, tmp_path, "--overwrite")
    assert_refused(proc, tmp_path / "x", f"output {tmp_path / 'tiny-Q8_0.gguf'} is a directory")
    assert (tmp_path / "tiny-Q8_0.gguf").is_dir()


def test_fifo_is_refused_without_hanging(tiny_checkpoint: Path, tmp_path: Path):
    fifo = tmp_path / "out.gguf"
    os.mkfifo(fifo)
    start = time.monotonic()
    proc = quantize(tiny_checkpoint, fifo, "--overwrite")
    assert_refused(proc, fifo, f"output {fifo} is a FIFO", "regular files")
    assert fifo.is_fifo() and time.monotonic() - start < 60


@pytest.mark.parametrize("device", ["/dev/null", "/dev/full"])
def test_device_is_refused(tiny_checkpoint: Path, device: str):
    if not Path(device).exists():
        pytest.fail(f"{device} missing on this machine")
    proc = quantize(tiny_checkpoint, device, "--overwrite")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip() == (f"error: output {device} is a character device; qconvert writes only regular "
                                   "files (even with --overwrite): give a file path")
    assert Path(device).is_char_device()


def test_symlink_to_a_device_is_refused(tiny_checkpoint: Path, tmp_path: Path):
    link = tmp_path / "out.gguf"
    link.symlink_to("/dev/null")
    assert_refused(quantize(tiny_checkpoint, link, "--overwrite"), link, "is a character device")
    assert link.is_symlink() and Path("/dev/null").is_char_device()


def test_socket_is_refused(tiny_checkpoint: Path, tmp_path: Path):
    # AF_UNIX paths are limited to ~107 bytes: bind in a short folder
    sock_dir = Path("/tmp") / f"qconvert-sock-{os.getpid()}"
    sock_dir.mkdir(exist_ok=True)
    path = sock_dir / "s.gguf"
    s = socket.socket(socket.AF_UNIX)
    try:
        s.bind(str(path))
        assert_refused(quantize(tiny_checkpoint, path, "--overwrite"), path, "is a socket")
        assert path.is_socket()
    finally:
        s.close()
        path.unlink(missing_ok=True)
        sock_dir.rmdir()


# --- the writer: sync, stale temporaries, write errors --------------------------------------------

def test_file_is_fsynced_before_the_rename_and_the_folder_after(tiny_checkpoint: Path, tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch):
    events: list[tuple[str, str]] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        return real_fsync(fd)

    def replace(src, dst, **kw):
        events.append(("replace", str(dst)))
        return real_replace(src, dst, **kw)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    out = tmp_path / "out.gguf"
    conv.convert(tiny_checkpoint, out, "Q8_0")
    tmp = str(temporary_path(out, os.getpid()))
    assert events == [("fsync", tmp), ("replace", str(out)), ("fsync", str(tmp_path))]


def dead_pid() -> int:
    """The PID of a process that has exited (and been reaped)."""
    p = subprocess.Popen(["true"])
    p.wait()
    return p.pid


def test_stale_temporaries_of_dead_runs_are_removed(tiny_checkpoint: Path, tmp_path: Path):
    out = tmp_path / "out.gguf"
    stale = temporary_path(out, dead_pid())
    live = temporary_path(out, os.getpid())  # this test's process: alive, maybe writing
    other = temporary_path(tmp_path / "other.gguf", dead_pid())  # another target's: not ours to judge
    lookalike = tmp_path / ".out.gguf.notapid.partial"
    for p in (stale, live, other, lookalike):
        p.write_bytes(b"partial")
    proc = quantize(tiny_checkpoint, out)
    assert proc.returncode == 0, proc.stderr
    assert not stale.exists()
    assert live.exists() and other.exists() and lookalike.exists()


def test_write_error_midway_is_one_line_and_leaves_nothing(tiny_checkpoint: Path, tmp_path: Path):
    """An OSError while writing (here EFBIG from a file size limit, as ENOSPC from a full disk)
    is exit 1, one line naming the target, and the temporary file is removed."""
    full = tmp_path / "full.gguf"
    assert quantize(tiny_checkpoint, full).returncode == 0
    limit = full.stat().st_size // 2  # the header fits, the tensor data does not

    def limited() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # write(2) then fails with EFBIG

    out = tmp_path / "out.gguf"
    cmd = [sys.executable, "-m", "qconvert", "quantize", str(tiny_checkpoint), "-t", "Q8_0", "-o", str(out),
           "--no-progress"]
    env = {k: v for k, v in os.environ.items() if k != "QCONVERT_DEBUG"}
    proc = subprocess.run(cmd, capture_output=True, text=True, preexec_fn=limited, env=env, timeout=300)
    assert_clean_failure(proc, out, f"cannot write {out}: File too large", code=1)


# --- signals ----------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def slow_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A checkpoint whose Q4_K_M conversion with the NumPy reference quantizers takes seconds:
    time to send a signal once the temporary file exists."""
    cfg = tiny_llama_config(tokenizer_vocab_size(), hidden_size=512, intermediate_size=2048, num_hidden_layers=4,
                            num_attention_heads=8, num_key_value_heads=8)
    return write_checkpoint(tmp_path_factory.mktemp("slow") / "slow", cfg, tiny_llama_tensors(cfg))


@pytest.mark.parametrize("signum, code, message", [(signal.SIGINT, 130, "error: interrupted"),
                                                    (signal.SIGTERM, 143, "error: terminated")])
def test_signal_exits_with_its_code_and_removes_the_temporary(slow_checkpoint: Path, tmp_path: Path,
                                                              signum: int, code: int, message: str):
    out = tmp_path / "out.gguf"
    env = {k: v for k, v in os.environ.items() if k != "QCONVERT_DEBUG"}
    env["QCONVERT_BACKEND"] = "reference"
    proc = subprocess.Popen([sys.executable, "-m", "qconvert", "quantize", str(slow_checkpoint), "-t", "Q4_K_M",
                             "-o", str(out), "--no-progress", "-j", "2"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        deadline = time.monotonic() + 120
        tmp = temporary_path(out, proc.pid)
        while not tmp.exists():
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "no temporary file after 120 s"
            time.sleep(0.01)
        proc.send_signal(signum)
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == code, (proc.returncode, stderr)
    assert stderr.strip() == message and stdout == ""
    assert list(tmp_path.iterdir()) == []
