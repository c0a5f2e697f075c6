"""What qconvert refuses in safetensors shards, their index, and files that are not regular files.

One case per rule of qconvert/validate/safetensors.py (the rules of the safetensors library's
own header validation, plus the index): each must exit 1 with one line naming the file and the
tensor or key, no traceback, nothing at the target, and leave every file of the checkpoint
byte-identical. Most run the CLI in-process (run_cli_inprocess, milliseconds each); the cases
where the process itself matters (a FIFO that would block, the HF cache's symlinks) run the real
`python -m qconvert` with a timeout.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
from safetensors.numpy import save_file

from conftest import (assert_same_conversion, run_cli, run_cli_inprocess, tiny_llama_config, tiny_llama_tensors,
                      write_checkpoint)
from test_cli_errors import assert_clean_failure, sharded

from qconvert.errors import CheckpointError
from qconvert.validate.safetensors import (MAX_HEADER_BYTES, check_shard_name, header_length, show,
                                           validate_header)

SHARD1, SHARD2 = "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"
INDEX = "model.safetensors.index.json"


# --- helpers: a shard as (header, data), written back with any length field -------------------

def read_shard(path: Path) -> tuple[dict, bytes]:
    raw = path.read_bytes()
    n = int.from_bytes(raw[:8], "little")
    return json.loads(raw[8:8 + n]), raw[8 + n:]


def header_bytes(header: dict | bytes) -> bytes:
    text = header if isinstance(header, bytes) else json.dumps(header, separators=(",", ":")).encode()
    return text + b" " * (-len(text) % 8)  # the library pads to 8 bytes with spaces


def write_shard(path: Path, header: dict | bytes, data: bytes, n: int | None = None) -> None:
    text = header_bytes(header)
    path.write_bytes((len(text) if n is None else n).to_bytes(8, "little") + text + data)


def edit_shard(path: Path, edit: Callable[[dict, bytes], tuple]) -> None:
    """Rewrite a shard with `edit(header, data)` -> (header or header bytes, data[, length field])."""
    write_shard(path, *edit(*read_shard(path)))


def snapshot(folder: Path) -> dict[str, tuple]:
    """Every entry of a folder: its link target if a symlink, its kind, and a hash of its bytes if
    it is a regular file (never opened otherwise: a FIFO would block)."""
    out = {}
    for p in sorted(folder.iterdir()):
        mode = os.stat(p).st_mode if p.exists() else 0
        digest = hashlib.sha256(p.read_bytes()).hexdigest() if stat.S_ISREG(mode) else None
        out[p.name] = (os.readlink(p) if p.is_symlink() else None, stat.S_IFMT(mode), digest)
    return out


def refuse(model: Path, tmp_path: Path, *phrases: str, inprocess: bool = True) -> str:
    """Convert `model`; assert a clean refusal (exit 1, one line holding `phrases`, nothing
    written) that left the checkpoint as it was. Returns the line."""
    before = snapshot(model)
    out = tmp_path / "out.gguf"
    args = ("quantize", model, "-t", "Q8_0", "-o", out, "--no-progress")
    proc = run_cli_inprocess(*args, timeout=30) if inprocess else run_cli(*args)
    assert_clean_failure(proc, out, *phrases, code=1)
    assert snapshot(model) == before
    return proc.stderr.strip()


# --- one shard: the header's rules ---------------------------------------------------------------

def _set(name: str, **fields) -> Callable[[dict, bytes], tuple]:
    def edit(h: dict, d: bytes):
        h[name].update(fields)
        return h, d
    return edit


def _text(transform: Callable[[bytes], bytes]) -> Callable[[dict, bytes], tuple]:
    def edit(h: dict, d: bytes):
        return transform(json.dumps(h, separators=(",", ":")).encode()), d
    return edit


def _length(delta: int | None = None, value: int | None = None, pad: int = 0):
    """The header padded with `pad` spaces, and its length field moved by `delta` or set to `value`."""
    def edit(h: dict, d: bytes):
        text = header_bytes(h) + b" " * pad
        return text, d, len(text) + delta if value is None else value
    return edit


def _shift_all(by: int):
    def edit(h: dict, d: bytes):
        for k, v in h.items():
            if k != "__metadata__":
                v["data_offsets"] = [v["data_offsets"][0] + by, v["data_offsets"][1] + by]
        return h, b"\0" * by + d
    return edit


def _overlap(h: dict, d: bytes):
    # k_proj begins 4 bytes inside the tensor before it (post_attention_layernorm)
    begin, end = h["model.layers.0.self_attn.k_proj.weight"]["data_offsets"]
    h["model.layers.0.self_attn.k_proj.weight"]["data_offsets"] = [begin - 4, end - 4]
    return h, d


def _gap(h: dict, d: bytes):
    # norm.weight moves 4 bytes on (and the file grows by 4 so the end still matches)
    begin, end = h["model.norm.weight"]["data_offsets"]
    for v in h.values():
        if isinstance(v, dict) and "data_offsets" in v and v["data_offsets"][0] >= end:
            v["data_offsets"] = [v["data_offsets"][0] + 4, v["data_offsets"][1] + 4]
    h["model.norm.weight"]["data_offsets"] = [begin + 4, end + 4]
    return h, d[:begin] + b"\0" * 4 + d[begin:]


NORM = "model.norm.weight"
SINGLE_CASES: list[tuple[str, Callable, tuple[str, ...]]] = [
    ("length-beyond-file", _length(value=10**7), ("model.safetensors", "length field says 10000000", "the file has")),
    ("length-over-cap", _length(value=MAX_HEADER_BYTES + 1), ("model.safetensors", "format's limit of 100000000")),
    # the "length field off": the header padded, its length field 8 short: the JSON still
    # parses, every tensor would be read 8 bytes early
    ("length-short-by-8", _length(delta=-8, pad=8),
     ("model.safetensors has 8 trailing bytes", "tensor model.norm.weight")),
    ("length-long-by-8", _length(delta=8), ("model.safetensors: corrupt safetensors header",)),
    ("not-utf8", _text(lambda t: t.replace(b"lm_head", b"lm_h\xffad")), ("model.safetensors", "not UTF-8")),
    ("utf16", _text(lambda t: t.decode().encode("utf-16-le")), ("model.safetensors", "not valid JSON")),
    ("not-an-object", _text(lambda t: b"[" + t + b"]"),
     ("model.safetensors", "expected a JSON object, found an array")),
    ("duplicate-name", _text(lambda t: t.replace(b'"lm_head.weight"', b'"model.norm.weight"', 1)),
     ("model.safetensors", "key model.norm.weight appears twice")),
    ("nan-in-shape", _text(lambda t: t.replace(b'"shape":[64]', b'"shape":[NaN]', 1)),
     ("model.safetensors", "not valid JSON (NaN is not a JSON number)")),
    ("unknown-dtype", _set(NORM, dtype="F48"), ("model.safetensors", NORM, "unknown dtype the string 'F48'")),
    ("dtype-not-a-string", _set(NORM, dtype=4), ("model.safetensors", NORM, "unknown dtype the number 4")),
    ("missing-dtype", _text(lambda t: t.replace(b'"dtype":"F32","shape":[64]', b'"shape":[64]', 1)),
     ("model.safetensors", "missing dtype")),
    ("negative-dim", _set(NORM, shape=[-64]), ("model.safetensors", NORM, "non-negative integers, found [-64]")),
    ("bool-dim", _set(NORM, shape=[True, 64]), ("model.safetensors", NORM, "found [the boolean true, 64]")),
    ("float-dim", _set(NORM, shape=[64.0]), ("model.safetensors", NORM, "found [64.0]")),
    ("shape-not-a-list", _set(NORM, shape="64"), ("model.safetensors", NORM, "found the string '64'")),
    ("huge-dims", _set(NORM, shape=[0, 2**70]), ("model.safetensors", NORM, "more than 2^63 elements")),
    ("offsets-three", _set(NORM, data_offsets=[0, 4, 8]), ("model.safetensors", NORM, "[begin, end]")),
    ("offsets-reversed", _set(NORM, data_offsets=[256, 0]), ("model.safetensors", NORM, "0 <= begin <= end")),
    ("shape-disagrees", _set(NORM, shape=[65]), ("model.safetensors", NORM, "F32 [65] needs 260 bytes",
                                                 "hold 256")),
    ("not-from-zero", _shift_all(8), ("model.safetensors", "lm_head.weight begins at data byte 8, expected 0")),
    ("overlap", _overlap, ("model.safetensors", "overlaps the previous tensor")),
    ("gap", _gap, ("model.safetensors", NORM, "leaves a gap")),
    ("trailing-bytes", lambda h, d: (h, d + b"\0" * 16), ("model.safetensors has 16 trailing bytes",)),
    ("truncated", lambda h, d: (h, d[:-4]), ("model.safetensors is truncated", "end at data byte 369920")),
    ("metadata-not-strings", lambda h, d: ({**h, "__metadata__": {"format": 1}}, d),
     ("model.safetensors", "__metadata__ entry format must be a string, found the number 1")),
    ("metadata-not-object", lambda h, d: ({**h, "__metadata__": ["pt"]}, d),
     ("model.safetensors", "__metadata__ must be an object")),
    ("lone-surrogate-name", _text(lambda t: t.replace(b'"lm_head.weight"', b'"lm_head\\udc80"', 1)),
     ("model.safetensors", r"'lm_head\udc80'", "not valid Unicode")),
    ("newline-in-name", _text(lambda t: t.replace(b'"model.norm.weight"', b'"model.norm\\nweight"', 1)),
     ("model.safetensors", r"'model.norm\nweight'", "not printable")),
]


@pytest.mark.parametrize("edit,phrases", [c[1:] for c in SINGLE_CASES], ids=[c[0] for c in SINGLE_CASES])
def test_bad_header_is_refused(tiny_checkpoint: Path, tmp_path: Path, edit, phrases):
    edit_shard(tiny_checkpoint / "model.safetensors", edit)
    refuse(tiny_checkpoint, tmp_path, *phrases)


def test_short_file(tiny_checkpoint: Path, tmp_path: Path):
    (tiny_checkpoint / "model.safetensors").write_bytes(b"\x10\0\0")
    refuse(tiny_checkpoint, tmp_path, "model.safetensors: file is 3 bytes, too short")


def test_header_as_the_library_accepts_it_converts_the_same(tiny_checkpoint: Path, tmp_path: Path):
    """What the library accepts, qconvert must accept with the same result: whitespace around
    the JSON, keys in another order, __metadata__ anywhere, null __metadata__."""
    out = tmp_path / "a.gguf"
    assert run_cli_inprocess("quantize", tiny_checkpoint, "-o", out, "--no-progress").returncode == 0
    f = tiny_checkpoint / "model.safetensors"
    h, d = read_shard(f)
    reordered = {k: h[k] for k in sorted(h, reverse=True)}
    text = b"\n  " + json.dumps({"__metadata__": None, **reordered}, indent=1).encode() + b"\t\r\n"
    write_shard(f, text, d)
    from safetensors import safe_open
    with safe_open(str(f), "np") as st:  # the library agrees it is valid
        assert sorted(st.keys()) == sorted(h)
    out2 = tmp_path / "b.gguf"
    proc = run_cli_inprocess("quantize", tiny_checkpoint, "-o", out2, "--no-progress")
    assert proc.returncode == 0, proc.stderr
    assert_same_conversion(out2, out)  # but the provenance record: the shard differs


def test_unsupported_dtype_is_checked_after_the_layout(tiny_checkpoint: Path, tmp_path: Path):
    """F64 is a safetensors dtype (its offsets are checked) that qconvert does not decode."""
    tensors = tiny_llama_tensors(tiny_llama_config(401))
    tensors[NORM] = tensors[NORM].astype(np.float64)
    save_file(tensors, str(tiny_checkpoint / "model.safetensors"))
    refuse(tiny_checkpoint, tmp_path, "model.safetensors: tensor model.norm.weight has dtype F64", "BF16")


# --- several shards, and the index ------------------------------------------------------------

def _index(edit: Callable[[dict], object]) -> Callable[[Path], None]:
    def apply(model: Path) -> None:
        index = json.loads((model / INDEX).read_text())
        edit(index)
        (model / INDEX).write_text(json.dumps(index))
    return apply


def _first(model: Path, shard: str = SHARD1) -> str:
    return sorted(read_shard(model / shard)[0])[0]


def _index_text(text: str) -> Callable[[Path], None]:
    return lambda model: (model / INDEX).write_text(text)


def _wm(key: str, value) -> Callable[[dict], None]:
    return lambda index: index["weight_map"].__setitem__(key, value)


def _same_name_in_both(model: Path) -> None:
    """Shard 2 also holds shard 1's first tensor (and no index says which one is meant)."""
    (model / INDEX).unlink()
    name = _first(model)
    h1, d1 = read_shard(model / SHARD1)
    h2, d2 = read_shard(model / SHARD2)
    begin, end = h1[name]["data_offsets"]
    end2 = len(d2)
    h2[name] = {**h1[name], "data_offsets": [end2, end2 + end - begin]}
    write_shard(model / SHARD2, h2, d2 + d1[begin:end])


def _move_to_other_shard(model: Path) -> None:
    idx = json.loads((model / INDEX).read_text())
    name = _first(model)
    idx["weight_map"][name] = SHARD2
    (model / INDEX).write_text(json.dumps(idx))


def _drop_from_index(model: Path) -> None:
    idx = json.loads((model / INDEX).read_text())
    del idx["weight_map"][_first(model, SHARD2)]
    (model / INDEX).write_text(json.dumps(idx))


SHARDED_CASES: list[tuple[str, Callable[[Path], None], tuple[str, ...]]] = [
    ("name-in-two-shards", _same_name_in_both, ("is in two shards", SHARD1, SHARD2)),
    ("index-names-wrong-shard", _move_to_other_shard, (INDEX, f"is listed in {SHARD2}, but it is in {SHARD1}")),
    ("index-entry-in-no-shard", _index(_wm("model.layers.7.mlp.up_proj.weight", SHARD1)),
     (INDEX, "model.layers.7.mlp.up_proj.weight is listed in", "no shard holds it")),
    ("shard-tensor-not-in-index", _drop_from_index, (SHARD2, "is not listed in", INDEX)),
    ("index-not-json", _index_text("{oops"), (INDEX, "not valid JSON")),
    ("index-not-object", _index_text("[]"), (INDEX, "expected a JSON object, found an array")),
    ("no-weight-map", _index(lambda i: i.pop("weight_map")), (INDEX, "no weight_map")),
    ("weight-map-not-object", _index(lambda i: i.__setitem__("weight_map", [SHARD1])),
     (INDEX, "weight_map must be an object", "found an array")),
    ("weight-map-value-not-str", _index(_wm("model.norm.weight", 3)),
     (INDEX, "weight_map entry model.norm.weight must be a shard file name, found the number 3")),
    ("index-duplicate-key", lambda m: (m / INDEX).write_text(
        (m / INDEX).read_text().replace('"weight_map": {', '"weight_map": {"model.norm.weight": "x", ', 1)),
     (INDEX, "key model.norm.weight appears twice")),
    ("index-absolute-path", _index(_wm("model.norm.weight", "/etc/passwd")),
     (INDEX, "model.norm.weight", "shard /etc/passwd is not a plain file name")),
    ("index-dotdot", _index(_wm("model.norm.weight", f"../sharded/{SHARD1}")),
     (INDEX, f"shard ../sharded/{SHARD1} is not a plain file name")),
    ("index-parent", _index(_wm("model.norm.weight", "..")), (INDEX, "shard .. is not a plain file name")),
    ("index-subfolder", _index(_wm("model.norm.weight", f"sub/{SHARD1}")), (INDEX, "not a plain file name")),
    ("index-backslash", _index(_wm("model.norm.weight", f"..\\{SHARD1}")), (INDEX, "not a plain file name")),
    ("index-empty-name", _index(_wm("model.norm.weight", "")), (INDEX, "shard '' is not a plain file name")),
    ("index-names-missing-shard", _index(_wm("model.norm.weight", "model-00003-of-00003.safetensors")),
     ("missing shard model-00003-of-00003.safetensors", INDEX)),
]


@pytest.mark.parametrize("edit,phrases", [c[1:] for c in SHARDED_CASES], ids=[c[0] for c in SHARDED_CASES])
def test_bad_shards_or_index_are_refused(tmp_path: Path, edit, phrases):
    model = sharded(tmp_path)
    edit(model)
    refuse(model, tmp_path, *phrases)


# --- regular files only -------------------------------------------------------------------------

@pytest.mark.parametrize("name,phrase", [
    ("model.safetensors", "model.safetensors is a FIFO"),
    ("config.json", "config.json is a FIFO"),
])
def test_fifo_is_refused_without_hanging(tiny_checkpoint: Path, tmp_path: Path, name: str, phrase: str):
    """A FIFO blocks a reader until someone writes to it: a naive open() never returns. The real
    CLI, under a timeout (run_cli's), must refuse it at once."""
    (tiny_checkpoint / name).unlink()
    os.mkfifo(tiny_checkpoint / name)
    line = refuse(tiny_checkpoint, tmp_path, phrase, "expected a regular file", inprocess=False)
    assert str(tiny_checkpoint) in line


def test_fifo_index_and_fifo_shard_named_by_the_index(tmp_path: Path):
    model = sharded(tmp_path)
    (model / SHARD2).unlink()
    os.mkfifo(model / SHARD2)
    refuse(model, tmp_path, f"{SHARD2} is a FIFO")
    (model / INDEX).unlink()
    os.mkfifo(model / INDEX)
    refuse(model, tmp_path, f"{INDEX} is a FIFO")


@pytest.mark.parametrize("name", ["model.safetensors", "config.json", "tokenizer.json"])
def test_directory_or_device_named_like_a_file(tiny_checkpoint: Path, tmp_path: Path, name: str):
    (tiny_checkpoint / name).unlink()
    (tiny_checkpoint / name).mkdir()
    # (the tokenizer's own reader words it its way: "is a directory, not a regular file")
    refuse(tiny_checkpoint, tmp_path, f"{name} is a directory")
    (tiny_checkpoint / name).rmdir()
    (tiny_checkpoint / name).symlink_to("/dev/zero")  # endless: a naive read never finishes
    refuse(tiny_checkpoint, tmp_path, f"{name} is a", "device")


def test_hugging_face_cache_layout_is_fine(tmp_path: Path):
    """The hub cache: snapshots/REV/FILE -> ../../blobs/HASH. The files live outside the
    checkpoint folder, through links; that is not an index path leaving the folder."""
    model = sharded(tmp_path)
    out_plain = tmp_path / "plain.gguf"
    assert run_cli_inprocess("quantize", model, "-o", out_plain, "--no-progress").returncode == 0
    repo = tmp_path / "models--x--tiny"
    snap = repo / "snapshots" / model.name  # general.name comes from the folder's name
    (repo / "blobs").mkdir(parents=True)
    snap.mkdir(parents=True)
    for f in model.iterdir():
        blob = repo / "blobs" / hashlib.sha256(f.read_bytes()).hexdigest()
        blob.write_bytes(f.read_bytes())
        (snap / f.name).symlink_to(Path("..") / ".." / "blobs" / blob.name)
    out = tmp_path / "cache.gguf"
    proc = run_cli("quantize", snap, "-o", out, "--no-progress")
    assert proc.returncode == 0, proc.stderr
    assert_same_conversion(out, out_plain)  # but the provenance record


# --- the rules as functions ----------------------------------------------------------------------

def test_header_length_rules():
    assert header_length("f", (16).to_bytes(8, "little"), 24) == 16
    with pytest.raises(CheckpointError, match="f: file is 5 bytes, too short"):
        header_length("f", b"\0" * 5, 5)
    with pytest.raises(CheckpointError, match="length field says 17 bytes, the file has 16 after it"):
        header_length("f", (17).to_bytes(8, "little"), 24)
    with pytest.raises(CheckpointError, match="limit"):
        header_length("f", (2**64 - 1).to_bytes(8, "little"), 24)


def test_validate_header_accepts_what_the_library_writes(tmp_path: Path):
    rng = np.random.default_rng(0)
    tensors = {"b": rng.standard_normal((3, 5)).astype(np.float16), "a": np.zeros((0, 7), np.float32),
               "c": np.arange(6, dtype=np.int64).reshape(2, 3), "d": np.array(1.5, np.float32)}
    f = tmp_path / "x.safetensors"
    save_file(tensors, str(f), metadata={"format": "np"})
    raw = f.read_bytes()
    n = int.from_bytes(raw[:8], "little")
    entries, meta = validate_header("x", raw[8:8 + n], len(raw))
    assert [(e.name, e.dtype, e.shape) for e in entries] == [
        ("a", "F32", (0, 7)), ("b", "F16", (3, 5)), ("c", "I64", (2, 3)), ("d", "F32", ())]
    assert meta == {"format": "np"}
    for e in entries:
        assert raw[8 + n + e.begin: 8 + n + e.end] == tensors[e.name].tobytes()


def test_empty_header_is_valid_and_holds_nothing(tmp_path: Path):
    """The library writes `{}` padded for no tensors; the checkpoint is then refused for holding
    no tensors, not for its header."""
    assert validate_header("x", b"{}      ", 16) == ([], {})
    cfg = tiny_llama_config(401)
    model = write_checkpoint(tmp_path / "empty", cfg, {})
    refuse(model, tmp_path, "hold no tensors")


@pytest.mark.parametrize("name", ["model.safetensors", "model-00001-of-00002.safetensors", "a b.safetensors",
                                  "..weights.safetensors"])
def test_plain_shard_names_pass(name: str):
    check_shard_name(name, "index")


def test_show_keeps_messages_on_one_line():
    assert show("a.b") == "a.b"
    assert "\n" not in show("a\nb") and "\udc80" not in show("x\udc80")
