"""MODEL as a Hugging Face Hub id (qconvert/hub.py), with no network: a Hub cache built on disk
in huggingface_hub's own layout (HF_HOME=tmp, HF_HUB_OFFLINE=1), and a fake Hub on localhost
(HF_ENDPOINT) from which huggingface_hub itself downloads, fills a cache and raises its errors.

Resolution runs in a subprocess with the environment a user would set: huggingface_hub reads
HF_HOME, HF_HUB_OFFLINE, HF_ENDPOINT and HF_TOKEN once, when it is imported.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import gguf
import numpy as np
import pytest

from conftest import (MODELS, ROOT, assert_same_conversion, llama_outputs, reference_kind, relative_error,
                      run_cli_inprocess)
from hubfake import FakeHub, Repo, add_to_cache, commit_id, read_folder

from qconvert.convert import convert
from qconvert.hub import ALLOW_PATTERNS, IGNORE_PATTERNS, README_PATTERN, model_name, parse_ref

MODEL = "llama-spm-f32"  # F32 weights, SentencePiece tokenizer.model: every kind of file a Llama reads
C1, C2, C3 = commit_id("first"), commit_id("second"), commit_id("pr")
HF_VARS = ("HF_HOME", "HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_TOKEN",
           "HUGGING_FACE_HUB_TOKEN", "HF_ENDPOINT", "HF_HUB_DISABLE_PROGRESS_BARS", "QCONVERT_DEBUG")


def fixture_files(model: str = MODEL) -> dict[str, bytes]:
    files = read_folder(MODELS / model)
    files.pop("reference.npz")
    return files


def hf_env(home: Path, **extra: str) -> dict[str, str]:
    """The environment with the Hugging Face variables replaced: HF_HOME=home, and `extra`."""
    env = {k: v for k, v in os.environ.items() if k not in HF_VARS}
    env.update(HF_HOME=str(home), PYTHONPATH=str(ROOT), **extra)
    return env


def qconvert(*args, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "qconvert", *map(str, args)], capture_output=True, text=True,
                          env=env, cwd=cwd, timeout=300)


RESOLVE = """
import json, sys
from qconvert.errors import QConvertError
from qconvert.hub import resolve_model
for ref in sys.argv[1:]:
    try:
        s = resolve_model(ref)
        print(json.dumps({"path": str(s.path), "repo_id": s.repo_id, "revision": s.revision, "commit": s.commit,
                          "name": s.name}))
    except QConvertError as e:
        print(json.dumps({"error": type(e).__name__, "message": str(e), "exit_code": e.exit_code}))
"""


def resolve(*refs: str, env: dict[str, str], cwd: Path) -> list[dict]:
    """resolve_model of each ref in one fresh interpreter: the ModelSource, or the error."""
    proc = subprocess.run([sys.executable, "-c", RESOLVE, *refs], capture_output=True, text=True, env=env, cwd=cwd,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    return [json.loads(line) for line in proc.stdout.splitlines()]


@pytest.fixture
def home(tmp_path: Path) -> Path:
    """HF_HOME with one repo cached as huggingface_hub lays it out: org/tiny at C1 (branch main,
    tag v1.0), at C2 (branch dev), and a pull request's head at C3 (refs/pr/1), each the fixture
    model with a different config.json."""
    home = tmp_path / "hf"
    files = fixture_files()
    for n, (commit, refs) in enumerate(((C1, ("main", "v1.0")), (C2, ("dev",)), (C3, ("refs/pr/1",)))):
        config = files["config.json"] + b"\n" * n  # the same model, another blob
        add_to_cache(home / "hub", "org/tiny", commit, files | {"config.json": config}, refs)
    return home


def test_cache_layout_is_huggingface_hubs(home: Path):
    """huggingface_hub's own cache scanner reads the hand-made cache without a warning: every
    ref, snapshot and blob where it expects them."""
    from huggingface_hub import scan_cache_dir

    info = scan_cache_dir(home / "hub")
    assert not info.warnings, info.warnings
    (repo,) = info.repos
    assert repo.repo_id == "org/tiny" and repo.repo_type == "model"
    revisions = {r.commit_hash: set(r.refs) for r in repo.revisions}
    assert revisions == {C1: {"main", "v1.0"}, C2: {"dev"}, C3: {"refs/pr/1"}}


def test_revisions_resolve_offline(home: Path, tmp_path: Path):
    """A branch (refs/<branch>), a tag, a commit hash and a pull request's ref, offline."""
    env = hf_env(home, HF_HUB_OFFLINE="1")
    got = resolve("org/tiny", "org/tiny@main", "org/tiny@v1.0", "org/tiny@dev", f"org/tiny@{C2}",
                  "org/tiny@refs/pr/1", env=env, cwd=tmp_path)
    snapshots = home / "hub" / "models--org--tiny" / "snapshots"
    want = [(None, C1), ("main", C1), ("v1.0", C1), ("dev", C2), (C2, C2), ("refs/pr/1", C3)]
    for g, (revision, commit) in zip(got, want):
        assert g == {"path": str(snapshots / commit), "repo_id": "org/tiny", "revision": revision, "commit": commit,
                     "name": "tiny"}, g


def test_offline_failures_are_one_line(home: Path, tmp_path: Path):
    env = hf_env(home, HF_HUB_OFFLINE="1")
    add_to_cache(home / "hub", "org/partial", C1, {"config.json": fixture_files()["config.json"]})
    missing, no_rev, no_commit, part = resolve("org/missing", "org/tiny@v2", f"org/tiny@{'0' * 40}", "org/partial",
                                               env=env, cwd=tmp_path)
    cache = home / "hub"
    assert missing == {"error": "HubError", "exit_code": 1, "message":
                       f"org/missing is not a folder here, nor in the Hugging Face cache ({cache}), and HF_HUB_OFFLINE "
                       "is set: unset it to download, or set HF_HOME to the cache that has the model"}
    assert no_rev["error"] == "HubError" and no_rev["message"].startswith(
        f"the Hugging Face cache ({cache}) has org/tiny but not revision 'v2', and HF_HUB_OFFLINE is set")
    assert no_commit["error"] == "HubError" and f"not revision '{'0' * 40}'" in no_commit["message"]
    assert part["error"] == "HubError" and part["message"] == (
        f"org/partial: the snapshot {cache / 'models--org--partial' / 'snapshots' / C1} holds no safetensors weights "
        "(HF_HUB_OFFLINE is set and the cache holds only part of it)")
    for r in (missing, no_rev, no_commit, part):
        assert "\n" not in r["message"]


def test_local_folder_wins_over_a_hub_id(home: Path, tmp_path: Path):
    """`org/tiny` names the folder ./org/tiny when there is one, even with the model cached."""
    local = tmp_path / "org" / "tiny"
    shutil.copytree(MODELS / MODEL, local)
    (got,) = resolve("org/tiny", env=hf_env(home, HF_HUB_OFFLINE="1"), cwd=tmp_path)
    assert got == {"path": "org/tiny", "repo_id": None, "revision": None, "commit": None, "name": "tiny"}


@pytest.mark.parametrize("ref, phrase", [
    ("org/tiny@", "'' is not a valid revision"),
    ("org/tiny@has space", "'has space' is not a valid revision"),
    ("org/tiny@a..b", "'a..b' is not a valid revision"),
    ("org/tiny@-x", "'-x' is not a valid revision"),
    ("org/tiny@x.lock", "'x.lock' is not a valid revision"),
    ("org/tiny@a@{1}", "'a@{1}' is not a valid revision"),
    ("org/ti--ny", "neither a folder nor a valid Hub repo id"),
    ("org/tiny.git", "neither a folder nor a valid Hub repo id"),
    ("org/" + "x" * 97, "neither a folder nor a valid Hub repo id"),
    ("org/na*me", "neither a folder nor a valid Hub repo id"),
])
def test_malformed_ids_are_usage_errors(ref: str, phrase: str, tmp_path: Path, monkeypatch):
    """Refused before huggingface_hub is asked anything: one line, exit 2."""
    monkeypatch.chdir(tmp_path)
    proc = run_cli_inprocess("quantize", ref, "-o", tmp_path / "x.gguf")
    assert proc.returncode == 2, proc
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("error: MODEL ") and phrase in proc.stderr, \
        proc.stderr


def test_parse_ref():
    assert parse_ref("org/name") == ("org/name", None)
    assert parse_ref("org/name@refs/pr/12") == ("org/name", "refs/pr/12")
    assert parse_ref(f"org/name@{C1}") == ("org/name", C1)
    assert parse_ref("Org-1/na.me_2@v1.0-rc") == ("Org-1/na.me_2", "v1.0-rc")


def patterns(files: list[str], readme: bool = True) -> set[str]:
    from huggingface_hub.utils import filter_repo_objects
    allow = list(ALLOW_PATTERNS) + ([README_PATTERN] if readme else [])
    return set(filter_repo_objects(files, allow_patterns=allow, ignore_patterns=list(IGNORE_PATTERNS)))


# File lists of real repos (their Hub listings, abridged only of more of the same)
LLAMA3 = ["config.json", "generation_config.json", "model-00001-of-00004.safetensors",
          "model-00002-of-00004.safetensors", "model-00003-of-00004.safetensors", "model-00004-of-00004.safetensors",
          "model.safetensors.index.json", "original/consolidated.00.pth", "original/params.json",
          "original/tokenizer.model", "special_tokens_map.json", "tokenizer.json", "tokenizer_config.json",
          "LICENSE", "README.md", "USE_POLICY.md", ".gitattributes"]
MISTRAL = ["consolidated.safetensors", "model-00001-of-00003.safetensors", "model-00002-of-00003.safetensors",
           "model-00003-of-00003.safetensors", "model.safetensors.index.json", "params.json", "tokenizer.model",
           "tokenizer.model.v3", "tokenizer.json", "tokenizer_config.json", "config.json", "generation_config.json",
           "special_tokens_map.json", "README.md", ".gitattributes"]
MINILM = ["1_Pooling/config.json", "config.json", "config_sentence_transformers.json", "data_config.json",
          "model.safetensors", "modules.json", "onnx/model.onnx", "onnx/model_O1.onnx", "onnx/model_qint8_avx512.onnx",
          "openvino/openvino_model.bin", "openvino/openvino_model.xml", "pytorch_model.bin", "rust_model.ot",
          "sentence_bert_config.json", "special_tokens_map.json", "tf_model.h5", "tokenizer.json",
          "tokenizer_config.json", "train_script.py", "vocab.txt", "README.md"]
GPT2 = ["64-8bits.tflite", "64-fp16.tflite", "config.json", "flax_model.msgpack", "generation_config.json",
        "merges.txt", "model.safetensors", "onnx/config.json", "onnx/decoder_model.onnx", "onnx/merges.txt",
        "onnx/tokenizer.json", "onnx/vocab.json", "pytorch_model.bin", "rust_model.ot", "tf_model.h5",
        "tokenizer.json", "tokenizer_config.json", "vocab.json", "README.md"]
GEMMA3 = ["added_tokens.json", "chat_template.jinja", "config.json", "generation_config.json",
          "model.safetensors", "special_tokens_map.json", "tokenizer.json", "tokenizer.model", "tokenizer_config.json",
          "additional_chat_templates/tool_use.jinja", "README.md", "gemma-3-1b-it-q4_0.gguf"]


@pytest.mark.parametrize("files, want", [
    (LLAMA3, {"config.json", "generation_config.json", "model-00001-of-00004.safetensors",
              "model-00002-of-00004.safetensors", "model-00003-of-00004.safetensors",
              "model-00004-of-00004.safetensors", "model.safetensors.index.json", "special_tokens_map.json",
              "tokenizer.json", "tokenizer_config.json", "README.md"}),
    (MISTRAL, {"model-00001-of-00003.safetensors", "model-00002-of-00003.safetensors",
               "model-00003-of-00003.safetensors", "model.safetensors.index.json", "tokenizer.model",
               "tokenizer.json", "tokenizer_config.json", "config.json", "generation_config.json",
               "special_tokens_map.json", "README.md"}),
    (MINILM, {"1_Pooling/config.json", "config.json", "model.safetensors", "modules.json", "special_tokens_map.json",
              "tokenizer.json", "tokenizer_config.json", "vocab.txt", "README.md"}),
    (GPT2, {"config.json", "generation_config.json", "merges.txt", "model.safetensors", "tokenizer.json",
            "tokenizer_config.json", "README.md"}),
    (GEMMA3, {"added_tokens.json", "chat_template.jinja", "config.json", "generation_config.json",
              "model.safetensors", "special_tokens_map.json", "tokenizer.json", "tokenizer.model",
              "tokenizer_config.json", "additional_chat_templates/tool_use.jinja", "README.md"}),
], ids=["llama3", "mistral-v0.3", "minilm", "gpt2", "gemma3"])
def test_download_patterns(files: list[str], want: set[str]):
    """Only what conversion reads: no PyTorch/TF/Flax/ONNX/OpenVINO weights, nothing from the
    original/ or onnx/ folders, and no consolidated.safetensors beside Mistral's shards."""
    assert patterns(files) == want
    assert patterns(files, readme=False) == want - {"README.md"}


def test_patterns_cover_what_the_readers_open():
    """Every file name validate/tokenizer.py checks (those qconvert and gguf.SpecialVocab open) is
    downloaded."""
    from qconvert.validate.tokenizer import TOKENIZER_INPUT_FILES
    assert patterns(list(TOKENIZER_INPUT_FILES)) == set(TOKENIZER_INPUT_FILES)


def test_model_name():
    snap = Path("/x/hub/models--HuggingFaceTB--SmolLM2-135M/snapshots") / C1
    assert model_name(snap) == "SmolLM2-135M"
    assert model_name(snap.parent / "not-a-commit") == "not-a-commit"
    assert model_name("/models/SmolLM2-135M") == "SmolLM2-135M"


def test_progress_bars_switch():
    from huggingface_hub.utils import are_progress_bars_disabled

    from qconvert.hub import progress_bars
    before = are_progress_bars_disabled()
    with progress_bars(False):
        assert are_progress_bars_disabled()
    assert are_progress_bars_disabled() == before
    with progress_bars(True):
        assert are_progress_bars_disabled() == before


def test_cli_converts_a_cached_hub_id_offline(home: Path, tmp_path: Path):
    """quantize org/tiny@v1.0 with HF_HUB_OFFLINE=1: the default output name is the repo's name
    part, llama.cpp loads the file and gives transformers' logits, and the bytes are those of
    the same conversion from the fixture folder."""
    work = tmp_path / "work"
    work.mkdir()
    proc = qconvert("quantize", "org/tiny@v1.0", "-t", "F32", "--no-progress", env=hf_env(home, HF_HUB_OFFLINE="1"),
                    cwd=work)
    assert proc.returncode == 0, proc.stderr
    out = work / "tiny-F32.gguf"
    assert proc.stdout.startswith("wrote tiny-F32.gguf (") and proc.stderr == "", (proc.stdout, proc.stderr)
    ref = np.load(MODELS / MODEL / "reference.npz")
    kind = reference_kind(MODELS / MODEL)
    assert relative_error(llama_outputs(out, ref["tokens"], kind), ref[kind]) <= 1e-4
    convert(named_copy(tmp_path, "org/tiny"), tmp_path / "local.gguf", "F32")
    assert_same_conversion(out, tmp_path / "local.gguf")


def named_copy(tmp_path: Path, repo_id: str, model: str = MODEL, extra: dict[str, bytes] | None = None) -> Path:
    """The fixture model (and `extra` files) copied to a folder named after the repo, its
    config.json naming the repo as transformers' save_pretrained writes it (`_name_or_path`):
    general.* as a Hub snapshot of that repo gets them (hub.name_after_repo)."""
    copy = tmp_path / "copies" / repo_id.split("/")[1]
    shutil.copytree(MODELS / model, copy)
    for name, data in (extra or {}).items():
        (copy / name).write_bytes(data)
    config = json.loads((copy / "config.json").read_text())
    (copy / "config.json").write_text(json.dumps(config | {"_name_or_path": repo_id}))
    return copy


def test_snapshot_path_is_a_folder(home: Path, tmp_path: Path):
    """A snapshot folder given as MODEL (symlinks to blobs) converts as a copy of its files does:
    the same keys and tensors (general.* named after the repo, not the commit), only the provenance
    record differs."""
    snapshot = home / "hub" / "models--org--tiny" / "snapshots" / C1
    assert (snapshot / "model.safetensors").is_symlink()
    copy = named_copy(tmp_path, "org/tiny")
    for qtype in ("Q8_0", "Q4_K_M"):
        a, b = convert(snapshot, tmp_path / f"snap-{qtype}.gguf", qtype), convert(copy, tmp_path / f"c-{qtype}.gguf",
                                                                                  qtype)
        assert_same_conversion(a.path, b.path)
    reader = gguf.GGUFReader(tmp_path / "snap-Q8_0.gguf")
    assert len(reader.tensors) == 20


def general(path: Path) -> dict[str, str]:
    reader = gguf.GGUFReader(path)
    return {k: f.contents() for k, f in reader.fields.items() if k.startswith("general.") and
            isinstance(f.contents(), str)}


def test_general_keys_name_the_repo_not_the_commit(tmp_path: Path):
    """gguf's folder-name heuristic would name a snapshot's model after its commit hash."""
    repo_id = "HuggingFaceTB/SmolLM2-135M-Instruct"
    snapshot = add_to_cache(tmp_path / "hub", repo_id, C1, fixture_files())
    convert(snapshot, tmp_path / "snap.gguf", "Q8_0")
    got = general(tmp_path / "snap.gguf")
    assert got["general.name"] == "SmolLM2 135M Instruct" and got["general.organization"] == "HuggingFaceTB"
    assert got["general.basename"] == "SmolLM2"
    assert not any(C1 in v for v in got.values()), got
    convert(named_copy(tmp_path, repo_id), tmp_path / "copy.gguf", "Q8_0")
    assert_same_conversion(tmp_path / "snap.gguf", tmp_path / "copy.gguf")


def test_snapshot_path_default_name_is_the_repos(home: Path, tmp_path: Path):
    snapshot = home / "hub" / "models--org--tiny" / "snapshots" / C2
    proc = qconvert("quantize", snapshot, "-t", "Q8_0", env=hf_env(home, HF_HUB_OFFLINE="1"), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "tiny-Q8_0.gguf").is_file()


@pytest.mark.parametrize("target", ["model.safetensors", "config.json", "tokenizer.model"])
def test_output_through_a_symlink_to_a_blob_is_refused(home: Path, tmp_path: Path, target: str, monkeypatch):
    """-o naming a snapshot's symlink, even with --overwrite: it is an input (the same inode as
    the blob), so the blob is never replaced."""
    snapshot = home / "hub" / "models--org--tiny" / "snapshots" / C1
    blob = (snapshot / target).resolve()
    before = blob.read_bytes()
    monkeypatch.chdir(tmp_path)
    for model in ("org/tiny", str(snapshot)):
        proc = qconvert("quantize", model, "-o", snapshot / target, "--overwrite",
                        env=hf_env(home, HF_HUB_OFFLINE="1"), cwd=tmp_path)
        assert proc.returncode == 2, proc.stderr
        assert proc.stderr.startswith(f"error: output {snapshot / target} is an input of this conversion"), proc.stderr
        assert blob.read_bytes() == before and (snapshot / target).is_symlink()


# --- a fake Hub on localhost: huggingface_hub downloads, fills the cache, raises its errors ---

EXTRA = {"pytorch_model.bin": b"\0" * 64, "consolidated.safetensors": b"\0" * 64, "onnx/model.onnx": b"\0" * 8,
         "original/params.json": b"{}", "README.md": b"---\nlicense: mit\n---\n# tiny\n"}


@pytest.fixture
def fake_hub():
    files = fixture_files() | EXTRA
    bert = fixture_files("bert-wpm-f32")
    hub = FakeHub({
        "org/tiny": Repo({C1: files}, {"main": C1, "v1.0": C1}),
        "org/gated": Repo({C1: files}, {"main": C1}, gated=True),
        "org/private": Repo({C1: files}, {"main": C1}, private=True),
        "org/bert": Repo({C2: bert}, {"main": C2}),
        "org/binonly": Repo({C1: {"config.json": files["config.json"], "pytorch_model.bin": b"\0" * 64,
                                  "tokenizer.json": files["tokenizer.json"]}}, {"main": C1}),
    }).start()
    yield hub
    hub.stop()


def test_download_fetches_only_what_conversion_reads(fake_hub: FakeHub, tmp_path: Path):
    """A conversion from the Hub downloads the files the patterns allow and nothing else, with no
    progress bars when stderr is not a terminal; the cache huggingface_hub made then serves an
    offline run, and has the layout tests/hubfake.add_to_cache makes by hand."""
    home = tmp_path / "hf"
    env = hf_env(home, HF_ENDPOINT=fake_hub.endpoint)
    proc = qconvert("quantize", "org/tiny@v1.0", "-t", "Q8_0", "-o", tmp_path / "a.gguf", env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    # stderr is a pipe: no download bars from huggingface_hub (only the conversion's own, a.gguf's)
    assert all(line.startswith("a.gguf: ") for line in proc.stderr.splitlines() if line.strip()), proc.stderr
    got = sorted(p for _, p in fake_hub.downloads)
    assert got == sorted(set(fixture_files()) | {"README.md"})

    offline = qconvert("quantize", "org/tiny@v1.0", "-t", "Q8_0", "-o", tmp_path / "b.gguf",
                       env=hf_env(home, HF_HUB_OFFLINE="1"), cwd=tmp_path)
    assert offline.returncode == 0, offline.stderr
    assert (tmp_path / "a.gguf").read_bytes() == (tmp_path / "b.gguf").read_bytes()
    assert len(fake_hub.downloads) == len(got)

    by_hand = tmp_path / "by-hand"
    add_to_cache(by_hand, "org/tiny", C1, {p: d for p, d in (fixture_files() | EXTRA).items() if p in got},
                 ("v1.0",))

    def layout(root: Path) -> set[tuple[str, str]]:
        repo = root / "models--org--tiny"
        return {(p.relative_to(repo).as_posix(), os.readlink(p) if p.is_symlink() else p.read_text()
                 if "refs" in p.parts else "blob") for p in repo.rglob("*")
                if p.is_file() and p.relative_to(repo).parts[0] in ("blobs", "snapshots", "refs")}

    assert layout(home / "hub") == layout(by_hand)


@pytest.mark.parametrize("model, needs", [
    ("bert-wpm-f32", {"modules.json", "1_Pooling/config.json"}),  # BERT's pooling type
    ("llama-bpe-bf16-sharded", {"model.safetensors.index.json", "model-00004-of-00004.safetensors"}),
    ("gemma3-spm-bf16", {"tokenizer.model", "tokenizer.json"}),
])
def test_conversions_from_the_hub_equal_the_folders(fake_hub: FakeHub, tmp_path: Path, model: str, needs: set[str]):
    """Every file a family reads arrives (BERT's sentence-transformers module configs, a sharded
    checkpoint's index and shards, SentencePiece's model): the conversion of the repo id equals
    that of the fixture folder."""
    fake_hub.repos["org/m"] = Repo({C2: fixture_files(model) | EXTRA}, {"main": C2})
    env = hf_env(tmp_path / "hf", HF_ENDPOINT=fake_hub.endpoint)
    proc = qconvert("quantize", "org/m", "-t", "Q8_0", "-o", tmp_path / "hub.gguf", env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert needs <= {p for _, p in fake_hub.downloads}
    readme = {"README.md": EXTRA["README.md"]}  # the model card: general.license
    convert(named_copy(tmp_path, "org/m", model, readme), tmp_path / "local.gguf", "Q8_0")
    assert_same_conversion(tmp_path / "hub.gguf", tmp_path / "local.gguf")
    reader = gguf.GGUFReader(tmp_path / "hub.gguf")
    assert reader.get_field("general.license").contents() == "mit"
    if model.startswith("bert"):
        assert reader.get_field("bert.pooling_type") is not None


@pytest.mark.parametrize("ref, token, message", [
    ("org/gated", None, "org/gated is a gated model: accept its conditions on {endpoint}/org/gated and set HF_TOKEN "
                        "to a token of that account"),
    ("org/private", None, "org/private is not a folder here, and the Hugging Face Hub has no model org/private (or it "
                          "is private: set HF_TOKEN to a token that can read it)"),
    ("org/nothing", "hf_x", "org/nothing is not a folder here, and the Hugging Face Hub has no model org/nothing (or "
                            "it is private: set HF_TOKEN to a token that can read it)"),
    ("org/tiny@v9", None, "org/tiny has no revision 'v9' (a branch, a tag or a commit hash)"),
    ("org/binonly", None, "org/binonly: the snapshot {snapshots}/" + C1 + " holds no safetensors weights (the repo has "
                          "none at this revision: PyTorch .bin/.pth weights are not supported)"),
])
def test_hub_errors_are_one_line(fake_hub: FakeHub, tmp_path: Path, ref: str, token: str | None, message: str):
    env = hf_env(tmp_path / "hf", HF_ENDPOINT=fake_hub.endpoint, **({"HF_TOKEN": token} if token else {}))
    proc = qconvert("quantize", ref, "-o", tmp_path / "x.gguf", env=env, cwd=tmp_path)
    snapshots = tmp_path / "hf" / "hub" / f"models--{ref.replace('/', '--')}" / "snapshots"
    message = message.format(endpoint=fake_hub.endpoint, snapshots=snapshots)
    assert (proc.returncode, proc.stderr) == (1, f"error: {message}\n")
    assert not (tmp_path / "x.gguf").exists()


def test_incomplete_cached_snapshot_offline(fake_hub: FakeHub, tmp_path: Path):
    """A snapshot that lost a file since its download: offline, huggingface_hub >= 2 knows from
    its cached tree listing that the snapshot is incomplete; older releases return the folder,
    which has no weights. One line either way."""
    try:
        from huggingface_hub.errors import IncompleteSnapshotError  # noqa: F401
        knows = True
    except ImportError:
        knows = False
    home = tmp_path / "hf"
    proc = qconvert("quantize", "org/tiny", "-o", tmp_path / "a.gguf", env=hf_env(home, HF_ENDPOINT=fake_hub.endpoint),
                    cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    (home / "hub" / "models--org--tiny" / "snapshots" / C1 / "model.safetensors").unlink()
    proc = qconvert("quantize", "org/tiny", "-o", tmp_path / "b.gguf", env=hf_env(home, HF_HUB_OFFLINE="1"),
                    cwd=tmp_path)
    assert proc.returncode == 1 and proc.stderr.count("\n") == 1, proc.stderr
    if not knows:
        assert proc.stderr.startswith("error: org/tiny: the snapshot ") and "holds no safetensors weights (HF_HUB_" \
            "OFFLINE is set and the cache holds only part of it)" in proc.stderr, proc.stderr
    else:
        assert proc.stderr == (f"error: the Hugging Face cache ({home / 'hub'}) holds only part of org/tiny's files, "
                               "and HF_HUB_OFFLINE is set: unset it to download, or set HF_HOME to the cache that has "
                               "the model\n")


def test_token_opens_gated_and_private_repos(fake_hub: FakeHub, tmp_path: Path):
    env = hf_env(tmp_path / "hf", HF_ENDPOINT=fake_hub.endpoint, HF_TOKEN="hf_fake")
    for ref in ("org/gated", "org/private"):
        proc = qconvert("quantize", ref, "-t", "Q8_0", env=env, cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "gated-Q8_0.gguf").is_file() and (tmp_path / "private-Q8_0.gguf").is_file()


def unreachable_endpoint() -> str:
    import socket
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


def test_unreachable_hub_and_cached(home: Path, tmp_path: Path):
    """No HF_HUB_OFFLINE, but nothing answers: huggingface_hub falls back on the cache."""
    (got,) = resolve("org/tiny@dev", env=hf_env(home, HF_ENDPOINT=unreachable_endpoint()), cwd=tmp_path)
    assert got["commit"] == C2 and got["path"] == str(home / "hub" / "models--org--tiny" / "snapshots" / C2), got


def test_unreachable_hub_and_not_cached(tmp_path: Path):
    """No HF_HUB_OFFLINE, but nothing answers at the endpoint: one line saying so."""
    env = hf_env(tmp_path / "hf", HF_ENDPOINT=unreachable_endpoint())
    proc = qconvert("quantize", "org/tiny", "-o", tmp_path / "x.gguf", env=env, cwd=tmp_path)
    assert proc.returncode == 1 and proc.stderr.count("\n") == 1, proc.stderr
    assert proc.stderr.startswith(f"error: org/tiny is not a folder here, nor in the Hugging Face cache "
                                  f"({tmp_path / 'hf' / 'hub'}), and the Hugging Face Hub cannot be reached ("), \
        proc.stderr
