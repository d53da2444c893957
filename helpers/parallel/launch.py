"""Data-parallel jobs from a notebook or a script: one process per device, a fresh rendezvous each.

``launch(fn, world_size, *args)`` starts ``world_size`` worker processes, each running
``fn(rank, world_size, *args)`` inside an initialised process group, and returns the list of
their return values, indexed by rank (``launch(ddp_examples.hello, 2)``). What it takes care
of (each point is a measured gotcha, see COURSE.md):

- **Importable functions only**: workers are fresh Python processes, so ``fn`` must live in a
  module they can import; a function defined in a notebook cell is refused with a clear message.
- **A fresh rendezvous per job** (a file store in a new temporary folder): two jobs launched at
  the same moment never meet on a port.
- **Threads per worker**: ``cores // world_size`` (at least 1), or ``threads_per_worker``.
- **Backend and device**: NCCL with one GPU per rank on CUDA, gloo on CPU. ``world_size=0``
  means one process per GPU, or :data:`DEFAULT_CPU_WORLD_SIZE` CPU processes without a GPU.
- **Fail fast, leave nothing behind**: when a rank raises, the others are stopped within a
  second and :class:`WorkerError` carries that rank's traceback; every worker's whole process
  group (grandchildren included) is killed, and a worker whose launcher dies exits by itself.
- **A world size the machine cannot give is an error before anything starts** (more ranks than
  GPUs; on CPU more processes than cores unless ``oversubscribe=True``).

The child side is :mod:`helpers.parallel.worker`. Inside a worker use :func:`current_device`,
:func:`print0`, :func:`gather_object`, :func:`mean_metrics` (from :mod:`helpers.parallel.ranks`,
re-exported here); ``torchrun`` scripts (:mod:`helpers.parallel.torchrun`) call
:func:`setup_from_env` first and :func:`cleanup` last."""

from __future__ import annotations

import json
import os
import pickle
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from helpers.devices import default_backend, gpu_count, pick_device
from helpers.parallel.ranks import (  # noqa: F401 (re-exported: workers and scripts import them here)
    cleanup,
    current_device,
    gather_object,
    get_rank,
    get_world_size,
    is_main_process,
    mean_metrics,
    print0,
)

DEFAULT_CPU_WORLD_SIZE = 2
DEFAULT_TIMEOUT_S = 300.0
POLL_S = 0.05
_GRACE_S = 0.5  # after a first failure, how long to wait for the other ranks' own reports
_BOOTSTRAP = (
    "import json, sys; "
    "sys.path[:0] = json.loads(open(sys.argv[1] + '/sys_path.json').read()); "
    "from helpers.parallel.worker import worker_main; worker_main(sys.argv[1], int(sys.argv[2]))"
)


class WorkerError(RuntimeError):
    """A rank of a :func:`launch` job failed; the message holds that rank's traceback."""

    def __init__(self, rank: int, world_size: int, exitcode: int, details: str) -> None:
        self.rank, self.world_size, self.exitcode, self.details = (
            rank,
            world_size,
            exitcode,
            details,
        )
        super().__init__(
            f"rank {rank} of {world_size} failed (exit code {exitcode}); the other ranks were "
            f"stopped.\n--- rank {rank} ---\n{details.rstrip()}"
        )


def available_cores() -> int:
    """CPU cores this process may run on (respects affinity masks, unlike ``os.cpu_count``)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def resolve_world_size(
    world_size: int, device: str | torch.device = "auto", oversubscribe: bool = False
) -> int:
    """The number of processes to start for ``world_size`` on ``device``; clear errors otherwise.

    ``0`` means automatic: one process per visible GPU on CUDA, else ``DEFAULT_CPU_WORLD_SIZE``
    CPU processes. On CUDA a rank needs a GPU of its own. On CPU, more processes than cores
    is refused unless ``oversubscribe=True`` (they then share the cores, one thread each).
    """
    if isinstance(world_size, bool) or not isinstance(world_size, int) or world_size < 0:
        raise ValueError(f"world_size must be an int >= 0 (0 = automatic), got {world_size!r}.")
    device = _resolve_device(device)
    if device.type == "cuda":
        gpus = gpu_count()
        if world_size == 0:
            return gpus
        if world_size > gpus:
            raise ValueError(
                f"world_size={world_size} on CUDA needs {world_size} GPUs (one per rank) but "
                f"{gpus} are visible. Use world_size=0 (one process per GPU), or device='cpu' to "
                f"run {world_size} CPU processes instead."
            )
        return world_size
    if world_size == 0:
        return DEFAULT_CPU_WORLD_SIZE
    limit = max(available_cores(), DEFAULT_CPU_WORLD_SIZE)
    if world_size > limit and not oversubscribe:
        raise ValueError(
            f"world_size={world_size} CPU processes on {available_cores()} core(s): each rank "
            f"would get less than a core. Use at most {limit}, or oversubscribe=True to run "
            "them anyway (slower, one thread each)."
        )
    return world_size


def _resolve_device(device: str | torch.device) -> torch.device:
    if isinstance(device, torch.device):
        if device.type == "cuda" and gpu_count() == 0:
            raise ValueError(
                "device='cuda' was asked for but no GPU is visible; use 'auto' or 'cpu'."
            )
        return device
    if device.startswith("cuda") and gpu_count() == 0:
        raise ValueError(
            f"device={device!r} was asked for but no GPU is visible; use device='auto' (CPU "
            "processes with gloo when there is no GPU) or device='cpu'."
        )
    return pick_device(device)


def free_port() -> int:
    """A TCP port that is free on localhost right now (for ``torchrun --rdzv-endpoint``)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _check_importable(fn: Callable[..., Any]) -> None:
    module = getattr(fn, "__module__", None)
    qualname = getattr(fn, "__qualname__", "")
    if module in (None, "__main__") or "<locals>" in qualname or "<lambda>" in qualname:
        raise ValueError(
            f"launch() needs a function its worker processes can import, got {qualname or fn!r} "
            f"from module {module!r}. Worker processes start fresh and cannot see functions "
            "defined in a notebook cell, a lambda or a nested function: put it in a module "
            "(e.g. helpers/parallel/ddp_examples.py, or a .py file the notebook writes) and import it."
        )


def launch(
    fn: Callable[..., Any],
    world_size: int,
    *args: Any,
    device: str | torch.device = "auto",
    backend: str | None = None,
    threads_per_worker: int | None = None,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    oversubscribe: bool = False,
    echo: bool = True,
) -> list[Any]:
    """Run ``fn(rank, world_size, *args)`` in ``world_size`` processes; return results by rank.

    - ``world_size``: ``0`` = one per GPU, or ``DEFAULT_CPU_WORLD_SIZE`` CPU processes.
    - ``device``: ``"auto"``, ``"cpu"`` or ``"cuda"``; on CUDA rank ``r`` uses ``cuda:r``.
    - ``backend``: defaults to NCCL on CUDA and gloo on CPU.
    - ``threads_per_worker``: torch threads per process (default ``cores // world_size``).
    - ``timeout_s``: the whole job's limit, also the process group's collective timeout.
    - ``echo``: after the job, print what the ranks printed (rank 0 as is, the others
      prefixed ``[rank r]``), so ``print0`` output shows in the notebook cell.

    Raises :class:`WorkerError` (with the failing rank's traceback) as soon as one rank fails,
    ``TimeoutError`` after ``timeout_s``, ``ValueError`` for a world size the machine lacks.
    Return values travel back pickled; tensors are moved to the CPU first.
    """
    _check_importable(fn)
    resolved_device = _resolve_device(device)
    world_size = resolve_world_size(world_size, resolved_device, oversubscribe)
    if world_size < 1:
        raise ValueError(f"No devices to launch on (world_size resolved to {world_size}).")
    backend = backend or default_backend(resolved_device)
    threads = threads_per_worker or max(1, available_cores() // world_size)

    job_dir = Path(tempfile.mkdtemp(prefix="launch-"))
    spec = {
        "fn": fn,
        "args": args,
        "world_size": world_size,
        "backend": backend,
        "device_type": resolved_device.type,
        "threads": threads,
        "timeout_s": timeout_s,
    }
    try:
        payload = pickle.dumps(spec)
    except Exception as exc:
        shutil.rmtree(job_dir, ignore_errors=True)
        raise ValueError(f"launch() could not pickle the function or its arguments: {exc}") from exc
    (job_dir / "spec.pkl").write_bytes(payload)
    (job_dir / "sys_path.json").write_text(json.dumps([p for p in sys.path if p]))

    procs: list[subprocess.Popen] = []
    started = time.monotonic()
    try:
        for rank in range(world_size):
            env = {
                **os.environ,
                "RANK": str(rank),
                "WORLD_SIZE": str(world_size),
                "LOCAL_RANK": str(rank),
                "LOCAL_WORLD_SIZE": str(world_size),
                "GROUP_RANK": "0",
                "OMP_NUM_THREADS": str(threads),
                "MKL_NUM_THREADS": str(threads),
            }
            with (
                open(job_dir / f"rank{rank}.out", "wb") as out,
                open(job_dir / f"rank{rank}.err", "wb") as err,
            ):
                procs.append(
                    subprocess.Popen(
                        [sys.executable, "-c", _BOOTSTRAP, str(job_dir), str(rank)],
                        env=env,
                        stdout=out,
                        stderr=err,
                        stdin=subprocess.DEVNULL,
                        start_new_session=True,
                    )
                )
        _wait(procs, job_dir, world_size, started + timeout_s, timeout_s)
        return [_read_result(job_dir, rank) for rank in range(world_size)]
    finally:
        stop_process_groups(procs)
        if echo:
            _echo_output(job_dir, world_size)
        shutil.rmtree(job_dir, ignore_errors=True)


def _wait(
    procs: Sequence[subprocess.Popen],
    job_dir: Path,
    world_size: int,
    deadline: float,
    timeout_s: float,
) -> None:
    exited_at: dict[int, float] = {}  # wall-clock time each rank was first seen gone
    while True:
        codes = [p.poll() for p in procs]
        for rank, code in enumerate(codes):
            if code is not None:
                exited_at.setdefault(rank, time.time())
        if any(code not in (None, 0) for code in codes):
            grace_end = time.monotonic() + _GRACE_S
            while time.monotonic() < grace_end and any(p.poll() is None for p in procs):
                time.sleep(POLL_S)
            for rank, proc in enumerate(procs):
                if proc.poll() is not None:
                    exited_at.setdefault(rank, time.time())
            raise _failure(procs, job_dir, world_size, exited_at)
        if all(code == 0 for code in codes):
            return
        if time.monotonic() > deadline:
            running = [rank for rank, code in enumerate(codes) if code is None]
            raise TimeoutError(
                f"The job did not finish within {timeout_s:g} s; ranks still running: {running}. "
                "A rank waiting in a collective for a peer that never comes looks like this "
                "(e.g. one rank skipped a backward or an all_reduce)."
            )
        time.sleep(POLL_S)


# Errors a rank raises because a peer died first (its socket closed mid-collective).
_CONSEQUENCE_MARKERS = (
    "Connection reset by peer",
    "Connection closed by peer",
    "Broken pipe",
    "DistBackendError",
    "NCCL communicator was aborted",
    "Socket Timeout",
)


def _failure(
    procs: Sequence[subprocess.Popen], job_dir: Path, world_size: int, exited_at: dict[int, float]
) -> WorkerError:
    """The error of the rank that failed first, the others summarised.

    A rank whose error only says that a peer went away (connection reset, ...) is a
    consequence; among the rest, the earliest failure (by the worker's own clock when it left
    a traceback, else by when it was seen gone) is the cause.
    """
    reports = []
    for rank, proc in enumerate(procs):
        code = proc.poll()
        if code is None or code == 0:
            continue
        report_file = job_dir / f"rank{rank}.error.json"
        if report_file.is_file():
            report = json.loads(report_file.read_text())
            when, details = report["time"], report["traceback"]
        else:
            tail = _tail(job_dir / f"rank{rank}.err")
            reason = f"killed by signal {-code}" if code < 0 else f"exited with code {code}"
            when, details = (
                exited_at.get(rank, time.time()),
                (
                    f"The process {reason} without a Python traceback."
                    + (f" Its stderr ends with:\n{tail}" if tail else "")
                ),
            )
        consequence = any(marker in details for marker in _CONSEQUENCE_MARKERS)
        reports.append((consequence, when, rank, code, details))
    reports.sort()
    _, _, rank, code, details = reports[0]
    others = [f"rank {r}: {d.strip().splitlines()[-1]}" for _, _, r, _, d in reports[1:]]
    if others:
        details += "\n(later failures, probably consequences: " + "; ".join(others) + ")"
    return WorkerError(rank, world_size, code, details)


def _tail(path: Path, n_chars: int = 2000) -> str:
    if not path.is_file():
        return ""
    return path.read_bytes()[-n_chars:].decode(errors="replace").strip()


def _read_result(job_dir: Path, rank: int) -> Any:
    return pickle.loads((job_dir / f"rank{rank}.result.pkl").read_bytes())


def stop_process_groups(procs: Sequence[subprocess.Popen]) -> None:
    """Stop every worker's whole process group (grandchildren included) and reap the workers.

    SIGTERM first, SIGKILL after 2 s for anything left in the groups (a grandchild that ignores
    SIGTERM, a worker stuck in native code).
    """
    for sig, wait_s in ((signal.SIGTERM, 2.0), (signal.SIGKILL, 5.0)):
        for proc in procs:
            try:
                os.killpg(proc.pid, sig)
            except (ProcessLookupError, PermissionError):
                pass
        deadline = time.monotonic() + wait_s
        for proc in procs:
            try:
                proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass


def _echo_output(job_dir: Path, world_size: int) -> None:
    for rank in range(world_size):
        path = job_dir / f"rank{rank}.out"
        text = path.read_text(errors="replace") if path.is_file() else ""
        if not text:
            continue
        if rank > 0:
            text = "".join(f"[rank {rank}] {line}" for line in text.splitlines(keepends=True))
        sys.stdout.write(text if text.endswith("\n") else text + "\n")
    sys.stdout.flush()


def setup_from_env(device: str = "auto", timeout_s: float = DEFAULT_TIMEOUT_S) -> torch.device:
    """Initialise the process group from torchrun's environment; return this rank's device.

    ``device="auto"`` uses ``cuda:<LOCAL_RANK>`` when there are at least as many GPUs as local
    ranks, else the CPU (gloo). Sets ``cores // local world size`` torch threads per process.
    """
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", 1))
    if device == "auto":
        device = "cuda" if gpu_count() >= local_world and gpu_count() > 0 else "cpu"
    chosen = _resolve_device(device)
    torch.set_num_threads(max(1, available_cores() // local_world))
    device_id = None
    if chosen.type == "cuda":
        if local_rank >= gpu_count():
            raise ValueError(
                f"LOCAL_RANK {local_rank} needs cuda:{local_rank} but {gpu_count()} GPU(s) are "
                "visible: start at most one process per GPU (--nproc-per-node), or use --device cpu."
            )
        torch.cuda.set_device(local_rank)
        chosen = device_id = torch.device("cuda", local_rank)
    dist.init_process_group(
        default_backend(chosen), timeout=timedelta(seconds=timeout_s), device_id=device_id
    )
    return chosen
