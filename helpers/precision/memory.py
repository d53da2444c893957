"""Measuring memory on CPU and GPU alike: readings, peaks and the saved-tensor meter.

- ``memory_reading`` / ``track_memory``: one call for "how much memory is in use, and what
  was the peak": ``torch.cuda.memory_allocated`` / ``max_memory_allocated`` on a GPU, the
  process's resident set size (RSS, and its high-water mark) on a CPU.
- ``SavedTensorMeter`` / ``activation_bytes``: the bytes autograd keeps for the backward pass
  (activations), counted exactly with ``torch.autograd.graph.saved_tensors_hooks`` — the same
  number on any device (the course's one activation meter).

Surviving out-of-memory errors is in :mod:`helpers.precision.oom`; GPU status reports in
:mod:`helpers.precision.gpu_status`.
"""

from __future__ import annotations

import contextlib
import gc
import os
import sys
import weakref
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

MIB = 2**20
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


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
        return MemoryReading(
            str(device),
            torch.cuda.memory_allocated(device),
            torch.cuda.max_memory_allocated(device),
            "cuda allocator",
        )
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
    delta = MemoryDelta(
        str(device), start.source, start_bytes=start.current_bytes, peak_is_exact=exact
    )
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


def activation_bytes(
    model: nn.Module, *inputs: Any, autocast_dtype: torch.dtype | None = None
) -> int:
    """Bytes saved for backward by one forward pass of ``model`` (parameters excluded).

    With ``autocast_dtype`` the forward runs under ``torch.autocast`` on the inputs' device.
    The graph is freed before returning (no backward is run).
    """
    device = next((t.device for t in inputs if isinstance(t, torch.Tensor)), torch.device("cpu"))
    with (
        SavedTensorMeter(exclude=model.parameters()) as meter,
        torch.autocast(
            device.type, dtype=autocast_dtype or torch.bfloat16, enabled=autocast_dtype is not None
        ),
    ):
        output = model(*inputs)
    del output
    return meter.bytes
