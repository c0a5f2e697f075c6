"""`qconvert batch MANIFEST.toml` (qconvert/batch.py): the manifest's validation at the boundary,
then the runs: outputs byte-identical to separate `quantize` runs and loaded by llama.cpp, skips
by provenance, remakes of what changed, --force, a failed job beside good ones, --json."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import textwrap
from pathlib import Path

import gguf
import numpy as np
import pytest

from qconvert.batch import load_manifest
from qconvert.errors import ManifestError
from tests.conftest import (MODELS, check_report, llama_logits, relative_error, run_cli_inprocess, tiny_llama_config,
                            tiny_llama_tensors, tokenizer_vocab_size, write_checkpoint)


def manifest(folder: Path, text: str) -> Path:
    path = folder / "batch.toml"
    path.write_text(textwrap.dedent(text))
    return path


def refused(tmp_path: Path, text: str) -> str:
    """The one-line refusal of a manifest, checked to come from the CLI as exit 2 too."""
    path = manifest(tmp_path, text)
    with pytest.raises(ManifestError) as e:
        load_manifest(path)
    proc = run_cli_inprocess("batch", path)
    assert proc.returncode == 2, proc
    assert proc.stdout == ""
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0] == f"error: {e.value}", proc.stderr
    return str(e.value)


def test_bad_manifest_with_json_is_an_error_report(tmp_path: Path) -> None:
    path = manifest(tmp_path, JOB + "speed = 3\n")
    proc = run_cli_inprocess("batch", path, "--json")
    assert proc.returncode == 2
    data = check_report(json.loads(proc.stdout))
    assert data["ok"] is False and data["command"] == "batch"
    assert data["error"]["kind"] == "manifest" and data["error"]["exit_code"] == 2
    assert "job 1: unknown key 'speed'" in data["error"]["message"]


JOB = '[[job]]\nmodel = "m"\ntypes = ["Q8_0"]\n'


@pytest.mark.parametrize("text, needles", [
    ("colour = 1\n" + JOB, ["unknown key 'colour'", "manifest"]),
    (JOB + "[[job]]\nmodel = \"n\"\ntypes = [\"F16\"]\nquality = \"best\"\n", ["job 2", "unknown key 'quality'"]),
    (JOB + "[[job]]\nmodel = \"n\"\ntypes = [\"F16\"]\n[job.extra]\n", ["job 2", "unknown key 'extra'"]),
    ('[[job]]\ntypes = ["Q8_0"]\n', ["job 1", "model is missing"]),
    ('[[job]]\nmodel = 3\ntypes = ["Q8_0"]\n', ["job 1", "model must be a string, not an integer"]),
    ('[[job]]\nmodel = "m"\n', ["job 1", "types must list at least one type"]),
    ('[[job]]\nmodel = "m"\ntypes = []\n', ["job 1", "types must list at least one type"]),
    ('[[job]]\nmodel = "m"\ntypes = "Q8_0"\n', ["job 1", "types must be an array, not a string"]),
    ('[[job]]\nmodel = "m"\ntypes = ["Q8_0", 4]\n', ["job 1", "types must be an array of strings"]),
    ('[[job]]\nmodel = "m"\ntypes = ["Q8_0", "Q9_X"]\n', ["job 1", "unknown type 'Q9_X'", "Q4_K_M"]),
    (JOB + 'pure = "yes"\n', ["job 1", "pure must be true or false, not a string"]),
    (JOB + 'no-fallback = 1\n', ["job 1", "no_fallback must be true or false, not an integer"]),
    (JOB + 'no-fallback = true\nno_fallback = true\n', ["job 1", "'no_fallback' given twice"]),
    (JOB + 'tensor_type = ["attn_v"]\n', ["job 1", "tensor_type: 'attn_v': expected PATTERN=TYPE"]),
    (JOB + 'tensor-type = ["attn_v=Q9"]\n', ["job 1", "tensor_type: unknown type 'Q9'"]),
    (JOB + 'tensor_type = "attn_v=Q8_0"\n', ["job 1", "tensor_type must be an array, not a string"]),
    (JOB + 'override_kv = ["general.name=str"]\n', ["job 1", "override_kv: 'general.name=str'"]),
    (JOB + 'output_tensor_type = "Q3"\n', ["job 1", "output_tensor_type: unknown type 'Q3'"]),
    (JOB + 'imatrix = 5\n', ["job 1", "imatrix must be a string, not an integer"]),
    (JOB + 'split_max_tensors = 0\n', ["job 1", "split_max_tensors must be at least 1, not 0"]),
    (JOB + 'split_max_tensors = true\n', ["job 1", "split_max_tensors must be an integer, not a boolean"]),
    (JOB + 'split_max_size = 1.5\n', ["job 1", "split_max_size must be a size", "not a float"]),
    (JOB + 'split_max_size = -3\n', ["job 1", "split_max_size must be positive"]),
    ("threads = 0\n" + JOB, ["threads must be at least 1, not 0"]),
    ("threads = true\n" + JOB, ["threads must be an integer, not a boolean"]),
    ("output_dir = 1\n" + JOB, ["output_dir must be a string, not an integer"]),
    ('name = "{model}-{quant}.gguf"\n' + JOB, ["unknown field {quant}", "{model} and {type}"]),
    ('name = "{model!r}-{type}.gguf"\n' + JOB, ["unknown field {model}"]),
    ('name = "{model-{type}.gguf"\n' + JOB, ["name '{model-{type}.gguf'"]),
    ('name = "{model}-{type}.bin"\n' + JOB, ["must end with .gguf"]),
    ('name = "/tmp/{model}-{type}.gguf"\n' + JOB, ["must be a path below output_dir"]),
    ('name = "../{model}-{type}.gguf"\n' + JOB, ["must be a path below output_dir"]),
    ('name = "{model}.gguf"\n[[job]]\nmodel = "m"\ntypes = ["Q8_0", "F16"]\n',
     ["job 1 (F16) and job 1 (Q8_0) both write", "m.gguf"]),
    ('[[job]]\nmodel = "m"\ntypes = ["Q8_0", "q8_0"]\n', ["job 1 (Q8_0) and job 1 both write", "m-Q8_0.gguf"]),
    (JOB + '[[job]]\nmodel = "other/m"\ntypes = ["F16", "Q8_0"]\n',
     ["job 2 (Q8_0) and job 1 (Q8_0) both write", "m-Q8_0.gguf"]),
    ('output_dir = "out"\n', ["no [[job]]"]),
    ("job = 3\n", ["job must be an array of tables"]),
    ("[[job]\nmodel = 'm'\n", ["not valid TOML"]),
])
def test_bad_manifest_is_one_line_naming_the_key(tmp_path: Path, text: str, needles: list[str]) -> None:
    message = refused(tmp_path, text)
    for needle in needles:
        assert needle in message, message


def test_missing_manifest(tmp_path: Path) -> None:
    proc = run_cli_inprocess("batch", tmp_path / "none.toml")
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "does not exist" in proc.stderr, proc


def test_manifest_paths_relative_to_its_folder_and_options(tmp_path: Path, monkeypatch) -> None:
    (tmp_path / "ckpt" / "llama-ft").mkdir(parents=True)
    path = manifest(tmp_path, """
        output_dir = "gguf"
        threads = 3

        [[job]]
        model = "ckpt/llama-ft"
        types = ["f16", "Q4_K_M"]
        imatrix = "data/imatrix.gguf"
        pure = true
        leave-output-tensor = true
        output_tensor_type = "q8_0"
        token-embedding-type = "Q6_K"
        tensor_type = ["attn_v=Q8_0", "ffn_down=q5_k"]
        override-kv = ["general.name=str:Mine", "x.y=int:-4"]
        no_fallback = true
        allow-nonfinite = true
        split_max_tensors = 7

        [[job]]
        model = "HuggingFaceTB/SmolLM2-135M@main"
        types = ["Q8_0"]
        """)
    monkeypatch.chdir("/")  # paths come from the manifest's folder, not the current one
    m = load_manifest(path)
    T = gguf.GGMLQuantizationType
    assert m.output_dir == tmp_path / "gguf" and m.threads == 3 and len(m.jobs) == 2
    a, b = m.jobs
    assert (a.index, a.folder, a.label, a.types) == (1, tmp_path / "ckpt" / "llama-ft", "llama-ft", ("F16", "Q4_K_M"))
    assert a.outputs == (tmp_path / "gguf" / "llama-ft-F16.gguf", tmp_path / "gguf" / "llama-ft-Q4_K_M.gguf")
    assert a.imatrix == tmp_path / "data" / "imatrix.gguf"
    assert (a.pure, a.leave_output_tensor, a.no_fallback, a.allow_nonfinite) == (True, True, True, True)
    assert (a.output_tensor_type, a.token_embedding_type) == (T.Q8_0, T.Q6_K)
    assert a.tensor_type == (("attn_v", T.Q8_0), ("ffn_down", T.Q5_K))
    assert [(o.key, o.value) for o in a.override_kv] == [("general.name", "Mine"), ("x.y", 4)]
    assert (a.split_max_size, a.split_max_tensors) == (None, 7)
    o = a.overrides()
    assert o.pure and o.leave_output_tensor and o.no_fallback and o.tensor_types == a.tensor_type
    # a Hub id (no such folder beside the manifest): {model} is the repo's name, without @revision
    assert (b.folder, b.label, b.outputs) == (None, "SmolLM2-135M", (tmp_path / "gguf" / "SmolLM2-135M-Q8_0.gguf",))
    assert (b.pure, b.imatrix, b.tensor_type, b.split_max_tensors) == (False, None, (), None)


def test_manifest_defaults_and_name_template(tmp_path: Path) -> None:
    path = manifest(tmp_path, """
        name = "{type}/{model}.gguf"
        [[job]]
        model = "./a/"
        types = ["Q8_0"]
        """)
    m = load_manifest(path)
    assert m.output_dir == tmp_path and m.threads is None
    assert m.jobs[0].label == "a" and m.jobs[0].outputs == (tmp_path / "Q8_0" / "a.gguf",)


def copy_model(name: str, dest: Path) -> Path:
    return Path(shutil.copytree(MODELS / name, dest / name))


# ---- runs ----------------------------------------------------------------------------------------
#
# Two fixture models x three types (F16, Q8_0 and the K mix Q4_K_M), each job with options of
# its own: llama-k256-bf16 (rows fit the K blocks) and qwen2-bpe-bf16 (rows of 64: the K types
# fall back to Q5_0/Q8_0, llama-quantize's tensor_type_fallback).

TYPES = ("F16", "Q8_0", "Q4_K_M")
OPTIONS = {  # the manifest's keys -> the same options for `qconvert quantize`
    "llama-k256-bf16": ('tensor_type = ["attn_v=Q8_0"]\noverride-kv = ["general.name=str:k256"]',
                        ["--tensor-type", "attn_v=Q8_0", "--override-kv", "general.name=str:k256"]),
    "qwen2-bpe-bf16": ("output_tensor_type = \"Q8_0\"", ["--output-tensor-type", "Q8_0"]),
}


def shelf(tmp_path: Path, models=tuple(OPTIONS), types=TYPES, extra: dict | None = None) -> Path:
    """A manifest in tmp_path converting copies of the fixture models (in tmp_path/ckpt) into
    tmp_path/gguf."""
    jobs = []
    for name in models:
        if not (tmp_path / "ckpt" / name).exists():
            copy_model(name, tmp_path / "ckpt")
        jobs.append(f'[[job]]\nmodel = "ckpt/{name}"\ntypes = {list(types)!r}\n{OPTIONS[name][0]}\n'
                    + (extra or {}).get(name, ""))
    return manifest(tmp_path, 'output_dir = "gguf"\nthreads = 2\n\n' + "\n".join(jobs).replace("'", '"'))


def run_batch_cli(path: Path, *args: str) -> tuple[int, dict]:
    proc = run_cli_inprocess("batch", path, "--json", *args, timeout=300)
    assert proc.stdout.count("\n") == 1, proc
    data = json.loads(proc.stdout)
    check_report(data)
    assert data["command"] == "batch" and data["ok"] == (proc.returncode == 0), proc
    return proc.returncode, data


def statuses(data: dict) -> dict[tuple[str, str], str]:
    return {(Path(o["model"]).name, o["type"]): o["status"] for o in data["outputs"]}


def stamps(folder: Path) -> dict[str, tuple[int, int]]:
    """Every file's (inode, mtime_ns): a rewrite, atomic rename included, changes one of them."""
    return {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in sorted(folder.iterdir())}


def test_batch_matches_quantize_and_is_incremental(tmp_path: Path) -> None:
    path = shelf(tmp_path)
    code, data = run_batch_cli(path)
    assert code == 0, data
    assert set(statuses(data).values()) == {"made"} and len(data["outputs"]) == 6
    assert data["totals"]["made"] == 6 and data["totals"]["failed"] == 0
    out = tmp_path / "gguf"
    for o in data["outputs"]:
        f = Path(o["path"])
        assert f.parent == out and f.name == f"{Path(o['model']).name}-{o['type']}.gguf"
        assert o["bytes"] == f.stat().st_size and o["sha256"] == hashlib.sha256(f.read_bytes()).hexdigest()
        assert o["files"] == [{"path": str(f), "bytes": o["bytes"], "sha256": o["sha256"]}]
    assert data["totals"]["bytes"] == sum(p.stat().st_size for p in out.iterdir())

    # byte-identical to separate quantize runs with the same options (provenance included)
    sep = tmp_path / "separate"
    sep.mkdir()
    for model, (_, options) in OPTIONS.items():
        for t in TYPES:
            name = f"{model}-{t}.gguf"
            proc = run_cli_inprocess("quantize", tmp_path / "ckpt" / model, "-t", t, "-o", sep / name,
                                     "--no-progress", *options, timeout=120)
            assert proc.returncode == 0, proc
            assert (sep / name).read_bytes() == (out / name).read_bytes(), name

    # llama.cpp runs one, as close to transformers' logits as a separate conversion is
    ref = np.load(MODELS / "llama-k256-bf16" / "reference.npz")
    got = llama_logits(out / "llama-k256-bf16-Q4_K_M.gguf", ref["tokens"])
    assert relative_error(got, ref["logits"]) <= 0.5

    # again: every output skipped, no file rewritten, and their hashes reported (recomputed)
    before = stamps(out)
    code, again = run_batch_cli(path)
    assert code == 0 and set(statuses(again).values()) == {"skipped"}, again
    assert stamps(out) == before
    assert [(o["path"], o["bytes"], o["sha256"]) for o in again["outputs"]] == \
        [(o["path"], o["bytes"], o["sha256"]) for o in data["outputs"]]

    # a content change in one model's config.json remakes that model's outputs only
    config = tmp_path / "ckpt" / "qwen2-bpe-bf16" / "config.json"
    config.write_text(json.dumps(json.loads(config.read_text()), indent=4))
    code, data = run_batch_cli(path)
    assert code == 0
    assert statuses(data) == {**{("llama-k256-bf16", t): "skipped" for t in TYPES},
                              **{("qwen2-bpe-bf16", t): "made" for t in TYPES}}
    after = stamps(out)
    assert [n for n in after if after[n] != before[n]] == [f"qwen2-bpe-bf16-{t}.gguf" for t in sorted(TYPES)]

    # weights are recorded by size and mtime: a shard touched (same bytes) remakes its model's outputs

    shard = tmp_path / "ckpt" / "llama-k256-bf16" / "model.safetensors"
    os.utime(shard, ns=(shard.stat().st_atime_ns, shard.stat().st_mtime_ns + 10**9))
    before = after
    code, data = run_batch_cli(path)
    assert code == 0
    assert statuses(data) == {**{("llama-k256-bf16", t): "made" for t in TYPES},
                              **{("qwen2-bpe-bf16", t): "skipped" for t in TYPES}}
    after = stamps(out)
    assert [n for n in after if after[n] != before[n]] == [f"llama-k256-bf16-{t}.gguf" for t in sorted(TYPES)]

    # an option changed in one job remakes that job's outputs; a type added makes just it
    before = after
    path = shelf(tmp_path, types=(*TYPES, "Q6_K"), extra={"llama-k256-bf16": "pure = true\n"})
    code, data = run_batch_cli(path)
    assert code == 0
    assert statuses(data) == {**{("llama-k256-bf16", t): "made" for t in (*TYPES, "Q6_K")},
                              **{("qwen2-bpe-bf16", t): "skipped" for t in TYPES},
                              ("qwen2-bpe-bf16", "Q6_K"): "made"}
    after = stamps(out)
    assert {n for n in after if after.get(n) != before.get(n)} == \
        {f"llama-k256-bf16-{t}.gguf" for t in (*TYPES, "Q6_K")} | {"qwen2-bpe-bf16-Q6_K.gguf"}

    # --force remakes everything
    code, data = run_batch_cli(path, "--force")
    assert code == 0 and set(statuses(data).values()) == {"made"} and data["force"] is True
    forced = stamps(out)
    assert all(forced[n] != after[n] for n in after)


def test_failed_jobs_do_not_stop_the_others(tmp_path: Path) -> None:
    """A checkpoint that cannot be read fails its job; a type that cannot be planned
    (--no-fallback on rows of 64) fails its output only; the rest is made; exit 1."""
    broken = copy_model("llama-k256-bf16", tmp_path / "ckpt")
    (broken / "model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}")
    copy_model("qwen2-bpe-bf16", tmp_path / "ckpt")
    path = manifest(tmp_path, """
        output_dir = "gguf"
        [[job]]
        model = "ckpt/llama-k256-bf16"
        types = ["F16", "Q8_0"]
        [[job]]
        model = "ckpt/qwen2-bpe-bf16"
        types = ["Q6_K", "F16"]
        no_fallback = true
        [[job]]
        model = "./ckpt/nowhere"  # not a Hub id: a folder, missing
        types = ["Q8_0"]
        """)
    code, data = run_batch_cli(path)
    assert code == 1 and data["ok"] is False
    by = {(Path(o["model"]).name, o["type"]): o for o in data["outputs"]}
    assert {k: o["status"] for k, o in by.items()} == {
        ("llama-k256-bf16", "F16"): "failed", ("llama-k256-bf16", "Q8_0"): "failed",
        ("qwen2-bpe-bf16", "Q6_K"): "failed", ("qwen2-bpe-bf16", "F16"): "made",
        ("nowhere", "Q8_0"): "failed"}
    for key in (("llama-k256-bf16", "F16"), ("nowhere", "Q8_0")):
        assert by[key]["error"]["kind"] == "checkpoint", by[key]
    assert "model.safetensors" in by["llama-k256-bf16", "F16"]["error"]["message"]
    assert by["qwen2-bpe-bf16", "Q6_K"]["error"]["kind"] == "quantization", by["qwen2-bpe-bf16", "Q6_K"]
    assert all("\n" not in o["error"]["message"] for o in data["outputs"] if o["error"])
    assert data["totals"] == {**data["totals"], "outputs": 5, "made": 1, "failed": 4, "skipped": 0}
    assert sorted(p.name for p in (tmp_path / "gguf").iterdir()) == ["qwen2-bpe-bf16-F16.gguf"]
    proc = run_cli_inprocess("batch", path, "--quiet", timeout=300)  # --quiet keeps the errors, one line each
    assert proc.returncode == 1 and proc.stdout == ""
    assert proc.stderr.splitlines() == [f"error: {o['path']}: {o['error']['message']}" for o in data["outputs"]
                                        if o["error"]]


def test_a_value_one_type_cannot_hold_fails_that_output_only(tmp_path: Path) -> None:
    """A weight beyond F16's range (write_many aborts that output mid-pass) fails F16; Q8_0 of
    the same pass is made."""

    cfg = tiny_llama_config(tokenizer_vocab_size("tiny-bpe"))
    tensors = tiny_llama_tensors(cfg)
    tensors["model.layers.0.mlp.up_proj.weight"][3, 5] = np.float32(1e6)
    write_checkpoint(tmp_path / "big", cfg, tensors)
    path = manifest(tmp_path, '[[job]]\nmodel = "big"\ntypes = ["F16", "Q8_0"]\n')
    code, data = run_batch_cli(path)
    assert code == 1
    f16, q8 = data["outputs"]
    assert (f16["status"], q8["status"]) == ("failed", "made"), data
    assert "up_proj" in f16["error"]["message"]
    assert not (tmp_path / "big-F16.gguf").exists() and (tmp_path / "big-Q8_0.gguf").is_file()
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".partial")]


def test_dry_run_predicts_and_writes_nothing(tmp_path: Path) -> None:
    path = shelf(tmp_path, models=("qwen2-bpe-bf16",))
    code, planned = run_batch_cli(path, "--dry-run")
    assert code == 0 and set(statuses(planned).values()) == {"planned"} and planned["dry_run"] is True
    assert not (tmp_path / "gguf").exists()
    assert all(o["sha256"] is None for o in planned["outputs"])
    code, made = run_batch_cli(path)
    assert [o["bytes"] for o in planned["outputs"]] == [o["bytes"] for o in made["outputs"]]
    code, again = run_batch_cli(path, "--dry-run")
    assert set(statuses(again).values()) == {"skipped"}


def test_a_file_not_made_by_qconvert_is_not_replaced(tmp_path: Path) -> None:
    path = shelf(tmp_path, models=("qwen2-bpe-bf16",), types=("Q8_0",))
    target = tmp_path / "gguf" / "qwen2-bpe-bf16-Q8_0.gguf"
    target.parent.mkdir()
    target.write_bytes(b"mine")
    code, data = run_batch_cli(path)
    assert code == 1 and data["outputs"][0]["error"]["kind"] == "usage" and target.read_bytes() == b"mine"
    code, data = run_batch_cli(path, "--force")
    assert code == 0 and data["outputs"][0]["status"] == "made" and target.read_bytes()[:4] == b"GGUF"


def test_split_outputs(tmp_path: Path) -> None:
    """split_max_tensors and split_max_size as quantize's options: a set of files, each hashed,
    llama.cpp loading it from its first file; skipped as a whole the next time."""

    path = shelf(tmp_path, models=("qwen2-bpe-bf16",), types=("Q8_0",),
                 extra={"qwen2-bpe-bf16": 'split-max-tensors = 8\nsplit_max_size = "50G"\n'})
    code, data = run_batch_cli(path)
    assert code == 0, data
    (o,) = data["outputs"]
    target = tmp_path / "gguf" / "qwen2-bpe-bf16-Q8_0.gguf"
    n = len(o["files"])
    assert o["status"] == "made" and o["path"] == str(target) and n >= 2 and o["sha256"] is None
    assert [f["path"] for f in o["files"]] == [str(target.with_name(f"qwen2-bpe-bf16-Q8_0-{i:05d}-of-{n:05d}.gguf"))
                                               for i in range(1, n + 1)]
    for f in o["files"]:
        assert f["sha256"] == hashlib.sha256(Path(f["path"]).read_bytes()).hexdigest()
    assert o["bytes"] == sum(f["bytes"] for f in o["files"]) == sum(p.stat().st_size for p in target.parent.iterdir())
    got = llama_logits(Path(o["files"][0]["path"]), [1, 2, 3])
    assert np.all(np.isfinite(got))
    before = stamps(target.parent)
    code, again = run_batch_cli(path)
    assert code == 0 and again["outputs"][0]["status"] == "skipped" and again["outputs"][0]["files"] == o["files"]
    assert stamps(target.parent) == before


def test_text_report_progress_and_quiet(tmp_path: Path) -> None:
    path = shelf(tmp_path, models=("qwen2-bpe-bf16",), types=("Q8_0", "F16"))
    proc = run_cli_inprocess("batch", path, "--progress", timeout=300)
    assert proc.returncode == 0, proc
    out = tmp_path / "gguf"
    files = [out / "qwen2-bpe-bf16-Q8_0.gguf", out / "qwen2-bpe-bf16-F16.gguf"]
    assert proc.stdout.splitlines()[:2] == [f"made       {f} ({f.stat().st_size / 2**20:.1f} MiB)" for f in files]
    assert proc.stdout.splitlines()[2].startswith("2 outputs: 2 made (")
    assert "qwen2-bpe-bf16" in proc.stderr and "100%" in proc.stderr  # one bar for the model's pass
    proc = run_cli_inprocess("batch", path, "--quiet", timeout=300)
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, "", "")
    proc = run_cli_inprocess("batch", path, timeout=300)  # not a terminal: no bar
    assert proc.stderr == "" and proc.stdout.splitlines()[0].startswith("up to date ")
    assert proc.stdout.splitlines()[-1].startswith("2 outputs: 2 up to date (")


def test_one_pass_per_model(tmp_path: Path, monkeypatch) -> None:
    """Every output of a model is made by one write_many call: one progress per model, whose
    updates add up to the checkpoint bytes read once (not once per type)."""
    from qconvert import convert
    from qconvert.batch import run_batch

    calls = []
    write_many = convert.write_many
    monkeypatch.setattr(convert, "write_many", lambda outputs, **kw: calls.append(len(outputs)) or
                        write_many(outputs, **kw))

    class Counter:
        def __init__(self, label: str, total: int):
            self.label, self.total, self.n, self.closed = label, total, 0, False
            bars.append(self)

        def update(self, n: int) -> None:
            self.n += n

        def close(self) -> None:
            self.closed = True

    bars: list[Counter] = []
    report = run_batch(load_manifest(shelf(tmp_path)), threads=2, on_progress=Counter)
    assert report.ok and report.totals.made == 6
    assert calls == [3, 3]
    assert [b.label for b in bars] == list(OPTIONS) and all(b.closed for b in bars)
    for b in bars:
        job = convert.prepare(tmp_path / "ckpt" / b.label, "F16")
        job.checkpoint.close()
        assert b.n == b.total == job.source_bytes


def test_imatrix_relative_to_the_manifest(tmp_path: Path, monkeypatch) -> None:
    """imatrix = "data/imatrix.gguf" is read beside the manifest whatever the current folder; the
    output equals quantize --imatrix's; a new importance matrix remakes the output."""
    from qconvert.convert import prepare
    from tests.conftest import write_gguf_imatrix

    model = copy_model("llama-k256-bf16", tmp_path / "ckpt")
    job = prepare(model, "Q4_K_M")
    job.checkpoint.close()
    rng = np.random.default_rng(3)
    entries = {r.gguf_name: (rng.random(r.shape[-1]).astype(np.float32) * 10, np.array([10.0]))
               for r in job.rows if r.qtype != gguf.GGMLQuantizationType.F32}
    imatrix = tmp_path / "data" / "imatrix.gguf"
    imatrix.parent.mkdir()
    write_gguf_imatrix(imatrix, entries)
    path = manifest(tmp_path, '[[job]]\nmodel = "ckpt/llama-k256-bf16"\ntypes = ["Q4_K_M"]\n'
                              'imatrix = "data/imatrix.gguf"\n')
    monkeypatch.chdir(tmp_path / "data")
    code, data = run_batch_cli(path)
    assert code == 0 and data["outputs"][0]["status"] == "made", data
    out = tmp_path / "llama-k256-bf16-Q4_K_M.gguf"
    proc = run_cli_inprocess("quantize", model, "-t", "Q4_K_M", "-o", tmp_path / "q.gguf", "--imatrix", imatrix,
                             "--no-progress", timeout=120)
    assert proc.returncode == 0, proc
    assert (tmp_path / "q.gguf").read_bytes() == out.read_bytes()
    code, data = run_batch_cli(path)
    assert data["outputs"][0]["status"] == "skipped"
    write_gguf_imatrix(imatrix, {k: (s * 2, c) for k, (s, c) in entries.items()})
    code, data = run_batch_cli(path)
    assert code == 0 and data["outputs"][0]["status"] == "made"
    assert out.read_bytes() != (tmp_path / "q.gguf").read_bytes()


def test_hub_id_job_offline(tmp_path: Path) -> None:
    """A job whose model is a Hub id, found in a Hugging Face cache on disk (HF_HUB_OFFLINE, in a
    subprocess: huggingface_hub reads its variables at import): {model} is the repo's name, the
    provenance records the repo and commit, and a second run skips the output; a repo not in the
    cache fails its job only."""
    import subprocess
    import sys

    from qconvert import provenance
    from tests import hubfake
    from tests.conftest import ROOT

    files = hubfake.read_folder(MODELS / "qwen2-bpe-bf16")
    files.pop("reference.npz", None)
    commit = hubfake.commit_id("batch")
    hubfake.add_to_cache(tmp_path / "hf" / "hub", "org/tiny", commit, files)
    path = manifest(tmp_path, 'output_dir = "out"\n[[job]]\nmodel = "org/tiny"\ntypes = ["Q8_0"]\n'
                              '[[job]]\nmodel = "org/missing"\ntypes = ["Q8_0"]\n')
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGING")) and k != "QCONVERT_DEBUG"}
    env.update(HF_HOME=str(tmp_path / "hf"), HF_HUB_OFFLINE="1", PYTHONPATH=str(ROOT))
    for status in ("made", "skipped"):
        proc = subprocess.run([sys.executable, "-m", "qconvert", "batch", str(path), "--json"], capture_output=True,
                              text=True, env=env, cwd=tmp_path, timeout=300)
        assert proc.returncode == 1, proc.stderr  # org/missing is not in the cache
        o, missing = check_report(json.loads(proc.stdout))["outputs"]
        assert (o["model"], o["status"], o["path"]) == ("org/tiny", status, str(tmp_path / "out" / "tiny-Q8_0.gguf"))
        assert missing["status"] == "failed" and "HF_HUB_OFFLINE" in missing["error"]["message"], missing
    assert provenance.read(tmp_path / "out" / "tiny-Q8_0.gguf")["model"] == {"ref": f"org/tiny@{commit}"}
    # the snapshot folder given as a folder: {model} is the repo's name too, not the commit hash
    snapshot = tmp_path / "hf" / "hub" / "models--org--tiny" / "snapshots" / commit
    m = load_manifest(manifest(tmp_path, f'[[job]]\nmodel = "{snapshot}"\ntypes = ["Q8_0"]\n'))
    assert m.jobs[0].folder == snapshot and m.jobs[0].outputs == (tmp_path / "tiny-Q8_0.gguf",)


def test_hub_id_is_not_looked_up_in_the_working_folder(tmp_path: Path) -> None:
    """A job's folder is looked for beside the manifest only: a folder `org/tiny` in the folder
    the batch runs from is not the model `org/tiny` names (the Hub cache's is)."""
    import subprocess
    import sys

    from tests import hubfake
    from tests.conftest import ROOT

    files = hubfake.read_folder(MODELS / "qwen2-bpe-bf16")
    files.pop("reference.npz", None)
    hubfake.add_to_cache(tmp_path / "hf" / "hub", "org/tiny", hubfake.commit_id("cwd"), files)
    (tmp_path / "org" / "tiny").mkdir(parents=True)  # a decoy: no checkpoint in it
    shelf = tmp_path / "shelf"
    shelf.mkdir()
    path = manifest(shelf, 'output_dir = "out"\n[[job]]\nmodel = "org/tiny"\ntypes = ["Q8_0"]\n')
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGING")) and k != "QCONVERT_DEBUG"}
    env.update(HF_HOME=str(tmp_path / "hf"), HF_HUB_OFFLINE="1", PYTHONPATH=str(ROOT))
    proc = subprocess.run([sys.executable, "-m", "qconvert", "batch", str(path), "--json"], capture_output=True,
                          text=True, env=env, cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (o,) = check_report(json.loads(proc.stdout))["outputs"]
    assert o["status"] == "made" and (shelf / "out" / "tiny-Q8_0.gguf").is_file()
