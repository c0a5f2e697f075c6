"""`qconvert batch MANIFEST --ray auto` (qconvert/batch_ray.py) on a local Ray cluster kept on
loopback: the same bytes as a local batch, nothing submitted for an up-to-date shelf, a worker
killed mid-pass retried to a complete shelf, a job failing for its input not retried, the
--json summary valid with the node each job ran on."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import (MODELS, ROOT, check_report, run_cli, run_cli_inprocess, tiny_llama_config,
                            tiny_llama_tensors, tokenizer_vocab_size, write_checkpoint)

needs_ray = pytest.mark.skipif(importlib.util.find_spec("ray") is None,
                               reason="Ray is not installed (pip install 'qconvert[ray]', or the test extra)")
# every socket of the cluster on loopback: without it Ray binds to the machine's network address
LOOPBACK = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
SHELF = {"llama-spm-f32": ("Q8_0", "Q4_K_M", "F16"), "qwen2-bpe-bf16": ("Q8_0", "Q4_0"),
         "gpt2-bpe-f32": ("Q8_0", "F16")}


@pytest.fixture(scope="session")
def cluster():
    """A head node with two CPUs started by `ray start` (its workers import this checkout's
    qconvert), stopped at the end; drivers join it with address "auto"."""
    env = {**os.environ, **LOOPBACK, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT),
                                                                              os.environ.get("PYTHONPATH")]))}
    ray_cli = [sys.executable, "-c", "from ray.scripts.scripts import main; main()"]
    start = time.perf_counter()
    subprocess.run([*ray_cli, "start", "--head", "--num-cpus", "2", "--disable-usage-stats",
                    "--include-dashboard=false"], check=True, env=env, capture_output=True, timeout=120)
    print(f"\nRay cluster started in {time.perf_counter() - start:.1f} s", file=sys.stderr)
    try:
        yield env
    finally:
        subprocess.run([*ray_cli, "stop"], env=env, capture_output=True, timeout=120)


def shelf_manifest(folder: Path, output_dir: str = "gguf", models: dict = SHELF, threads: int = 1) -> Path:
    for model in models:
        if not (folder / model).exists():
            shutil.copytree(MODELS / model, folder / model)
    jobs = "".join(f'[[job]]\nmodel = "{m}"\ntypes = {json.dumps(list(t))}\n' for m, t in models.items())
    path = folder / f"{output_dir}.toml"
    path.write_text(f'output_dir = "{output_dir}"\nthreads = {threads}\n' + jobs)
    return path


def batch_json(path: Path, *args: str, env: dict) -> tuple[int, dict]:
    proc = run_cli("batch", path, *args, "--json", env=env)
    assert proc.stdout.count("\n") == 1, proc.stderr[-3000:]
    return proc.returncode, check_report(json.loads(proc.stdout))


# run_batch_ray in a driver process of its own, counting the tasks it submits (a driver joins the
# cluster at most once per process, and the loopback setting must be in its environment when Ray starts)
DRIVER = """
import json, sys
from qconvert import report
from qconvert.batch import load_manifest
from qconvert.batch_ray import run_batch_ray
submitted = []
r = run_batch_ray(load_manifest(sys.argv[1]), "auto", threads=int(sys.argv[2]), submitted=submitted)
print(json.dumps({"submitted": [[s.model, list(s.types)] for s in submitted], "report": report.as_document(r)}))
"""


def drive(path: Path, env: dict, threads: int = 1) -> tuple[list, dict]:
    """(the jobs submitted, model and types, in order; the report as JSON data)."""
    proc = subprocess.run([sys.executable, "-c", DRIVER, str(path), str(threads)], capture_output=True, text=True,
                          env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    data = json.loads(proc.stdout.splitlines()[-1])
    return data["submitted"], data["report"]


def shelf_bytes(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


@needs_ray
def test_cluster_run_equals_local_run_and_an_up_to_date_shelf_submits_nothing(cluster, tmp_path: Path) -> None:
    local = shelf_manifest(tmp_path, "local")
    code, local_report = batch_json(local, env=cluster)
    assert code == 0 and local_report["totals"]["made"] == 7
    assert all(o["node"] is None and o["retries"] == [] for o in local_report["outputs"])

    remote = shelf_manifest(tmp_path, "remote")
    code, report = batch_json(remote, "--ray", "auto", env=cluster)
    assert code == 0, report
    assert [(o["model"], o["type"], o["status"]) for o in report["outputs"]] == \
        [(o["model"], o["type"], "made") for o in local_report["outputs"]]
    assert {o["node"] for o in report["outputs"]} == {"127.0.0.1"}
    assert all(o["retries"] == [] for o in report["outputs"])
    # the same bytes, provenance record included (both read the same model folders)
    assert shelf_bytes(tmp_path / "remote") == shelf_bytes(tmp_path / "local")
    assert [o["sha256"] for o in report["outputs"]] == [o["sha256"] for o in local_report["outputs"]]
    # the same shape: the same keys everywhere, only node filled in
    assert [sorted(o) for o in report["outputs"]] == [sorted(o) for o in local_report["outputs"]]

    # a second run: every output decided on the driver, no task submitted
    submitted, again = drive(remote, cluster)
    assert submitted == [] and again["ok"]
    assert {o["status"] for o in again["outputs"]} == {"skipped"} and all(o["node"] is None for o in again["outputs"])

    # one output gone: one task, for that model and that type only
    (tmp_path / "remote" / "qwen2-bpe-bf16-Q4_0.gguf").unlink()
    submitted, third = drive(remote, cluster)
    assert submitted == [["qwen2-bpe-bf16", ["Q4_0"]]]
    assert [o["status"] for o in third["outputs"] if o["status"] != "skipped"] == ["made"]
    assert shelf_bytes(tmp_path / "remote") == shelf_bytes(tmp_path / "local")


@needs_ray
def test_a_job_failing_for_its_input_is_not_retried(cluster, tmp_path: Path) -> None:
    """A weight beyond F16's range fails F16 mid-pass on the worker: reported with its node, once,
    no retry; Q8_0 of the same task is made."""
    cfg = tiny_llama_config(tokenizer_vocab_size("tiny-bpe"))
    tensors = tiny_llama_tensors(cfg)
    tensors["model.layers.0.mlp.up_proj.weight"][3, 5] = np.float32(1e6)
    write_checkpoint(tmp_path / "big", cfg, tensors)
    path = tmp_path / "m.toml"
    path.write_text('output_dir = "out"\n[[job]]\nmodel = "big"\ntypes = ["F16", "Q8_0"]\n')
    submitted, report = drive(path, cluster)
    check_report(report)
    assert submitted == [["big", ["F16", "Q8_0"]]] and not report["ok"]
    f16, q8 = report["outputs"]
    assert (f16["status"], q8["status"]) == ("failed", "made")
    assert f16["error"]["kind"] == "checkpoint" and "up_proj" in f16["error"]["message"]
    assert f16["retries"] == [] and f16["node"] == "127.0.0.1" == q8["node"]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["big-Q8_0.gguf"]


@needs_ray
def test_a_worker_killed_mid_pass_is_retried_to_a_complete_shelf(cluster, tmp_path: Path) -> None:
    """SIGKILL to the worker writing the outputs (found by its temporary's PID) while the pass runs:
    the driver resubmits the task, the shelf ends complete, byte-equal to a local run, with no
    temporaries, and the summary says the job was retried because its worker died."""
    cfg = tiny_llama_config(tokenizer_vocab_size("tiny-bpe"), hidden_size=1024, intermediate_size=2816,
                            num_hidden_layers=4, num_attention_heads=8, num_key_value_heads=8)
    write_checkpoint(tmp_path / "slow", cfg, tiny_llama_tensors(cfg))
    models = {"slow": ("Q4_K_M", "Q8_0"), "llama-spm-f32": ("Q8_0",)}
    remote = shelf_manifest(tmp_path, "remote", models)
    proc = subprocess.Popen([sys.executable, "-m", "qconvert", "batch", str(remote), "--ray", "auto", "--json"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=cluster)
    out = tmp_path / "remote"
    killed = None
    deadline = time.monotonic() + 120
    while killed is None and time.monotonic() < deadline and proc.poll() is None:
        for p in out.glob(".slow-*.partial") if out.is_dir() else ():
            pid, tag = p.name.rsplit(".", 2)[-2].split("-")  # .NAME.PID-TAG.partial: the attempt's tag
            pid = int(pid)
            os.kill(pid, signal.SIGKILL)
            killed = pid
            break
        time.sleep(0.01)
    stdout, stderr = proc.communicate(timeout=600)
    assert killed is not None, "the pass ended before the test saw its temporaries: make the model bigger"
    assert proc.returncode == 0, stderr[-3000:]
    report = check_report(json.loads(stdout))
    slow = [o for o in report["outputs"] if o["model"] == "slow"]
    assert [o["status"] for o in slow] == ["made", "made"]
    assert all([r["kind"] for r in o["retries"]] == ["worker-died"] for o in slow), slow
    assert all(o["retries"] == [] for o in report["outputs"] if o["model"] != "slow")
    assert not [p.name for p in out.iterdir() if p.name.endswith(".partial")]

    local = shelf_manifest(tmp_path, "local", models)
    code, _ = batch_json(local, env=cluster)
    assert code == 0
    assert shelf_bytes(out) == shelf_bytes(tmp_path / "local")


def test_without_ray_the_option_says_how_to_install_it(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    path = tmp_path / "m.toml"
    path.write_text(textwrap.dedent('''\
        [[job]]
        model = "m"
        types = ["Q8_0"]
        '''))
    proc = run_cli_inprocess("batch", path, "--ray", "auto")
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.splitlines() == ['error: --ray needs Ray, which is not installed: pip install "qconvert[ray]"']


@needs_ray
def test_ctrl_c_on_the_driver_cancels_the_tasks_and_leaves_no_temporaries(cluster, tmp_path: Path) -> None:
    cfg = tiny_llama_config(tokenizer_vocab_size("tiny-bpe"), hidden_size=1024, intermediate_size=2816,
                            num_hidden_layers=4, num_attention_heads=8, num_key_value_heads=8)
    write_checkpoint(tmp_path / "slow", cfg, tiny_llama_tensors(cfg))
    remote = shelf_manifest(tmp_path, "remote", {"slow": ("Q4_K_M", "Q8_0")})
    proc = subprocess.Popen([sys.executable, "-m", "qconvert", "batch", str(remote), "--ray", "auto"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=cluster)
    out = tmp_path / "remote"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None and not (out.is_dir() and any(out.glob(".*.partial"))):
        time.sleep(0.01)
    assert proc.poll() is None, "the run ended before the test saw its temporaries"
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr[-3000:]
    assert stderr.splitlines()[-1] == "error: interrupted"
    assert sorted(p.name for p in out.iterdir()) == []


def test_the_head_an_address_names() -> None:
    from qconvert.batch_ray import CLIENT_PORT, GCS_PORT, head_of

    assert head_of("10.0.0.5:6380") == ("10.0.0.5", 6380)
    assert head_of("head.cluster") == ("head.cluster", GCS_PORT)
    assert head_of("ray://head:10002") == ("head", 10002)
    assert head_of("ray://head/") == ("head", CLIENT_PORT)
    assert head_of("[::1]:6379") == ("::1", 6379)
    assert head_of("auto") is None and head_of("local") is None


@needs_ray
def test_an_address_nothing_answers_at_is_refused_at_once(tmp_path: Path) -> None:
    """ray.init retries such an address for minutes; the driver asks the head itself first, and no job is
    made (nor its temporaries)."""
    import socket

    with socket.socket() as s:  # a loopback port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    path = shelf_manifest(tmp_path, "out", {"llama-spm-f32": ("Q8_0",)})
    start = time.monotonic()
    proc = run_cli("batch", path, "--ray", f"127.0.0.1:{port}", "--json", env={**os.environ, **LOOPBACK})
    assert time.monotonic() - start < 60
    assert proc.returncode == 1
    report = check_report(json.loads(proc.stdout))
    assert report["error"]["kind"] == "cluster"
    assert proc.stderr.splitlines() == [f"error: cannot reach the Ray cluster at 127.0.0.1:{port}: connection refused "
                                        f"(host 127.0.0.1, port {port})"]
    assert not list((tmp_path / "out").glob("*")) if (tmp_path / "out").exists() else True


def test_an_attempts_temporaries_carry_its_tag_and_only_they_are_removed_with_it(tmp_path: Path) -> None:
    """A PID names a process of one machine: the driver removes a lost attempt's temporaries by its tag,
    those of other attempts and of local runs stay; the local stale check leaves tagged ones to the driver."""
    from qconvert import writer

    target = tmp_path / "m-Q8_0.gguf"
    with writer.tagged_temporaries("a1b2c3"):
        assert writer._attempt_tag == "a1b2c3"  # what an OutputWriter made inside names its temporaries with
    assert writer._attempt_tag is None
    tmp = writer.temporary_path(target, 4242, "a1b2c3")
    assert tmp.name == ".m-Q8_0.gguf.4242-a1b2c3.partial"
    member = tmp_path / ".m-Q8_0-00002-of-00002.gguf.4242-a1b2c3.partial"
    other = writer.temporary_path(target, 4242, "ffff00")
    local = writer.temporary_path(target, 999_999_999)  # a local run's, its process gone
    for p in (tmp, member, other, local):
        p.write_bytes(b"x")
    assert writer.remove_stale_temporaries(target) == [local]
    assert sorted(writer.remove_tagged_temporaries(tmp_path, "a1b2c3")) == sorted([tmp, member])
    assert sorted(p.name for p in tmp_path.iterdir()) == [other.name]


def test_only_batch_ray_imports_ray() -> None:
    """Ray is an optional extra: no other module of the package names it in an import, and batch_ray
    imports it only when --ray is used (importing the module without Ray works)."""
    import ast

    importers = set()
    for path in (ROOT / "qconvert").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                     [node.module or ""] if isinstance(node, ast.ImportFrom) and node.level == 0 else [])
            if any(n == "ray" or n.startswith("ray.") for n in names):
                importers.add(path.relative_to(ROOT).as_posix())
    assert importers == {"qconvert/batch_ray.py"}
    code = "import sys; sys.modules['ray'] = None; import qconvert.batch_ray, qconvert.cli; print('ok')"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.stdout.strip() == "ok", proc.stderr[-2000:]
