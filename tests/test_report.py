"""Reports for machines: every --json output is one JSON object on stdout that follows the shipped
schema, failures included, with the exit code of the scheme; progress bars only on a terminal."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import struct
import subprocess
import sys
import termios
from pathlib import Path

import gguf
import numpy as np
import pytest

from conftest import check_report, run_cli, run_json
from qconvert import __version__
from qconvert.convert import convert
from qconvert.report import SCHEMA_PATH, SCHEMA_VERSION, as_document


@pytest.fixture(scope="module")
def q8_file(tmp_path_factory) -> Path:
    from conftest import tiny_llama_config, tiny_llama_tensors, tokenizer_vocab_size, write_checkpoint
    root = tmp_path_factory.mktemp("report")
    cfg = tiny_llama_config(tokenizer_vocab_size())
    model = write_checkpoint(root / "tiny", cfg, tiny_llama_tensors(cfg))
    out = root / "tiny-q8_0.gguf"
    convert(model, out, "Q8_0")
    return out


def test_schema_is_shipped_and_valid():
    import jsonschema
    schema = json.loads(SCHEMA_PATH.read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    assert schema["properties"]["schema_version"]["const"] == SCHEMA_VERSION


def test_the_schema_names_every_error_kind():
    """The error report's `kind` enum is every error class's kind (each module imported, Ray's too,
    which imports Ray only when used), plus "os" for an operating system error the CLI reports."""
    import importlib
    import pkgutil

    import qconvert
    from qconvert.errors import Interrupted, QConvertError

    for mod in pkgutil.walk_packages(qconvert.__path__, "qconvert."):
        if not mod.name.endswith("__main__"):  # which would run the CLI
            importlib.import_module(mod.name)

    def subclasses(cls: type) -> set[type]:
        return {cls}.union(*(subclasses(c) for c in cls.__subclasses__()))

    kinds = {c.kind for c in subclasses(QConvertError) | subclasses(Interrupted)}
    enum = json.loads(SCHEMA_PATH.read_text())["$defs"]["error"]["properties"]["error"]["properties"]["kind"]["enum"]
    assert sorted(enum) == sorted(kinds | {"os"})


def test_schema_rejects_what_it_should():
    """The validator the tests use is not vacuous: a report missing a field, or with a field of
    the wrong type, fails it."""
    good = {"schema_version": 1, "qconvert_version": "x", "command": "inspect", "ok": False,
            "error": {"kind": "gguf", "message": "m", "exit_code": 1}}
    check_report(good)
    for bad in ({**good, "error": {"kind": "gguf", "message": "m"}},
                {**good, "error": {**good["error"], "exit_code": 3}},
                {**good, "error": {**good["error"], "kind": "nonsense"}},
                {**good, "schema_version": 2},
                {k: v for k, v in good.items() if k != "qconvert_version"}):
        with pytest.raises(AssertionError, match="does not follow the schema"):
            check_report(bad)


def test_inspect_json(q8_file: Path):
    proc, data = run_json("inspect", q8_file)
    assert proc.returncode == 0 and data["ok"] and data["command"] == "inspect"
    assert data["qconvert_version"] == __version__ and data["path"] == str(q8_file)
    assert data["files"] == [{"path": str(q8_file), "bytes": q8_file.stat().st_size, "tensors": len(data["tensors"])}]
    assert data["bytes"] == q8_file.stat().st_size
    reader = gguf.GGUFReader(q8_file)
    keys = [k for k in reader.fields if not k.startswith("GGUF.")]
    assert [m["key"] for m in data["metadata"]] == keys
    meta = {m["key"]: m for m in data["metadata"]}
    assert meta["general.architecture"] == {"key": "general.architecture", "type": "STRING", "value": "llama"}
    tokens = meta["tokenizer.ggml.tokens"]["value"]
    assert tokens["type"] == "STRING" and tokens["count"] == len(reader.fields["tokenizer.ggml.tokens"].data)
    assert tokens["head"] == reader.fields["tokenizer.ggml.tokens"].contents()[:len(tokens["head"])]
    want = [(t.name, t.tensor_type.name, [int(d) for d in t.shape], int(t.n_bytes)) for t in reader.tensors]
    assert [(t["name"], t["type"], t["shape"], t["bytes"]) for t in data["tensors"]] == want
    _, bare = run_json("inspect", q8_file, "--no-tensors")
    assert bare["tensors"] is None and bare["metadata"] == data["metadata"]


@pytest.mark.parametrize("args, kind, code", [
    (["inspect", "{bad}"], "gguf", 1),
    (["inspect", "{missing}"], "gguf", 1),
    (["quantize", "{missing}", "-t", "Q8_0"], "checkpoint", 1),
    (["quantize", "{model}", "-t", "Q9_9", "-o", "{out}"], "unsupported", 1),
    (["quantize", "{model}", "--threads", "0"], "usage", 2),
    (["quantize"], "usage", 2),
    (["nosuchcommand"], "usage", 2),
])
def test_failures_are_error_reports(args, kind, code, tiny_checkpoint: Path, tmp_path: Path):
    """A failure with --json: the one line on stderr as always, and on stdout one error report
    whose exit_code is the process's."""
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"not a gguf")
    fill = {"bad": bad, "missing": tmp_path / "missing", "model": tiny_checkpoint, "out": tmp_path / "o.gguf"}
    proc, data = run_json(*[a.format(**fill) for a in args])
    assert proc.returncode == code, proc.stderr
    assert data["ok"] is False and data["command"] == args[0]
    assert data["error"]["kind"] == kind and data["error"]["exit_code"] == code
    line = proc.stderr.strip()
    assert line.count("\n") == 0 and line == f"error: {data['error']['message']}"
    assert not (tmp_path / "o.gguf").exists()


def test_quiet_prints_nothing_but_errors(tiny_checkpoint: Path, tmp_path: Path):
    proc = run_cli("quantize", tiny_checkpoint, "-t", "Q8_0", "-o", tmp_path / "a.gguf", "--quiet")
    assert proc.returncode == 0 and proc.stdout == "" and proc.stderr == ""
    proc = run_cli("quantize", tiny_checkpoint, "-t", "Q8_0", "-o", tmp_path / "a.gguf", "--quiet")
    assert proc.returncode == 2 and proc.stdout == "" and proc.stderr.startswith("error: ")


def test_no_progress_bar_in_a_log(tiny_checkpoint: Path, tmp_path: Path):
    """Not a terminal (a CI log): no bar, no control codes, unless --progress forces one."""
    proc = run_cli("quantize", tiny_checkpoint, "-t", "Q8_0", "-o", tmp_path / "a.gguf")
    assert proc.returncode == 0 and proc.stderr == "" and "\r" not in proc.stdout and "\x1b" not in proc.stdout
    proc = run_cli("quantize", tiny_checkpoint, "-t", "Q8_0", "-o", tmp_path / "b.gguf", "--progress")
    assert proc.returncode == 0 and "100%" in proc.stderr


def test_progress_bar_on_a_terminal(tiny_checkpoint: Path, tmp_path: Path):
    """stderr a terminal (a pseudo-terminal here): the bar is shown by default."""
    leader, follower = pty.openpty()
    # a new pseudo-terminal is 0 columns wide, and tqdm draws a bar that fits: make it 80x24
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
    env = {k: v for k, v in os.environ.items() if k != "QCONVERT_DEBUG"}
    proc = subprocess.run([sys.executable, "-m", "qconvert", "quantize", str(tiny_checkpoint), "-t", "Q8_0",
                           "-o", str(tmp_path / "a.gguf")], stdout=subprocess.PIPE, stderr=follower, env=env,
                          timeout=300)
    os.close(follower)
    seen = b""
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # EIO once the follower is closed and drained
            break
        if not chunk:
            break
        seen += chunk
    os.close(leader)
    assert proc.returncode == 0
    assert b"100%" in seen


def test_as_document_adds_versions():
    from qconvert.report import ErrorDetail, ErrorReport
    doc = as_document(ErrorReport("quantize", ErrorDetail("usage", "m", 2)))
    assert list(doc)[:4] == ["schema_version", "qconvert_version", "command", "ok"]
    check_report(doc)


MODELS = Path(__file__).parent / "fixtures" / "models"


@pytest.mark.parametrize("model, qtype, extra", [
    ("llama-k256-bf16", "Q4_K_M", ()),
    ("llama-bpe-bf16-sharded", "Q8_0", ()),
    ("qwen3moe-bpe-bf16", "Q5_K_S", ("--split-max-tensors", "9")),
    ("llama-spm-f32", "F16", ("--split-max-size", "50K")),
])
def test_quantize_json_and_its_plan(model: str, qtype: str, extra: tuple, tmp_path: Path):
    """quantize --json: what was read, what was written (every file with its size and SHA-256),
    every tensor as the file holds it; --dry-run --json: the same plan with no hashes, its sizes
    exactly the real files'."""
    import hashlib
    out = tmp_path / "out.gguf"
    _, plan = run_json("quantize", MODELS / model, "-t", qtype, "-o", out, "--dry-run", *extra)
    assert not any(tmp_path.iterdir())
    proc, made = run_json("quantize", MODELS / model, "-t", qtype, "-o", out, "--threads", "2", *extra)
    assert proc.returncode == 0, proc.stderr
    assert plan["dry_run"] is True and made["dry_run"] is False and plan["seconds"] is None and made["seconds"] > 0
    written = sorted(tmp_path.iterdir())
    assert [f["path"] for f in made["files"]] == [str(p) for p in written]
    assert made["output"] == (str(out) if len(written) == 1 else [str(p) for p in written])
    for f in made["files"]:
        data = Path(f["path"]).read_bytes()
        assert f["bytes"] == len(data) and f["sha256"] == hashlib.sha256(data).hexdigest()
    assert made["bytes"] == sum(p.stat().st_size for p in written)
    # the plan predicted every file's exact size
    assert [(f["path"], f["bytes"], f["sha256"]) for f in plan["files"]] == [
        (f["path"], f["bytes"], None) for f in made["files"]]
    assert plan["bytes"] == made["bytes"] and plan["tensors"] == made["tensors"]
    assert made["type"] == qtype and made["command"] == "quantize" and made["input"]["ref"] == str(MODELS / model)
    names = {f["name"] for f in made["input"]["files"]}
    assert "config.json" in names and any(n.endswith(".safetensors") for n in names)
    for f in made["input"]["files"]:
        assert f["bytes"] == (MODELS / model / f["name"]).stat().st_size
    # tensors: as the files hold them (name, type, GGUF shape, bytes)
    held = [(t.name, t.tensor_type.name, [int(d) for d in t.shape], int(t.n_bytes))
            for p in written for t in gguf.GGUFReader(p).tensors]
    assert [(t["name"], t["type"], t["shape"], t["bytes"]) for t in made["tensors"]] == held
    assert made["tensor_bytes"] == sum(t["bytes"] for t in made["tensors"])
    n_weights = sum(int(np.prod(t["shape"])) for t in made["tensors"])
    assert made["bits_per_weight"] == pytest.approx(8 * made["tensor_bytes"] / n_weights)
    assert made["fallbacks"] == sum(t["wanted"] is not None for t in made["tensors"])
    for t in made["tensors"]:
        assert t["reason"] and (t["source"] is None or isinstance(t["source"], str))


def test_json_keeps_stdout_for_the_report(tmp_path: Path):
    """With --json and --progress the bar goes to stderr; stdout holds only the report."""
    proc, data = run_json("quantize", MODELS / "llama-spm-f32", "-t", "Q4_0", "-o", tmp_path / "a.gguf",
                          "--progress")
    assert proc.returncode == 0 and data["ok"] and "100%" in proc.stderr
