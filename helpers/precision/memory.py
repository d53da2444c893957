"""Measuring memory, and surviving out-of-memory errors, on CPU and GPU alike.

- ``memory_reading`` / ``track_memory``: one call for "how much memory is in use, and what
  was the peak": ``torch.cuda.memory_allocated`` / ``max_memory_allocated`` on a GPU, the
  process's resident set size (RSS, and its high-water mark) on a CPU.
- ``SavedTensorMeter``: the bytes autograd keeps for the backward pass (activations), counted
  exactly with ``torch.autograd.graph.saved_tensors_hooks`` — the same number on any device.
- ``find_max_batch_size``: the batch-size back-off — try a size, halve it on OOM, optionally
  binary-search between the last failure and the last success.
- ``SimulatedMemoryCap``: a step function that raises ``torch.OutOfMemoryError`` above a cap
  you set (for tests and for CPU demos; it is a simulation and says so).
- ``capped_backoff_in_subprocess``: a *real* CPU out-of-memory: a child process limits its own
  address space (``RLIMIT_AS``, Linux) and backs off on a real training step.
- ``gpu_status`` / ``nvidia_smi``: device count, memory and utilisation; both degrade
  gracefully (an empty result and a reason) on a machine without a GPU.
"""

from __future__ import annotations

import contextlib
import gc
import json
import os
import shutil
import subprocess
import sys
import weakref
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

MIB = 2**20
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
OOM_MESSAGES = ("out of memory", "can't allocate memory", "cannot allocate memory")


# --------------------------------------------------------------------------- process memory


def _status_kib(field_name: str) -> int | None:
    """A ``kB`` field of ``/proc/self/status`` (Linux), or ``None`` elsewhere."""
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith(field_name + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def process_rss_bytes() -> int:
    """Resident set size of this process now (bytes): the RAM its pages occupy."""
    try:
        with open("/proc/self/statm") as handle:
            return int(handle.read().split()[1]) * _PAGE
    except OSError:
        pass
    try:
        import psutil

        return int(psutil.Process().memory_info().rss)
    except ImportError as exc:  # pragma: no cover - non-Linux without psutil
        raise RuntimeError("process_rss_bytes needs Linux /proc or the psutil package.") from exc


def process_peak_rss_bytes() -> int:
    """High-water mark of the RSS (bytes): ``VmHWM`` on Linux, ``ru_maxrss`` elsewhere."""
    hwm = _status_kib("VmHWM")
    if hwm is not None:
        return hwm * 1024
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)


def reset_process_peak_rss() -> bool:
    """Reset the RSS high-water mark to the current RSS (Linux ``/proc/self/clear_refs``).

    Returns ``False`` where that is not possible; the peak then covers the process's lifetime.
    """
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
        return True
    except OSError:
        return False


@dataclass(frozen=True)
class MemoryReading:
    """Memory in use and its peak, from the source that fits the device."""

    device: str
    current_bytes: int
    peak_bytes: int
    source: str  # "cuda allocator" or "process RSS"

    @property
    def current_mib(self) -> float:
        return self.current_bytes / MIB

    @property
    def peak_mib(self) -> float:
        return self.peak_bytes / MIB


def memory_reading(device: torch.device | str = "cpu") -> MemoryReading:
    """Memory in use on ``device``: tensors allocated on a GPU, the process's RSS on a CPU.

    The two are different things on purpose: on a GPU the caching allocator counts exactly the
    bytes of live tensors (``memory_allocated``); on a CPU the allocator keeps no such count,
    and the RSS also holds the Python interpreter, libraries and freed-but-cached heap.
    """
    device = torch.device(device)
    if device.type == "cuda":
        return MemoryReading(str(device), torch.cuda.memory_allocated(device),
                             torch.cuda.max_memory_allocated(device), "cuda allocator")
    if device.type != "cpu":
        raise ValueError(f"memory_reading supports 'cpu' and 'cuda', got {device.type!r}.")
    return MemoryReading("cpu", process_rss_bytes(), process_peak_rss_bytes(), "process RSS")


def reset_peak(device: torch.device | str = "cpu") -> bool:
    """Reset the peak counter of ``device``; ``False`` if this platform cannot (CPU, non-Linux)."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return True
    return reset_process_peak_rss()


@dataclass
class MemoryDelta:
    """What ``track_memory`` measured over a block: growth and peak above the start."""

    device: str
    source: str
    start_bytes: int = 0
    end_bytes: int = 0
    peak_bytes: int = 0
    peak_is_exact: bool = True  # False: the CPU peak could not be reset (lifetime peak)

    @property
    def growth_mib(self) -> float:
        """Memory in use at the end minus at the start (MiB)."""
        return (self.end_bytes - self.start_bytes) / MIB

    @property
    def peak_above_start_mib(self) -> float:
        """Highest memory in use during the block, minus at the start (MiB)."""
        return (self.peak_bytes - self.start_bytes) / MIB


@contextlib.contextmanager
def track_memory(device: torch.device | str = "cpu", collect: bool = True) -> Iterator[MemoryDelta]:
    """Measure memory growth and peak over a ``with`` block on ``device``.

    ``collect=True`` runs the garbage collector before both readings so that objects waiting
    for collection do not count. On CUDA the readings are synchronised with the device.
    """
    device = torch.device(device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda *a: None)
    if collect:
        gc.collect()
    sync(device)
    exact = reset_peak(device)
    start = memory_reading(device)
    delta = MemoryDelta(str(device), start.source, start_bytes=start.current_bytes,
                        peak_is_exact=exact)
    try:
        yield delta
    finally:
        sync(device)
        if collect:
            gc.collect()
        end = memory_reading(device)
        delta.end_bytes, delta.peak_bytes = end.current_bytes, end.peak_bytes


# --------------------------------------------------------------------------- activation memory


@dataclass
class SavedTensorMeter:
    """Count the bytes autograd saves for backward inside a ``with`` block.

    Every tensor that an operation stores for its backward pass goes through the pack hook of
    ``torch.autograd.graph.saved_tensors_hooks``; the meter adds up the distinct storages
    (a tensor and its views are counted once). Storages of ``exclude`` tensors (pass
    ``model.parameters()``) are left out, so the count is the activation memory: what grows
    with the batch size and disappears after ``backward()``. It is exact and device-independent.

    ``bytes`` is everything saved during the block (over a loop: every step's saves added up);
    ``alive_bytes``, read at any time, is the part still held by graphs — those that have not
    run their backward and are still referenced. A training loop that frees its graphs ends with
    ``alive_bytes == 0``; one that keeps losses or outputs with their graphs does not.
    """

    exclude: Iterable[torch.Tensor] = ()
    bytes: int = 0
    tensors: int = 0
    _saved: dict[int, tuple[weakref.ref, int]] = field(default_factory=dict, repr=False)
    _context: Any = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self._excluded = {self._key(t) for t in self.exclude}

    @staticmethod
    def _key(tensor: torch.Tensor) -> int:
        return tensor.untyped_storage().data_ptr()

    def _pack(self, tensor: torch.Tensor) -> torch.Tensor:
        # Return a detached alias, never ``tensor`` itself: an op that saves its own output
        # (ReLU, softmax, ...) would otherwise get a reference cycle output -> grad_fn ->
        # saved output, which autograd's own saving avoids and the garbage collector cannot
        # see, and every such graph would leak. The alias shares the storage (no copy) and is
        # held by the graph alone, so its weak reference says whether the graph still lives.
        packed = tensor.detach()
        key = self._key(tensor)
        if key in self._excluded:
            return packed
        known = self._saved.get(key)
        if known is None or known[0]() is None:  # new storage, or an old address reused
            nbytes = tensor.untyped_storage().nbytes()
            self._saved[key] = (weakref.ref(packed), nbytes)
            self.bytes += nbytes
            self.tensors += 1
        return packed

    def __enter__(self) -> SavedTensorMeter:
        self._context = torch.autograd.graph.saved_tensors_hooks(self._pack, lambda t: t)
        self._context.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._context.__exit__(*exc)

    @property
    def mib(self) -> float:
        return self.bytes / MIB

    @property
    def alive_bytes(self) -> int:
        """Bytes of the saved tensors that are still alive now."""
        return sum(nbytes for ref, nbytes in self._saved.values() if ref() is not None)


def activation_bytes(model: nn.Module, *inputs: Any, autocast_dtype: torch.dtype | None = None) -> int:
    """Bytes saved for backward by one forward pass of ``model`` (parameters excluded).

    With ``autocast_dtype`` the forward runs under ``torch.autocast`` on the inputs' device.
    The graph is freed before returning (no backward is run).
    """
    device = next((t.device for t in inputs if isinstance(t, torch.Tensor)), torch.device("cpu"))
    with SavedTensorMeter(exclude=model.parameters()) as meter, torch.autocast(
        device.type, dtype=autocast_dtype or torch.bfloat16, enabled=autocast_dtype is not None
    ):
        output = model(*inputs)
    del output
    return meter.bytes


# --------------------------------------------------------------------------- out of memory


def is_oom_error(exc: BaseException) -> bool:
    """Whether ``exc`` is an out-of-memory error: ``torch.OutOfMemoryError`` (CUDA), or the
    ``RuntimeError`` the CPU allocator raises ("can't allocate memory")."""
    if isinstance(exc, torch.OutOfMemoryError):
        return True
    return isinstance(exc, RuntimeError) and any(m in str(exc).lower() for m in OOM_MESSAGES)


def free_cached_memory() -> None:
    """Collect garbage and hand cached CUDA blocks back to the driver (a no-op for the CPU)."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


@dataclass
class BackoffResult:
    """What ``find_max_batch_size`` found: the largest size that ran, and every attempt."""

    batch_size: int
    attempts: list[tuple[int, bool]]  # (batch size, ran without OOM), in the order tried

    @property
    def ooms(self) -> int:
        return sum(not ok for _, ok in self.attempts)


def find_max_batch_size(
    step: Callable[[int], Any],
    start: int,
    *,
    min_size: int = 1,
    refine: bool = False,
    cleanup: Callable[[], None] | None = free_cached_memory,
) -> BackoffResult:
    """The largest batch size for which ``step(batch_size)`` runs without running out of memory.

    Tries ``start``, and on an out-of-memory error halves the size until a step succeeds
    (sizes below ``min_size`` are not tried). With ``refine=True`` it then binary-searches
    between the last success and the last failure, so the result is the exact largest size
    (assuming memory grows with the batch); without it, the result is ``start / 2**k``.

    Memory is freed between attempts *after* leaving the ``except`` block: a caught exception
    keeps the failed step's frames, and the tensors in them, alive until then. ``cleanup``
    (default: garbage collection and ``torch.cuda.empty_cache``) runs after every attempt;
    pass ``None`` to skip it when the step allocates nothing real. Errors other than
    out-of-memory propagate. Raises ``RuntimeError`` if even ``min_size`` does not fit.
    """
    if min_size < 1 or start < min_size:
        raise ValueError(f"Need 1 <= min_size <= start, got min_size={min_size}, start={start}.")
    attempts: list[tuple[int, bool]] = []

    def fits(size: int) -> bool:
        ok = True
        try:
            step(size)
        except (RuntimeError, torch.OutOfMemoryError) as exc:
            if not is_oom_error(exc):
                raise
            ok = False
        if cleanup is not None:  # outside the except block: the failed frames are gone now
            cleanup()
        attempts.append((size, ok))
        return ok

    size, smallest_failure = start, None
    while not fits(size):
        if size == min_size:
            raise RuntimeError(f"Out of memory even at batch size {min_size}: reduce the model "
                               "or the input size, or use a device with more memory.")
        smallest_failure = size
        size = max(min_size, size // 2)
    best = size
    if refine and smallest_failure is not None:
        low, high = best, smallest_failure  # low ran, high ran out of memory
        while high - low > 1:
            middle = (low + high) // 2
            if fits(middle):
                low = middle
            else:
                high = middle
        best = low
    return BackoffResult(best, attempts)


@dataclass
class SimulatedMemoryCap:
    """A stand-in for a training step that "runs out of memory" above a cap — a simulation.

    ``cost(batch_size)`` says how many bytes a step would need (a formula, or a measured
    number such as ``activation_bytes``); calling the object raises ``torch.OutOfMemoryError``
    when that exceeds ``cap_bytes``, like the CUDA allocator would, and otherwise calls
    ``step`` (if given). No memory is really exhausted: use it to test OOM handling anywhere.
    """

    cap_bytes: int
    cost: Callable[[int], int]
    step: Callable[[int], Any] | None = None
    calls: list[int] = field(default_factory=list)

    def __call__(self, batch_size: int) -> Any:
        self.calls.append(batch_size)
        needed = self.cost(batch_size)
        if needed > self.cap_bytes:
            raise torch.OutOfMemoryError(
                f"Simulated OOM: batch {batch_size} needs {needed / MIB:.1f} MiB, "
                f"cap is {self.cap_bytes / MIB:.1f} MiB."
            )
        return self.step(batch_size) if self.step is not None else None


def mlp_training_step(
    width: int, depth: int = 2, n_features: int = 256, device: torch.device | str = "cpu",
    seed: int = 0,
) -> Callable[[int], None]:
    """A function ``step(batch_size)`` doing one real SGD step of an MLP on random data.

    The MLP (``n_features`` → ``depth`` hidden layers of ``width`` → 10 classes) is built once;
    each call draws a batch of the given size on ``device``, so its memory grows with the
    batch size like any training step's. The workload of the batch-size back-off demos.
    """
    device = torch.device(device)
    torch.manual_seed(seed)
    layers: list[nn.Module] = [nn.Linear(n_features, width), nn.ReLU()]
    for _ in range(depth - 1):
        layers += [nn.Linear(width, width), nn.ReLU()]
    model = nn.Sequential(*layers, nn.Linear(width, 10)).to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)

    def step(batch_size: int) -> None:
        inputs = torch.randn(batch_size, n_features, device=device)
        targets = torch.randint(0, 10, (batch_size,), device=device)
        loss = nn.functional.cross_entropy(model(inputs), targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


def _capped_child(cap_bytes: int, start: int, width: int, depth: int, n_features: int,
                  refine: bool) -> dict[str, Any]:
    """Run in a child process: cap the address space, then back off on a real MLP step."""
    import resource

    torch.set_num_threads(1)
    step = mlp_training_step(width, depth, n_features)
    step(2)  # warm-up: libraries and first-call buffers are mapped before the cap
    with open("/proc/self/statm") as handle:
        mapped = int(handle.read().split()[0]) * _PAGE
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    limit = mapped + cap_bytes
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    errors: list[str] = []

    def recording_step(batch_size: int) -> None:
        try:
            step(batch_size)
        except RuntimeError as exc:
            errors.append(str(exc).splitlines()[0][:160])
            raise

    result = find_max_batch_size(recording_step, start, refine=refine)
    return {"batch_size": result.batch_size, "attempts": result.attempts,
            "first_error": errors[0] if errors else ""}


def capped_backoff_in_subprocess(
    cap_bytes: int, start: int, *, width: int = 1024, depth: int = 2, n_features: int = 256,
    refine: bool = False, timeout_s: float = 120.0,
) -> dict[str, Any]:
    """A real out-of-memory on the CPU: back off on a real training step under a memory cap.

    A fresh Python process builds an MLP, then limits its own address space to what it has
    mapped plus ``cap_bytes`` (``resource.setrlimit(RLIMIT_AS)``; Linux only), and runs
    ``find_max_batch_size`` on real SGD steps: allocations beyond the cap fail inside PyTorch's
    CPU allocator exactly as they would when RAM runs out. Returns the largest batch size,
    the attempts, and the first allocator error message.
    """
    if not sys.platform.startswith("linux"):
        raise RuntimeError("capped_backoff_in_subprocess needs Linux (RLIMIT_AS and /proc).")
    arguments = [cap_bytes, start, width, depth, n_features, refine]
    code = ("import json, sys; from helpers.precision.memory import _capped_child; "
            "print(json.dumps(_capped_child(*json.loads(sys.argv[1]))))")
    completed = subprocess.run([sys.executable, "-c", code, json.dumps(arguments)],
                               capture_output=True, text=True, timeout=timeout_s, check=False)
    if completed.returncode != 0:
        raise RuntimeError(f"The capped child failed: {completed.stderr.strip()[-500:]}")
    result = json.loads(completed.stdout.strip().splitlines()[-1])
    result["attempts"] = [tuple(a) for a in result["attempts"]]
    return result


# --------------------------------------------------------------------------- GPU status


@dataclass
class GpuReport:
    """Rows of per-GPU facts (empty without a GPU) and a note saying where they came from."""

    rows: list[dict[str, Any]]
    note: str


def gpu_status() -> GpuReport:
    """Per visible GPU: name, compute capability, total/free memory, this process's allocated
    and reserved memory, and utilisation (``None`` when ``pynvml`` is missing)."""
    if not torch.cuda.is_available() or torch.cuda.device_count() == 0:
        return GpuReport([], "no CUDA GPU visible to PyTorch (torch.cuda.is_available() is False)")
    rows = []
    for index in range(torch.cuda.device_count()):
        free, total = torch.cuda.mem_get_info(index)
        try:
            utilisation: int | None = torch.cuda.utilization(index)
        except Exception:  # pynvml missing or NVML unavailable
            utilisation = None
        major, minor = torch.cuda.get_device_capability(index)
        rows.append({
            "index": index,
            "name": torch.cuda.get_device_name(index),
            "capability": f"{major}.{minor}",
            "total_gib": round(total / 2**30, 2),
            "free_gib": round(free / 2**30, 2),
            "allocated_gib": round(torch.cuda.memory_allocated(index) / 2**30, 3),
            "reserved_gib": round(torch.cuda.memory_reserved(index) / 2**30, 3),
            "utilization_pct": utilisation,
        })
    return GpuReport(rows, "from torch.cuda (free/total: whole device; allocated/reserved: this process)")


NVIDIA_SMI_FIELDS = ("index", "name", "utilization.gpu", "memory.used", "memory.total", "temperature.gpu")


def nvidia_smi(fields: Iterable[str] = NVIDIA_SMI_FIELDS, timeout_s: float = 10.0) -> GpuReport:
    """Query ``nvidia-smi`` (all processes' view of every GPU); empty with a reason if absent."""
    fields = list(fields)
    binary = shutil.which("nvidia-smi")
    if binary is None:
        return GpuReport([], "nvidia-smi not found on PATH (no NVIDIA driver on this machine)")
    try:
        completed = subprocess.run(
            [binary, f"--query-gpu={','.join(fields)}", "--format=csv,noheader,nounits"],
            capture_output=True, text=True, timeout=timeout_s, check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return GpuReport([], f"nvidia-smi could not run: {type(exc).__name__}")
    if completed.returncode != 0:
        return GpuReport([], f"nvidia-smi failed: {completed.stderr.strip()[:200]}")
    rows = [dict(zip(fields, (v.strip() for v in line.split(",")), strict=False))
            for line in completed.stdout.strip().splitlines() if line.strip()]
    return GpuReport(rows, "from nvidia-smi (memory in MiB, utilisation in % over the last sample)")
