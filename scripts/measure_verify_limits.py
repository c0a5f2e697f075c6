"""Measure each quant type's relative RMS error, the figures behind verify.py's LIMITS.

Dev tool. For the types qconvert writes: quantizes with qconvert's quantizers and dequantizes
with gguf-py's, as `verify` does, on gaussian rows, heavy-tailed (Student t, 3 degrees of
freedom) rows, every matrix of the tests/fixtures/models checkpoints (small random tensors: the
widest spread per tensor), and real weights (SmolLM2-135M's matrices of three layers and the first
rows of its embedding). With --llama-quantize, also the types only llama.cpp writes (IQ4_NL,
IQ4_XS, IQ3_S): llama-quantize's files of the llama-k256-bf16 fixture, and of a copy of it with
Student-t weights, as `verify` measures them. Prints the worst relative RMS error per type and
source.

    python scripts/measure_verify_limits.py [SMOLLM2_CHECKPOINT_DIR] [--llama-quantize]
"""
from __future__ import annotations

import json
import shutil
import sys
import tempfile
from pathlib import Path

import gguf
import numpy as np
from safetensors.numpy import save_file

from qconvert import quants
from qconvert.reader import Checkpoint

ROOT = Path(__file__).resolve().parents[1]
K256 = ROOT / "tests" / "fixtures" / "models" / "llama-k256-bf16"
LLAMA_ONLY_TYPES = ("IQ4_NL", "IQ4_XS", "IQ3_S")  # llama-quantize makes them without an importance matrix


def rel_rms(x: np.ndarray, qtype) -> float:
    y = gguf.quants.dequantize(quants.quantize_rows(qtype, x), qtype).reshape(x.shape)
    d = (y.astype(np.float64) - x)
    return float(np.sqrt((d * d).sum() / (x.astype(np.float64) ** 2).sum()))


def samples(ckpt_dir: Path | None):
    rng = np.random.default_rng(0)
    yield "gaussian", rng.standard_normal((64, 4096)).astype(np.float32)
    yield "student-t3", rng.standard_t(3, (64, 4096)).astype(np.float32)
    for model in sorted((ROOT / "tests" / "fixtures" / "models").iterdir()):
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


def student_t_copy(out: Path) -> Path:
    """llama-k256-bf16 with Student-t (3 degrees of freedom) matrices of the same scale, float32."""
    shutil.copytree(K256, out)
    ckpt = Checkpoint.open(K256)
    rng = np.random.default_rng(3)
    tensors = {}
    for name in ckpt.tensors:
        v = ckpt.load(name)
        tensors[name] = (rng.standard_t(3, v.shape) * np.abs(v).mean()).astype(np.float32) if v.ndim == 2 else v
    save_file(tensors, out / "model.safetensors", metadata={"format": "pt"})
    return out


def llama_quantize_errors(worst: dict[tuple[str, str], float]) -> None:
    """The worst rel RMS per type of llama-quantize's files, as verify reports it."""
    sys.path.insert(0, str(ROOT / "scripts"))
    from llama_quantize import llama_quantize
    from oracle_convert import oracle_convert

    from qconvert.tokenizer import identify_pre_tokenizer
    from qconvert.verify import verify

    pre = identify_pre_tokenizer(json.loads((K256 / "tokenizer.json").read_text()))
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for kind, ckpt in (("fixtures", K256), ("student-t3", student_t_copy(tmp / "t3"))):
            f32 = tmp / f"{kind}-f32.gguf"
            oracle_convert(ckpt, f32, "f32", vocab_pre=pre)
            for ftype in LLAMA_ONLY_TYPES:
                r = verify(llama_quantize(f32, tmp / f"{kind}-{ftype}.gguf", ftype, nthread=2), ckpt)
                for t in r.tensors:
                    if t.type == ftype:
                        worst[kind, t.type] = max(worst.get((kind, t.type), 0.0), t.rel_rms)


def main() -> None:
    args = [a for a in sys.argv[1:] if a != "--llama-quantize"]
    ckpt_dir = Path(args[0]) if args else None
    worst: dict[tuple[str, str], float] = {}
    for src, x in samples(ckpt_dir):
        kind = "smollm2" if src not in ("gaussian", "student-t3", "fixtures") else src
        for qt in quants.SUPPORTED:
            if x.shape[-1] % quants.get(qt).block_size:
                continue
            e = rel_rms(x, qt)
            worst[kind, qt.name] = max(worst.get((kind, qt.name), 0.0), e)
    names = [qt.name for qt in quants.SUPPORTED]
    if "--llama-quantize" in sys.argv:
        llama_quantize_errors(worst)
        names += list(LLAMA_ONLY_TYPES)
    kinds = sorted({k for k, _ in worst})
    print(f"{'type':<7} " + " ".join(f"{k:>12}" for k in kinds))
    for name in names:
        print(f"{name:<7} " + " ".join(f"{worst.get((k, name), float('nan')):12.3e}" for k in kinds))


if __name__ == "__main__":
    main()
