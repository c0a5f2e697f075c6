"""KL divergence of GGUF files from a base GGUF's token distributions, in llama.cpp.

Dev tool (llama-cpp-python). The figure the llama.cpp community ranks quants by (llama-perplexity
--kl-divergence): the base model (F16, usually) scores a text once, window by window exactly as
scripts/perplexity.py does (F32 KV cache, each window's second half scored); its log-probabilities
at every scored position are stored under ~/.cache/qconvert/kld/ (float32, keyed by the base
file's SHA-256, the text's, ctx, stride and windows) and reused by every later run. Each FILE
then scores the same positions, and the table gives, against the base:

- mean KLD(base || file) over the positions, with its standard error, and the 99th percentile;
- top-token agreement: how often the file's most likely token is the base's;
- the file's perplexity on the text, and its size (MiB, bits per weight over all its tensors).

    python scripts/kld.py BASE.gguf FILE.gguf [FILE.gguf ...] [--text T] [--ctx 512]
                          [--stride N] [--max-windows N] [--json OUT.json]

TEXT defaults to the second half of tests/fixtures/text/kjv-ruth-jonah.txt (Jonah): measure on
text the importance matrix was not computed on (`--text` for another).
"""
from __future__ import annotations

import argparse
import datetime
import hashlib
import importlib.metadata
import json
import math
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from perplexity import DEFAULT_TEXT, window_logits  # noqa: E402

CACHE = Path.home() / ".cache" / "qconvert" / "kld"


def default_text() -> str:
    """Jonah: the second part of the default text (Ruth, the first, is for importance matrices)."""
    text = DEFAULT_TEXT.read_text(encoding="utf-8")
    return text[text.index("The Book of Jonah"):] if "The Book of Jonah" in text else text[len(text) // 2:]


@dataclass
class Divergence:
    file: str
    mib: float
    bits_per_weight: float
    kld_mean: float
    kld_stderr: float
    kld_p99: float
    top_token_agreement: float
    perplexity: float
    positions: int
    seconds: float


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 24):
            h.update(chunk)
    return h.hexdigest()


def log_softmax(logits: np.ndarray) -> np.ndarray:
    x = logits.astype(np.float64)
    top = x.max(axis=1, keepdims=True)
    return x - (top + np.log(np.exp(x - top).sum(axis=1, keepdims=True)))


def base_logprobs(base: Path, text: str, ctx: int, stride: int | None,
                  max_windows: int | None) -> tuple[np.ndarray, np.ndarray]:
    """The base's log-probabilities f32[positions, vocab] (memory-mapped from the cache) and the
    targets int32[positions]."""
    key = hashlib.sha256(json.dumps([sha256(base), hashlib.sha256(text.encode()).hexdigest(), ctx, stride,
                                     max_windows]).encode()).hexdigest()[:24]
    probs, targets = CACHE / f"{key}.logprobs.npy", CACHE / f"{key}.targets.npy"
    if not (probs.is_file() and targets.is_file()):
        CACHE.mkdir(parents=True, exist_ok=True)
        start = time.perf_counter()
        rows, tg = [], []
        for logits, t in window_logits(base, text, ctx, stride, None, max_windows):
            rows.append(log_softmax(logits).astype(np.float32))
            tg.append(t.astype(np.int32))
        tmp = probs.with_suffix(".partial.npy")
        np.save(tmp, np.concatenate(rows))
        np.save(targets, np.concatenate(tg))
        tmp.rename(probs)
        print(f"base {base.name}: {sum(len(t) for t in tg)} positions in {time.perf_counter() - start:.0f} s, "
              f"stored in {probs}", file=sys.stderr)
    return np.load(probs, mmap_mode="r"), np.load(targets)


def size_of(path: Path) -> tuple[float, float]:
    """(MiB of the file, bits per weight over all its tensors)."""
    import gguf

    reader = gguf.GGUFReader(path)
    n_bytes = sum(int(t.n_bytes) for t in reader.tensors)
    n_elements = sum(int(t.n_elements) for t in reader.tensors)
    return path.stat().st_size / 2**20, 8 * n_bytes / n_elements


def divergence(path: Path, base_lp: np.ndarray, targets: np.ndarray, text: str, ctx: int, stride: int | None,
               max_windows: int | None) -> Divergence:
    start = time.perf_counter()
    kld, agree, nll = [], [], []
    at = 0
    for logits, t in window_logits(path, text, ctx, stride, None, max_windows):
        lp = log_softmax(logits)
        n = len(t)
        b = np.asarray(base_lp[at:at + n], dtype=np.float64)
        assert np.array_equal(t, targets[at:at + n]), "the file tokenizes the text differently from the base"
        kld.append((np.exp(b) * (b - lp)).sum(axis=1))
        agree.append(lp.argmax(axis=1) == b.argmax(axis=1))
        nll.append(-lp[np.arange(n), t])
        at += n
    assert at == len(targets), (at, len(targets))
    k = np.concatenate(kld)
    mib, bpw = size_of(path)
    return Divergence(path.name, mib, bpw, float(k.mean()), float(k.std(ddof=1) / math.sqrt(len(k))),
                      float(np.percentile(k, 99)), float(np.concatenate(agree).mean()),
                      float(math.exp(np.concatenate(nll).mean())), len(k), time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("base", type=Path, help="the reference GGUF (F16)")
    parser.add_argument("files", type=Path, nargs="+", help="GGUF files to measure")
    parser.add_argument("--text", type=Path, help="default: Jonah, from tests/fixtures/text/kjv-ruth-jonah.txt")
    parser.add_argument("--ctx", type=int, default=512)
    parser.add_argument("--stride", type=int, help="default ctx/2")
    parser.add_argument("--max-windows", type=int)
    parser.add_argument("--json", type=Path, help="also write the figures as JSON")
    args = parser.parse_args()
    text = args.text.read_text(encoding="utf-8") if args.text else default_text()
    base_lp, targets = base_logprobs(args.base, text, args.ctx, args.stride, args.max_windows)
    results = []
    for path in args.files:
        d = divergence(path, base_lp, targets, text, args.ctx, args.stride, args.max_windows)
        results.append(d)
        print(f"{d.file}: KLD {d.kld_mean:.5f} ± {d.kld_stderr:.5f}, p99 {d.kld_p99:.4f}, "
              f"top token {100 * d.top_token_agreement:.2f}%, PPL {d.perplexity:.4f} ({d.seconds:.0f} s)",
              file=sys.stderr, flush=True)
    print(f"KL divergence from {args.base.name} in llama.cpp (llama-cpp-python "
          f"{importlib.metadata.version('llama-cpp-python')}, F32 KV cache), {datetime.date.today().isoformat()}; "
          f"{len(targets)} positions ({args.text or 'Jonah'}, windows of {args.ctx}, each scoring its second half).\n")
    print("| file | MiB | bits/weight | mean KLD | KLD p99 | same top token | PPL |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for d in results:
        print(f"| {d.file} | {d.mib:.1f} | {d.bits_per_weight:.2f} | {d.kld_mean:.5f} ± {d.kld_stderr:.5f} "
              f"| {d.kld_p99:.4f} | {100 * d.top_token_agreement:.2f}% | {d.perplexity:.4f} |")
    if args.json:
        args.json.write_text(json.dumps([asdict(d) for d in results], indent=1) + "\n")


if __name__ == "__main__":
    main()
