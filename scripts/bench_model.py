"""Whole-model conversion time and peak memory against llama.cpp's tools, in one run: `make bench`.

Dev tool (the llama.cpp side needs torch). On llama-shaped random bf16 checkpoints made by
scripts/make_synthetic_checkpoint.py (cached under ~/.cache/qconvert/bench/), every tool runs as a
subprocess from a warm page cache; its wall time is measured around it and its peak RSS read from
os.wait4 (which covers its own children, e.g. convert_hf_to_gguf.py under oracle_convert.py):

- Q8_0: `qconvert quantize -t Q8_0` vs `convert_hf_to_gguf.py --outtype q8_0`;
- Q4_K_M: qconvert vs `convert_hf_to_gguf.py --outtype f16` then llama-quantize Q4_K_M on all
  cores (llama_model_quantize through scripts/llama_quantize.py), each step and their sum;
  the two Q4_K_M files must have the same tensor types;
- qconvert Q4_K_M with --threads 1 and with all cores (on the smallest checkpoint);
- qconvert's peak RSS on every checkpoint size, beside the largest tensor's F32 size;
- the cost of the value checks (NaN/Inf/overflow, qconvert/validate/values.py): Q8_0 and Q4_K_M
  against the same runs with --allow-nonfinite, which skips them. `--validation-only` runs just
  these (no llama.cpp tools, no torch);
- `qconvert batch` of the model into F16, Q8_0, Q4_K_M, Q5_K_M and Q6_K (one pass over its
  tensors) against five separate `qconvert quantize` runs. `--batch-only` runs just this
  comparison; `--checkpoint DIR` runs it on an existing checkpoint instead (a quick check of the
  script on a tiny one).

The comparisons run on the largest checkpoint. Runs are interleaved in rounds; a time is the
best of --repeat rounds (the machines are shared: the best run is the least disturbed one), a
peak RSS the highest. CPU seconds (user + system) are shown beside wall times: they move less
when other processes take the cores. Prints a markdown table with the ratios (ours / theirs),
the machine and the exact commands; the targets are reported, not asserted. 4 to 6 minutes on
2 cores with the defaults, about 2.5 more for the batch comparison (an estimate from the
Q4_K_M timing; plus ~30 s to make the checkpoints the first time).

    python scripts/bench_model.py [--sizes 0.5,1.5] [--repeat 2] [--threads N]
    python scripts/bench_model.py --batch-only [--sizes 1.5 | --checkpoint DIR] [--repeat 2]

qconvert runs as `python -m qconvert` with this tree first on PYTHONPATH, so the code measured
is this checkout's whatever `pip install -e` last pointed the `qconvert` command at.
"""
from __future__ import annotations

import argparse
import collections
import datetime
import json
import math
import os
import platform
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import gguf

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))
from make_synthetic_checkpoint import BENCH_CACHE, make_checkpoint  # noqa: E402

from qconvert.reader import Checkpoint  # noqa: E402
from qconvert.types import TensorInfo  # noqa: E402

MB = 1e6
RSS_SLACK = 256 * MB  # target: peak RSS <= largest tensor in F32 + 256 MB
# tiny-bpe (the synthetic checkpoints' tokenizer) has no pre-tokenizer hash in llama.cpp's
# converter; it is SmolLM's pre-tokenizer (see scripts/oracle_convert.py).
VOCAB_PRE = "smollm"


@dataclass
class Timing:
    """One command, run `len(seconds)` times."""

    cmd: list[str]
    seconds: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)  # user + system seconds, children included
    rss: list[int] = field(default_factory=list)  # bytes

    @property
    def best(self) -> float:
        return min(self.seconds)

    @property
    def best_cpu(self) -> float:
        return min(self.cpu)

    @property
    def peak(self) -> int:
        return max(self.rss)


class Bench:
    def __init__(self, outdir: Path, env: dict[str, str]):
        self.outdir = outdir
        self.env = env
        self.timings: dict[str, Timing] = {}

    def run(self, key: str, cmd: list[str], out: Path, keep: bool = False) -> None:
        """Run cmd (output to a log), record its wall time and peak RSS under `key`; delete the
        file it wrote, `out`, unless `keep`."""
        log_path = self.outdir / f"{key}.log"
        print(f"  {key} ...", end="", file=sys.stderr, flush=True)
        with open(log_path, "w") as log:
            start = time.perf_counter()
            proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=self.env, cwd=ROOT)
            _, status, usage = os.wait4(proc.pid, 0)
            seconds = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode != 0:
            tail = log_path.read_text(errors="replace").splitlines()[-15:]
            sys.exit(f"\n{shlex.join(cmd)} failed (exit {proc.returncode}):\n" + "\n".join(tail))
        t = self.timings.setdefault(key, Timing(cmd))
        t.seconds.append(seconds)
        t.cpu.append(usage.ru_utime + usage.ru_stime)
        t.rss.append(usage.ru_maxrss * 1024)  # Linux: KiB
        print(f" {seconds:.1f} s ({t.cpu[-1]:.1f} s CPU), {usage.ru_maxrss / 1024:.0f} MiB", file=sys.stderr)
        if not keep:
            out.unlink()


def key(what: str, ck: CheckpointInfo) -> str:
    return f"{what}@{ck.path.name}"


def qconvert_cmd(ckpt: Path, qtype: str, out: Path, threads: int, *extra: str) -> list[str]:
    return [sys.executable, "-m", "qconvert", "quantize", str(ckpt), "-t", qtype, "-o", str(out),
            "--overwrite", "--threads", str(threads), *extra]


# `qconvert batch`'s benchmark: one model into these types, against one `quantize` run each
BATCH_TYPES = ("F16", "Q8_0", "Q4_K_M", "Q5_K_M", "Q6_K")


def batch_manifest(ckpt: Path, outdir: Path) -> Path:
    """A manifest converting `ckpt` into BATCH_TYPES, in outdir/batch (TOML basic strings take
    JSON's escapes)."""
    path = outdir / "batch.toml"
    path.write_text(f"output_dir = {json.dumps(str(outdir / 'batch'))}\n\n[[job]]\n"
                    f"model = {json.dumps(str(ckpt))}\ntypes = {json.dumps(list(BATCH_TYPES))}\n")
    return path


def batch_cmd(manifest: Path, threads: int) -> list[str]:
    return [sys.executable, "-m", "qconvert", "batch", str(manifest), "--threads", str(threads), "--no-progress"]


def separate_key(qtype: str, n: int) -> str:
    """The timing key of a `quantize` run into qtype: Q8_0 and Q4_K_M are those of the comparison
    with llama.cpp, the same commands."""
    return {"Q8_0": "qc_q8", "Q4_K_M": f"qc_q4km_t{n}"}.get(qtype, f"qc_{qtype.lower()}")


def run_batch_round(bench: Bench, ck: CheckpointInfo, outdir: Path, n: int, done: set[str]) -> None:
    """One round of the batch comparison: the batch (outputs removed after it, so that every
    round makes them all), then the separate runs not already run this round (`done`)."""
    manifest = batch_manifest(ck.path, outdir)
    bench.run(key("qc_batch", ck), batch_cmd(manifest, n), outdir / "batch", keep=True)
    shutil.rmtree(outdir / "batch")
    for t in BATCH_TYPES:
        k = key(separate_key(t, n), ck)
        if k not in done:
            out = outdir / f"qc-{t.lower()}.gguf"
            bench.run(k, qconvert_cmd(ck.path, t, out, n), out)


def batch_table(T: dict[str, Timing], ck: CheckpointInfo, n: int, rounds: str) -> list[str]:
    batch = T[key("qc_batch", ck)]
    sep = {t: T[key(separate_key(t, n), ck)] for t in BATCH_TYPES}
    wall, cpu = sum(s.best for s in sep.values()), sum(s.best_cpu for s in sep.values())
    peak = max(s.peak for s in sep.values())
    return [
        f"| `qconvert batch` of `{ck.path.name}` into {', '.join(BATCH_TYPES)}, {n} threads, {rounds} "
        "| wall | CPU | peak RSS |", "|---|---|---|---|",
        *[f"| quantize -t {t} | {secs(s.best)} | {secs(s.best_cpu)} | {mb(s.peak)} |" for t, s in sep.items()],
        f"| five quantize runs | {secs(wall)} | {secs(cpu)} | {mb(peak)} (highest) |",
        f"| one batch (one pass over the tensors) | {secs(batch.best)} | {secs(batch.best_cpu)} | {mb(batch.peak)} |",
        f"| **batch / five runs** | **{ratio(batch.best, wall)}** | {ratio(batch.best_cpu, cpu)} "
        f"| {ratio(batch.peak, peak)} |",
        "", "The batch's manifest ($OUT/batch.toml):", "", "```toml",
        f'output_dir = "$OUT/batch"\n\n[[job]]\nmodel = "{ck.path}"\ntypes = {json.dumps(list(BATCH_TYPES))}',
        "```",
    ]


def convert_cmd(ckpt: Path, outtype: str, out: Path) -> list[str]:
    return [sys.executable, "scripts/oracle_convert.py", str(ckpt), str(out), "--outtype", outtype,
            "--vocab-pre", VOCAB_PRE]


def quantize_cmd(inp: Path, out: Path, threads: int) -> list[str]:
    return [sys.executable, "scripts/llama_quantize.py", str(inp), str(out), "Q4_K_M", "--threads", str(threads)]


def warm_page_cache(ckpt: Path) -> None:
    """Read every shard once, so that every tool (the first one too) reads from memory."""
    for shard in sorted(ckpt.glob("*.safetensors")):
        with open(shard, "rb") as f:
            while f.read(64 << 20):
                pass


def tensor_types(path: Path) -> dict[str, str]:
    return {t.name: t.tensor_type.name for t in gguf.GGUFReader(path).tensors}


@dataclass
class CheckpointInfo:
    path: Path
    nbytes: int
    n_layers: int
    n_shards: int
    largest_name: str
    largest_f32: int  # bytes

    @classmethod
    def of(cls, path: Path) -> CheckpointInfo:
        ckpt = Checkpoint.open(path)
        largest = max(ckpt.tensors.values(), key=_elements)
        info = cls(path, sum(t.nbytes for t in ckpt.tensors.values()), ckpt.config["num_hidden_layers"],
                   len({t.file for t in ckpt.tensors.values()}), largest.name, _elements(largest) * 4)
        ckpt.close()
        return info


def _elements(t: TensorInfo) -> int:
    return math.prod(t.shape)


def machine() -> str:
    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    load = os.getloadavg()[0]
    return (f"{os.cpu_count()} cores ({model}, {platform.machine()}), {mem:.1f} GiB, "
            f"load average {load:.1f} at start; Python {platform.python_version()}")


def versions() -> str:
    import importlib.metadata as md

    try:
        rev = subprocess.run(["git", "describe", "--always", "--dirty"], cwd=ROOT, capture_output=True,
                             text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        rev = "?"
    found = []
    for dist in ("llama-cpp-python", "torch", "numpy", "gguf"):
        try:
            found.append(f"{dist} {md.version(dist)}")
        except md.PackageNotFoundError:
            found.append(f"{dist} missing")
    return f"qconvert {rev}; " + ", ".join(found)


def shown(cmd: list[str], outdir: Path) -> str:
    """A command as one would type it: `python`, paths relative to the tree or ~."""
    home = str(Path.home())
    words = []
    for w in cmd:
        if w == sys.executable:
            words.append("python")
            continue
        w = w.replace(str(outdir), "$OUT").replace(home, "~")
        prefix = next((p for p in ("~/", "$OUT/") if w.startswith(p)), "")
        words.append(prefix + shlex.quote(w[len(prefix):]))
    text = " ".join(words)
    return ("PYTHONPATH=. " + text) if "qconvert" in cmd[:3] else text


def secs(x: float) -> str:
    return f"{x:.1f} s"


def figures(t: Timing) -> str:
    return f"{secs(t.best)} ({t.best_cpu:.1f} s CPU), {mb(t.peak)}"


def mb(x: float) -> str:
    return f"{x / MB:.0f} MB"


def ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}x"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="0.5,1.5",
                    help="checkpoint sizes in GB, comma-separated; the comparisons run on the largest")
    ap.add_argument("--repeat", type=int, default=2, help="rounds; times are the best of them (default 2)")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="all cores by default")
    ap.add_argument("--validation-only", action="store_true",
                    help="only the cost of the value checks (qconvert with and without --allow-nonfinite)")
    ap.add_argument("--batch-only", action="store_true",
                    help=f"only `qconvert batch` into {', '.join(BATCH_TYPES)} against five quantize runs")
    ap.add_argument("--checkpoint", type=Path,
                    help="with --batch-only: this checkpoint folder instead of the synthetic ones")
    args = ap.parse_args()
    try:
        sizes = sorted({float(s) for s in args.sizes.split(",")})
    except ValueError:
        ap.error(f"--sizes {args.sizes!r}: give numbers of GB, e.g. 0.5,1.5")
    if not sizes or sizes[0] <= 0 or args.repeat < 1 or args.threads < 1:
        ap.error("sizes, --repeat and --threads must be positive")
    if args.checkpoint is not None and not args.batch_only:
        ap.error("--checkpoint goes with --batch-only")
    if args.batch_only and args.validation_only:
        ap.error("--batch-only and --validation-only exclude each other")
    n = args.threads
    thread_counts = sorted({1, n})

    began = time.perf_counter()
    header = (f"{datetime.datetime.now().strftime('%Y-%m-%d %H:%M')}, {machine()}\n"
              f"{versions()}")
    if args.checkpoint is not None:
        ckpts = [CheckpointInfo.of(args.checkpoint.resolve())]
    else:
        print("making checkpoints ...", file=sys.stderr)
        ckpts = [CheckpointInfo.of(make_checkpoint(s)) for s in (sizes[-1:] if args.batch_only else sizes)]
    big = ckpts[-1]

    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [env.get("PYTHONPATH")])])
    env.pop("QCONVERT_BACKEND", None)  # the compiled kernels
    BENCH_CACHE.mkdir(parents=True, exist_ok=True)
    outdir = Path(tempfile.mkdtemp(dir=BENCH_CACHE, prefix="out-"))
    bench = Bench(outdir, env)
    which = subprocess.run([sys.executable, "-c", "import qconvert.quants as q; print(q.__file__, q.BACKEND)"],
                           env=env, cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    small = ckpts[0]
    same_types = None
    try:
        for ck in ckpts:
            warm_page_cache(ck.path)
        q8, cq8 = outdir / "qc-q8_0.gguf", outdir / "conv-q8_0.gguf"
        q4, f16, lq = outdir / "qc-q4_k_m.gguf", outdir / "conv-f16.gguf", outdir / "lq-q4_k_m.gguf"
        for r in range(args.repeat):
            print(f"round {r + 1} of {args.repeat}", file=sys.stderr)
            c = big.path
            if args.batch_only:
                run_batch_round(bench, big, outdir, n, set())
                continue
            bench.run(key("qc_q8", big), qconvert_cmd(c, "Q8_0", q8, n), q8)
            bench.run(key("qc_q8_unchecked", big), qconvert_cmd(c, "Q8_0", q8, n, "--allow-nonfinite"), q8)
            bench.run(key(f"qc_q4km_t{n}_unchecked", big),
                      qconvert_cmd(c, "Q4_K_M", q4, n, "--allow-nonfinite"), q4)
            if args.validation_only:
                bench.run(key(f"qc_q4km_t{n}", big), qconvert_cmd(c, "Q4_K_M", q4, n), q4)
                continue
            bench.run(key("conv_q8", big), convert_cmd(c, "q8_0", cq8), cq8)
            bench.run(key(f"qc_q4km_t{n}", big), qconvert_cmd(c, "Q4_K_M", q4, n), q4, keep=True)
            bench.run(key("conv_f16", big), convert_cmd(c, "f16", f16), f16, keep=True)
            bench.run(key("lq_q4km", big), quantize_cmd(f16, lq, n), lq, keep=True)
            if same_types is None:
                ours, theirs = tensor_types(q4), tensor_types(lq)
                same_types = (ours == theirs, ours, theirs)
            for path in (q4, f16, lq):
                path.unlink()
            run_batch_round(bench, big, outdir, n, {key("qc_q8", big), key(f"qc_q4km_t{n}", big)})
            for ck in ckpts[:-1]:  # peak RSS against size
                bench.run(key("qc_q8", ck), qconvert_cmd(ck.path, "Q8_0", q8, n), q8)
                bench.run(key(f"qc_q4km_t{n}", ck), qconvert_cmd(ck.path, "Q4_K_M", q4, n), q4)
            for t in thread_counts:  # scaling, on the smallest checkpoint, to keep a run short
                if t != n:
                    bench.run(key(f"qc_q4km_t{t}", small), qconvert_cmd(small.path, "Q4_K_M", q4, t), q4)
    finally:
        shutil.rmtree(outdir, ignore_errors=True)

    T = bench.timings
    rounds = f"best of {args.repeat} interleaved rounds" if args.repeat > 1 else "one round"
    if args.batch_only:
        print(header + "\n\n" + "\n".join(batch_table(T, big, n, rounds)) + "\n\nCommands:\n\n```\n"
              + "\n".join(shown(t.cmd, outdir) for t in T.values()) + "\n```")
        return
    checks = [f"| value checks (NaN/Inf/overflow) on `{big.path.name}`, {rounds} | checked | --allow-nonfinite "
              "| cost (checked / unchecked - 1) | target |", "|---|---|---|---|---|"]
    for label, what in (("Q8_0", "qc_q8"), ("Q4_K_M", f"qc_q4km_t{n}")):
        on, off = T[key(what, big)], T[key(f"{what}_unchecked", big)]
        checks.append(f"| {label} | {figures(on)} | {figures(off)} | **{100 * (on.best / off.best - 1):+.1f}%** "
                      f"(CPU {100 * (on.best_cpu / off.best_cpu - 1):+.1f}%) | <= 5% |")
    if args.validation_only:
        print(header + "\n\n" + "\n".join(checks))
        return
    q8, cq8 = T[key("qc_q8", big)], T[key("conv_q8", big)]
    q4, cf16, lqt = T[key(f"qc_q4km_t{n}", big)], T[key("conv_f16", big)], T[key("lq_q4km", big)]
    chain, chain_cpu = cf16.best + lqt.best, cf16.best_cpu + lqt.best_cpu
    out = []
    p = out.append
    p("## qconvert against llama.cpp on a whole model (scripts/bench_model.py)\n")
    p(header + "  ")
    p(f"qconvert measured: {which[0]} ({which[1]} kernels)  ")
    p(f"Comparisons on `{big.path.name}`: {big.nbytes / 1e9:.2f} GB bf16 in {big.n_shards} shards, "
      f"{big.n_layers} layers, hidden 2048, ffn 5632, vocab 32000 (untied output), warm page cache. "
      f"Time: {rounds}; peak RSS: the highest.\n")
    p("| task | qconvert: wall (CPU), peak RSS | llama.cpp: wall (CPU), peak RSS | wall ours/theirs "
      "| CPU ours/theirs | RSS ours/theirs | target (wall) |")
    p("|---|---|---|---|---|---|---|")
    p(f"| Q8_0 | {figures(q8)} | convert q8_0: {figures(cq8)} | **{ratio(q8.best, cq8.best)}** "
      f"| {ratio(q8.best_cpu, cq8.best_cpu)} | {ratio(q8.peak, cq8.peak)} | <= 0.25x |")
    p(f"| Q4_K_M | {figures(q4)} | convert f16: {figures(cf16)} + llama-quantize ({n} threads): "
      f"{figures(lqt)} = {secs(chain)} ({chain_cpu:.1f} s CPU) | **{ratio(q4.best, chain)}** "
      f"| {ratio(q4.best_cpu, chain_cpu)} | {ratio(q4.peak, max(cf16.peak, lqt.peak))} | <= 0.5x |")
    p("")
    ok, ours, theirs = same_types
    counts = ", ".join(f"{v} {k}" for k, v in sorted(collections.Counter(ours.values()).items()))
    if ok:
        p(f"Q4_K_M tensor types, qconvert vs llama-quantize: **same** ({len(ours)} tensors: {counts}).\n")
    else:
        diff = [f"{k}: {ours.get(k)} vs {theirs.get(k)}" for k in sorted(set(ours) | set(theirs))
                if ours.get(k) != theirs.get(k)]
        p(f"Q4_K_M tensor types, qconvert vs llama-quantize: **DIFFERENT** in {len(diff)} tensors: "
          + "; ".join(diff[:8]) + "\n")
    p(f"| qconvert Q4_K_M on `{small.path.name}` | wall | CPU | cores busy (CPU/wall) | speed-up over 1 thread |")
    p("|---|---|---|---|---|")
    scaling = {t: T[key(f"qc_q4km_t{t}", small)] for t in thread_counts}
    for t, s in scaling.items():
        busy = s.cpu[s.seconds.index(s.best)] / s.best  # of the same run
        p(f"| --threads {t} | {secs(s.best)} | {secs(s.best_cpu)} | {busy:.2f} "
          f"| {ratio(scaling[1].best, s.best)} |")
    p("\nCores busy well under the thread count means other processes had the cores.\n")
    out.extend(checks)
    p("")
    out.extend(batch_table(T, big, n, rounds))
    p("")
    p("| checkpoint | size | largest tensor (F32) | qconvert peak RSS, Q8_0 | Q4_K_M | target: largest + 256 MB |")
    p("|---|---|---|---|---|---|")
    for ck in ckpts:
        k8, k4 = T[key("qc_q8", ck)].peak, T[key(f"qc_q4km_t{n}", ck)].peak
        verdict = "within" if max(k8, k4) <= ck.largest_f32 + RSS_SLACK else "OVER"
        p(f"| `{ck.path.name}` | {ck.nbytes / 1e9:.2f} GB | {mb(ck.largest_f32)} ({ck.largest_name}) "
          f"| {mb(k8)} | {mb(k4)} | {mb(ck.largest_f32 + RSS_SLACK)} ({verdict}) |")
    p("")
    p("Commands ($OUT a scratch folder under ~/.cache/qconvert/bench/; run from the repository root):\n")
    p("```")
    for t in T.values():
        p(shown(t.cmd, outdir))
    p("```")
    p(f"\nWhole benchmark: {time.perf_counter() - began:.0f} s; load average {os.getloadavg()[0]:.1f} at the end.")
    print("\n".join(out))


if __name__ == "__main__":
    main()
