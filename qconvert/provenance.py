"""What an output was made from and how, recorded in the output itself (`qconvert.provenance`).

The record is a GGUF string holding canonical JSON (sorted keys, no spaces):

    {"qconvert_version": "0.1.0",
     "model": {"ref": "org/name@<commit>" for a Hub id, else the folder's name},
     "inputs": [{"name": "model.safetensors", "bytes": 123, "mtime_ns": 1700000000000000000}, ...],
     "hashes": {"config.json": "<sha256>", "tokenizer.json": "<sha256>", ...},
     "options": {"type": "Q4_K_M", "pure": false, ..., "split_max_size": null, "split_max_tensors": null}}

`inputs` lists every file a conversion reads or may read (the checkpoint folder's files, the
shards, the importance matrix), by their path relative to the checkpoint folder (absolute for a
file outside it); `hashes` holds the SHA-256 of the small files that decide the metadata and the
vocabulary (configs, tokenizer, index, model card) and of the importance matrix. A rebuild can
then be skipped by comparing records (`matches`), not by guessing from timestamps.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

from . import __version__
from .errors import CheckpointError, GGUFError
from .gguf_read import GGUFFile, find_first_member, read_gguf_set

if TYPE_CHECKING:
    from .convert import Job

KEY = "qconvert.provenance"
# Inputs whose contents are hashed: small files that decide the metadata and the vocabulary.
# Weights are recorded by size and mtime only (hashing them would read the checkpoint twice).
HASHED_SUFFIXES = (".json", ".model", ".txt", ".md", ".tiktoken")


def expected(job: Job) -> dict:
    """The record an output of `job` holds, from the input files as they are now."""
    model = job.model
    root = model.checkpoint.path
    imatrix = Path(model.imatrix.path) if model.imatrix is not None else None
    inputs, hashes = [], {}
    for path in model.input_paths:
        name = input_name(path, root)
        try:
            st = path.stat()
        except OSError as e:
            raise CheckpointError(f"{path}: cannot be read ({e.strerror or e})") from None
        inputs.append({"name": name, "bytes": st.st_size, "mtime_ns": st.st_mtime_ns})
        if path.name.lower().endswith(HASHED_SUFFIXES) or (imatrix is not None and path == imatrix):
            hashes[name] = sha256_file(path)
    o = job.overrides
    options = {
        "type": job.type_name,
        "pure": o.pure,
        "output_tensor_type": o.output_tensor_type.name if o.output_tensor_type is not None else None,
        "token_embedding_type": o.token_embedding_type.name if o.token_embedding_type is not None else None,
        "leave_output_tensor": o.leave_output_tensor,
        "tensor_type": [f"{pattern}={qtype.name}" for pattern, qtype in o.tensor_types],
        "override_kv": [[kv.key, kv.vtype.name, kv.value] for kv in job.kv_overrides],
        "imatrix": hashes[input_name(imatrix, root)] if imatrix is not None else None,
        "no_fallback": o.no_fallback,
        "allow_nonfinite": job.allow_nonfinite,
        "split_max_size": job.split.max_bytes if job.split is not None else None,
        "split_max_tensors": job.split.max_tensors if job.split is not None else None,
    }
    return {
        "qconvert_version": __version__,
        "model": {"ref": model.ref if model.ref is not None else root.resolve().name},
        "inputs": sorted(inputs, key=lambda i: i["name"]),
        "hashes": hashes,
        "options": options,
    }


def dumps(record: dict) -> str:
    """Canonical JSON: the same record is always the same string (and the same file bytes)."""
    return json.dumps(record, sort_keys=True, separators=(",", ":"))


def input_name(path: Path, root: Path) -> str:
    """A file's name in the record: relative to the checkpoint folder (without following links,
    so a Hub cache snapshot's names are the repository's), absolute outside it."""
    rel = os.path.relpath(os.path.abspath(path), os.path.abspath(root))
    if rel == os.pardir or rel.startswith(os.pardir + os.sep):
        return os.path.abspath(path)
    return Path(rel).as_posix()


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def read(path: str | Path) -> dict | None:
    """The record of the output at `path` (a file, any member of a split set, or the target name
    a set was written for), or None when there is no readable GGUF there or it holds no record."""
    files = output_set(path)
    return record_of(files[0]) if files else None


def output_set(path: str | Path) -> list[GGUFFile] | None:
    """The files of the output at `path` (as for `read`), or None when there is no readable set."""
    first = find_first_member(Path(path))
    if first is None:
        return None
    try:
        return read_gguf_set(first)
    except GGUFError:
        return None


def record_of(info: GGUFFile) -> dict | None:
    field = info.fields.get(KEY)
    if field is None or not isinstance(field.value, str):
        return None
    try:
        record = json.loads(field.value)
    except ValueError:
        return None
    return record if isinstance(record, dict) else None


def matches(path: str | Path, expected_record: dict) -> bool:
    """Whether the output at `path` (as for `read`) is complete and was made from the same inputs
    with the same options: every file of a set present, each exactly as long as its header says
    (a truncated or extended file does not match), and the record equal to `expected_record`."""
    files = output_set(path)
    if not files:
        return False
    for f in files:
        end = f.data_offset + sum(-(-t.nbytes // f.alignment) * f.alignment for t in f.tensors)
        if f.size != end:
            return False
    return record_of(files[0]) == expected_record
