"""Measure each quant type's relative RMS error, the figures behind verify.py's LIMITS.

Dev tool. Quantizes with qconvert's quantizers and dequantizes with gguf-py's, as `verify` does:
gaussian rows, heavy-tailed (Student t, 3 degrees of freedom) rows, every matrix of the
tests/fixtures/models checkpoints (small random tensors: the widest spread per tensor), and real
weights (SmolLM2-135M's matrices of three layers and the first rows of its embedding), and prints the worst relative RMS
error per type and source.

    python scripts/measure_verify_limits.py [SMOLLM2_CHECKPOINT_DIR]
"""
from __future__ import annotations

import sys
from pathlib import Path

import gguf
import numpy as np

from qconvert import quants
from qconvert.reader import Checkpoint


def rel_rms(x: np.ndarray, qtype) -> float:
    y = gguf.quants.dequantize(quants.quantize_rows(qtype, x), qtype).reshape(x.shape)
    d = (y.astype(np.float64) - x)
    return float(np.sqrt((d * d).sum() / (x.astype(np.float64) ** 2).sum()))


def samples(ckpt_dir: Path | None):
    rng = np.random.default_rng(0)
    yield "gaussian", rng.standard_normal((64, 4096)).astype(np.float32)
    yield "student-t3", rng.standard_t(3, (64, 4096)).astype(np.float32)
    for model in sorted((Path(__file__).parents[1] / "tests" / "fixtures" / "models").iterdir()):
        if (model / "config.json").is_file():
            ckpt = Checkpoint.open(model)
            for name, t in ckpt.tensors.items():
                if len(t.shape) == 2 and t.dtype in ("F32", "F16", "BF16"):
                    yield "fixtures", ckpt.load(name)
    if ckpt_dir is None:
        return
    ckpt = Checkpoint.open(ckpt_dir)
    for name, t in ckpt.tensors.items():
        if len(t.shape) != 2:
            continue
        if "embed_tokens" in name:
            yield name, np.ascontiguousarray(ckpt.read_rows(name, slice(0, 4096)).astype(np.float32))
        elif any(f"layers.{i}." in name for i in (0, 15, 29)):
            yield name, ckpt.load(name)


def main() -> None:
    ckpt_dir = Path(sys.argv[1]) if len(sys.argv) > 1 else None
    worst: dict[tuple[str, str], float] = {}
    for src, x in samples(ckpt_dir):
        kind = "smollm2" if src not in ("gaussian", "student-t3", "fixtures") else src
        for qt in quants.SUPPORTED:
            if x.shape[-1] % quants.get(qt).block_size:
                continue
            e = rel_rms(x, qt)
            worst[kind, qt.name] = max(worst.get((kind, qt.name), 0.0), e)
    kinds = sorted({k for k, _ in worst})
    print(f"{'type':<6} " + " ".join(f"{k:>12}" for k in kinds))
    for qt in quants.SUPPORTED:
        print(f"{qt.name:<6} " + " ".join(f"{worst.get((k, qt.name), float('nan')):12.3e}" for k in kinds))


if __name__ == "__main__":
    main()
