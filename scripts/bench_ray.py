"""`qconvert batch --ray auto` on a local Ray cluster against a local `qconvert batch` of the same
manifest, on this machine: what the engine costs. Dev tool (needs Ray: the test extra).

A head node is started with `ray start --head` on loopback (RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0)
with all the machine's cores; its workers import this checkout (PYTHONPATH). Two manifests:

- `fixtures`: three tiny fixture models (tests/fixtures/models) into 7 outputs: the engine's
  fixed cost per job dominates;
- `bench`: the 1.5 GB bf16 synthetic checkpoint of scripts/bench_model.py into Q8_0 and Q4_K_M:
  the conversion dominates.

Each round runs, for each manifest, the local batch and the cluster batch into fresh output
folders (interleaved, the page cache warm), checks that both made the same bytes, then runs
each again on its now up-to-date shelf (nothing to make: the cluster is contacted only when
something is to be made). A time is the wall time of the `qconvert batch` process, the best of
--repeat rounds (the machine is shared: the best is the least disturbed). Prints a markdown
table with the ratios cluster / local, the cluster's start and stop times and the commands.

    python scripts/bench_ray.py [--repeat 2] [--threads N] [--only fixtures|bench]
"""
from __future__ import annotations

import argparse
import filecmp
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_synthetic_checkpoint import BENCH_CACHE, make_checkpoint  # noqa: E402

MODELS = ROOT / "tests" / "fixtures" / "models"
FIXTURE_SHELF = {"llama-spm-f32": ["Q8_0", "Q4_K_M", "F16"], "qwen2-bpe-bf16": ["Q8_0", "Q4_0"],
                 "gpt2-bpe-f32": ["Q8_0", "F16"]}
BENCH_TYPES = ["Q8_0", "Q4_K_M"]
ENV = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
       "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
RAY = [sys.executable, "-c", "from ray.scripts.scripts import main; main()"]


def manifest(path: Path, jobs: dict[str, list[str]], output_dir: Path, threads: int) -> Path:
    text = f"output_dir = {json.dumps(str(output_dir))}\nthreads = {threads}\n"
    text += "".join(f"\n[[job]]\nmodel = {json.dumps(m)}\ntypes = {json.dumps(t)}\n" for m, t in jobs.items())
    path.write_text(text)
    return path


def timed(cmd: list[str]) -> tuple[float, dict]:
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=ENV)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"failed ({proc.returncode}): {' '.join(cmd)}\n{proc.stderr[-3000:]}")
    return wall, json.loads(proc.stdout)


def batch(m: Path, ray: bool) -> list[str]:
    return [sys.executable, "-m", "qconvert", "batch", str(m), "--json", "--no-progress",
            *(["--ray", "auto"] if ray else [])]


def statuses(report: dict) -> list[str]:
    return sorted({o["status"] for o in report["outputs"]})


def same_files(a: Path, b: Path) -> bool:
    names = sorted(p.name for p in a.iterdir())
    return names == sorted(p.name for p in b.iterdir()) and all(
        filecmp.cmp(a / n, b / n, shallow=False) for n in names)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--only", choices=("fixtures", "bench"))
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(dir=BENCH_CACHE if BENCH_CACHE.exists() else None, prefix="ray-"))
    shelves = {}
    if args.only in (None, "fixtures"):
        shelves["fixtures"] = ({str(MODELS / m): t for m, t in FIXTURE_SHELF.items()},
                               "3 tiny fixture models, 7 outputs")
    if args.only in (None, "bench"):
        ck = make_checkpoint(1.5)
        size = sum(p.stat().st_size for p in ck.glob("*.safetensors")) / 1e9
        shelves["bench"] = ({str(ck): BENCH_TYPES}, f"{ck.name} ({size:.1f} GB bf16) into {' + '.join(BENCH_TYPES)}")

    best: dict[tuple[str, str], float] = {}
    start = time.perf_counter()
    subprocess.run([*RAY, "start", "--head", "--num-cpus", str(os.cpu_count()), "--disable-usage-stats",
                    "--include-dashboard=false"], check=True, env=ENV, capture_output=True)
    cluster_start = time.perf_counter() - start
    try:
        for r in range(args.repeat):
            for name, (jobs, _) in shelves.items():
                outs = {}
                for where in ("local", "ray"):
                    out = work / f"{name}-{where}-{r}"
                    m = manifest(work / f"{name}-{where}-{r}.toml", jobs, out, args.threads)
                    wall, report = timed(batch(m, where == "ray"))
                    assert statuses(report) == ["made"], statuses(report)
                    best[(name, where)] = min(wall, best.get((name, where), float("inf")))
                    wall, report = timed(batch(m, where == "ray"))  # up to date: nothing to make
                    assert statuses(report) == ["skipped"], statuses(report)
                    best[(name, where + "-skip")] = min(wall, best.get((name, where + "-skip"), float("inf")))
                    outs[where] = out
                if not same_files(outs["local"], outs["ray"]):
                    sys.exit(f"{name}: the cluster's outputs differ from the local run's")
                for out in outs.values():
                    shutil.rmtree(out)
    finally:
        start = time.perf_counter()
        subprocess.run([*RAY, "stop"], env=ENV, capture_output=True)
        cluster_stop = time.perf_counter() - start
        shutil.rmtree(work, ignore_errors=True)

    print(f"{os.cpu_count()} cores, --threads {args.threads}, best of {args.repeat} rounds; "
          f"`ray start --head` {cluster_start:.1f} s, `ray stop` {cluster_stop:.1f} s\n")
    print("| manifest | local batch | --ray auto | ratio | up to date: local | up to date: --ray |")
    print("|---|---|---|---|---|---|")
    for name, (_, label) in shelves.items():
        loc, ray = best[(name, "local")], best[(name, "ray")]
        print(f"| {label} | {loc:.2f} s | {ray:.2f} s | {ray / loc:.2f}x | {best[(name, 'local-skip')]:.2f} s "
              f"| {best[(name, 'ray-skip')]:.2f} s |")
    print("\nCommands: `qconvert batch M.toml --json --no-progress` and the same with `--ray auto`, "
          "outputs compared byte for byte.")


if __name__ == "__main__":
    main()
