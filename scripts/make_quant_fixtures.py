"""Write the golden vectors under tests/fixtures/quants/: <TYPE>.npz with x (f32[8, 256]) and q (bytes).

The only writer of those files. The bytes come from ggml itself (ggml_quantize_chunk in the libggml
of llama-cpp-python, see tests/ggml_oracle.py), and are written only if qconvert's NumPy reference
agrees byte for byte. Existing files are never touched unless --force: golden vectors are written
once and checked forever (tests/test_quants.py::test_golden_vectors).

    python scripts/make_quant_fixtures.py            # every registered type that has no file yet
    python scripts/make_quant_fixtures.py Q4_K Q5_K  # just these (if missing)
    python scripts/make_quant_fixtures.py --force Q8_0
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "tests" / "fixtures" / "quants"
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

import ggml_oracle  # noqa: E402
from qconvert import quants  # noqa: E402

COLS = 256  # a multiple of every block size


def golden_input() -> np.ndarray:
    """8 rows of 256: typical weights, heavy tails, zero and -0.0 blocks, a huge value per block,
    exact half-integers, constant runs, subnormals. Fixed seed: the same on every machine."""
    g = np.random.default_rng(20240601)
    x = np.empty((8, COLS), np.float32)
    x[0:2] = g.standard_normal((2, COLS)) * 0.02
    x[2:4] = g.standard_t(3, (2, COLS))
    x[4] = np.repeat(np.array([0.0, -0.0, 0.37, -0.37, 1.0, -5e-3, 0.0, 2.5], np.float32), COLS // 8)
    x[5] = g.standard_normal(COLS) * 0.01
    x[5, 3::32] = 1000.0
    x[5, 17::64] = -2000.0
    x[6] = np.arange(-128, 128, dtype=np.float32) + np.float32(0.5)
    x[7] = g.uniform(-1, 1, COLS) * np.where(np.arange(COLS) % 3, 1e-38, 1e-3)
    return x


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("types", nargs="*", help="type names (default: every registered type)")
    ap.add_argument("--force", action="store_true", help="overwrite existing fixtures")
    args = ap.parse_args()

    ggml = ggml_oracle.load()
    print(f"oracle: {ggml.path}")
    OUT.mkdir(parents=True, exist_ok=True)
    x = golden_input()
    for qt in [quants.get(t) for t in args.types] or list(quants.REGISTRY.values()):
        path = OUT / f"{qt.name}.npz"
        if path.exists() and not args.force:
            print(f"{path.relative_to(ROOT)}: exists, kept")
            continue
        want = ggml.quantize(qt.qtype, x)
        ours = qt.quantize_blocks_ref(x.reshape(-1, qt.block_size)).reshape(want.shape)
        if not np.array_equal(ours, want):
            print(f"{qt.name}: the NumPy reference disagrees with ggml; not writing {path.name}",
                  file=sys.stderr)
            return 1
        np.savez_compressed(path, x=x, q=want)
        print(f"{path.relative_to(ROOT)}: written ({want.nbytes} bytes of {qt.name})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
