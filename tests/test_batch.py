"""`qconvert batch MANIFEST.toml` (qconvert/batch.py): the manifest's validation at the boundary,
then the runs: outputs byte-identical to separate `quantize` runs and loaded by llama.cpp, skips
by provenance, remakes of what changed, --force, a failed job beside good ones, --json."""

from __future__ import annotations

import shutil
import textwrap
from pathlib import Path

import pytest

from qconvert.batch import load_manifest
from qconvert.errors import UsageError
from tests.conftest import MODELS, run_cli_inprocess


def manifest(folder: Path, text: str) -> Path:
    path = folder / "batch.toml"
    path.write_text(textwrap.dedent(text))
    return path


def refused(tmp_path: Path, text: str) -> str:
    """The one-line refusal of a manifest, checked to come from the CLI as exit 2 too."""
    path = manifest(tmp_path, text)
    with pytest.raises(UsageError) as e:
        load_manifest(path)
    proc = run_cli_inprocess("batch", path)
    assert proc.returncode == 2, proc
    assert proc.stdout == ""
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0] == f"error: {e.value}", proc.stderr
    return str(e.value)


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
    import gguf

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
