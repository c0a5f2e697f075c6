"""Split output as llama.cpp's gguf-split writes it: the same file names, keys and tensor grouping
(tools/gguf-split/gguf-split.cpp, checked here against the source and against gguf-py's own
split writer byte for byte); llama.cpp loads the set from its first file with the same logits as
the single file; readers take the set whole or refuse it."""

from __future__ import annotations

import ctypes
import re
import sys
from pathlib import Path

import gguf
import numpy as np
import pytest

from conftest import MODELS, ROOT, llama_logits, run_cli

from qconvert import convert as conv
from qconvert.errors import GGUFError, UsageError
from qconvert.gguf_read import read_gguf, read_gguf_set
from qconvert.options import parse_size
from qconvert.writer import Split, member_path

sys.path.insert(0, str(ROOT / "scripts"))
from llama_cpp_src import llama_cpp_src  # noqa: E402

V = gguf.GGUFValueType
MODEL = MODELS / "llama-bpe-bf16-sharded"  # 2 layers: 21 tensors of several sizes
SPLIT_KEYS = [("split.no", V.UINT16), ("split.count", V.UINT16), ("split.tensors.count", V.INT32)]


def pad(n: int, alignment: int = 32) -> int:
    return -(-n // alignment) * alignment


def gguf_split_groups(sizes: list[int], max_bytes: int | None = None, max_tensors: int = 128) -> list[list[int]]:
    """gguf-split's split_strategy (tools/gguf-split/gguf-split.cpp), statement for statement: the
    tensor indices of each file for `--split-max-size max_bytes` or else `--split-max-tensors`."""
    groups: list[list[int]] = [[]]
    curr_tensors_size = 0
    n_tensors = len(sizes)
    for i, nbytes in enumerate(sizes):
        n_bytes = pad(nbytes)  # GGML_PAD(ggml_nbytes(t), GGUF_DEFAULT_ALIGNMENT)
        next_tensors_size = curr_tensors_size + n_bytes
        if max_bytes is not None:  # MODE_SIZE
            should_split = next_tensors_size > max_bytes
        else:  # MODE_TENSOR
            should_split = 0 < i < n_tensors and i % max_tensors == 0
        if should_split:
            assert groups[-1], "gguf-split: one of splits have 0 tensors"
            groups.append([])
            curr_tensors_size = n_bytes
        else:
            curr_tensors_size = next_tensors_size
        groups[-1].append(i)
    return groups


def test_the_transcription_follows_the_source():
    """The statements gguf_split_groups and the key checks below rely on, in llama.cpp's tree of
    the llama-cpp-python the tests load files with."""
    src = (llama_cpp_src() / "tools" / "gguf-split" / "gguf-split.cpp").read_text()
    for line in ["size_t n_bytes = GGML_PAD(ggml_nbytes(t), GGUF_DEFAULT_ALIGNMENT);",
                 "size_t next_tensors_size = curr_tensors_size + n_bytes;",
                 "return next_size > params.n_bytes_split;",
                 "return i_tensor > 0 && i_tensor < n_tensors && i_tensor % params.n_split_tensors == 0;",
                 "curr_tensors_size = n_bytes;",
                 "if (i_split == 0) {\n                gguf_set_kv(ctx_out, ctx_gguf);",
                 "gguf_set_val_u16(ctx_out, LLM_KV_SPLIT_NO, i_split);",
                 "gguf_set_val_u16(ctx_out, LLM_KV_SPLIT_COUNT, 0); // placeholder",
                 "gguf_set_val_i32(ctx_out, LLM_KV_SPLIT_TENSORS_COUNT, n_tensors);",
                 "n_bytes = (size_t)n * 1000 * 1000 * 1000; // gigabytes"]:
        assert line in src, line
    arch = (llama_cpp_src() / "src" / "llama-arch.cpp").read_text()
    for key in ("split.no", "split.count", "split.tensors.count"):
        assert re.search(rf'LLM_KV_SPLIT_\w+,\s+"{re.escape(key)}"', arch), key


def test_names_are_llama_split_path():
    import llama_cpp

    for i, n in [(0, 3), (2, 3), (0, 12), (11, 12)]:
        buf = ctypes.create_string_buffer(512)
        llama_cpp.llama_split_path(buf, 512, b"/models/m", i, n)
        assert str(member_path(Path("/models/m.gguf"), i, n)) == buf.value.decode()


@pytest.fixture(scope="module")
def single(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("single") / "m.gguf"
    conv.write(conv.prepare(MODEL, "Q8_0"), out)
    return out


def split_set(tmp_path: Path, split: Split, qtype: str = "Q8_0") -> list[Path]:
    result = conv.write(conv.prepare(MODEL, qtype, split=split), tmp_path / "m.gguf")
    return [f.path for f in result.files]


def fields(path: Path) -> list[tuple[str, list, object]]:
    """The metadata in order, but the provenance record (which holds the split options)."""
    return [(k, f.types, f.contents()) for k, f in gguf.GGUFReader(path).fields.items()
            if not k.startswith(("GGUF.", "qconvert."))]


@pytest.mark.parametrize("limit", [{"max_tensors": 5}, {"max_tensors": 20}, {"max_bytes": 30_000},
                                   {"max_bytes": 60_000}, {"max_bytes": 45_000}])
def test_keys_and_grouping_are_gguf_splits(single: Path, tmp_path: Path, limit: dict):
    files = split_set(tmp_path, Split(**limit))
    whole = gguf.GGUFReader(single)
    sizes = [int(t.n_bytes) for t in whole.tensors]
    groups = gguf_split_groups(sizes, limit.get("max_bytes"), limit.get("max_tensors", 128))
    assert len(files) == len(groups) > 1
    assert files == [tmp_path / f"m-{i:05d}-of-{len(groups):05d}.gguf" for i in range(1, len(groups) + 1)]
    names = [t.name for t in whole.tensors]
    data = {t.name: t.data.tobytes() for t in whole.tensors}
    n = len(names)
    for i, (path, group) in enumerate(zip(files, groups)):
        reader = gguf.GGUFReader(path)
        assert [t.name for t in reader.tensors] == [names[k] for k in group]
        assert all(t.data.tobytes() == data[t.name] for t in reader.tensors)
        split_fields = [(k, [t], v) for (k, t), v in zip(SPLIT_KEYS, (i, len(groups), n))]
        # the first file: every key of the single file, then the split keys; the others: those alone
        assert fields(path) == (fields(single) if i == 0 else []) + split_fields
        assert ("qconvert.provenance" in gguf.GGUFReader(path).fields) == (i == 0)
    assert [f.path for f in read_gguf_set(files[0])] == files


@pytest.mark.parametrize("max_tensors", [3, 7])
def test_byte_identical_to_gguf_pys_split_writer(single: Path, tmp_path: Path, max_tensors: int):
    """gguf-py (llama.cpp's own Python writer) splits by tensor count as gguf-split does: the
    keys of our first file (the split keys aside) and the single file's tensors given to it
    make the very bytes of our set."""
    ours = split_set(tmp_path, Split(max_tensors=max_tensors))
    keys = gguf.GGUFReader(ours[0]).fields
    writer = gguf.GGUFWriter(tmp_path / "theirs" / "m.gguf", keys["general.architecture"].contents(),
                             split_max_tensors=max_tensors)
    (tmp_path / "theirs").mkdir()
    for key, field in keys.items():
        if key.startswith(("GGUF.", "split.")) or key == "general.architecture":
            continue
        sub = field.types[1] if field.types[0] == V.ARRAY else None
        writer.add_key_value(key, field.contents(), field.types[0], sub_type=sub)
    for t in gguf.GGUFReader(single).tensors:
        writer.add_tensor(t.name, t.data, raw_dtype=t.tensor_type)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    theirs = sorted((tmp_path / "theirs").iterdir())
    assert [p.name for p in theirs] == [p.name for p in ours]
    for a, b in zip(ours, theirs):
        assert a.read_bytes() == b.read_bytes(), a.name


@pytest.mark.parametrize("split", [Split(max_tensors=4), Split(max_bytes=30_000)])
def test_llama_cpp_loads_the_set_with_the_logits_of_the_single_file(single: Path, tmp_path: Path, split: Split):
    files = split_set(tmp_path, split)
    assert len(files) > 2
    tokens = [1, 17, 250, 3, 99, 42, 7]
    want = llama_logits(single, tokens)
    got = llama_logits(files[0], tokens)
    np.testing.assert_array_equal(got, want)


def test_one_file_when_the_set_would_have_one(single: Path, tmp_path: Path):
    out = tmp_path / "m.gguf"
    result = conv.write(conv.prepare(MODEL, "Q8_0", split=Split(max_bytes=10**12, max_tensors=1000)), out)
    assert [f.path for f in result.files] == [out]
    assert "split.count" not in read_gguf(out).fields
    assert fields(out) == fields(single)


def test_an_oversized_first_tensor_stays_in_the_first_file(tmp_path: Path):
    """gguf-split gives up there ("one of splits have 0 tensors"); each oversized tensor gets a file."""
    files = split_set(tmp_path, Split(max_bytes=1))
    assert len(files) == len(conv.prepare(MODEL, "Q8_0").rows)
    assert all(len(read_gguf(p).tensors) == 1 for p in files)


@pytest.mark.parametrize("qtype", ["Q8_0", "F16", "Q4_K_M"])
def test_predicted_sizes_of_a_set_are_exact(tmp_path: Path, qtype: str):
    job = conv.prepare(MODEL, qtype, split=Split(max_bytes=25_000))
    predicted = conv.predict_files(job, tmp_path / "m.gguf")
    result = conv.write(job, tmp_path / "m.gguf")
    assert len(predicted) > 1
    assert [(f.path, f.nbytes) for f in predicted] == [(p.path, p.path.stat().st_size) for p in result.files]
    assert result.nbytes == sum(f.nbytes for f in predicted) and result.path == predicted[0].path


def test_read_gguf_set_refuses_an_incomplete_or_mixed_set(tmp_path: Path):
    files = split_set(tmp_path, Split(max_tensors=6))
    assert len(files) == 4
    for p in files:  # any member names the set
        assert [f.path for f in read_gguf_set(p)] == files
    saved = files[2].read_bytes()
    files[2].unlink()
    with pytest.raises(GGUFError, match=r"m-00003-of-00004\.gguf: missing, file 3 of the split set of 4"):
        read_gguf_set(files[0])
    # a member of another set (another count) in its place
    (tmp_path / "other").mkdir()
    other = split_set(tmp_path / "other", Split(max_tensors=5))
    assert len(other) == 5
    files[2].write_bytes(other[2].read_bytes())
    with pytest.raises(GGUFError, match="split keys"):
        read_gguf_set(files[0])
    files[2].write_bytes(saved)
    assert len(read_gguf_set(files[1])) == 4
    # a renamed first file: llama.cpp could not find the others
    renamed = tmp_path / "renamed.gguf"
    renamed.write_bytes(files[0].read_bytes())
    with pytest.raises(GGUFError, match="must be named NAME-00001-of-00004.gguf"):
        read_gguf_set(renamed)
    # a truncated member is refused by the strict reader
    files[3].write_bytes(files[3].read_bytes()[:-64])
    with pytest.raises(GGUFError, match="m-00004-of-00004.gguf"):
        read_gguf_set(files[0])


def test_parse_size():
    assert parse_size("50G") == 50 * 10**9 and parse_size("300M") == 300 * 10**6
    assert parse_size("2t") == 2 * 10**12 and parse_size("7k") == 7000 and parse_size("123") == 123
    for bad in ("0", "-5G", "1.5G", "G", "5X", "", "5 GB"):
        with pytest.raises(UsageError, match="--split-max-size"):
            parse_size(bad)


def test_quantize_and_inspect_a_set(tmp_path: Path):
    out = tmp_path / "m.gguf"
    proc = run_cli("quantize", MODEL, "-t", "Q8_0", "-o", out, "--no-progress", "--split-max-tensors", "8")
    assert proc.returncode == 0, proc.stderr
    files = [tmp_path / f"m-0000{i}-of-00003.gguf" for i in (1, 2, 3)]
    assert sorted(tmp_path.iterdir()) == files and str(files[0]) in proc.stdout
    assert [len(f.tensors) for f in read_gguf_set(files[1])] == [8, 8, 5]
    # another split of the same output replaces the whole earlier set, and only with --overwrite
    again = ("quantize", MODEL, "-t", "Q8_0", "-o", out, "--no-progress", "--split-max-size", "40K")
    proc = run_cli(*again)
    assert proc.returncode == 2 and f"{files[0]} exists; pass --overwrite" in proc.stderr
    assert sorted(tmp_path.iterdir()) == files
    proc = run_cli(*again, "--overwrite")
    assert proc.returncode == 0, proc.stderr
    assert sorted(tmp_path.iterdir()) == [tmp_path / f"m-0000{i}-of-00005.gguf" for i in range(1, 6)]
    proc = run_cli("quantize", MODEL, "-t", "Q8_0", "-o", out, "--no-progress", "--overwrite")
    assert proc.returncode == 0, proc.stderr
    assert sorted(tmp_path.iterdir()) == [out]
    proc = run_cli("quantize", MODEL, "-t", "Q8_0", "-o", out, "--no-progress", "--split-max-tensors", "8")
    assert proc.returncode == 2 and f"{out} exists; pass --overwrite" in proc.stderr
    assert run_cli("quantize", MODEL, "-t", "Q8_0", "-o", out, "--no-progress", "--split-max-tensors", "8",
                   "--overwrite").returncode == 0
    assert sorted(tmp_path.iterdir()) == files
    proc = run_cli("quantize", MODEL, "-t", "Q8_0", "-o", tmp_path / "b.gguf", "--no-progress",
                   "--split-max-size", "nope")
    assert proc.returncode == 2 and "--split-max-size 'nope'" in proc.stderr
    proc = run_cli("inspect", files[2])
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].startswith(f"{files[2]}: GGUF split set of 3 files,") and lines[0].endswith(" 21 tensors")
    assert lines[1].startswith(f"  file 1: {files[0]} (") and "  split.count = 3" in lines
    assert "  general.architecture = 'llama'" in lines
    assert sum(1 for line in lines if re.match(r"  (token_embd|output|blk)\S* ", line)) == 21
