"""`qconvert batch MANIFEST.toml --ray ADDRESS`: the manifest's models as tasks on a Ray cluster.

The only module that imports Ray (lazily, `import_ray`), an optional extra: `pip install "qconvert[ray]"`.

The driver (this process) checks every job first (batch.check_job: the model's headers read,
each type planned, provenance compared), so an up-to-date shelf costs no cluster time: the
cluster is contacted only when something is to be made. Each model with outputs to make is then
ONE task (`convert_job`: batch.run_job on the worker, all its outputs in one pass), asking for
`num_cpus` = its thread count and `memory` = what its pass holds at most (WORKER_BYTES plus
convert.window(threads) chunks of convert.chunk_peak), not the model's size. Workers read the
checkpoint and write the outputs at the paths the driver sees: the nodes must share them
(a network file system mounted at the same path) and run the same qconvert.

Faults. A task returns its outputs' failures as data (a bad checkpoint, a value a type cannot
hold): those are final, never retried. A task that is lost (its worker process or its node died,
or Ray killed it for memory) is resubmitted, up to MAX_RETRIES times, and each lost attempt is
recorded in the outputs' `retries` with its reason. The driver resubmits rather than leaving it
to Ray's own `max_retries` because Ray retries those silently: no public API tells the driver
that an attempt was lost, or why. A lost attempt leaves its temporaries; each attempt's carry a
tag of its own (`.NAME.PID-TAG.partial`, writer.tagged_temporaries), and the driver removes the
lost attempt's before it resubmits, whichever node it ran on (a PID alone would name a process of
the driver's machine). Ctrl-C (or SIGTERM) on the driver cancels the tasks (Ray raises
KeyboardInterrupt in them: the writer deletes its temporaries), waits for them to end, removes
what one that did not end in time left, and exits 130.
"""

from __future__ import annotations

import contextlib
import dataclasses
import signal
import sys
import threading
import time
import uuid
from typing import Any

from .batch import (BatchError, BatchOutput, BatchReport, BatchTotals, JobSpec, Manifest, check_job, failed,
                    run_job)
from . import __version__
from .errors import Interrupted, QConvertError, UsageError

INSTALL = 'pip install "qconvert[ray]"'
# Lost attempts of one job's task before its outputs fail (kind "cluster")
MAX_RETRIES = 3
# A worker process with qconvert, NumPy and Ray imported, the model's headers and tokenizer
# (measured: about 200 MB RSS on the fixtures), with room to spare
WORKER_BYTES = 512 << 20
# Seconds between the driver's looks for a signal while it waits on the tasks
POLL = 0.5
# Seconds to wait for cancelled tasks to clean up before the driver exits anyway
CANCEL_WAIT = 30.0
# Seconds the head of an explicit address has to accept a connection: ray.init itself retries an
# unreachable address for minutes (measured: over 3 with Ray 2.60), printing warnings
CONNECT_TIMEOUT = 10.0
# The ports Ray's addresses imply when they name none: the head's GCS, and Ray Client's (ray://)
GCS_PORT, CLIENT_PORT = 6379, 10001


class ClusterError(QConvertError):
    """The Ray cluster cannot be reached, or cannot run a job (every attempt lost)."""

    kind = "cluster"


def import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise UsageError(f"--ray needs Ray, which is not installed: {INSTALL}") from None
    return ray


def convert_job(spec: JobSpec, force: bool, threads: int, tag: str) -> tuple[list[BatchOutput], str]:
    """The Ray task: one model's outputs made on this node (batch.run_job), its temporaries tagged with
    the attempt's `tag`, and the node's address."""
    import ray

    from .writer import tagged_temporaries

    with tagged_temporaries(tag):
        made = run_job(spec, force=force, dry_run=False, threads=threads, on_progress=None)
    return made, ray.util.get_node_ip_address()


def run_batch_ray(manifest: Manifest, address: str, *, force: bool = False, threads: int | None = None,
                  submitted: list | None = None) -> BatchReport:
    """`batch.run_batch` with each model's pass a task on the Ray cluster at `address` ("auto": RAY_ADDRESS or
    the cluster running on this machine). Failures are in the report; an interrupt cancels the tasks and
    propagates. `submitted`, when given, gets each JobSpec as its task is submitted (a retry too)."""
    start = time.perf_counter()
    threads = threads or manifest.threads
    ray = import_ray()  # before any work: without Ray, --ray is refused at once
    outputs: list[BatchOutput] = []
    todo: list[tuple[JobSpec, list[BatchOutput], int]] = []  # the pending part of a job, its entries, chunk peak
    for spec in manifest.jobs:
        entries, peak = check_job(spec, force=force)
        outputs.extend(entries)
        pending = [e for e in entries if e.status == ""]
        if pending:
            todo.append((dataclasses.replace(spec, types=tuple(e.type for e in pending),
                                             outputs=tuple(e.path for e in pending)), pending, peak))
    if todo:
        # Ray prints the cluster's messages for the driver ("A worker died...") on stdout, where
        # --json's one object goes: they go to stderr, with the other lines for people
        with contextlib.redirect_stdout(sys.stderr):
            run_tasks(ray, address, todo, force=force, threads=threads, submitted=submitted)
    counts = {s: sum(o.status == s for o in outputs) for s in ("made", "skipped", "failed", "planned")}
    totals = BatchTotals(len(outputs), **counts, bytes=sum(o.bytes or 0 for o in outputs if o.status != "failed"),
                         seconds=time.perf_counter() - start)
    return BatchReport("batch", counts["failed"] == 0, manifest.path, force, False, totals, outputs)


def head_of(address: str) -> tuple[str, int] | None:
    """The (host, port) a Ray address names, for a reachability check: "host:port", "host" (the GCS port),
    "ray://host[:port]" (Ray Client's); None for "auto" and "local", which Ray resolves itself (RAY_ADDRESS,
    the cluster started on this machine).

    >>> head_of("10.0.0.5:6380"), head_of("ray://head"), head_of("auto")
    (('10.0.0.5', 6380), ('head', 10001), None)
    """
    if address in ("auto", "local"):
        return None
    client = address.startswith("ray://")
    rest = address.removeprefix("ray://").rstrip("/")
    host, sep, port = rest.rpartition(":")
    if not sep or not port.isdigit():
        return rest.strip("[]"), CLIENT_PORT if client else GCS_PORT
    return host.strip("[]"), int(port)


def check_reachable(address: str) -> None:
    """Refuse in one line, within CONNECT_TIMEOUT, an address whose head does not accept a connection."""
    import os
    import socket

    if address == "auto" and os.environ.get("RAY_ADDRESS"):
        address = os.environ["RAY_ADDRESS"]
    head = head_of(address)
    if head is None:
        return
    try:
        socket.create_connection(head, timeout=CONNECT_TIMEOUT).close()
    except OSError as e:
        reason = (f"no answer within {CONNECT_TIMEOUT:.0f} s" if isinstance(e, TimeoutError) else
                  (e.strerror or type(e).__name__).lower())
        raise ClusterError(f"cannot reach the Ray cluster at {address}: {reason} "
                           f"(host {head[0]}, port {head[1]})") from None


def connect(ray: Any, address: str) -> bool:
    """Join the cluster as a driver (unless this process already is one); True if this call joined."""
    if ray.is_initialized():
        return False
    check_reachable(address)
    try:
        ray.init(address=address, logging_level="ERROR", log_to_driver=False, configure_logging=False)
    except (ConnectionError, RuntimeError, ValueError) as e:
        raise ClusterError(f"cannot reach the Ray cluster at {address}: {' '.join(str(e).split())}") from None
    return True


def smallest_node_cpus(ray: Any) -> int:
    """A job's threads when neither --threads nor the manifest gives them: every core of the smallest
    node, as a local run uses every core of its machine."""
    cpus = [int(n["Resources"].get("CPU", 0)) for n in ray.nodes() if n.get("Alive")]
    return max(1, min((c for c in cpus if c > 0), default=1))


def run_tasks(ray: Any, address: str, todo: list[tuple[JobSpec, list[BatchOutput], int]], *, force: bool,
              threads: int | None, submitted: list | None) -> None:
    """Run the jobs' tasks to their end, filling their entries."""
    from . import convert

    joined = connect(ray, address)
    try:
        cpus = threads or smallest_node_cpus(ray)
        remote = ray.remote(convert_job)
        running: dict[Any, tuple[JobSpec, list[BatchOutput], int, list[BatchError], str]] = {}

        def submit(spec: JobSpec, entries: list[BatchOutput], peak: int, retries: list[BatchError]) -> None:
            memory = WORKER_BYTES + convert.window(cpus) * peak
            tag = uuid.uuid4().hex[:12]  # the attempt's, in its temporaries' names
            # max_retries=0: a lost attempt comes back to this loop, which records why and resubmits
            ref = remote.options(num_cpus=cpus, memory=memory, max_retries=0, retry_exceptions=False,
                                 name=f"qconvert {spec.label}").remote(spec, force, cpus, tag)
            if submitted is not None:
                submitted.append(spec)
            running[ref] = (spec, entries, peak, retries, tag)

        for spec, entries, peak in todo:
            submit(spec, entries, peak, [])
        signals: list[int] = []
        try:
            with noted_signals(signals):
                while running:
                    if signals:
                        raise Interrupted(signals[0])
                    done, _ = ray.wait(list(running), num_returns=1, timeout=POLL)
                    for ref in done:
                        spec, entries, peak, retries, tag = running.pop(ref)
                        try:
                            made, node = ray.get(ref)
                        except (ray.exceptions.WorkerCrashedError, ray.exceptions.NodeDiedError,
                                ray.exceptions.OutOfMemoryError) as e:
                            retries.append(lost(ray, e))
                            clean(spec, tag)
                            if len(retries) <= MAX_RETRIES:
                                submit(spec, entries, peak, retries)
                            else:
                                give_up(spec, entries, retries)
                            continue
                        except ray.exceptions.RayTaskError as e:
                            if "failed to import on the worker" in str(e):
                                raise ClusterError("the Ray workers cannot import qconvert; install this qconvert "
                                                   f"({__version__}) on every node") from None
                            raise
                        for entry, result in zip(entries, made):
                            assert (entry.type, entry.path) == (result.type, result.path), (entry, result)
                            vars(entry).update(vars(result), node=node, retries=retries)
        except BaseException:  # Ctrl-C, SIGTERM, a bug in a task: nothing left running, nothing half-written
            cancel(ray, running)
            raise
    finally:
        if joined:
            ray.shutdown()


@contextlib.contextmanager
def noted_signals(signals: list[int]):
    """SIGINT and SIGTERM noted in `signals` while the driver waits, for it to raise Interrupted between
    two waits: raised by the CLI's handler inside Ray's wait, it would come out as Ray's SystemError. Once one
    is noted, the others are ignored, as the CLI's handler does, so that the cancellation runs to its end."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def note(signum: int, frame: Any) -> None:
        for s in (signal.SIGINT, signal.SIGTERM):
            signal.signal(s, signal.SIG_IGN)
        signals.append(signum)

    previous = {s: signal.signal(s, note) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        if not signals:
            for s, handler in previous.items():
                signal.signal(s, handler)


def lost(ray: Any, e: Exception) -> BatchError:
    kind = ("node-died" if isinstance(e, ray.exceptions.NodeDiedError) else
            "out-of-memory" if isinstance(e, ray.exceptions.OutOfMemoryError) else "worker-died")
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    return BatchError(kind, lines[0] if lines else type(e).__name__)


def give_up(spec: JobSpec, entries: list[BatchOutput], retries: list[BatchError]) -> None:
    error = ClusterError(f"job {spec.index} ({spec.model}): {len(retries)} attempts lost, the last: "
                         f"{retries[-1].kind}: {retries[-1].message}")
    for entry in entries:
        failed(entry, error)
        entry.retries = retries


def clean(spec: JobSpec, tag: str) -> None:
    """Remove the temporaries of the attempt `tag` at the job's targets (a split set's members too), on
    whichever node it ran: the attempt is gone (lost, or cancelled and waited for)."""
    from .writer import remove_tagged_temporaries

    for folder in {out.parent for out in spec.outputs}:
        remove_tagged_temporaries(folder, tag)


def cancel(ray: Any, running: dict) -> None:
    """Cancel the running tasks (KeyboardInterrupt in each: its writer removes its temporaries), wait for
    them to end, and remove what one that did not end in time left."""
    for ref in running:
        ray.cancel(ref)
    if running:
        ray.wait(list(running), num_returns=len(running), timeout=CANCEL_WAIT)
    for spec, _, _, _, tag in running.values():
        clean(spec, tag)
