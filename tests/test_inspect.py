"""`qconvert inspect` on damaged GGUF files: a catalog of damages, each refused with exit 1 and one
line naming the culprit; and sound files described as before.

Each damage is made by patching the bytes of a small sound file at offsets that qconvert's own
reader reports for it (so the patch lands exactly on the field it names). The CLI runs in this
process (scripts/fuzz_gguf.run_inspect) for speed; a few cases also run as a user runs them.
"""

from __future__ import annotations

import os
import struct
import sys
from pathlib import Path

import gguf
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import ROOT, run_cli
from test_cli_errors import assert_clean_failure

sys.path.insert(0, str(ROOT / "scripts"))
from fuzz_gguf import GGMLOracle, every_kind_gguf, run_inspect  # noqa: E402

from qconvert.report import short_repr  # noqa: E402
from qconvert.gguf_read import GGUFArray, read_gguf  # noqa: E402


def sound_gguf(path: Path) -> bytes:
    """Two keys, an array and two F32 tensors 'a' (32) and 'b' (2 x 32): 32-byte alignment."""
    w = gguf.GGUFWriter(path, "llama")
    w.add_string("general.name", "Sound")
    w.add_array("test.ints", [1, 2, 3])
    w.add_tensor("a", np.arange(32, dtype=np.float32))
    w.add_tensor("b", np.ones((2, 32), dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path.read_bytes()


def put(data: bytes, at: int, value: int, width: int) -> bytes:
    return data[:at] + value.to_bytes(width, "little") + data[at + width:]


class Damage:
    """Where the fields of the sound file are, from its own parse."""

    def __init__(self, path: Path):
        self.data = sound_gguf(path)
        self.info = read_gguf(path)

    def key(self, name: str) -> int:
        return self.info.fields[name].offset

    def value_at(self, name: str) -> int:  # the value type's offset
        return self.key(name) + 8 + len(name)

    def tensor(self, name: str):
        return next(t for t in self.info.tensors if t.name == name)

    def tensor_field(self, name: str, field: str) -> int:
        t = self.tensor(name)
        n_dims_at = t.info_offset + 8 + len(name)
        type_at = n_dims_at + 4 + 8 * len(t.shape)
        return {"n_dims": n_dims_at, "dim0": n_dims_at + 4, "type": type_at, "offset": type_at + 4}[field]


# name -> (damage(d) -> bytes, phrases the one error line must hold)
CATALOG = {
    "empty file": (lambda d: b"", ["empty file"]),
    "truncated header": (lambda d: d.data[:10], ["truncated", "GGUF header", "byte 0", "ends at byte 10"]),
    "bad magic": (lambda d: b"GGML" + d.data[4:], ["not a GGUF file", "b'GGML'", "byte 0"]),
    "version 99": (lambda d: put(d.data, 4, 99, 4), ["GGUF version 99", "byte 4", "expected 2 or 3"]),
    "version 1": (lambda d: put(d.data, 4, 1, 4), ["GGUF version 1 ", "expected 2 or 3"]),
    "big-endian": (lambda d: put(d.data, 4, 3 << 24, 4), ["big-endian"]),
    "huge tensor count": (lambda d: put(d.data, 8, 2**62, 8), [f"{2**62} tensors (byte 8)", "at most"]),
    "huge key count": (lambda d: put(d.data, 16, 2**40, 8), [f"{2**40} metadata keys (byte 16)"]),
    "key length beyond the file": (lambda d: put(d.data, 24, 2**40, 8), ["metadata key 0", "byte 24",
                                                                        "beyond the end of the file"]),
    "string length beyond the file": (lambda d: put(d.data, d.value_at("general.name") + 4, 10**6, 8),
                                      ["'general.name'", "1000000 bytes long", "beyond the end of the file"]),
    "bad value type": (lambda d: put(d.data, d.value_at("general.name"), 99, 4),
                       ["value type of 'general.name'", "is 99", "not a GGUF value type", "FLOAT64"]),
    "bad element type": (lambda d: put(d.data, d.value_at("test.ints") + 4, 13, 4),
                         ["element type of 'test.ints'", "is 13"]),
    "array of arrays": (lambda d: put(d.data, d.value_at("test.ints") + 4, 9, 4), ["'test.ints'", "array of arrays"]),
    "array count beyond the file": (lambda d: put(d.data, d.value_at("test.ints") + 8, 2**30, 8),
                                    ["'test.ints'", "array of 1073741824 INT32", "only"]),
    "empty key": (lambda d: put(d.data[:24], 24, 0, 8) + d.data[24 + 8 + len("general.architecture"):],
                  ["metadata key 0", "is empty"]),
    "key not UTF-8": (lambda d: d.data.replace(b"general.name", b"general.n\xffme", 1), ["metadata key", "not UTF-8"]),
    "alignment not UINT32": (lambda d: _with_alignment(d, gguf.GGUFValueType.UINT64, 32), ["general.alignment",
                                                                                          "UINT64", "UINT32"]),
    "alignment not a power of two": (lambda d: _with_alignment(d, gguf.GGUFValueType.UINT32, 48),
                                     ["general.alignment", "is 48", "power of two"]),
    "five dimensions": (lambda d: put(d.data, d.tensor_field("b", "n_dims"), 5, 4),
                        ["tensor 'b'", "5 dimensions", "1 to 4"]),
    "zero dimension": (lambda d: put(d.data, d.tensor_field("b", "dim0"), 0, 8),
                       ["tensor 'b'", "dimension 0 of 0", "positive"]),
    "unknown ggml type": (lambda d: put(d.data, d.tensor_field("a", "type"), 99, 4),
                          ["tensor 'a'", "type 99", "not a ggml type", "Q8_0"]),
    "removed ggml type": (lambda d: put(d.data, d.tensor_field("a", "type"), 4, 4),  # Q4_2, gone from ggml
                          ["tensor 'a'", "type 4", "not a ggml type"]),
    "row not whole blocks": (lambda d: put(d.data, d.tensor_field("a", "type"), int(gguf.GGMLQuantizationType.Q4_K),
                                           4), ["tensor 'a'", "rows of 32 elements", "Q4_K's block of 256"]),
    "tensor offset out of the file": (lambda d: put(d.data, d.tensor_field("b", "offset"), 2**20, 8),
                                      ["tensor 'b'", "beyond the end of the file"]),
    "misaligned offset": (lambda d: put(d.data, d.tensor_field("b", "offset"), 130, 8),
                          ["tensor 'b'", "data offset 130", "not a multiple of the alignment 32"]),
    "overlapping tensors": (lambda d: put(d.data, d.tensor_field("b", "offset"), 64, 8),
                            ["tensor 'b'", "data offset 64", "overlaps tensor 'a' (offsets 0 to 128"]),
    "gap before a tensor": (lambda d: put(d.data, d.tensor_field("a", "offset"), 32, 8),
                            ["tensor 'a'", "data offset 32, expected 0", "in order"]),
    "duplicate tensor name": (lambda d: d.data.replace(b"\x01\x00\x00\x00\x00\x00\x00\x00b",
                                                       b"\x01\x00\x00\x00\x00\x00\x00\x00a", 1),
                              ["tensor name 'a' appears twice", "tensors 0 and 1"]),
    "tensor name too long": (lambda d: _long_name(d), ["is 64 bytes long", "at most 63"]),
    "tensor name with a newline": (lambda d: d.data.replace(b"\x01\x00\x00\x00\x00\x00\x00\x00b",
                                                            b"\x01\x00\x00\x00\x00\x00\x00\x00\n", 1)[:-8],
                                   ["tensor '\\n'", "beyond the end of the file"]),
    "truncated tensor data": (lambda d: d.data[:-1], ["tensor 'b'", "beyond the end of the file"]),
    "truncated before the data section": (lambda d: d.data[:d.tensor_field("b", "offset") + 8],
                                          ["the tensor data would start at byte", "the file ends"]),
}


def _with_alignment(d: Damage, vtype: gguf.GGUFValueType, value: int) -> bytes:
    """The sound file with one more key, general.alignment, of the given type and value."""
    key = b"general.alignment"
    fmt = {gguf.GGUFValueType.UINT32: "<I", gguf.GGUFValueType.UINT64: "<Q"}[vtype]
    entry = struct.pack("<Q", len(key)) + key + struct.pack("<I", int(vtype)) + struct.pack(fmt, value)
    n_kv = struct.unpack_from("<Q", d.data, 16)[0]
    return put(d.data, 16, n_kv + 1, 8)[:24] + entry + d.data[24:]


def _long_name(d: Damage) -> bytes:
    """Tensor 'a' renamed to 64 bytes (ggml's GGML_MAX_NAME counts the NUL: 63 at most)."""
    at = d.tensor("a").info_offset
    return d.data[:at] + struct.pack("<Q", 64) + b"x" * 64 + d.data[at + 9:]


# the duplicate key: general.name renamed to general.architecture (same entry, new key)
def _duplicate_key(d: Damage) -> bytes:
    at = d.key("general.name")
    new = b"general.architecture"
    return d.data[:at] + struct.pack("<Q", len(new)) + new + d.data[at + 8 + len("general.name"):]


CATALOG["duplicate key"] = (_duplicate_key, ["metadata key 'general.architecture' appears twice", "bytes 24 and"])


@pytest.fixture(scope="module")
def damage(tmp_path_factory) -> Damage:
    return Damage(tmp_path_factory.mktemp("sound") / "sound.gguf")


def assert_refused(path: Path, phrases: list[str]) -> str:
    code, out, err, escaped, _, _ = run_inspect(path, timeout=10)
    assert escaped is None, escaped
    lines = err.splitlines()
    assert code == 1 and out == "", (code, out, err)
    assert len(lines) == 1 and lines[0].startswith(f"error: {path}: "), err
    for p in phrases:
        assert p in lines[0], lines[0]
    return lines[0]


@pytest.mark.parametrize("case", sorted(CATALOG))
def test_damage_is_refused(case: str, damage: Damage, tmp_path: Path):
    make, phrases = CATALOG[case]
    path = tmp_path / "damaged.gguf"
    path.write_bytes(make(damage))
    assert_refused(path, phrases)


def test_the_catalog_damages_a_sound_file(damage: Damage, tmp_path: Path):
    """The base of the catalog is itself accepted, by qconvert and by ggml."""
    path = tmp_path / "sound.gguf"
    path.write_bytes(damage.data)
    code, out, err, escaped, _, _ = run_inspect(path, timeout=10)
    assert (code, err, escaped) == (0, "", None)
    assert "general.name = 'Sound'" in out and "test.ints = [1, 2, 3] (3 items)" in out
    oracle = GGMLOracle.find()
    assert oracle is not None and oracle.accepts(path)
    path.write_bytes(damage.data[:10])
    assert not oracle.accepts(path)


def test_ggml_refuses_the_same_damages(damage: Damage, tmp_path: Path):
    """Every catalog damage that ggml's reader checks is refused by ggml too: the rules are its rules."""
    oracle = GGMLOracle.find()
    assert oracle is not None
    path = tmp_path / "damaged.gguf"
    # ggml reads headers only (no_alloc), so damages that live in the tensor data bounds, UTF-8 or
    # zero-sized dimensions are qconvert's own (llama.cpp's model loader checks the bounds later)
    own = {"truncated tensor data", "tensor offset out of the file", "key not UTF-8", "zero dimension",
           "tensor name with a newline"}
    accepted_by_ggml = []
    for case, (make, _) in sorted(CATALOG.items()):
        path.write_bytes(make(damage))
        if oracle.accepts(path) and case not in own:
            accepted_by_ggml.append(case)
    assert accepted_by_ggml == []


@pytest.mark.parametrize("case", ["bad magic", "huge tensor count", "duplicate tensor name"])
def test_damage_refused_from_the_command_line(case: str, damage: Damage, tmp_path: Path):
    path = tmp_path / "damaged.gguf"
    path.write_bytes(CATALOG[case][0](damage))
    proc = run_cli("inspect", path)
    assert_clean_failure(proc, tmp_path / "no-output", f"{path}: ", *CATALOG[case][1], code=1)


def test_not_a_regular_file(tmp_path: Path):
    assert_refused(tmp_path / "missing.gguf", ["no such file"])
    assert_refused(tmp_path, ["is a directory"])
    assert_refused(Path("/dev/null"), ["is a device"])
    fifo = tmp_path / "fifo.gguf"
    os.mkfifo(fifo)
    assert_refused(fifo, ["is a FIFO"])  # run_inspect's 10 s timer turns a hang into a failure


def test_every_kind_inspects_as_gguf_py_reads_it(tmp_path: Path):
    """A sound file is described as before (the values as gguf-py's reader gives them), and the
    strict reader returns what gguf-py's writer wrote: every value type, arrays, ranks 1 to 4, a
    64-byte alignment."""
    path = every_kind_gguf(tmp_path / "every.gguf")
    code, out, err, _, _, _ = run_inspect(path, timeout=10)
    assert code == 0 and err == ""
    reader = gguf.GGUFReader(path)
    lines = out.splitlines()
    assert lines[0] == f"{path}: GGUF, {len(reader.fields) - 3} metadata keys, {len(reader.tensors)} tensors"
    for name, field in reader.fields.items():
        if name.startswith("GGUF."):
            continue
        value = field.contents()
        if isinstance(value, list):
            want = f"[{', '.join(repr(v) for v in value[:5])}{', ...' if len(value) > 5 else ''}] ({len(value)} items)"
        else:
            want = repr(value)[:120]
        assert f"  {name} = {want}" in lines, name
    info = read_gguf(path)
    assert info.alignment == 64 and info.version == 3
    for t in reader.tensors:
        ours = next(x for x in info.tensors if x.name == t.name)
        assert (ours.shape, ours.type, ours.nbytes) == (tuple(int(d) for d in t.shape), t.tensor_type, t.n_bytes)
        assert info.data_offset + ours.offset == t.data_offset
        row = next(line for line in lines if line.startswith(f"  {t.name} "))
        assert row.split()[1:] == [t.tensor_type.name, "x".join(str(int(d)) for d in t.shape), str(t.n_bytes)]
    assert isinstance(info.fields["test.strs"].value, GGUFArray)
    assert info.fields["test.strs"].value.head == ("a", "", "ccc", "dd")


def test_conversion_inspects(tiny_checkpoint: Path, tmp_path: Path):
    """A file qconvert wrote (K-quant mix, F32 norms) is accepted, by qconvert and by ggml."""
    out = tmp_path / "tiny.gguf"
    proc = run_cli("quantize", tiny_checkpoint, "-t", "Q4_K_M", "-o", out, "--no-progress")
    assert proc.returncode == 0, proc.stderr
    code, shown, err, _, _, _ = run_inspect(out, timeout=10)
    assert code == 0 and err == "" and "general.architecture = 'llama'" in shown
    assert {t.name for t in read_gguf(out).tensors} == {t.name for t in gguf.GGUFReader(out).tensors}
    assert GGMLOracle.find().accepts(out)


@settings(max_examples=300, deadline=None, database=None)
@given(st.text(alphabet=st.sampled_from("ab'\"\\\x00\n\u00e9\ufffd\U0001f600"), max_size=300))
def test_long_values_are_cut_as_before(text: str):
    """Values print as `repr` cut to 120 characters did, without building the whole repr."""
    want = repr(text)
    assert short_repr(text) == (want if len(want) <= 120 else want[:117] + "...")
