"""Data-parallel jobs from a notebook or a script: one process per device, a fresh rendezvous each.

``launch(fn, world_size, *args)`` starts ``world_size`` worker processes, each running
``fn(rank, world_size, *args)`` inside an initialised process group, and returns the list of
their return values, indexed by rank::

    from helpers.parallel import ddp_examples
    from helpers.parallel.launch import launch

    results = launch(ddp_examples.hello, 2)      # [{'rank': 0, ...}, {'rank': 1, ...}]

What it takes care of (each point is a measured gotcha, see COURSE.md):

- **Importable functions only.** Workers are fresh Python processes (the "spawn" model), so
  ``fn`` must live in a module they can import: ``helpers/`` or a script on ``sys.path``.
  A function defined in a notebook cell is refused with a clear message.
- **A fresh rendezvous per job**: a file store in a new temporary folder, so two jobs launched
  at the same moment (parallel tests, two notebooks) never meet on a port.
- **Threads per worker**: each worker gets ``cores // world_size`` threads (at least 1), or
  ``threads_per_worker``; without this, two processes on two cores run several times slower.
- **Backend and device**: NCCL with one GPU per rank on CUDA, gloo on CPU, chosen from
  ``device`` (``"auto"`` = CUDA when present). ``world_size=0`` means one process per GPU,
  or :data:`DEFAULT_CPU_WORLD_SIZE` CPU processes without a GPU.
- **Fail fast, leave nothing behind**: when a rank raises, ``launch`` stops the others within
  a second and raises :class:`WorkerError` carrying that rank's traceback. Every worker runs in
  its own process group (session), which is killed as a whole, grandchildren included (e.g.
  DataLoader workers); a worker whose launcher dies exits by itself.
- **A world size the machine cannot give is an error before anything starts**: more ranks than
  GPUs on CUDA; on CPU more processes than cores unless ``oversubscribe=True`` (the documented
  fallback: extra processes share the cores, one thread each).

Inside a worker (or a ``torchrun`` script) use :func:`current_device`, :func:`print0`,
:func:`gather_object` and :func:`mean_metrics`; scripts launched by ``torchrun`` call
:func:`setup_from_env` first and :func:`cleanup` last.
"""

from __future__ import annotations

import faulthandler
import gc
import json
import os
import pickle
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from helpers.devices import default_backend, gpu_count, pick_device

DEFAULT_CPU_WORLD_SIZE = 2
DEFAULT_TIMEOUT_S = 300.0
_POLL_S = 0.05
_GRACE_S = 0.5  # after a first failure, how long to wait for the other ranks' own reports
_BOOTSTRAP = (
    "import json, sys; "
    "sys.path[:0] = json.loads(open(sys.argv[1] + '/sys_path.json').read()); "
    "from helpers.parallel.launch import _worker_main; _worker_main(sys.argv[1], int(sys.argv[2]))"
)


class WorkerError(RuntimeError):
    """A rank of a :func:`launch` job failed; the message holds that rank's traceback."""

    def __init__(self, rank: int, world_size: int, exitcode: int, details: str) -> None:
        self.rank, self.world_size, self.exitcode, self.details = rank, world_size, exitcode, details
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
            raise ValueError("device='cuda' was asked for but no GPU is visible; use 'auto' or 'cpu'.")
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
    spec = {"fn": fn, "args": args, "world_size": world_size, "backend": backend,
            "device_type": resolved_device.type, "threads": threads, "timeout_s": timeout_s}
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
            env = {**os.environ, "RANK": str(rank), "WORLD_SIZE": str(world_size),
                   "LOCAL_RANK": str(rank), "LOCAL_WORLD_SIZE": str(world_size),
                   "GROUP_RANK": "0", "OMP_NUM_THREADS": str(threads),
                   "MKL_NUM_THREADS": str(threads)}
            with open(job_dir / f"rank{rank}.out", "wb") as out, \
                    open(job_dir / f"rank{rank}.err", "wb") as err:
                procs.append(subprocess.Popen(
                    [sys.executable, "-c", _BOOTSTRAP, str(job_dir), str(rank)],
                    env=env, stdout=out, stderr=err, stdin=subprocess.DEVNULL,
                    start_new_session=True,
                ))
        _wait(procs, job_dir, world_size, started + timeout_s, timeout_s)
        return [_read_result(job_dir, rank) for rank in range(world_size)]
    finally:
        _stop(procs)
        if echo:
            _echo_output(job_dir, world_size)
        shutil.rmtree(job_dir, ignore_errors=True)


def _wait(procs: Sequence[subprocess.Popen], job_dir: Path, world_size: int,
          deadline: float, timeout_s: float) -> None:
    exited_at: dict[int, float] = {}  # wall-clock time each rank was first seen gone
    while True:
        codes = [p.poll() for p in procs]
        for rank, code in enumerate(codes):
            if code is not None:
                exited_at.setdefault(rank, time.time())
        if any(code not in (None, 0) for code in codes):
            grace_end = time.monotonic() + _GRACE_S
            while time.monotonic() < grace_end and any(p.poll() is None for p in procs):
                time.sleep(_POLL_S)
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
        time.sleep(_POLL_S)


# Errors a rank raises because a peer died first (its socket closed mid-collective).
_CONSEQUENCE_MARKERS = ("Connection reset by peer", "Connection closed by peer", "Broken pipe",
                        "DistBackendError", "NCCL communicator was aborted", "Socket Timeout")


def _failure(procs: Sequence[subprocess.Popen], job_dir: Path, world_size: int,
             exited_at: dict[int, float]) -> WorkerError:
    """The error of the rank that failed first, the others summarised.

    A rank whose error only says that a peer went away (connection reset, ...) is a
    consequence; among the rest, the earliest failure (by the worker's own clock when it left
    a traceback, else by when it was seen gone) is the cause.
    """
    reports = []
    for rank, proc in enumerate(procs):
        code = proc.poll()
        if code in (None, 0):
            continue
        report_file = job_dir / f"rank{rank}.error.json"
        if report_file.is_file():
            report = json.loads(report_file.read_text())
            when, details = report["time"], report["traceback"]
        else:
            tail = _tail(job_dir / f"rank{rank}.err")
            reason = f"killed by signal {-code}" if code < 0 else f"exited with code {code}"
            when, details = exited_at.get(rank, time.time()), (
                f"The process {reason} without a Python traceback."
                + (f" Its stderr ends with:\n{tail}" if tail else ""))
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


def _stop(procs: Sequence[subprocess.Popen]) -> None:
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


def _watch_parent(parent_pid: int) -> None:
    """Exit this worker if the process that launched it goes away (no orphans)."""
    while True:
        if os.getppid() != parent_pid:
            os._exit(3)
        time.sleep(1.0)


def _to_cpu(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu()
    if isinstance(value, dict):
        return {k: _to_cpu(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        converted = [_to_cpu(v) for v in value]
        return type(value)(converted) if not hasattr(value, "_fields") else type(value)(*converted)
    return value


def _worker_main(job_dir_text: str, rank: int) -> None:
    """Entry point of one worker process (started by :func:`launch`)."""
    job_dir = Path(job_dir_text)
    faulthandler.enable()  # a crash in native code still leaves a Python stack in stderr
    threading.Thread(target=_watch_parent, args=(os.getppid(),), daemon=True).start()
    try:
        spec = pickle.loads((job_dir / "spec.pkl").read_bytes())
        world_size = spec["world_size"]
        torch.set_num_threads(spec["threads"])
        try:
            torch.set_num_interop_threads(1)
        except RuntimeError:
            pass
        device_id = None
        if spec["device_type"] == "cuda":
            torch.cuda.set_device(rank)
            device_id = torch.device("cuda", rank)
        dist.init_process_group(
            spec["backend"], init_method=f"file://{job_dir / 'rendezvous'}", rank=rank,
            world_size=world_size, timeout=timedelta(seconds=spec["timeout_s"]),
            device_id=device_id,
        )
        result = _to_cpu(spec["fn"](rank, world_size, *spec["args"]))
        partial = job_dir / f".rank{rank}.result.pkl"
        partial.write_bytes(pickle.dumps(result))
        partial.replace(job_dir / f"rank{rank}.result.pkl")
    except BaseException:
        report = {"time": time.time(), "traceback": traceback.format_exc()}
        (job_dir / f"rank{rank}.error.json").write_text(json.dumps(report))
        sys.stdout.flush()
        sys.stderr.write(report["traceback"])
        sys.stderr.flush()
        os._exit(1)  # skip process-group teardown: the peers may be gone or stuck
    sys.stdout.flush()
    cleanup()


# ----------------------------------------------------------------------------------------------
# Inside a worker or a torchrun script
# ----------------------------------------------------------------------------------------------

def get_rank() -> int:
    """This process's global rank (0 outside a job)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank()
    return int(os.environ.get("RANK", 0))


def get_world_size() -> int:
    """The number of processes in the job (1 outside a job)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size()
    return int(os.environ.get("WORLD_SIZE", 1))


def is_main_process() -> bool:
    """True on rank 0: the one rank that prints, logs and writes checkpoints."""
    return get_rank() == 0


def print0(*args: Any, **kwargs: Any) -> None:
    """``print`` on rank 0 only (flushed), so a job with W ranks says things once, not W times."""
    if is_main_process():
        kwargs.setdefault("flush", True)
        print(*args, **kwargs)


def current_device() -> torch.device:
    """This rank's device: ``cuda:<local rank>`` when the job uses NCCL, else the CPU."""
    if dist.is_initialized() and dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def gather_object(value: Any) -> list[Any]:
    """Every rank's ``value`` (any picklable object), as a list indexed by rank, on all ranks."""
    if not dist.is_initialized():
        return [value]
    gathered: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, value)
    return gathered


def mean_metrics(metrics: dict[str, float], weight: float = 1.0) -> dict[str, float]:
    """The ``weight``-weighted mean of each metric over all ranks (e.g. weight = samples seen).

    One all-reduce of a small tensor; every rank gets the same answer.
    """
    names = sorted(metrics)
    if not dist.is_initialized():
        return {name: float(metrics[name]) for name in names}
    values = torch.tensor([float(metrics[n]) * weight for n in names] + [float(weight)],
                          dtype=torch.float64, device=current_device())
    dist.all_reduce(values)
    total_weight = values[-1].item()
    return {name: values[i].item() / total_weight for i, name in enumerate(names)}


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
    dist.init_process_group(default_backend(chosen), timeout=timedelta(seconds=timeout_s),
                            device_id=device_id)
    return chosen


def cleanup() -> None:
    """Tear the process group down (end of a worker or torchrun script).

    Collects garbage first: a DDP model caught in a reference cycle that outlives its process
    group is torn down at interpreter exit instead, which aborted about 1 run in 10 here
    ("terminate called without an active exception").
    """
    gc.collect()
    if dist.is_initialized():
        dist.destroy_process_group()


# ----------------------------------------------------------------------------------------------
# torchrun from a notebook
# ----------------------------------------------------------------------------------------------

def torchrun_command(
    script: str | Path,
    nproc_per_node: int,
    *script_args: str,
    nnodes: int = 1,
    rdzv_endpoint: str | None = None,
    rdzv_id: str = "course",
) -> list[str]:
    """``python -m torch.distributed.run ...`` for ``script`` (never a bare ``torchrun``).

    One node: ``--standalone`` (a private rendezvous on a free port). Several nodes: the c10d
    rendezvous at ``rdzv_endpoint`` (``host:port`` of any one node), the same on every node.
    """
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc-per-node={nproc_per_node}"]
    if nnodes == 1 and rdzv_endpoint is None:
        cmd.append("--standalone")
    else:
        if rdzv_endpoint is None:
            raise ValueError("Several nodes need rdzv_endpoint='host:port' (the same on every node).")
        cmd += [f"--nnodes={nnodes}", "--rdzv-backend=c10d", f"--rdzv-endpoint={rdzv_endpoint}",
                f"--rdzv-id={rdzv_id}"]
    return [*cmd, str(script), *map(str, script_args)]


def run_checked(cmd: Sequence[str], timeout_s: float = DEFAULT_TIMEOUT_S, **kwargs: Any) -> str:
    """Run ``cmd``, return its stdout; raise with the end of its stderr if it fails."""
    done = subprocess.run(list(cmd), capture_output=True, text=True, timeout=timeout_s, **kwargs)
    if done.returncode != 0:
        raise RuntimeError(
            f"{Path(cmd[0]).name} {' '.join(cmd[1:3])} ... failed with exit code "
            f"{done.returncode}. Its stderr ends with:\n{done.stderr[-3000:]}"
        )
    return done.stdout


def run_nodes(commands: Sequence[Sequence[str]], timeout_s: float = DEFAULT_TIMEOUT_S,
              **kwargs: Any) -> list[str]:
    """Start several commands at once (e.g. one torchrun per "node"), wait for all, stdout each.

    If one fails, the others are stopped and the error names it with the end of its stderr.
    """
    procs = [subprocess.Popen(list(cmd), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, start_new_session=True, **kwargs) for cmd in commands]
    outputs: list[tuple[str, str]] = [("", "")] * len(procs)
    try:
        readers = []
        for index, proc in enumerate(procs):
            def read(i: int = index, p: subprocess.Popen = proc) -> None:
                outputs[i] = p.communicate()
            thread = threading.Thread(target=read, daemon=True)
            thread.start()
            readers.append(thread)
        deadline = time.monotonic() + timeout_s
        timed_out, first_failed = False, None
        while any(p.poll() is None for p in procs):
            failed = [i for i, p in enumerate(procs) if p.poll() not in (None, 0)]
            if failed:
                first_failed = failed[0]
                break
            if time.monotonic() > deadline:
                timed_out = True
                break
            time.sleep(_POLL_S)
        _stop(procs)
        for thread in readers:
            thread.join(timeout=5)
        if timed_out:
            raise TimeoutError(f"The node commands did not finish within {timeout_s:g} s.")
        if first_failed is None:
            first_failed = next((i for i, p in enumerate(procs) if p.returncode != 0), None)
        if first_failed is not None:
            raise RuntimeError(
                f"node command {first_failed} failed (exit code {procs[first_failed].returncode})."
                f" Its stderr ends with:\n{outputs[first_failed][1][-3000:]}"
            )
        return [out for out, _ in outputs]
    finally:
        _stop(procs)
