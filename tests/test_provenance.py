"""The provenance record every output carries (qconvert.provenance): what it holds, and `matches`
telling an output made from these inputs with these options from anything else."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import gguf
import numpy as np
import pytest

from conftest import MODELS, run_cli, write_gguf_imatrix

from qconvert import __version__, provenance
from qconvert import convert as conv
from qconvert.options import parse_kv_override, parse_tensor_type
from qconvert.planner import Overrides
from qconvert.writer import Split

T = gguf.GGMLQuantizationType


@pytest.fixture
def model(tmp_path: Path) -> Path:
    """A sharded fixture checkpoint copied, so its files can be touched."""
    return Path(shutil.copytree(MODELS / "llama-bpe-bf16-sharded", tmp_path / "llama-ft"))


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_the_record_holds_inputs_hashes_and_options(model: Path, tmp_path: Path):
    imatrix = tmp_path / "imatrix.gguf"
    write_gguf_imatrix(imatrix, {"blk.0.ffn_down.weight": (np.ones(160), np.ones(1))})
    m = conv.prepare_model(model, imatrix)
    overrides = Overrides(pure=True, output_tensor_type=T.Q8_0, tensor_types=(parse_tensor_type("attn_v=q6_k"),))
    job = conv.plan_job(m, "q4_k_m", overrides, (parse_kv_override("general.name=str:Mine"),),
                        allow_nonfinite=True, split=Split(max_tensors=5))
    out = tmp_path / "out.gguf"
    conv.write(job, out)
    record = provenance.read(out)
    assert record == provenance.expected(job)
    # the GGUF value is canonical JSON: the record's own serialization, sorted keys, no spaces
    field = gguf.GGUFReader(out.with_name("out-00001-of-00005.gguf")).fields[provenance.KEY]
    assert field.types == [gguf.GGUFValueType.STRING]
    assert field.contents() == json.dumps(record, sort_keys=True, separators=(",", ":"))
    assert record["qconvert_version"] == __version__
    assert record["model"] == {"ref": "llama-ft"}
    # by name: relative in the folder, absolute outside it ("/" sorts first)
    files = [imatrix] + sorted(p for p in model.iterdir())
    assert record["inputs"] == [{"name": p.name if p.parent == model else str(imatrix), "bytes": p.stat().st_size,
                                 "mtime_ns": p.stat().st_mtime_ns} for p in files]
    assert record["hashes"] == {p.name if p.parent == model else str(imatrix): sha(p) for p in files
                                if p.suffix in (".json",) or p == imatrix}
    assert record["options"] == {
        "type": "Q4_K_M", "pure": True, "output_tensor_type": "Q8_0", "token_embedding_type": None,
        "leave_output_tensor": False, "tensor_type": ["attn_v=Q6_K"],
        "override_kv": [["general.name", "STRING", "Mine"]], "imatrix": sha(imatrix), "no_fallback": False,
        "allow_nonfinite": True, "split_max_size": None, "split_max_tensors": 5}


def test_hub_ref_is_recorded_as_given(model: Path):
    m = conv.prepare_model(model, ref="org/llama-ft@0123456789abcdef")
    assert provenance.expected(conv.plan_job(m, "F16"))["model"] == {"ref": "org/llama-ft@0123456789abcdef"}


def test_every_output_carries_it(model: Path, tmp_path: Path):
    """quantize's file and write_many's files: each holds its own job's record."""
    proc = run_cli("quantize", model, "-t", "Q8_0", "-o", tmp_path / "cli.gguf", "--no-progress")
    assert proc.returncode == 0, proc.stderr
    assert provenance.read(tmp_path / "cli.gguf") == provenance.expected(conv.prepare(model, "Q8_0"))
    m = conv.prepare_model(model)
    jobs = [conv.plan_job(m, t) for t in ("F16", "Q4_0")]
    conv.write_many([(j, tmp_path / f"{j.recipe.name}.gguf") for j in jobs])
    for j in jobs:
        path = tmp_path / f"{j.recipe.name}.gguf"
        assert provenance.read(path)["options"]["type"] == j.recipe.name
        assert provenance.matches(path, provenance.expected(j))


def test_matches_until_an_input_or_an_option_changes(model: Path, tmp_path: Path):
    out = tmp_path / "out.gguf"
    conv.write(conv.prepare(model, "Q8_0"), out)

    def fresh(qtype: str = "Q8_0", **kw) -> dict:
        return provenance.expected(conv.prepare(model, qtype, **kw))

    assert provenance.matches(out, fresh())
    # other options
    assert not provenance.matches(out, fresh("Q4_0"))
    assert not provenance.matches(out, fresh(allow_nonfinite=True))
    assert not provenance.matches(out, fresh(overrides=Overrides(pure=True)))
    assert not provenance.matches(out, fresh(split=Split(max_bytes=10**9)))
    # a shard's mtime
    shard = model / "model-00002-of-00004.safetensors"
    st = shard.stat()
    os.utime(shard, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    assert not provenance.matches(out, fresh())
    os.utime(shard, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert provenance.matches(out, fresh())
    # a file's size
    card = model / "README.md"
    card.write_text("# a model card\n")
    assert not provenance.matches(out, fresh())
    card.unlink()
    assert provenance.matches(out, fresh())
    # the config's contents, with the same size and mtime
    config = model / "config.json"
    st, text = config.stat(), config.read_text()
    changed = text.replace('"rms_norm_eps": 1e-05', '"rms_norm_eps": 2e-05')
    assert changed != text and len(changed) == len(text)
    config.write_text(changed)
    os.utime(config, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert not provenance.matches(out, fresh())
    config.write_text(text)
    os.utime(config, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert provenance.matches(out, fresh())
    # another qconvert version
    other = fresh() | {"qconvert_version": "0.0.1"}
    assert not provenance.matches(out, other)


def test_a_damaged_or_foreign_output_does_not_match(model: Path, tmp_path: Path):
    job = conv.prepare(model, "Q8_0")
    want = provenance.expected(job)
    out = tmp_path / "out.gguf"
    conv.write(job, out)
    data = out.read_bytes()
    assert not provenance.matches(tmp_path / "missing.gguf", want)
    out.write_bytes(data[:-100])  # truncated
    assert not provenance.matches(out, want)
    out.write_bytes(data + b"\0" * 32)  # extended
    assert not provenance.matches(out, want)
    out.write_bytes(b"not a gguf file")
    assert not provenance.matches(out, want) and provenance.read(out) is None
    # a GGUF without a record (llama.cpp's tools write none)
    w = gguf.GGUFWriter(out, "llama")
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.close()
    assert provenance.read(out) is None and not provenance.matches(out, want)


def test_a_split_set_matches_only_whole(model: Path, tmp_path: Path):
    job = conv.prepare(model, "F16", split=Split(max_tensors=4))
    want = provenance.expected(job)
    target = tmp_path / "m.gguf"
    result = conv.write(job, target)
    files = [f.path for f in result.files]
    assert len(files) > 2 and not target.exists()
    # the target name, the first file or any member name the set
    assert provenance.matches(target, want) and provenance.matches(files[0], want)
    assert provenance.matches(files[-1], want) and provenance.read(files[1]) == want
    last = files[-1].read_bytes()
    files[-1].write_bytes(last[:-1])  # a member truncated
    assert not provenance.matches(target, want)
    files[-1].unlink()  # a member missing
    assert not provenance.matches(target, want)
    files[-1].write_bytes(last)
    assert provenance.matches(target, want)
