"""Surviving out-of-memory errors: the batch-size back-off, a simulated cap, a real capped run.

- ``find_max_batch_size``: the batch-size back-off — try a size, halve it on OOM, optionally
  binary-search between the last failure and the last success.
- ``SimulatedMemoryCap``: a step function that raises ``torch.OutOfMemoryError`` above a cap
  you set (for tests and for CPU demos; it is a simulation and says so).
- ``mlp_training_step``: one real SGD step of an MLP at a given batch size (the workload).
- ``capped_backoff_in_subprocess``: a *real* CPU out-of-memory: a child process limits its own
  address space (``RLIMIT_AS``, Linux) and backs off on a real training step.
"""

from __future__ import annotations

import gc
import json
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from helpers.models import mlp
from helpers.precision.memory import _PAGE, MIB

OOM_MESSAGES = ("out of memory", "can't allocate memory", "cannot allocate memory")


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
            raise RuntimeError(
                f"Out of memory even at batch size {min_size}: reduce the model "
                "or the input size, or use a device with more memory."
            )
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
    width: int,
    depth: int = 2,
    n_features: int = 256,
    device: torch.device | str = "cpu",
    seed: int = 0,
    lr: float = 1e-3,
    model: nn.Module | None = None,
) -> Callable[[int], None]:
    """A function ``step(batch_size)`` doing one real SGD step (learning rate ``lr``) of an MLP
    on random data.

    The MLP (``helpers.models.mlp``: ``n_features`` → ``depth`` hidden layers of ``width`` → 10
    classes, seeded with ``seed``) is built once, or ``model`` is trained instead; each call draws
    a batch of the given size on ``device``, so its memory grows with the batch size like any
    training step's. The workload of the batch-size back-off demos.
    """
    device = torch.device(device)
    if model is None:
        torch.manual_seed(seed)
        model = mlp(n_features, 10, hidden=width, depth=depth)
    model = model.to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)

    def step(batch_size: int) -> None:
        inputs = torch.randn(batch_size, n_features, device=device)
        targets = torch.randint(0, 10, (batch_size,), device=device)
        loss = nn.functional.cross_entropy(model(inputs), targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


def _capped_child(
    cap_bytes: int, start: int, width: int, depth: int, n_features: int, refine: bool
) -> dict[str, Any]:
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
    return {
        "batch_size": result.batch_size,
        "attempts": result.attempts,
        "first_error": errors[0] if errors else "",
    }


def capped_backoff_in_subprocess(
    cap_bytes: int,
    start: int,
    *,
    width: int = 1024,
    depth: int = 2,
    n_features: int = 256,
    refine: bool = False,
    timeout_s: float = 120.0,
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
    code = (
        "import json, sys; from helpers.precision.oom import _capped_child; "
        "print(json.dumps(_capped_child(*json.loads(sys.argv[1]))))"
    )
    completed = subprocess.run(
        [sys.executable, "-c", code, json.dumps(arguments)],
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )
    if completed.returncode != 0:
        raise RuntimeError(f"The capped child failed: {completed.stderr.strip()[-500:]}")
    result = json.loads(completed.stdout.strip().splitlines()[-1])
    result["attempts"] = [tuple(a) for a in result["attempts"]]
    return result
