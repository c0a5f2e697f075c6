"""Perplexity of a GGUF in llama.cpp on a text, or a table of it over qconvert's types.

Dev tool (llama-cpp-python). Scores as llama.cpp's `llama-perplexity` does: the text is
tokenized whole, cut into windows of --ctx tokens (BOS in each window's first place when the
vocabulary adds one), and each window scores only its second half, so every scored token has at
least ctx/2 tokens of context. Windows start every --stride tokens: ctx/2 by default, so that the
scored halves tile the text; --stride CTX gives llama-perplexity's non-overlapping chunks. The KV
cache is F32, so the figure measures the weights alone.

    python scripts/perplexity.py MODEL.gguf [TEXT]          # one file
    python scripts/perplexity.py CHECKPOINT_DIR [TEXT] [--types F16,Q8_0,Q4_K_M ...]
                                                            # converts with qconvert, one row per type

TEXT defaults to tests/fixtures/text/kjv-ruth-jonah.txt (Ruth and Jonah, King James Version,
public domain; see the README beside it).
"""
from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import math
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_TEXT = ROOT / "tests" / "fixtures" / "text" / "kjv-ruth-jonah.txt"
DEFAULT_TYPES = ("F16", "Q8_0", "Q6_K", "Q5_K_M", "Q4_K_M", "Q4_K_S", "Q3_K_M", "Q4_0")
GGML_TYPE_F32 = 0  # type_k/type_v of the KV cache


@dataclass
class Perplexity:
    ppl: float
    error: float        # llama-perplexity's uncertainty: ppl * standard error of the mean NLL
    n_scored: int
    n_windows: int
    n_tokens: int       # of the whole text
    seconds: float


def nll_of_window(logits: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """-log p(target) for each row of logits (float64 log-sum-exp)."""
    x = logits.astype(np.float64)
    top = x.max(axis=1, keepdims=True)
    lse = top[:, 0] + np.log(np.exp(x - top).sum(axis=1))
    return lse - x[np.arange(len(targets)), targets]


def window_logits(model: str | Path, text: str, ctx: int = 512, stride: int | None = None,
                  threads: int | None = None, max_windows: int | None = None):
    """The scored positions of `text` in llama.cpp, window by window (see the module docstring):
    yields (logits f32[n, vocab], targets int[n]) per window, then returns the number of tokens
    of the text and of windows. scripts/kld.py reads the same positions."""
    from llama_cpp import Llama, llama_vocab_get_add_bos, llama_vocab_bos

    stride = stride or ctx // 2
    first = ctx // 2
    if not 0 < stride <= ctx:
        raise ValueError(f"stride {stride} must be in 1..{ctx}")
    llm = Llama(model_path=str(model), n_ctx=ctx, n_batch=ctx, n_ubatch=ctx, logits_all=True,
                type_k=GGML_TYPE_F32, type_v=GGML_TYPE_F32, n_threads=threads or os.cpu_count(),
                verbose=False)
    try:
        vocab = llm._model.vocab
        add_bos = bool(llama_vocab_get_add_bos(vocab))
        tokens = llm.tokenize(text.encode("utf-8"), add_bos=add_bos, special=False)
        starts = list(range(0, len(tokens) - ctx + 1, stride))[:max_windows]
        if not starts:
            raise ValueError(f"the text has {len(tokens)} tokens, fewer than one window of {ctx}")
        for k, start in enumerate(starts):
            window = list(tokens[start:start + ctx])
            if add_bos:
                window[0] = llama_vocab_bos(vocab)
            llm.reset()
            llm.eval(window)
            # logits at position j predict token j + 1; score the second half of the window
            logits = np.array(llm.scores[first - 1:ctx - 1], dtype=np.float32)
            targets = np.asarray(window[first:ctx])
            if stride < ctx - first and k > 0:  # overlapping halves: score only what is new
                logits, targets = logits[-stride:], targets[-stride:]
            yield logits, targets
    finally:
        llm.close()
    return len(tokens), len(starts)


def perplexity(model: str | Path, text: str, ctx: int = 512, stride: int | None = None,
               threads: int | None = None, max_windows: int | None = None,
               progress: bool = False) -> Perplexity:
    """llama.cpp's perplexity of `model` on `text` (see the module docstring)."""
    nll: list[np.ndarray] = []
    start_time = time.perf_counter()
    windows = window_logits(model, text, ctx, stride, threads, max_windows)
    while True:
        try:
            logits, targets = next(windows)
        except StopIteration as end:
            n_tokens, n_windows = end.value
            break
        nll.append(nll_of_window(logits, targets))
        if progress:
            print(f"  window {len(nll)}: running PPL {math.exp(np.concatenate(nll).mean()):.4f}",
                  file=sys.stderr, flush=True)
    seconds = time.perf_counter() - start_time
    all_nll = np.concatenate(nll)
    mean = float(all_nll.mean())
    # llama-perplexity: ppl * sqrt((<nll^2> - <nll>^2) / (n - 1))
    spread = float((all_nll ** 2).mean() - mean ** 2)
    error = math.exp(mean) * math.sqrt(spread / (len(all_nll) - 1)) if spread > 0 else 0.0
    return Perplexity(math.exp(mean), error, len(all_nll), n_windows, n_tokens, seconds)


def table(checkpoint: Path, text_path: Path, types: list[str], ctx: int, stride: int | None,
          threads: int | None, max_windows: int | None, keep: Path | None) -> str:
    """Convert `checkpoint` with qconvert to each type and tabulate llama.cpp's perplexity."""
    sys.path.insert(0, str(ROOT))
    from qconvert.convert import convert
    from qconvert.errors import QConvertError
    from qconvert.planner import summarize

    text = text_path.read_text(encoding="utf-8")
    rows, base, measured = [], None, None
    with tempfile.TemporaryDirectory(prefix="qconvert-ppl-") as tmp:
        out_dir = keep or Path(tmp)
        for qtype in types:
            out = out_dir / f"{checkpoint.name}-{qtype}.gguf"
            try:
                result = convert(checkpoint, out, qtype, overwrite=True, threads=threads)
            except QConvertError as err:
                rows.append(f"| {qtype} | | | not measured: {err} | |")
                print(f"{qtype}: {err}", file=sys.stderr)
                continue
            _, bpw = summarize(result.rows)
            p = perplexity(out, text, ctx, stride, threads, max_windows)
            measured = p
            base = base or p.ppl
            rows.append(f"| {qtype} | {result.nbytes / 2**20:.1f} | {bpw:.2f} | {p.ppl:.4f} ± {p.error:.4f} "
                        f"| {100 * (p.ppl / base - 1):+.2f}% |")
            print(f"{qtype}: PPL {p.ppl:.4f} ± {p.error:.4f} ({p.seconds:.0f} s)", file=sys.stderr, flush=True)
    if measured is None:
        raise SystemExit("no type could be measured")
    try:
        shown = text_path.resolve().relative_to(ROOT)
    except ValueError:
        shown = text_path
    head = (f"Perplexity of {checkpoint.name} converted by qconvert, in llama.cpp "
            f"(llama-cpp-python {importlib.metadata.version('llama-cpp-python')}, F32 KV cache), "
            f"{datetime.date.today().isoformat()}.\n"
            f"Text: {shown} ({measured.n_tokens} tokens); {measured.n_windows} windows of {ctx} tokens, "
            f"stride {stride or ctx // 2}, each scoring its second half: {measured.n_scored} tokens scored.\n\n"
            "| type | file MiB | bits/weight | perplexity | vs first row |\n|---|---:|---:|---:|---:|")
    return head + "\n" + "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path, help="a GGUF file, or a checkpoint directory for a table")
    parser.add_argument("text", type=Path, nargs="?", default=DEFAULT_TEXT, help=f"default {DEFAULT_TEXT.name}")
    parser.add_argument("--ctx", type=int, default=512, help="window length in tokens")
    parser.add_argument("--stride", type=int, help="tokens between window starts (default ctx/2)")
    parser.add_argument("--threads", type=int, help="default: all cores")
    parser.add_argument("--max-windows", type=int, help="score only the first N windows")
    parser.add_argument("--types", default=",".join(DEFAULT_TYPES),
                        help="checkpoint mode: qconvert types, in table order (first row is the baseline)")
    parser.add_argument("--keep", type=Path, metavar="DIR", help="checkpoint mode: keep the GGUF files in DIR")
    args = parser.parse_args()
    if not args.text.is_file():
        parser.error(f"{args.text} is not a file")
    try:
        if args.model.is_dir():
            print(table(args.model, args.text, [t.strip() for t in args.types.split(",") if t.strip()],
                        args.ctx, args.stride, args.threads, args.max_windows, args.keep))
        elif args.model.is_file():
            p = perplexity(args.model, args.text.read_text(encoding="utf-8"), args.ctx, args.stride,
                           args.threads, args.max_windows, progress=True)
            print(f"{args.model.name}: PPL = {p.ppl:.4f} ± {p.error:.4f} over {p.n_scored} tokens "
                  f"({p.n_windows} windows of {args.ctx}, stride {args.stride or args.ctx // 2}; "
                  f"{p.seconds:.0f} s)")
        else:
            parser.error(f"{args.model} is neither a GGUF file nor a checkpoint directory")
    except ValueError as err:
        sys.exit(str(err))


if __name__ == "__main__":
    main()
