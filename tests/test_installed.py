"""qconvert as `pip install` leaves it in an empty venv: the console script, with only the runtime
dependencies, at both ends of the range pyproject.toml allows.

Two venvs: "newest" (what pip picks today; typer 0.29 vendors click as typer._click, so
`import click` fails there, which is what broke every usage error), and "oldest" (every runtime
dependency pinned to its lower bound in pyproject.toml by a constraints file). In each: --version,
usage errors (one line, exit 2, no traceback), a tiny conversion whose bytes equal the dev
environment's, and inspect.

Cached under ~/.cache/qconvert/installed: the wheel keyed by a hash of the files it is built from,
the oldest venv by that hash and the pins, the newest by that hash and the day (so "today" stays
today). Measured on 2 shared cores under load: cold 7 min 15 s (the wheel's Cython compile about
6 min, each venv from PyPI about 35 s), warm 17 s: not marked slow, but a CI job starts cold and
needs PyPI.
"""

from __future__ import annotations

import datetime
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from conftest import CACHE, ROOT, run_cli

import qconvert

INSTALLED = CACHE / "installed"
# What the wheel is built from (setup.py compiles kernels/ into qconvert._kernels)
SOURCES = ("qconvert", "kernels", "setup.py", "pyproject.toml")
GENERATED = {".so", ".pyc", ".c"}  # build products that may lie in the tree (Cython writes kernels/*.c)
DEV_ONLY = ("llama_cpp", "torch", "pytest", "transformers", "hypothesis")


def source_files() -> list[Path]:
    files = []
    for name in SOURCES:
        p = ROOT / name
        files += [f for f in sorted(p.rglob("*")) if f.is_file() and f.suffix not in GENERATED
                  and "__pycache__" not in f.parts] if p.is_dir() else [p]
    return files


def source_hash() -> str:
    h = hashlib.sha256()
    for f in source_files():
        h.update(str(f.relative_to(ROOT)).encode() + b"\0" + f.read_bytes() + b"\0")
    return h.hexdigest()[:16]


def lower_bounds() -> dict[str, str]:
    """Each runtime dependency's lower bound from pyproject.toml; every one must have one."""
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    bounds = {}
    for dep in deps:
        m = re.fullmatch(r"([A-Za-z0-9_.-]+)\s*>=\s*([0-9][0-9.]*)(,.*)?", dep.strip())
        assert m, f"pyproject.toml: runtime dependency {dep!r} needs a '>=' lower bound to be tested"
        bounds[m[1]] = m[2]
    return bounds


def release(version: str) -> tuple[int, ...]:
    """"0.18" and "0.18.0" as the same release."""
    parts = [int(x) for x in version.split(".")]
    while parts and parts[-1] == 0:
        parts.pop()
    return tuple(parts)


def run(*cmd, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=1800, **kw)


def replace_entry(kind: str, key: str, make) -> Path:
    """INSTALLED/kind-key, made by make(path) unless a complete one exists; other keys of the
    same kind are deleted (stale)."""
    path = INSTALLED / f"{kind}-{key}"
    if (path / ".complete").is_file():
        return path
    for old in INSTALLED.glob(f"{kind}-*"):
        shutil.rmtree(old, ignore_errors=True)
    path.mkdir(parents=True)
    make(path)
    (path / ".complete").write_text("")
    return path


@pytest.fixture(scope="module")
def wheel() -> Path:
    def build(out: Path) -> None:
        src = out / "src"
        for f in source_files() + [ROOT / "README.md"]:
            dst = src / f.relative_to(ROOT)
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(f, dst)
        proc = run(sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", src, "-w", out)
        assert proc.returncode == 0, proc.stderr[-3000:]
        shutil.rmtree(src)

    folder = replace_entry("wheel", source_hash(), build)
    (found,) = folder.glob("qconvert-*.whl")
    return found


@pytest.fixture(scope="module", params=["newest", "oldest"])
def venv(request, wheel: Path) -> tuple[str, Path]:
    """A venv holding the wheel and its runtime dependencies only: "newest" as pip picks them
    today, "oldest" pinned to pyproject.toml's lower bounds."""
    kind = request.param
    pins = "".join(f"{name}=={version}\n" for name, version in sorted(lower_bounds().items()))
    if kind == "oldest":
        key = hashlib.sha256((wheel.parent.name + pins).encode()).hexdigest()[:16]
    else:
        key = f"{wheel.parent.name.removeprefix('wheel-')}-{datetime.date.today():%Y%m%d}"

    def make(path: Path) -> None:
        proc = run(sys.executable, "-m", "venv", path)
        assert proc.returncode == 0, proc.stderr
        extra = []
        if kind == "oldest":
            (path / "constraints.txt").write_text(pins)
            extra = ["-c", path / "constraints.txt"]
        proc = run(path / "bin" / "python", "-m", "pip", "install", "-q", "--disable-pip-version-check", *extra,
                   wheel)
        assert proc.returncode == 0, proc.stderr[-3000:]

    return kind, replace_entry(f"venv-{kind}", key, make)


def clean_env() -> dict[str, str]:
    """No PYTHONPATH (it would import the source tree instead of the installed package)."""
    return {"PATH": "/usr/bin:/bin", "HOME": os.environ.get("HOME", "/tmp"), "LANG": "C.UTF-8"}


def qconvert_cli(venv_dir: Path, *args, cwd: Path) -> subprocess.CompletedProcess:
    return run(venv_dir / "bin" / "qconvert", *args, env=clean_env(), cwd=cwd)


def venv_python(venv_dir: Path, code: str) -> str:
    proc = run(venv_dir / "bin" / "python", "-c", code, env=clean_env(), cwd=venv_dir)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


def test_venv_holds_only_runtime_dependencies(venv):
    kind, path = venv
    where = venv_python(path, "import qconvert; print(qconvert.__file__)")
    assert where.startswith(str(path)), where
    present = venv_python(path, "import importlib.util as u; print(' '.join(m for m in "
                                f"{DEV_ONLY!r} if u.find_spec(m)))")
    assert present == "", f"{kind} venv has dev-only packages: {present}"
    if kind == "oldest":
        versions = venv_python(path, "import importlib.metadata as m; print(' '.join(m.version(d) for d in "
                                     f"{sorted(lower_bounds())!r}))")
        assert [release(v) for v in versions.split()] == [release(v) for _, v in sorted(lower_bounds().items())]
    vendored = venv_python(path, "import importlib.util as u; print(bool(u.find_spec('typer._click')))")
    if vendored == "True":  # the clean install of issue 10: typer vendors click, qconvert must not need it
        # huggingface_hub >= 1 installs click for its own CLI: hide it, as a venv without it would
        no_click = "import sys; sys.modules['click'] = None; sys.argv = ['qconvert', 'quantize']; " \
                   "from qconvert.cli import main; main()"
        proc = run(path / "bin" / "python", "-c", no_click, env=clean_env(), cwd=path)
        assert proc.returncode == 2 and proc.stderr.startswith("error: missing argument"), proc.stderr


def test_version(venv, tmp_path: Path):
    proc = qconvert_cli(venv[1], "--version", cwd=tmp_path)
    assert proc.returncode == 0 and proc.stdout == f"qconvert {qconvert.__version__}\n", proc.stderr


@pytest.mark.parametrize("args, phrase", [(["--bogus"], "--bogus"), (["quantize"], "missing argument"),
                                          ([], "missing command"), (["quantize", "m", "-j", "x"], "--threads"),
                                          (["nope"], "nope")])
def test_usage_errors_are_one_line_exit_2(venv, tmp_path: Path, args: list[str], phrase: str):
    proc = qconvert_cli(venv[1], *args, cwd=tmp_path)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    assert "Traceback" not in proc.stderr and len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: ") and phrase in lines[0], lines[0]


@pytest.mark.parametrize("qtype, progress", [("Q8_0", "--progress"), ("Q4_K_M", "--no-progress")])
def test_conversion_equals_the_dev_environment(venv, tiny_checkpoint: Path, tmp_path: Path, qtype: str,
                                               progress: str):
    want = tmp_path / "dev.gguf"
    dev = run_cli("quantize", tiny_checkpoint, "-t", qtype, "-o", want, "--no-progress")
    assert dev.returncode == 0, dev.stderr
    out = tmp_path / "installed.gguf"
    proc = qconvert_cli(venv[1], "quantize", tiny_checkpoint, "-t", qtype, "-o", out, progress, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(f"wrote {out} (")
    assert out.read_bytes() == want.read_bytes(), f"{venv[0]} venv's {qtype} file differs from the dev environment's"

    shown = qconvert_cli(venv[1], "inspect", out, cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    assert "general.architecture = 'llama'" in shown.stdout and "blk.0.attn_q.weight" in shown.stdout


def test_bad_input_is_one_line_exit_1(venv, tmp_path: Path):
    proc = qconvert_cli(venv[1], "quantize", tmp_path, "-o", tmp_path / "x.gguf", cwd=tmp_path)
    assert proc.returncode == 1 and proc.stderr.startswith("error: ") and len(proc.stderr.splitlines()) == 1


def test_a_mix_the_installed_gguf_cannot_name_is_refused_saying_so(venv, tiny_checkpoint: Path, tmp_path: Path):
    """MXFP4_MOE's file type is in gguf-py from 0.19 on: with the oldest gguf pyproject allows the mix is
    refused in one line naming the version it needs; with today's it converts."""
    out = tmp_path / "m.gguf"
    proc = qconvert_cli(venv[1], "quantize", tiny_checkpoint, "-t", "MXFP4_MOE", "-o", out, cwd=tmp_path)
    if venv[0] == "oldest":
        assert proc.returncode == 1 and proc.stderr.splitlines() == [
            "error: MXFP4_MOE needs the gguf package 0.19 or newer (pip install -U gguf): the installed one names "
            "no such llama.cpp file type"] and not out.exists()
    else:
        assert proc.returncode == 0 and out.is_file(), proc.stderr
