"""Timing on a shared machine: best-of-repeats per call, interleaved comparisons, thread counts.

The minimum over repeats, not the mean, is the figure least disturbed by other processes; CUDA
devices are synchronised around each repeat because kernels run asynchronously.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import torch


@contextlib.contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Run a block with ``torch.set_num_threads(n)`` and restore the previous count after.

    On a shared or busy machine one thread gives the steadiest CPU timings. ``None`` changes
    nothing.
    """
    if n is not None and n < 1:
        raise ValueError(f"Thread count must be >= 1 (or None), got {n}.")
    previous = torch.get_num_threads()
    if n is not None:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def seconds_per_call(
    fn: Callable[[], Any],
    device: torch.device | str = "cpu",
    repeats: int = 5,
    number: int = 10,
    warmup: int = 2,
) -> float:
    """Best time of one call of ``fn`` (seconds): the minimum over ``repeats`` of the mean of
    ``number`` back-to-back calls, after ``warmup`` calls. On CUDA the device is synchronised
    before and after each repeat (kernels run asynchronously). The minimum, not the mean, is
    the number least disturbed by other processes on the machine.
    """
    if repeats < 1 or number < 1 or warmup < 0:
        raise ValueError("repeats and number must be >= 1 and warmup >= 0.")
    device = torch.device(device)
    sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)
    for _ in range(warmup):
        fn()
    best = math.inf
    for _ in range(repeats):
        sync()
        started = time.perf_counter()
        for _ in range(number):
            fn()
        sync()
        best = min(best, (time.perf_counter() - started) / number)
    return best


def compare_seconds(
    fns: Mapping[str, Callable[[], Any]],
    device: torch.device | str = "cpu",
    repeats: int = 5,
    number: int = 10,
    warmup: int = 2,
) -> dict[str, float]:
    """Best time per call of each function in ``fns`` (seconds), like ``seconds_per_call``, but
    with the repeats interleaved — repeat 1 of every function, then repeat 2, ... — so that a
    slow spell on a busy machine does not land on one contender only. Ratios of the results are
    the speed-ups.
    """
    if repeats < 1 or number < 1 or warmup < 0:
        raise ValueError("repeats and number must be >= 1 and warmup >= 0.")
    device = torch.device(device)
    sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    best = dict.fromkeys(fns, math.inf)
    for _ in range(repeats):
        for name, fn in fns.items():
            sync()
            started = time.perf_counter()
            for _ in range(number):
                fn()
            sync()
            best[name] = min(best[name], (time.perf_counter() - started) / number)
    return best
