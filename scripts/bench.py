"""Kernel throughput against the peers, in one run on the same input: `make bench`.

For every type qconvert writes: MB/s of float32 input quantized on one thread by our compiled
kernel, by ggml's C quantizer (libggml's ggml_quantize_chunk, the code llama-quantize runs) and
by gguf-py's NumPy quantizer where it has the type; printed with the ratios. Each figure is the
best of several repeats (the machines are shared; the best run is the least disturbed one).

    python scripts/bench.py [--rows 4096] [--cols 4096] [--repeat 3] [--types Q8_0,Q4_0]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import gguf
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
import ggml_oracle  # noqa: E402  (the ctypes wrapper the tests use as the oracle)

from qconvert import quants  # noqa: E402


def best_seconds(fn, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=4096)
    ap.add_argument("--cols", type=int, default=4096)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--types", default=",".join(t.name for t in quants.SUPPORTED
                                               if t not in (gguf.GGMLQuantizationType.F32,)))
    args = ap.parse_args()

    x = np.random.default_rng(0).standard_normal((args.rows, args.cols)).astype(np.float32)
    mb = x.nbytes / 1e6
    ggml = ggml_oracle.load()
    print(f"# {time.strftime('%Y-%m-%d')}, {platform.machine()}, {os.cpu_count()} cores, "
          f"{args.rows}x{args.cols} float32 ({mb:.0f} MB), best of {args.repeat}, one thread")
    print(f"{'type':<6} {'qconvert MB/s':>14} {'ggml MB/s':>10} {'gguf-py MB/s':>13} "
          f"{'vs ggml':>8} {'vs gguf-py':>11}")
    for name in args.types.split(","):
        qt = quants.get(name)
        ours = mb / best_seconds(lambda: quants.quantize_rows(qt.qtype, x), args.repeat)
        theirs = mb / best_seconds(lambda: ggml.quantize(qt.qtype, x), args.repeat)
        try:
            gguf.quants.quantize(x[:32], qt.qtype)
            py = mb / best_seconds(lambda: gguf.quants.quantize(x, qt.qtype), 1)
        except NotImplementedError:
            py = float("nan")
        print(f"{qt.name:<6} {ours:>14.0f} {theirs:>10.0f} {py:>13.0f} {ours / theirs:>7.2f}x "
              f"{ours / py:>10.2f}x")


if __name__ == "__main__":
    main()
