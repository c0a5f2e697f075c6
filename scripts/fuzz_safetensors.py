"""Fuzz qconvert's reading of safetensors shards and their index with mutations of real files.

    python scripts/fuzz_safetensors.py --count 10000 --seed 1

Two tiny real checkpoints (tests/conftest.py's one-layer Llama: one shard, and the same split
into two shards with model.safetensors.index.json) are converted once for reference. Then each
run mutates one file (a shard's length field and header, a shard's end, or the index JSON) with
one to three random edits: bit flips, bytes replaced by JSON-significant ones (digits, quotes,
braces, commas, backslashes), insertions, deletions, spans copied, numbers and strings swapped
for others (huge, negative, float, bool, another dtype or name), tensors' offsets exchanged,
length-field changes, truncation, appended bytes; and converts it with the CLI in-process. Every
outcome must be one of:

- refused: exit 1, one line `error: ...`, nothing at the target;
- identical: exit 0 and the output is byte for byte the unmutated checkpoint's (but for the
  provenance record, which names the input files' sizes and mtimes);
- valid-different: exit 0 for a mutation the safetensors library reads as the same tensors
  (names, dtypes, shapes) holding other data (two same-sized tensors' offsets exchanged), and the
  output is byte for byte that of converting what the library reads.

Anything else is a bad outcome:

- crash: a traceback, another exit code, more than one line, a file left at the target;
- hang: longer than --timeout;
- different: exit 0 and other bytes for the same tensors;
- wrong-tensors: exit 0 for a checkpoint whose tensors' names, dtypes or shapes are no longer the
  original's (a tensor renamed to an ignorable name such as *.rotary_emb.inv_freq: the output
  lacks it; refusing that is the architecture checks' job, validate/model.py);
- accepted-invalid: exit 0 for a shard the safetensors library refuses;
- memory: tracemalloc's peak above the reference conversion's peak plus MEMORY_PER_BYTE times
  the checkpoint's size (reading a header holds it as bytes, as text and parsed, a few times its
  size; nothing may grow with what a header claims, such as a shape of 2**40 elements).

Counts are printed at the end; the exit status is 1 if any bad outcome occurred, and --save DIR
keeps each bad input to replay.
"""

from __future__ import annotations

import argparse
import hashlib
import random
import re
import shutil
import sys
import tempfile
import time
import tracemalloc
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from conftest import (CliTimeout, conversion_content, run_cli_inprocess, tiny_llama_config,  # noqa: E402
                      tiny_llama_tensors, tokenizer_vocab_size, write_checkpoint)
from test_cli_errors import sharded  # noqa: E402

# Allocation allowed per byte of the checkpoint (all its files, the mutated one as mutated), over
# the reference conversion's peak: a refused header as large as its file is held as bytes,
# decoded (CPython sizes its output buffer before finding the bad byte) and parsed, about 3 bytes
# per byte measured; and the reference peak itself varies by a few per cent from run to run.
MEMORY_PER_BYTE = 4

BAD = ("crash", "hang", "different", "wrong-tensors", "accepted-invalid", "memory")
OUTCOMES = ("refused", "identical", "valid-different") + BAD

# Bytes that change JSON's structure or numbers when they land in a header.
INTERESTING_BYTES = b'0123456789"{}[],:-.+eE \\\n\tntfu\x00\x7f\x80\xc3\xff'
# Replacements for a number: limits of every integer width, signs, floats, other JSON kinds.
INTERESTING_NUMBERS = [
    "0", "1", "2", "4", "7", "8", "63", "64", "65", "-1", "-64", "255", "256", "4096", "65535", "65536",
    "2147483647", "2147483648", "4294967295", "4294967296", "9223372036854775807", "9223372036854775808",
    "18446744073709551615", "18446744073709551616", "1" + "0" * 40, "1e400", "-0", "64.0", "6.4e1", "true",
    "false", "null", "NaN", "Infinity", "[]", "{}", '"64"', "0x40",
]
# Replacements for a string: every dtype (known, unknown, decoded or not), names, keys.
INTERESTING_STRINGS = [
    "F32", "F16", "BF16", "F64", "I32", "U32", "I64", "I8", "U8", "BOOL", "F8_E4M3", "f32", "F48", "",
    "__metadata__", "dtype", "shape", "data_offsets", "format", "lm_head.weight", "model.norm.weight",
    "model.embed_tokens.weight", "model.layers.0.self_attn.q_proj.weight", "rotary_emb.inv_freq",
    "model.rotary_emb.inv_freq", "model.layers.0.self_attn.rotary_emb.inv_freq", "h.0.attention.bias",
    "model.layers.1.mlp.up_proj.weight", "weight_map", "metadata", "model.safetensors", "../model.safetensors",
    "/etc/passwd", "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors", "\\u0000",
    "\\udc80", "a\\nb", "\\\\",
]


@dataclass
class Target:
    """One file a mutation may hit: a shard or the index of a reference checkpoint."""

    model: Path
    name: str
    original: bytes
    reference: tuple  # the unmutated checkpoint's GGUF (conftest.conversion_content: all but provenance)
    layout: dict  # {shard: {name: (dtype, shape)}} of the unmutated checkpoint, as the library reads it

    @property
    def is_index(self) -> bool:
        return self.name.endswith(".json")


# --- mutations: deterministic edits, drawn at random by `draw` (or by hypothesis in the tests) --

def header_length(data: bytes) -> int:
    return int.from_bytes(data[:8], "little") if len(data) >= 8 else 0


def with_length(data: bytes, n: int) -> bytes:
    return (n % 2**64).to_bytes(8, "little") + data[8:]


def apply(data: bytes, op: tuple, is_index: bool) -> bytes:
    """One edit of a file. `op` = (kind, position (any int, taken modulo the span the kind
    works on), payload, fix_length (keep the shard's length field counting the header))."""
    kind, pos, payload, fix = op
    start = 0 if is_index else 8  # where the JSON begins
    n = len(data) - start if is_index else min(header_length(data), max(len(data) - 8, 0))
    end = start + n  # where the JSON ends
    span = max(end - start, 1)

    if kind == "flip":  # one bit, anywhere in the length field or the JSON
        i = pos % max(end, 1)
        if i >= len(data):
            return data
        return data[:i] + bytes([data[i] ^ (1 << payload[0] % 8)]) + data[i + 1:]
    if kind == "byte":
        i = start + pos % span
        if i >= len(data):
            return data
        return data[:i] + payload[:1] + data[i + 1:]
    if kind in ("insert", "delete", "splice", "number", "string", "swap"):
        if kind == "insert":
            i = start + pos % (span + 1)
            new, delta = data[:i] + payload + data[i:], len(payload)
        elif kind == "delete":
            i = start + pos % span
            k = 1 + payload[0] % 8
            new, delta = data[:i] + data[i + k:], -len(data[i:i + k])
        elif kind == "splice":  # a span of the JSON copied elsewhere in it
            i, j = start + pos % span, start + (pos // span + payload[0] * 977) % span
            piece = data[j:j + 1 + payload[-1] % 48]
            new, delta = data[:i] + piece + data[i:], len(piece)
        else:
            text = data[start:end]
            pattern = {"number": rb"-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?", "string": rb'"(?:[^"\\]|\\.)*"',
                       "swap": rb'"data_offsets":\s*\[\s*\d+\s*,\s*\d+\s*\]'}[kind]
            found = list(re.finditer(pattern, text))
            if not found:
                return data
            m = found[pos % len(found)]
            if kind == "number":
                rep = INTERESTING_NUMBERS[payload[0] % len(INTERESTING_NUMBERS)].encode()
            elif kind == "string":
                rep = b'"' + INTERESTING_STRINGS[payload[0] % len(INTERESTING_STRINGS)].encode() + b'"'
            else:  # two tensors exchange their data_offsets
                other = found[(pos + 1 + payload[0]) % len(found)]
                a, b = sorted((m, other), key=lambda x: x.start())
                swapped = text[:a.start()] + b.group() + text[a.end():b.start()] + a.group() + text[b.end():]
                new, delta = data[:start] + swapped + data[end:], len(swapped) - len(text)
                return with_length(new, n + delta) if fix and not is_index else new
            new = data[:start + m.start()] + rep + data[start + m.end():]
            delta = len(rep) - len(m.group())
        return with_length(new, n + delta) if fix and not is_index else new
    if kind == "length":
        if is_index:
            return data
        choices = [n + (pos % 19) - 9, n + 8 * ((pos % 5) - 2), 0, 7, len(data), len(data) - 7, 2**64 - 1,
                   100_000_000, 100_000_001, 2**32 + n, int.from_bytes(payload[:8].ljust(8, b"\0"), "little")]
        return with_length(data, choices[payload[0] % len(choices)])
    if kind == "truncate":  # mostly inside the header, sometimes in the data
        limit = end if payload[0] % 4 else len(data)
        return data[:pos % (limit + 1)]
    if kind == "append":
        return data + payload
    raise ValueError(kind)


KINDS = ("flip", "byte", "insert", "delete", "splice", "number", "string", "swap", "length", "truncate", "append")
WEIGHTS = (10, 10, 8, 8, 4, 14, 12, 3, 6, 3, 3)


def draw(rng: random.Random, is_index: bool) -> tuple:
    kind = rng.choices(KINDS, WEIGHTS)[0]
    if kind in ("byte", "insert"):
        payload = bytes(rng.choice(INTERESTING_BYTES) for _ in range(1 if kind == "byte" else rng.randint(1, 4)))
    elif kind == "append":
        payload = rng.randbytes(rng.randint(1, 64))
    else:
        payload = rng.randbytes(8)
    return (kind, rng.randrange(2**32), payload, rng.random() < 0.6)


def mutate(data: bytes, ops: list[tuple], is_index: bool) -> bytes:
    for op in ops:
        data = apply(data, op, is_index)
    return data


# --- running one mutation ------------------------------------------------------------------------

def make_targets(work: Path) -> list[Target]:
    """The two reference checkpoints in `work` and the files of each a mutation may hit."""
    cfg = tiny_llama_config(tokenizer_vocab_size())
    single = write_checkpoint(work / "single", cfg, tiny_llama_tensors(cfg))
    two = sharded(work)
    targets = []
    for model in (single, two):
        out = work / f"{model.name}-reference.gguf"
        proc = run_cli_inprocess("quantize", model, "-t", "Q8_0", "-o", out, "--no-progress", "-j", "1")
        assert proc.returncode == 0, proc.stderr
        layout = tensor_layout(library_view(model))
        for f in sorted(model.iterdir()):
            if f.name.endswith((".safetensors", ".index.json")):
                targets.append(Target(model, f.name, f.read_bytes(), conversion_content(out), layout))
        out.unlink()
    return targets


def library_view(model: Path) -> dict | None:
    """The tensors as the safetensors library reads each shard: {shard: {name: (dtype, shape,
    bytes)}}, or None if it refuses one."""
    from safetensors._safetensors_rust import SafetensorError, deserialize

    view: dict = {}
    for f in sorted(model.glob("*.safetensors")):
        try:
            view[f.name] = {name: (t["dtype"], tuple(t["shape"]), bytes(t["data"]))
                            for name, t in deserialize(f.read_bytes())}
        except SafetensorError:
            return None
    return view


def tensor_layout(view: dict) -> dict:
    return {shard: {k: (d, s) for k, (d, s, _) in tensors.items()} for shard, tensors in view.items()}


def expected_output(target: Target, work: Path, cache: dict) -> tuple | None:
    """What a successful conversion of the mutated checkpoint must write (its conversion_content)
    when the safetensors library reads the original's tensors holding other data (two same-sized
    tensors' offsets exchanged): the conversion of the same checkpoint with each shard rewritten by the library
    from what it read (same folder name and shard layout: both are in the output). None if the
    library refuses a shard, or reads a dtype qconvert does not convert."""
    import numpy as np
    from safetensors.numpy import save_file

    view = library_view(target.model)
    if view is None:
        return None
    key = hashlib.sha256(repr([(shard, sorted((k, d, s, hashlib.sha256(b).hexdigest()) for k, (d, s, b) in t.items()))
                               for shard, t in view.items()]).encode()).hexdigest()
    if key not in cache:
        canon = work / "canonical" / target.model.name
        shutil.rmtree(canon.parent, ignore_errors=True)
        shutil.copytree(target.model, canon, symlinks=True)
        cache[key] = None
        convertible = True
        for shard, tensors in view.items():
            if any(d not in ("F32", "F16") for d, _, _ in tensors.values()):
                convertible = False
                break
            save_file({k: np.frombuffer(b, {"F32": "<f4", "F16": "<f2"}[d]).reshape(s)
                       for k, (d, s, b) in tensors.items()}, str(canon / shard))
        if convertible:
            out = work / "canonical.gguf"
            proc = run_cli_inprocess("quantize", canon, "-t", "Q8_0", "-o", out, "--no-progress", "-j", "1")
            cache[key] = conversion_content(out) if proc.returncode == 0 else None
            out.unlink(missing_ok=True)
        shutil.rmtree(canon.parent)
    return cache[key]


def run_one(target: Target, mutated: bytes, work: Path, timeout: float, memory_base: int,
            cache: dict) -> tuple[str, str]:
    """Write the mutated file in place, convert, restore; the outcome and a one-line detail."""
    path = target.model / target.name
    out = work / "out.gguf"
    path.write_bytes(mutated)
    try:
        tracemalloc.start()
        try:
            proc = run_cli_inprocess("quantize", target.model, "-t", "Q8_0", "-o", out, "--no-progress", "-j", "1",
                                     timeout=timeout)
        except CliTimeout as e:
            return "hang", str(e)
        finally:
            _, peak = tracemalloc.get_traced_memory()
            tracemalloc.stop()
        lines = proc.stderr.strip().splitlines()
        leftovers = [p.name for p in work.iterdir() if p.name.startswith(".out.gguf")]
        size = sum(f.stat().st_size for f in target.model.iterdir())
        bound = memory_base + MEMORY_PER_BYTE * size
        if peak > bound:
            return "memory", f"peak {peak} bytes, bound {bound}"
        if "Traceback" in proc.stderr or leftovers:
            return "crash", (proc.stderr.strip().splitlines() or ["?"])[-1] + (f" leftovers {leftovers}" if leftovers
                                                                            else "")
        if proc.returncode == 1:
            if len(lines) == 1 and lines[0].startswith("error: ") and not out.exists():
                return "refused", lines[0]
            return "crash", f"exit 1 with stderr {proc.stderr[:300]!r}, output exists: {out.exists()}"
        if proc.returncode != 0:
            return "crash", f"exit {proc.returncode}: {proc.stderr[:300]!r}"
        got = conversion_content(out)  # all but the provenance record, which names the mutated files
        if got == target.reference:
            return "identical", ""
        view = library_view(target.model)
        if view is None:
            return "accepted-invalid", "the safetensors library refuses this shard"
        if tensor_layout(view) != target.layout:  # a tensor renamed, say: the checkpoint lacks one
            changed = sorted({(s, k) for s, t in view.items() for k in t} ^
                             {(s, k) for s, t in target.layout.items() for k in t})
            return "wrong-tensors", f"the tensors are not the original's ({changed[:4]}), yet it converted"
        want = expected_output(target, work, cache)
        if got == want:
            return "valid-different", "the library reads other data for the same tensors; the output matches it"
        return "different", f"{len(got[2])} bytes of tensor data, expected {len(want[2]) if want else None}"
    finally:
        path.write_bytes(target.original)
        out.unlink(missing_ok=True)


def reference_peak(targets: list[Target], work: Path) -> int:
    """tracemalloc's peak for converting each unmutated checkpoint, the largest: what a mutated run
    may use, plus MEMORY_PER_BYTE times its checkpoint's size."""
    peak = 0
    for t in targets:
        outcome, detail = run_one(t, t.original, work, 120, 2**62, {})
        assert outcome == "identical", (outcome, detail)
    for t in {t.model: t for t in targets}.values():
        out = work / "peak.gguf"
        tracemalloc.start()
        run_cli_inprocess("quantize", t.model, "-t", "Q8_0", "-o", out, "--no-progress", "-j", "1")
        peak = max(peak, tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
        out.unlink()
    return peak


class Fuzzer:
    """The reference checkpoints in a work folder, and a loop over random mutations of them."""

    def __init__(self, work: Path, timeout: float = 30):
        self.work, self.timeout = work, timeout
        self.targets = make_targets(work)
        self.memory_base = reference_peak(self.targets, work)
        self.cache: dict = {}

    def check(self, target: Target, ops: list[tuple]) -> tuple[str, str]:
        return run_one(target, mutate(target.original, ops, target.is_index), self.work, self.timeout,
                       self.memory_base, self.cache)

    def run(self, count: int, seed: int, save: Path | None = None, verbose: bool = False) -> Counter:
        rng = random.Random(seed)
        counts: Counter = Counter()
        for i in range(count):
            target = rng.choice(self.targets)
            ops = [draw(rng, target.is_index) for _ in range(1 + (rng.random() < 0.3) + (rng.random() < 0.1))]
            outcome, detail = self.check(target, ops)
            counts[outcome] += 1
            if outcome in BAD:
                print(f"#{i} {outcome}: {target.model.name}/{target.name} ops={ops!r}: {detail}", flush=True)
                if save is not None:
                    save.mkdir(parents=True, exist_ok=True)
                    (save / f"{i}-{outcome}-{target.model.name}-{target.name}").write_bytes(
                        mutate(target.original, ops, target.is_index))
            elif verbose:
                print(f"#{i} {outcome}: {detail[:150]}")
        return counts


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--count", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--timeout", type=float, default=30, help="seconds before a run counts as a hang")
    ap.add_argument("--save", type=Path, help="folder to keep the inputs of bad outcomes in")
    ap.add_argument("--verbose", action="store_true", help="print every outcome's line")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="qconvert-fuzz-") as tmp:
        start = time.perf_counter()
        fuzzer = Fuzzer(Path(tmp), args.timeout)
        counts = fuzzer.run(args.count, args.seed, args.save, args.verbose)
        seconds = time.perf_counter() - start
    print(f"{args.count} mutations (seed {args.seed}) in {seconds:.0f} s: "
          + ", ".join(f"{k} {counts[k]}" for k in OUTCOMES))
    bad = sum(counts[k] for k in BAD)
    print("OK: no bad outcome" if not bad else f"FAILED: {bad} bad outcomes")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
