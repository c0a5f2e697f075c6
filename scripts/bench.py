"""Kernel throughput against the peers, in one run on the same input: `make bench`.

For every type qconvert writes: MB/s of float32 input quantized on one thread by qconvert
(quants.quantize_rows, the compiled kernel behind it), by ggml's C quantizer (libggml's
ggml_quantize_chunk, the code llama-quantize runs) and by gguf-py's NumPy quantizer where it has the
type; printed with the ratios. The machines are shared, so the contenders run interleaved (ours,
ggml, ours, ggml, ...) and each figure is the best of the repeats: the least disturbed run.
With --imatrix, the types ggml weighs by an importance matrix get a second row, "<type> +imatrix",
both sides given the same random imatrix (ggml's quantize_row_<type>_impl; gguf-py has no such path).

    python scripts/bench.py [--rows 4096] [--cols 4096] [--repeat 5] [--types Q8_0,Q4_0] [--imatrix]
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

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]  # this checkout's qconvert, not an installed one
import ggml_oracle  # noqa: E402  (the ctypes wrapper the tests use as the oracle)

from qconvert import quants  # noqa: E402


def best_seconds(fns: list, repeat: int) -> list[float]:
    """The best time of each fn over `repeat` rounds, the fns taking turns within each round."""
    best = [float("inf")] * len(fns)
    for _ in range(repeat):
        for i, fn in enumerate(fns):
            t = time.perf_counter()
            fn()
            best[i] = min(best[i], time.perf_counter() - t)
    return best


def gguf_py_mb_s(qt: quants.QuantType, x: np.ndarray, mb: float) -> float:
    """gguf-py's MB/s (one run: it is the slow one), NaN where it cannot encode the type."""
    try:
        gguf.quants.quantize(x[:1], qt.qtype)
    except NotImplementedError:
        return float("nan")
    return mb / best_seconds([lambda: gguf.quants.quantize(x, qt.qtype)], 1)[0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=4096)
    ap.add_argument("--cols", type=int, default=4096)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--types", default=",".join(t.name for t in quants.SUPPORTED
                                               if t not in (gguf.GGMLQuantizationType.F32,)))
    ap.add_argument("--imatrix", action="store_true",
                    help="also time the weighted (_impl) paths, with a random imatrix")
    args = ap.parse_args()

    g = np.random.default_rng(0)
    x = g.standard_normal((args.rows, args.cols)).astype(np.float32)
    imatrix = g.uniform(0.01, 10.0, args.cols).astype(np.float32)
    mb = x.nbytes / 1e6
    ggml = ggml_oracle.load()
    print(f"# {time.strftime('%Y-%m-%d')}, {platform.machine()}, {os.cpu_count()} cores, "
          f"{args.rows}x{args.cols} float32 ({mb:.0f} MB), best of {args.repeat} interleaved, one thread, "
          f"backend {quants.BACKEND}")
    print(f"{'type':<14} {'qconvert MB/s':>14} {'ggml MB/s':>10} {'gguf-py MB/s':>13} "
          f"{'vs ggml':>8} {'vs gguf-py':>11}")
    for name in args.types.split(","):
        qt = quants.get(name)
        runs = [(qt.name, None)]
        if args.imatrix and qt.imatrix == "weighted":
            runs.append((f"{qt.name} +imatrix", imatrix))
        for label, w in runs:
            ours, theirs = best_seconds([lambda: quants.quantize_rows(qt.qtype, x, w),
                                         lambda: ggml.quantize(qt.qtype, x, w)], args.repeat)
            ours, theirs = mb / ours, mb / theirs
            py = gguf_py_mb_s(qt, x, mb) if w is None else float("nan")
            py_mb, py_ratio = ("-", "-") if np.isnan(py) else (f"{py:.0f}", f"{ours / py:.2f}x")
            print(f"{label:<14} {ours:>14.0f} {theirs:>10.0f} {py_mb:>13} {ours / theirs:>7.2f}x "
                  f"{py_ratio:>11}", flush=True)


if __name__ == "__main__":
    main()
