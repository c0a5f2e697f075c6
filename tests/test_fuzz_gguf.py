"""Fuzzing `qconvert inspect`: for every mutation of a real GGUF file it either refuses (exit 1,
one line "error: FILE: ...") or succeeds, without a traceback, a hang or more memory than the
file's size (plus a fixed allowance for the CLI), and whatever it accepts ggml's own reader
reads too.

The engine is scripts/fuzz_gguf.py (run it for long campaigns: `--count 10000`); here a seeded
random-mutation loop of moderate size, and hypothesis for byte patches anywhere, any value in any
count, length, type or offset field, and sound files of random content (which must be accepted
and read back exactly).
"""

from __future__ import annotations

import sys
from pathlib import Path

import gguf
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import ROOT, report

sys.path.insert(0, str(ROOT / "scripts"))
import fuzz_gguf  # noqa: E402

from qconvert.gguf_read import GGUFArray, read_gguf  # noqa: E402

SEEDED_COUNT = 400  # about 20 s on an idle 2-core machine; the script runs as many as asked
HYPOTHESIS = settings(max_examples=80, deadline=None, database=None,
                      suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("fuzz-gguf")


@pytest.fixture(scope="module")
def seeds(workdir: Path) -> dict[str, bytes]:
    made = fuzz_gguf.make_seeds(workdir)
    fuzz_gguf.warm_up(workdir, made)
    return made


@pytest.fixture(scope="module")
def oracle() -> fuzz_gguf.GGMLOracle:
    found = fuzz_gguf.GGMLOracle.find()
    assert found is not None, "libggml-base from llama-cpp-python is needed as the judge"
    return found


@pytest.fixture(scope="module", autouse=True)
def warmed(seeds):
    """Every test here after the seeds' warm-up run (imports are not a file's memory)."""


def assert_good(path: Path, data: bytes, oracle, what: str) -> fuzz_gguf.Outcome:
    path.write_bytes(data)
    outcome = fuzz_gguf.judge(path, len(data), 10.0, oracle)
    assert outcome.kind in fuzz_gguf.GOOD, f"{what}: {outcome.kind}: {outcome.detail}"
    return outcome


def test_seeds_are_accepted(seeds: dict[str, bytes], workdir: Path, oracle):
    for name, data in seeds.items():
        assert assert_good(workdir / name, data, oracle, name).kind == "accepted", name


def test_seeded_mutations(seeds: dict[str, bytes], workdir: Path, oracle):
    counts, bad = fuzz_gguf.fuzz(seeds, SEEDED_COUNT, seed=20261203, workdir=workdir, oracle=oracle)
    shown = [f"{c.seed_name}: {c.mutation}: {o.kind}: {o.detail}" for c, o in bad[:5]]
    assert bad == [], "\n".join(shown)
    # both outcomes occur, so the loop tests something in each direction
    assert counts["refused"] > SEEDED_COUNT // 2 and counts["accepted"] > 0, counts
    report(f"GGUF fuzz: {SEEDED_COUNT} mutations: {counts['refused']} refused, {counts['accepted']} accepted, 0 bad")


def faulty(fault):
    """inspect_report with `fault` run first (the report is the real one)."""
    from qconvert.gguf_info import inspect_report
    return lambda path, tensors=True: (fault(), inspect_report(path, tensors))[1]


@pytest.mark.parametrize("fault, kind", [
    (lambda: len(bytearray(40 * 2**20)), "memory"),
    (lambda: __import__("time").sleep(5), "hang"),
    (lambda: {}["no such key"], "crash"),
    (lambda: print("noise", file=sys.stderr), "stderr"),
])
def test_the_judge_sees_bad_outcomes(fault, kind, seeds, workdir: Path, oracle, monkeypatch):
    """The harness itself: an allocation beyond the file, a hang, a traceback or a stray stderr
    line in inspect are each reported as bad."""
    import qconvert.gguf_info

    monkeypatch.setattr(qconvert.gguf_info, "inspect_report", faulty(fault))
    path = workdir / "judged.gguf"
    path.write_bytes(seeds["metadata-only.gguf"])
    assert fuzz_gguf.judge(path, path.stat().st_size, 0.5, oracle).kind == kind


def test_the_judge_sees_what_ggml_refuses(seeds, workdir: Path, oracle, monkeypatch):
    """An inspect that accepted a file ggml's reader refuses would be reported."""
    import qconvert.gguf_info
    from qconvert.report import InspectFile, InspectReport

    def accept(path, tensors=True):
        return InspectReport("inspect", path, [InspectFile(path, 30, 0)], 30, 3, 32, [], [])

    monkeypatch.setattr(qconvert.gguf_info, "inspect_report", accept)
    path = workdir / "judged.gguf"
    path.write_bytes(seeds["metadata-only.gguf"][:30])
    assert fuzz_gguf.judge(path, 30, 10.0, oracle).kind == "oracle"


@pytest.fixture(scope="module")
def every_kind(seeds: dict[str, bytes], workdir: Path) -> tuple[bytes, fuzz_gguf.Layout]:
    data = seeds["every-kind.gguf"]
    path = workdir / "every-kind-layout.gguf"
    path.write_bytes(data)
    return data, fuzz_gguf.layout(path)


@HYPOTHESIS
@given(patches=st.lists(st.tuples(st.integers(min_value=0), st.binary(min_size=1, max_size=9)), min_size=1,
                        max_size=4),
       cut=st.one_of(st.none(), st.integers(min_value=0)))
def test_byte_patches(patches, cut, every_kind, workdir: Path, oracle):
    data, _ = every_kind
    buf = bytearray(data)
    for at, new in patches:
        at %= len(buf)
        buf[at:at + len(new)] = new
    if cut is not None:
        del buf[cut % (len(buf) + 1):]
    assert_good(workdir / "patched.gguf", bytes(buf), oracle, f"patches {patches}, cut {cut}")


@HYPOTHESIS
@given(pick=st.integers(min_value=0), value=st.one_of(st.integers(0, 64), st.integers(0, 2**64 - 1),
                                                       st.sampled_from(fuzz_gguf.INTERESTING)))
def test_structure_fields(pick: int, value: int, every_kind, workdir: Path, oracle):
    """Any value in any count, length, type, dimension, offset or alignment field."""
    data, lay = every_kind
    at, width, label = lay.slots[pick % len(lay.slots)]
    mutated = data[:at] + (value % 2 ** (8 * width)).to_bytes(width, "little") + data[at + width:]
    assert_good(workdir / "field.gguf", mutated, oracle, f"{label} = {value}")


V = gguf.GGUFValueType
# kind -> (values, value type, element type): every type gguf-py writes, arrays of several
VALUE_KINDS = {
    "u8": (st.integers(0, 255), V.UINT8, None), "i8": (st.integers(-128, 127), V.INT8, None),
    "u16": (st.integers(0, 2**16 - 1), V.UINT16, None), "i16": (st.integers(-(2**15), 2**15 - 1), V.INT16, None),
    "u32": (st.integers(0, 2**32 - 1), V.UINT32, None), "i32": (st.integers(-(2**31), 2**31 - 1), V.INT32, None),
    "u64": (st.integers(0, 2**64 - 1), V.UINT64, None), "i64": (st.integers(-(2**63), 2**63 - 1), V.INT64, None),
    "f32": (st.floats(width=32, allow_nan=False), V.FLOAT32, None),
    "f64": (st.floats(allow_nan=False), V.FLOAT64, None),
    "bool": (st.booleans(), V.BOOL, None), "str": (st.text(max_size=20), V.STRING, None),
    # gguf-py refuses to write empty arrays
    "u8s": (st.lists(st.integers(0, 255), min_size=1, max_size=12), V.ARRAY, V.UINT8),
    "i32s": (st.lists(st.integers(-(2**31), 2**31 - 1), min_size=1, max_size=12), V.ARRAY, V.INT32),
    "f32s": (st.lists(st.floats(width=32, allow_nan=False), min_size=1, max_size=12), V.ARRAY, V.FLOAT32),
    "bools": (st.lists(st.booleans(), min_size=1, max_size=12), V.ARRAY, V.BOOL),
    "strs": (st.lists(st.text(max_size=8), min_size=1, max_size=12), V.ARRAY, V.STRING),
}
TENSOR_TYPES = [gguf.GGMLQuantizationType.F32, gguf.GGMLQuantizationType.F16, gguf.GGMLQuantizationType.I32,
                gguf.GGMLQuantizationType.Q8_0]


@st.composite
def sound_files(draw):
    keys = draw(st.lists(st.from_regex(r"[a-z][a-z_]{0,6}(\.[a-z_]{1,6}){1,2}", fullmatch=True), unique=True,
                         max_size=8).filter(lambda ks: "general.architecture" not in ks
                                            and "general.alignment" not in ks))
    fields = []
    for key in keys:
        kind = draw(st.sampled_from(sorted(VALUE_KINDS)))
        fields.append((key, kind, draw(VALUE_KINDS[kind][0])))
    tensors = []
    for i in range(draw(st.integers(0, 4))):
        qtype = draw(st.sampled_from(TENSOR_TYPES))
        shape = draw(st.lists(st.integers(1, 4), min_size=0, max_size=3))
        row = 32 * draw(st.integers(1, 2)) if qtype == gguf.GGMLQuantizationType.Q8_0 else draw(st.integers(1, 40))
        tensors.append((f"t{i}", qtype, tuple(shape) + (row,)))  # numpy order: the row last
    alignment = draw(st.sampled_from([None, 8, 32, 64, 256]))
    return fields, tensors, alignment


def write_sound(path: Path, fields, tensors, alignment) -> None:
    w = gguf.GGUFWriter(path, "llama")
    if alignment is not None:
        w.add_uint32("general.alignment", alignment)
        w.data_alignment = alignment
    for key, kind, value in fields:
        _, vtype, sub_type = VALUE_KINDS[kind]
        w.add_key_value(key, value, vtype, sub_type)
    rng = np.random.default_rng(0)
    for name, qtype, shape in tensors:
        if qtype == gguf.GGMLQuantizationType.Q8_0:
            raw = gguf.quants.quantize(rng.standard_normal(shape).astype(np.float32), qtype)
            w.add_tensor(name, raw, raw_dtype=qtype)
        else:
            dtype = {gguf.GGMLQuantizationType.F32: np.float32, gguf.GGMLQuantizationType.F16: np.float16,
                     gguf.GGMLQuantizationType.I32: np.int32}[qtype]
            w.add_tensor(name, rng.integers(-9, 9, size=shape).astype(dtype))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


@settings(max_examples=40, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(spec=sound_files())
def test_sound_files_are_read_back(spec, workdir: Path, oracle):
    """Whatever gguf-py writes, qconvert reads back exactly, and inspect accepts."""
    fields, tensors, alignment = spec
    path = workdir / "sound.gguf"
    write_sound(path, fields, tensors, alignment)
    assert assert_good(path, path.read_bytes(), oracle, str(spec)).kind == "accepted"
    info = read_gguf(path)
    assert info.alignment == (alignment or 32)
    for key, kind, value in fields:
        got = info.fields[key].value
        if isinstance(got, GGUFArray):
            assert got.count == len(value) and list(got.head) == value[:len(got.head)], key
        else:
            assert got == value, key
    reader = gguf.GGUFReader(path)
    assert [(t.name, t.shape, t.type, t.nbytes) for t in info.tensors] == [
        (t.name, tuple(int(d) for d in t.shape), t.tensor_type, int(t.n_bytes)) for t in reader.tensors]
    assert [info.data_offset + t.offset for t in info.tensors] == [t.data_offset for t in reader.tensors]
