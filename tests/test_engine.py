"""The conversion engine: one model prepared once, planned per type (`prepare_model`, `plan_job`),
several outputs written in one pass (`write_many`) byte for byte as separate `write` runs make
them, an output that fails alone, and file sizes known exactly before writing (`predict_files`)."""

from __future__ import annotations

import errno
import hashlib
import os
from pathlib import Path

import pytest

from conftest import MODELS, tiny_llama_config, tiny_llama_tensors, tokenizer_vocab_size, write_checkpoint

import qconvert.convert
from qconvert import convert as conv
from qconvert.errors import CheckpointError, OutputError, UsageError
from qconvert.reader import Checkpoint
from qconvert.writer import OutputWriter, writing


@pytest.fixture(autouse=True)
def small_chunks(monkeypatch: pytest.MonkeyPatch):
    """Chunks of a few rows, so that every matrix is written in several pieces for each output."""
    monkeypatch.setattr(qconvert.convert, "CHUNK_ELEMENTS", 1024)


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".partial"))


def separate(model: Path, qtype: str, out: Path) -> bytes:
    conv.write(conv.prepare(model, qtype), out)
    return out.read_bytes()


@pytest.mark.parametrize("model, types", [
    ("llama-k256-bf16", ["F16", "Q8_0", "Q4_K_M", "Q6_K", "Q3_K_S", "BF16"]),
    ("mixtral-bpe-bf16", ["F16", "Q8_0", "Q4_K_M", "F32"]),  # stacked experts, chunks within an expert
])
def test_write_many_is_byte_identical_to_separate_writes(tmp_path: Path, model: str, types: list[str]):
    model_dir = MODELS / model
    m = conv.prepare_model(model_dir)
    jobs = [conv.plan_job(m, t) for t in types]
    assert all(j.model is m for j in jobs)
    # the mix decides per tensor: at least one K-quant file holds several types
    assert len({r.qtype for r in jobs[types.index("Q4_K_M")].rows}) > 2
    outs = [tmp_path / f"many-{t}.gguf" for t in types]
    calls: list[int] = []
    results = conv.write_many(list(zip(jobs, outs)), on_progress=calls.append)
    assert sum(calls) == m.source_bytes and len(calls) > len(m.sources)  # one call a chunk, not a file
    for t, out, result in zip(types, outs, results):
        assert isinstance(result, conv.Result), result
        want = separate(model_dir, t, tmp_path / f"one-{t}.gguf")
        assert out.read_bytes() == want, t
        assert result.path == out and result.nbytes == len(want)
        assert [(f.path, f.nbytes, f.sha256) for f in result.files] == [(out, len(want),
                                                                          hashlib.sha256(want).hexdigest())]
    assert leftovers(tmp_path) == []


def test_each_chunk_is_read_once_for_all_outputs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """The single pass: the checkpoint bytes read for three outputs are those read for one."""
    read: list[int] = []
    real = Checkpoint.read_rows

    def counting(self, name, rows=None, scratch=None):
        arr = real(self, name, rows, scratch)
        read.append(arr.nbytes)
        return arr

    monkeypatch.setattr(Checkpoint, "read_rows", counting)
    m = conv.prepare_model(MODELS / "llama-k256-bf16")
    results = conv.write_many([(conv.plan_job(m, t), tmp_path / f"{t}.gguf") for t in ("F16", "Q8_0", "Q4_K_M")])
    assert all(isinstance(r, conv.Result) for r in results)
    many = sum(read)
    read.clear()
    conv.write(conv.prepare(MODELS / "llama-k256-bf16", "Q8_0"), tmp_path / "one.gguf")
    assert many == sum(read) > 0


@pytest.fixture
def overflowing(tmp_path: Path) -> Path:
    """A checkpoint with one weight (1e5) beyond F16's range (65504): fine for F32 and Q8_0."""
    cfg = tiny_llama_config(tokenizer_vocab_size())
    tensors = tiny_llama_tensors(cfg)
    tensors["model.layers.0.mlp.up_proj.weight"][5, 7] = 1e5
    return write_checkpoint(tmp_path / "big", cfg, tensors)


def test_a_failing_output_stops_alone(overflowing: Path, tmp_path: Path):
    out = tmp_path / "out"
    out.mkdir()
    m = conv.prepare_model(overflowing)
    types = ["Q8_0", "F16", "F32"]
    results = conv.write_many([(conv.plan_job(m, t), out / f"{t}.gguf") for t in types])
    assert isinstance(results[1], CheckpointError)
    assert "model.layers.0.mlp.up_proj.weight" in str(results[1]) and "row 5" in str(results[1])
    assert not (out / "F16.gguf").exists()
    for t, r in zip(types, results):
        if t != "F16":
            assert isinstance(r, conv.Result), r
            assert (out / f"{t}.gguf").read_bytes() == separate(overflowing, t, tmp_path / f"{t}.gguf")
    assert leftovers(out) == [] and sorted(p.name for p in out.iterdir()) == ["F32.gguf", "Q8_0.gguf"]
    # alone, the F16 output is refused by write as before
    with pytest.raises(CheckpointError, match="up_proj"):
        conv.write(conv.prepare(overflowing, "F16"), out / "F16.gguf")
    assert leftovers(out) == []


def test_outputs_refused_before_the_pass_stop_alone(tiny_checkpoint: Path, tmp_path: Path):
    """An existing target (no overwrite) and the same path twice are refused; the rest is written."""
    m = conv.prepare_model(tiny_checkpoint)
    (tmp_path / "exists.gguf").write_bytes(b"old")
    outputs = [(conv.plan_job(m, "Q8_0"), tmp_path / "exists.gguf"), (conv.plan_job(m, "F16"), tmp_path / "a.gguf"),
               (conv.plan_job(m, "Q4_0"), tmp_path / "a.gguf")]
    results = conv.write_many(outputs)
    assert isinstance(results[0], UsageError) and "exists" in str(results[0])
    assert isinstance(results[1], conv.Result)
    assert isinstance(results[2], UsageError) and "written twice" in str(results[2])
    assert (tmp_path / "exists.gguf").read_bytes() == b"old"
    assert (tmp_path / "a.gguf").read_bytes() == separate(tiny_checkpoint, "F16", tmp_path / "F16.gguf")
    assert leftovers(tmp_path) == []


def test_a_read_failure_fails_every_output(tiny_checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    def broken(self, name, rows=None, scratch=None):
        raise CheckpointError(f"{name}: cannot be read")

    m = conv.prepare_model(tiny_checkpoint)
    monkeypatch.setattr(Checkpoint, "read_rows", broken)
    results = conv.write_many([(conv.plan_job(m, t), tmp_path / f"{t}.gguf") for t in ("F16", "Q8_0")])
    assert all(isinstance(r, CheckpointError) and "cannot be read" in str(r) for r in results)
    assert list(tmp_path.iterdir()) == [tiny_checkpoint]


def test_interrupt_removes_every_temporary(tiny_checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Anything but a QConvertError (the CLI's Interrupted, a bug) aborts every output and propagates."""
    calls = []

    def interrupt(nbytes: int) -> None:
        calls.append(nbytes)
        if len(calls) == 3:
            raise KeyboardInterrupt

    m = conv.prepare_model(tiny_checkpoint)
    with pytest.raises(KeyboardInterrupt):
        conv.write_many([(conv.plan_job(m, t), tmp_path / f"{t}.gguf") for t in ("F16", "Q8_0")],
                        on_progress=interrupt)
    assert list(tmp_path.iterdir()) == [tiny_checkpoint]


@pytest.mark.parametrize("qtype", ["F32", "F16", "Q8_0", "Q4_K_M", "Q2_K"])
def test_predicted_sizes_are_exact(tmp_path: Path, qtype: str):
    job = conv.prepare(MODELS / "qwen2-bpe-bf16", qtype)
    out = tmp_path / "out.gguf"
    predicted = conv.predict_files(job, out)
    result = conv.write(job, out)
    assert [(f.path, f.nbytes, f.sha256) for f in predicted] == [(out, out.stat().st_size, None)]
    assert result.nbytes == predicted[0].nbytes


def test_prepare_is_prepare_model_then_plan_job(tmp_path: Path):
    model = MODELS / "llama-k256-bf16"
    one = conv.prepare(model, "Q4_K_M")
    two = conv.plan_job(conv.prepare_model(model), "Q4_K_M")
    assert one.rows == two.rows and one.recipe == two.recipe
    assert one.input_paths == two.input_paths and one.source_bytes == two.source_bytes
    with pytest.raises(Exception, match="unknown type 'Q9'"):
        conv.prepare(tmp_path / "missing", "Q9")  # the type is checked before the folder


def test_a_write_error_stops_that_output_alone(tiny_checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A disk error on one output (here ENOSPC on its third chunk) is its OutputError; it is
    aborted, and the other output is written whole."""
    real = OutputWriter._put
    writes: list[int] = []

    def put(self, i, data):
        if self.files[i].path.name == "bad.gguf":
            writes.append(len(data))
            if len(writes) == 3:  # as the file's write(2) fails: through the writer's error mapping
                with writing(self.files[i].path):
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(self, i, data)

    monkeypatch.setattr(OutputWriter, "_put", put)
    m = conv.prepare_model(tiny_checkpoint)
    bad, good = tmp_path / "bad.gguf", tmp_path / "good.gguf"
    results = conv.write_many([(conv.plan_job(m, "Q8_0"), bad), (conv.plan_job(m, "Q8_0"), good)])
    assert isinstance(results[0], OutputError) and str(results[0]) == f"cannot write {bad}: No space left on device"
    assert isinstance(results[1], conv.Result) and not bad.exists()
    monkeypatch.setattr(OutputWriter, "_put", real)
    assert good.read_bytes() == separate(tiny_checkpoint, "Q8_0", tmp_path / "one.gguf")
    assert leftovers(tmp_path) == []


def test_nothing_is_read_when_every_output_is_refused(tiny_checkpoint: Path, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch):
    def unread(self, *args, **kw):
        raise AssertionError("the checkpoint was read")

    monkeypatch.setattr(Checkpoint, "read_rows", unread)
    monkeypatch.setattr(Checkpoint, "load", unread)
    (tmp_path / "a.gguf").write_bytes(b"old")
    m = conv.prepare_model(tiny_checkpoint)
    results = conv.write_many([(conv.plan_job(m, "F16"), tmp_path / "a.gguf")])
    assert isinstance(results[0], UsageError)
