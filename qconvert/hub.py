"""MODEL as a Hugging Face Hub id: `org/name` or `org/name@revision`, resolved to a folder.

`resolve_model` is the one boundary call for every MODEL argument (quantize, verify, batch):

- A path that exists locally is a folder, always: `org/name` names a local folder when there is
  one (relative to the current folder), and the Hub is asked only when there is none. A Path
  object is always a folder. A folder inside a Hub cache snapshot (`.../snapshots/<commit>/`,
  files that are symlinks to `../../blobs/<hash>`) is an ordinary folder: the readers follow
  the symlinks, and `convert.check_output` compares an output with every input by device and
  inode, so an output that is a symlink to a blob is refused.
- Otherwise, a string of the form `org/name[@revision]` (exactly one `/`, no leading `.`, `~`
  or `/`) is a Hub id, handed to huggingface_hub's `snapshot_download`, the ecosystem's own
  client: its cache (HF_HOME, HF_HUB_CACHE), its token (HF_TOKEN, `hf auth login`), its offline
  mode (HF_HUB_OFFLINE=1: the cache only), its progress bars. Only the files conversion reads are
  downloaded (`ALLOW_PATTERNS`, `IGNORE_PATTERNS`). The revision is a branch, a tag or a commit
  hash (default: main); the snapshot folder's name is the commit it resolved to.
- Anything else is a folder that does not exist; the checkpoint reader says so.

Every failure is one line: a malformed id or revision is a UsageError (exit 2); a repo or
revision the Hub does not have, a gated or private repo without a token that can read it, an
offline run whose model is not in the cache are HubErrors (exit 1), naming the variable to set.
"""

from __future__ import annotations

import contextlib
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from . import __version__
from .errors import CheckpointError, UsageError


class HubError(CheckpointError):
    """The model cannot be had from the Hugging Face Hub or its cache: no such repo or revision,
    gated or private without a token that can read it, offline and not cached. Its own kind, so that a CI
    job can tell the Hub (or the network) failing from a checkpoint that cannot be converted."""

    kind = "hub"


# What conversion reads, as huggingface_hub's patterns (fnmatch on the path in the repo; `*`
# crosses `/`). Who reads each: reader.py (config, index, shards), tokenizer.py and
# validate/tokenizer.py's TOKENIZER_INPUT_FILES (which include what gguf.SpecialVocab opens:
# merges.txt, the chat template files), arch/bert.py (sentence-transformers' modules.json and
# its Pooling module's config), gguf.Metadata (README.md's model card, generation_config.json).
ALLOW_PATTERNS = (
    "config.json", "generation_config.json",
    "*.safetensors", "model.safetensors.index.json",
    "tokenizer.model", "tokenizer.json", "tokenizer_config.json", "added_tokens.json", "vocab.txt",
    "special_tokens_map.json", "merges.txt", "chat_template.json", "chat_template.jinja",
    "additional_chat_templates/*.jinja",
    "modules.json", "*_Pooling/config.json",
)
README_PATTERN = "README.md"
# Never needed, however the repo is laid out:
# - safetensors in subfolders (`original/`, `onnx/`...): the reader takes the index's shards or
#   the top folder's *.safetensors only.
# - consolidated*.safetensors: the Mistral-native copy of the weights some repos ship beside the
#   transformers shards (Mistral-7B-Instruct-v0.3: 14.5 GB twice). Its tensor names are Mistral's
#   (`layers.0.attention.wq.weight`), which no adapter maps, so it is excluded even in a repo that
#   has nothing else; llama.cpp's converter ignores it too (it reads `model*.safetensors`).
IGNORE_PATTERNS = ("*/*.safetensors", "consolidated*.safetensors")


@dataclass(frozen=True)
class ModelSource:
    """Where a MODEL argument's checkpoint is: `path` (a folder) and what the user gave (`ref`).
    For a Hub id, `repo_id`, `revision` as asked (None: the default branch) and `commit`, the
    commit it resolved to; all three None for a local folder."""

    path: Path
    ref: str
    repo_id: str | None = None
    revision: str | None = None
    commit: str | None = None

    @property
    def name(self) -> str:
        """The model's name for output file names: the repo's name part for a Hub id, else the
        folder's name (see `model_name`)."""
        return self.repo_id.rsplit("/", 1)[-1] if self.repo_id is not None else model_name(self.path)

    @property
    def provenance_ref(self) -> str | None:
        """How an output's provenance names a Hub model: `org/name@commit` (None for a folder,
        which the provenance names by its files)."""
        return f"{self.repo_id}@{self.commit}" if self.repo_id is not None else None


def model_name(folder: str | Path) -> str:
    """A checkpoint folder's name: its own (after resolving `.` and symlinks), except for a
    snapshot of the Hugging Face cache, whose own name is a commit hash: there the repo's.

    >>> model_name("/cache/hub/models--HuggingFaceTB--SmolLM2-135M/snapshots/" + "a" * 40)
    'SmolLM2-135M'
    """
    repo_id = cached_repo_id(folder)
    return repo_id.rsplit("/", 1)[-1] if repo_id is not None else Path(folder).resolve().name


def cached_repo_id(folder: str | Path) -> str | None:
    """The repo id of a Hub cache snapshot folder (`models--org--name/snapshots/<commit>`, the
    layout of huggingface_hub's file_download: `--` separates the parts, which a repo id cannot
    contain), else None.

    >>> cached_repo_id("/c/hub/models--org--name/snapshots/0123456789abcdef0123456789abcdef01234567")
    'org/name'
    >>> cached_repo_id("/models/org/name") is None
    True
    """
    path = Path(os.path.abspath(folder))
    repo = path.parent.parent.name
    if path.parent.name != "snapshots" or not repo.startswith("models--") or not COMMIT.fullmatch(path.name):
        return None
    return repo.removeprefix("models--").replace("--", "/")


COMMIT = re.compile(r"[0-9a-f]{40}")
# gguf.Metadata's fields that its heuristics derive from a model id or a folder's name
NAME_FIELDS = ("name", "organization", "basename", "finetune", "version", "size_label")


def name_after_repo(meta, folder: str | Path, n_params: int = 0):
    """gguf.Metadata.load names a model after its folder where the model card and config.json do
    not (its folder name fallback heuristic); a Hub cache snapshot's folder is named after its
    commit (general.name '3f1c...', and often general.finetune too). For a snapshot, the fields
    that fallback filled are derived from the repo id instead, by the heuristic gguf applies to
    config.json's `_name_or_path`: 'HuggingFaceTB/SmolLM2-135M-Instruct' gives organization
    HuggingFaceTB, basename SmolLM2, size label 135M, finetune Instruct. `meta` is a
    gguf.Metadata, returned changed in place; any other folder's is returned as it is."""
    repo_id = cached_repo_id(folder)
    if repo_id is None:
        return meta
    import gguf
    by_commit = gguf.Metadata.apply_metadata_heuristic(gguf.Metadata(), None, None, Path(folder), n_params)
    by_repo = gguf.Metadata.apply_metadata_heuristic(gguf.Metadata(), None, {"_name_or_path": repo_id}, None, n_params)
    for field in NAME_FIELDS:
        value = getattr(meta, field)
        if value is None or value == getattr(by_commit, field):
            setattr(meta, field, getattr(by_repo, field))
    return meta
# A revision is a branch or tag name (git check-ref-format's rules, as the Hub enforces them)
# or a commit hash; refs/pr/N names a pull request's head.
_BAD_REVISION = re.compile(r"[\x00-\x20\x7f~^:?*\[\\]|\.\.|@\{|//|^[-/.]|[/.]$|\.lock$|/\.|^@$")


def parse_ref(text: str) -> tuple[str, str | None]:
    """`org/name[@revision]` -> (repo id, revision or None), or a one-line UsageError.

    >>> parse_ref("HuggingFaceTB/SmolLM2-135M@v1.0")
    ('HuggingFaceTB/SmolLM2-135M', 'v1.0')
    >>> parse_ref("org/name")
    ('org/name', None)
    """
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    repo_id, at, revision = text.partition("@")
    if repo_id.count("/") != 1:
        raise UsageError(f"MODEL {text!r} is neither a folder nor a Hub repo id (org/name or org/name@revision)")
    try:
        validate_repo_id(repo_id)
    except HFValidationError as e:
        reason = " ".join(str(e).split()).rstrip(".")
        raise UsageError(f"MODEL {text!r} is neither a folder nor a valid Hub repo id ({reason})") from None
    if at and (not revision or _BAD_REVISION.search(revision) or len(revision) > 255):
        raise UsageError(f"MODEL {text!r}: {revision!r} is not a valid revision (a branch, a tag or a commit hash "
                         "after '@')")
    return repo_id, revision if at else None


def looks_like_hub_id(text: str) -> bool:
    """Whether a MODEL that is not an existing path is meant as a Hub id: one `/` before any `@`,
    not a path's spelling (absolute, `./`, `../`, `~/`, a trailing `/`).

    >>> [looks_like_hub_id(t) for t in ("org/name", "org/name@main", "./org/name", "a/b/c", "name", "org/name/")]
    [True, True, False, False, False, False]
    """
    repo = text.partition("@")[0]
    return repo.count("/") == 1 and not text.startswith(("/", ".", "~")) and not repo.endswith("/")


def resolve_model(ref: str | Path, *, progress: bool = False, need_readme: bool = True) -> ModelSource:
    """The folder holding the checkpoint that MODEL names (see the module's docstring): a local
    path as it is, a Hub id downloaded (only what conversion reads; README.md, the model card,
    when `need_readme`) or found in the cache. `progress` shows huggingface_hub's own progress
    bars (the CLI passes False with --quiet or when stderr is not a terminal)."""
    if isinstance(ref, Path) or os.path.lexists(ref) or not looks_like_hub_id(ref):
        return ModelSource(Path(ref), str(ref))
    return resolve_hub_id(ref, progress=progress, need_readme=need_readme)


def resolve_hub_id(ref: str, *, progress: bool = False, need_readme: bool = True) -> ModelSource:
    """`org/name[@revision]` from the Hub (or its cache), never a local folder: for callers that
    have already looked for a folder where it belongs (a manifest's folder)."""
    repo_id, revision = parse_ref(ref)
    folder = Path(download(repo_id, revision, need_readme=need_readme, progress=progress))
    if not any(folder.glob("*.safetensors")):
        raise HubError(f"{ref}: the snapshot {folder} holds no safetensors weights ("
                       + ("HF_HUB_OFFLINE is set and the cache holds only part of it)" if offline() else
                          "the repo has none at this revision: PyTorch .bin/.pth weights are not supported)"))
    return ModelSource(folder, ref, repo_id, revision, folder.name)


def download(repo_id: str, revision: str | None, *, need_readme: bool = True, progress: bool = False) -> str:
    """huggingface_hub's snapshot_download of what conversion reads; its errors as HubErrors."""
    from huggingface_hub import constants, snapshot_download
    from huggingface_hub.utils import (GatedRepoError, HfHubHTTPError, LocalEntryNotFoundError,
                                       RepositoryNotFoundError, RevisionNotFoundError)

    shown = f"{repo_id}@{revision}" if revision is not None else repo_id
    patterns = list(ALLOW_PATTERNS) + ([README_PATTERN] if need_readme else [])
    try:
        with progress_bars(progress):
            return snapshot_download(repo_id, revision=revision, allow_patterns=patterns,
                                     ignore_patterns=list(IGNORE_PATTERNS), library_name="qconvert",
                                     library_version=__version__)
    except GatedRepoError:  # a RepositoryNotFoundError too: first
        raise HubError(f"{repo_id} is a gated model: accept its conditions on {constants.ENDPOINT}/{repo_id} and set "
                       "HF_TOKEN to a token of that account") from None
    except RepositoryNotFoundError:
        raise HubError(f"{repo_id} is not a folder here, and the Hugging Face Hub has no model {repo_id} (or it is "
                       "private: set HF_TOKEN to a token that can read it)") from None
    except RevisionNotFoundError:
        raise HubError(f"{repo_id} has no revision {revision!r} (a branch, a tag or a commit hash)") from None
    except LocalEntryNotFoundError as e:  # also IncompleteSnapshotError (huggingface_hub >= 2)
        cache = Path(constants.HF_HUB_CACHE)
        cached = (cache / f"models--{repo_id.replace('/', '--')}").is_dir()
        what = (f"the Hugging Face cache ({cache}) has {repo_id} but not "
                f"{'revision ' + repr(revision) if revision is not None else 'its main branch'}" if cached else
                f"{repo_id} is not a folder here, nor in the Hugging Face cache ({cache})")
        if type(e).__name__ == "IncompleteSnapshotError":
            what = f"the Hugging Face cache ({cache}) holds only part of {shown}'s files"
        if offline():
            raise HubError(f"{what}, and HF_HUB_OFFLINE is set: unset it to download, or set HF_HOME to the "
                           "cache that has the model") from None
        raise HubError(f"{what}, and the Hugging Face Hub cannot be reached ({first_line(e.__cause__ or e)})") from None
    except HfHubHTTPError as e:
        status = getattr(getattr(e, "response", None), "status_code", None)
        if status in (401, 403):
            raise HubError(f"the Hugging Face Hub refused access to {repo_id} ({status}): set HF_TOKEN to a token "
                           "that can read it") from None
        raise HubError(f"the Hugging Face Hub failed to give {shown} ({first_line(e)})") from None


def offline() -> bool:
    """HF_HUB_OFFLINE as huggingface_hub read it."""
    from huggingface_hub import constants
    return bool(constants.HF_HUB_OFFLINE)


def first_line(e: BaseException) -> str:
    text = str(e).strip()
    return f"{type(e).__name__}: {text.splitlines()[0] if text else ''}".rstrip(": ")


@contextlib.contextmanager
def progress_bars(show: bool) -> Iterator[None]:
    """huggingface_hub's progress bars on (as the user's environment has them: its
    HF_HUB_DISABLE_PROGRESS_BARS wins) or off for the time of a download."""
    from huggingface_hub.utils import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars

    if show or are_progress_bars_disabled():
        yield
        return
    disable_progress_bars()
    try:
        yield
    finally:
        enable_progress_bars()
