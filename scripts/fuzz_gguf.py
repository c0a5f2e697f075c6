"""Fuzz `qconvert inspect` with mutated GGUF files.

    python scripts/fuzz_gguf.py --count 10000 --seed 1 [--keep DIR] [--timeout 10] [--only FILE.gguf ...]

Seeds are real GGUF files: the tiny Llama of tests/conftest.py converted by qconvert to Q8_0 and
Q4_K_M, one file written with gguf-py that holds every value type, array kind and tensor rank,
and a metadata-only file. Each case applies one seeded random mutation to one seed (bit flips,
interesting values, truncation, insertion, deletion, a count, length, type or offset field set to
an interesting value, a name copied over another), writes it, and runs the CLI in this process
(`qconvert.cli.main` with sys.argv patched) under a timer and tracemalloc. A case is good when
inspect either refuses (exit 1, exactly one stderr line "error: FILE: ...", nothing on stdout)
or succeeds (exit 0, nothing on stderr); anything else is bad: an exception escaping main, a
hang (over --timeout seconds), another exit code or stderr shape, more Python memory at peak
than the file's size plus a fixed allowance for the CLI itself, or a file accepted that ggml's
own `gguf_init_from_file` (libggml from llama-cpp-python, when installed) refuses.

Prints the count of each outcome and the seconds taken; exits 1 if any case was bad (with
--keep, the bad files are saved there with their mutation in the name).
"""

from __future__ import annotations

import argparse
import ctypes
import io
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
import tracemalloc
import traceback
from collections import Counter
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

# Python memory a run of the CLI may take beyond the file's size: typer building the command and
# the description text (measured: 0.15 to 0.25 MiB on the seeds).
CLI_ALLOWANCE = 2**20
INTERESTING = [0, 1, 2, 3, 4, 5, 7, 8, 9, 12, 13, 16, 31, 32, 33, 63, 64, 65, 127, 128, 255, 256, 4096,
               0x7FFF, 0x8000, 0xFFFF, 0x10000, 2**31 - 1, 2**31, 2**32 - 1, 2**32, 2**62, 2**63 - 1, 2**63,
               2**64 - 1]
GOOD = ("refused", "accepted")


@dataclass
class Case:
    seed_name: str
    mutation: str
    data: bytes


@dataclass
class Outcome:
    kind: str  # "refused", "accepted", or a bad kind: crash, hang, exit, stderr, memory, oracle
    detail: str
    seconds: float
    peak: int


# -- seeds -------------------------------------------------------------------------------------

def make_seeds(workdir: Path) -> dict[str, bytes]:
    """The corpus: qconvert conversions of the tiny Llama, and two files written with gguf-py."""
    from conftest import tiny_llama_config, tiny_llama_tensors, tokenizer_vocab_size, write_checkpoint

    cfg = tiny_llama_config(tokenizer_vocab_size("tiny-bpe"))
    model = write_checkpoint(workdir / "tiny", cfg, tiny_llama_tensors(cfg))
    seeds = {}
    for qtype in ("Q8_0", "Q4_K_M"):
        out = workdir / f"tiny-{qtype}.gguf"
        subprocess.run([sys.executable, "-m", "qconvert", "quantize", str(model), "-t", qtype, "-o", str(out),
                        "--no-progress", "--overwrite"], check=True, capture_output=True)
        seeds[out.name] = out.read_bytes()
    seeds["every-kind.gguf"] = every_kind_gguf(workdir / "every-kind.gguf").read_bytes()
    seeds["metadata-only.gguf"] = metadata_only_gguf(workdir / "metadata-only.gguf").read_bytes()
    return seeds


def every_kind_gguf(path: Path) -> Path:
    """Every value type, array kind and tensor rank, a 64-byte alignment, and raw quantized data."""
    import gguf

    w = gguf.GGUFWriter(path, "llama")
    w.add_uint32("general.alignment", 64)
    w.data_alignment = 64
    w.add_uint8("test.u8", 200)
    w.add_int8("test.i8", -5)
    w.add_uint16("test.u16", 60000)
    w.add_int16("test.i16", -30000)
    w.add_int32("test.i32", -7)
    w.add_uint64("test.u64", 2**40)
    w.add_int64("test.i64", -(2**40))
    w.add_float32("test.f32", 0.5)
    w.add_float64("test.f64", 1e-300)
    w.add_bool("test.bool", True)
    w.add_string("test.str", "héllo\nwörld")
    w.add_string("test.empty", "")
    w.add_array("test.ints", [1, 2, 3, 4, 5, 6, 7])
    w.add_array("test.floats", [0.25, -1.5])
    w.add_array("test.strs", ["a", "", "ccc", "dd"])
    w.add_array("test.bools", [True, False, True])
    w.add_array("test.none", [])
    rng = np.random.default_rng(0)
    w.add_tensor("one_d", rng.standard_normal(96).astype(np.float32))
    w.add_tensor("three_d", rng.standard_normal((2, 3, 32)).astype(np.float16))
    w.add_tensor("four_d", np.arange(2 * 1 * 3 * 4, dtype=np.int32).reshape(2, 1, 3, 4))
    q8 = gguf.quants.quantize(rng.standard_normal((4, 64)).astype(np.float32), gguf.GGMLQuantizationType.Q8_0)
    w.add_tensor("q8", q8, raw_dtype=gguf.GGMLQuantizationType.Q8_0)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def metadata_only_gguf(path: Path) -> Path:
    """No tensors at all, as a vocabulary GGUF: no data section."""
    import gguf

    w = gguf.GGUFWriter(path, "llama")
    w.add_array("tokenizer.ggml.tokens", ["<s>", "</s>", "a", "b", "ab"])
    w.add_array("tokenizer.ggml.token_type", [3, 3, 1, 1, 1])
    w.add_string("tokenizer.ggml.model", "gpt2")
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.close()
    return path


# -- mutations ---------------------------------------------------------------------------------

@dataclass
class Layout:
    """Where a seed's structure lies: fields worth mutating (offset, width, label) and names."""

    structure_end: int
    slots: list[tuple[int, int, str]]
    names: list[tuple[int, int]]  # (offset of the bytes, length) of keys and tensor names


def layout(path: Path) -> Layout:
    from gguf import GGUFValueType

    from qconvert.gguf_read import read_gguf

    info = read_gguf(path)
    slots = [(4, 4, "version"), (8, 8, "tensor count"), (16, 8, "key count")]
    names = []
    for f in info.fields.values():
        k = len(f.key.encode())
        names.append((f.offset + 8, k))
        t = f.offset + 8 + k
        slots += [(f.offset, 8, f"key length of {f.key}"), (t, 4, f"value type of {f.key}")]
        if f.type == GGUFValueType.STRING:
            slots.append((t + 4, 8, f"string length of {f.key}"))
        elif f.type == GGUFValueType.ARRAY:
            slots += [(t + 4, 4, f"element type of {f.key}"), (t + 8, 8, f"element count of {f.key}")]
            if f.value.item_type == GGUFValueType.STRING and f.value.count:
                slots.append((t + 16, 8, f"length of element 0 of {f.key}"))
        elif f.key == "general.alignment":
            slots.append((t + 4, 4, "general.alignment"))
    for ti in info.tensors:
        n = len(ti.name.encode())
        p = ti.info_offset
        names.append((p + 8, n))
        slots += [(p, 8, f"name length of {ti.name}"), (p + 8 + n, 4, f"n_dims of {ti.name}")]
        dims_at = p + 12 + n
        slots += [(dims_at + 8 * j, 8, f"dimension {j} of {ti.name}") for j in range(len(ti.shape))]
        type_at = dims_at + 8 * len(ti.shape)
        slots += [(type_at, 4, f"type of {ti.name}"), (type_at + 4, 8, f"offset of {ti.name}")]
    end = info.data_offset if info.tensors else info.size
    return Layout(end, slots, names)


def mutate(data: bytes, lay: Layout, rng: random.Random) -> tuple[bytes, str]:
    """One random mutation of `data`, mostly inside its structure (the header, metadata and tensor
    infos), since a change inside tensor data is just other weights."""
    buf = bytearray(data)

    def position() -> int:
        return rng.randrange(lay.structure_end) if rng.random() < 0.85 else rng.randrange(len(buf))

    kind = rng.choice(["flip", "flip", "interesting", "truncate", "insert", "delete", "field", "field", "field",
                       "name"])
    if kind == "flip":
        bits = [position() * 8 + rng.randrange(8) for _ in range(rng.choice([1, 1, 2, 4]))]
        for b in bits:
            buf[b // 8] ^= 1 << (b % 8)
        return bytes(buf), f"flip bits {bits}"
    if kind == "interesting":
        width = rng.choice([1, 2, 4, 8])
        at = min(position(), len(buf) - width)
        value = rng.choice(INTERESTING) % 2 ** (8 * width)
        buf[at:at + width] = value.to_bytes(width, "little")
        return bytes(buf), f"set {width} bytes at {at} to {value}"
    if kind == "truncate":
        at = position()
        return bytes(buf[:at]), f"truncate to {at} bytes"
    if kind == "insert":
        at, n = position(), rng.choice([1, 2, 3, 4, 8, 16, 33])
        buf[at:at] = bytes(rng.randrange(256) for _ in range(n))
        return bytes(buf), f"insert {n} bytes at {at}"
    if kind == "delete":
        at, n = position(), rng.choice([1, 2, 3, 4, 8, 16, 33])
        del buf[at:at + n]
        return bytes(buf), f"delete {n} bytes at {at}"
    if kind == "field":
        at, width, label = rng.choice(lay.slots)
        old = int.from_bytes(buf[at:at + width], "little")
        how = rng.random()
        value = (rng.choice(INTERESTING) if how < 0.5 else old + rng.choice([-8, -4, -2, -1, 1, 2, 4, 8, 32, 64])
                 if how < 0.85 else rng.randrange(48))
        value %= 2 ** (8 * width)
        buf[at:at + width] = value.to_bytes(width, "little")
        return bytes(buf), f"{label} (byte {at}) {old} -> {value}"
    # "name": copy one key's or tensor's name over another of the same length (duplicates), or
    # a byte of it with a control or non-UTF-8 byte
    at, n = rng.choice(lay.names)
    same = [(a, m) for a, m in lay.names if m == n and a != at]
    if same and rng.random() < 0.7:
        src, _ = rng.choice(same)
        buf[at:at + n] = data[src:src + n]
        return bytes(buf), f"name at {at} copied from {src}"
    if n:
        j = at + rng.randrange(n)
        buf[j] = rng.choice([0, 0x0A, 0x80, 0xC3, 0xFF])
        return bytes(buf), f"name byte {j} set to {buf[j]}"
    return bytes(buf), "no change"


# -- running -----------------------------------------------------------------------------------

class Hang(BaseException):
    """Raised by the timer; a BaseException so that the CLI's own handlers do not catch it."""


def run_inspect(path: Path, timeout: float) -> tuple[int | None, str, str, str | None, int, float]:
    """`qconvert inspect PATH` in this process: (exit code, stdout, stderr, escaped exception or
    "hang", peak Python memory, seconds)."""
    from qconvert.cli import main

    out, err = io.StringIO(), io.StringIO()
    saved_argv = sys.argv
    sys.argv = ["qconvert", "inspect", str(path)]
    code, escaped = None, None

    def on_timer(signum, frame):
        raise Hang()

    previous = signal.signal(signal.SIGALRM, on_timer)
    tracing = tracemalloc.is_tracing()  # traced for this run only: tracing slows every allocation
    if not tracing:
        tracemalloc.start()
    tracemalloc.reset_peak()
    base = tracemalloc.get_traced_memory()[0]
    start = time.perf_counter()
    signal.setitimer(signal.ITIMER_REAL, timeout)
    try:
        with redirect_stdout(out), redirect_stderr(err):
            main()
        code = 0
    except SystemExit as e:
        code = 0 if e.code is None else e.code if isinstance(e.code, int) else 1
    except Hang:
        escaped = "hang"
    except BaseException:  # noqa: BLE001 - the point is to see anything that escapes
        escaped = traceback.format_exc()
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        sys.argv = saved_argv
        seconds = time.perf_counter() - start
        peak = tracemalloc.get_traced_memory()[1] - base
        if not tracing:
            tracemalloc.stop()
    return code, out.getvalue(), err.getvalue(), escaped, peak, seconds


class GGMLOracle:
    """ggml's own reader, gguf_init_from_file(path, {no_alloc: true}), from llama-cpp-python's
    libggml-base: a file inspect accepts must be one ggml reads."""

    class Params(ctypes.Structure):
        _fields_ = [("no_alloc", ctypes.c_bool), ("ctx", ctypes.c_void_p)]

    def __init__(self, lib_path: Path):
        lib = ctypes.CDLL(str(lib_path))
        self.init = lib.gguf_init_from_file
        self.init.restype = ctypes.c_void_p
        self.init.argtypes = [ctypes.c_char_p, self.Params]
        self.free = lib.gguf_free
        self.free.argtypes = [ctypes.c_void_p]

    @classmethod
    def find(cls) -> GGMLOracle | None:
        import importlib.util

        spec = importlib.util.find_spec("llama_cpp")
        if spec is None or not spec.submodule_search_locations:
            return None
        pkg = Path(next(iter(spec.submodule_search_locations)))
        for p in (pkg / "lib" / "libggml-base.so", pkg / "libggml-base.so", pkg / "lib" / "libggml-base.dylib"):
            if p.exists():
                return cls(p)
        return None

    def accepts(self, path: Path) -> bool:
        # ggml logs its complaints on the C stderr: silence it for the call
        sys.stderr.flush()
        saved = os.dup(2)
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 2)
        try:
            ctx = self.init(str(path).encode(), self.Params(True, None))
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            os.close(devnull)
        if ctx:
            self.free(ctx)
        return bool(ctx)


def warm_up(workdir: Path, seeds: dict[str, bytes]) -> None:
    """Run inspect once on each seed: the first run imports the CLI's modules, which is memory
    that no later run allocates again and no file's fault."""
    for name, data in seeds.items():
        p = workdir / f"warm-{name}"
        p.write_bytes(data)
        run_inspect(p, 60.0)
        p.unlink()


def judge(path: Path, size: int, timeout: float, oracle: GGMLOracle | None) -> Outcome:
    code, out, err, escaped, peak, seconds = run_inspect(path, timeout)
    lines = err.splitlines()
    if escaped == "hang":
        return Outcome("hang", f"still running after {timeout} s", seconds, peak)
    if escaped is not None:
        return Outcome("crash", escaped.strip().splitlines()[-1], seconds, peak)
    if peak > size + CLI_ALLOWANCE:
        return Outcome("memory", f"peak {peak} bytes for a file of {size}", seconds, peak)
    if code == 1:
        if len(lines) == 1 and lines[0].startswith(f"error: {path}: ") and not out and "Traceback" not in err:
            return Outcome("refused", lines[0], seconds, peak)
        return Outcome("stderr", f"exit 1 with stderr {err!r}, stdout {out[:200]!r}", seconds, peak)
    if code == 0:
        if err or not out.startswith(f"{path}: GGUF"):
            return Outcome("stderr", f"exit 0 with stderr {err!r}", seconds, peak)
        if oracle is not None and not oracle.accepts(path):
            return Outcome("oracle", "inspect accepts a file ggml's gguf_init_from_file refuses", seconds, peak)
        return Outcome("accepted", "", seconds, peak)
    return Outcome("exit", f"exit code {code}, stderr {err!r}", seconds, peak)


def fuzz(seeds: dict[str, bytes], count: int, seed: int, workdir: Path, timeout: float = 10.0,
         oracle: GGMLOracle | None = None, keep: Path | None = None) -> tuple[Counter, list[tuple[Case, Outcome]]]:
    """Run `count` mutations; return the outcome counts and the bad cases."""
    os.environ.pop("QCONVERT_DEBUG", None)  # it turns errors into tracebacks on purpose
    warm_up(workdir, seeds)
    layouts = {}
    for name, data in seeds.items():
        p = workdir / f"seed-{name}"
        p.write_bytes(data)
        layouts[name] = layout(p)
    rng = random.Random(seed)
    names = sorted(seeds)
    counts: Counter = Counter()  # outcome kinds, and "slowest ms" / "peak KiB" as maxima
    bad: list[tuple[Case, Outcome]] = []
    target = workdir / "mutant.gguf"
    for i in range(count):
        name = rng.choice(names)
        data, what = mutate(seeds[name], layouts[name], rng)
        target.write_bytes(data)
        outcome = judge(target, len(data), timeout, oracle)
        counts[outcome.kind] += 1
        counts["slowest ms"] = max(counts["slowest ms"], round(outcome.seconds * 1000))
        counts["peak KiB"] = max(counts["peak KiB"], outcome.peak // 1024)
        if outcome.kind not in GOOD:
            case = Case(name, what, data)
            bad.append((case, outcome))
            if keep is not None:
                keep.mkdir(parents=True, exist_ok=True)
                (keep / f"bad-{i}-{name}").write_bytes(data)
    return counts, bad


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--count", type=int, default=2000, help="mutations to run (default 2000)")
    ap.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    ap.add_argument("--timeout", type=float, default=10.0, help="seconds after which a case is a hang")
    ap.add_argument("--keep", type=Path, help="folder to save the bad cases in")
    ap.add_argument("--no-oracle", action="store_true", help="do not cross-check accepted files with ggml")
    ap.add_argument("--only", type=Path, action="append", default=[],
                    help="fuzz this GGUF file instead of the built-in seeds (repeatable)")
    args = ap.parse_args()
    oracle = None if args.no_oracle else GGMLOracle.find()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        seeds = {p.name: p.read_bytes() for p in args.only} if args.only else make_seeds(work)
        start = time.perf_counter()
        counts, bad = fuzz(seeds, args.count, args.seed, work, args.timeout, oracle, args.keep)
        seconds = time.perf_counter() - start
    for case, outcome in bad[:20]:
        print(f"BAD {outcome.kind}: {case.seed_name}: {case.mutation}: {outcome.detail}")
    summary = ", ".join(f"{k} {counts[k]}" for k in sorted(counts) if k not in ("slowest ms", "peak KiB"))
    print(f"{args.count} mutations (seed {args.seed}, {len(seeds)} seed files, largest "
          f"{max(map(len, seeds.values())) // 1024} KiB, ggml oracle {'on' if oracle else 'off'}): {summary}; "
          f"{len(bad)} bad; slowest case {counts['slowest ms']} ms, largest Python peak {counts['peak KiB']} KiB; "
          f"{seconds:.1f} s")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
