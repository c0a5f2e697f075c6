"""Reports for machines: every --json output is one JSON object on stdout that follows the shipped
schema, failures included, with the exit code of the scheme; progress bars only on a terminal."""

from __future__ import annotations

import json
import os
import pty
import subprocess
import sys
from pathlib import Path

import gguf
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
    assert list(doc)[:2] == ["schema_version", "qconvert_version"]
    check_report(doc)
