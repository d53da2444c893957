"""The α–β cost model of an all-reduce: latency plus bytes over bandwidth.

A ring all-reduce over W ranks runs 2(W−1) steps (a reduce-scatter, then an all-gather), each
sending ``n/W`` bytes, so (Thakur, Rabenseifner & Gropp, 2005; NCCL's "bus bandwidth")::

    T(n) = 2(W−1)·α + 2(W−1)/W · n / B

with α the per-message latency and B the link bandwidth (bytes/s). Measured times of one
``W`` are a straight line ``T = a + b·n``; :func:`fit_alpha_beta` fits it (least squares on
relative errors) and turns intercept and slope back into α and B. :func:`predict_allreduce_s` uses either the fit
or a link's published bandwidth (:data:`GPU_LINKS`, cited there) — the latter is a prediction,
not a measurement.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from helpers.parallel.ranks import current_device


@dataclass(frozen=True)
class AlphaBeta:
    """Per-step latency ``alpha_s`` (seconds) and bandwidth ``bandwidth`` (bytes/s)."""

    alpha_s: float
    bandwidth: float


# Published per-GPU, one-direction bandwidths (bytes/s). NVLink 4 (H100 SXM): 900 GB/s total,
# i.e. 450 GB/s each way (NVIDIA H100 datasheet). InfiniBand NDR: 400 Gb/s per port = 50 GB/s
# (NVIDIA ConnectX-7 datasheet), one port per GPU as in a DGX H100.
GPU_LINKS: dict[str, float] = {
    "NVLink 4 (H100, within a node)": 450e9,
    "InfiniBand NDR 400 Gb/s (between nodes)": 50e9,
}


def ring_bytes_per_rank(n_bytes: float, world: int) -> float:
    """Bytes each rank sends (and receives) in a ring all-reduce of ``n_bytes``: 2(W−1)/W·n."""
    if world < 1:
        raise ValueError(f"world must be >= 1, got {world}.")
    return 2 * (world - 1) / world * n_bytes


def predict_allreduce_s(n_bytes: float, world: int, model: AlphaBeta) -> float:
    """Ring all-reduce time: 2(W−1)·α + 2(W−1)/W·n/B (zero for one rank)."""
    return 2 * (world - 1) * model.alpha_s + ring_bytes_per_rank(n_bytes, world) / model.bandwidth


def fit_alpha_beta(n_bytes: list[float], seconds: list[float], world: int) -> AlphaBeta:
    """Line ``T = a + b·n`` through (bytes, seconds) of all-reduces at world size ``world``.

    Least squares on *relative* errors (weights 1/T²): the sizes span orders of magnitude, and
    plain least squares would let the largest message alone set the line and leave the
    latency to chance. Intercept ``a`` = 2(W−1)α, slope ``b`` = 2(W−1)/(W·B). Raises on too
    few points or a non-positive slope (times that do not grow with the size give no bandwidth).
    """
    if len(n_bytes) != len(seconds) or len(n_bytes) < 2:
        raise ValueError("need at least two (bytes, seconds) pairs of equal length.")
    if world < 2:
        raise ValueError("an all-reduce over one rank moves nothing: world must be >= 2.")
    x, y = torch.tensor(n_bytes, dtype=torch.float64), torch.tensor(seconds, dtype=torch.float64)
    if (y <= 0).any():
        raise ValueError("every time must be positive.")
    w = 1.0 / y**2
    xm, ym = (w * x).sum() / w.sum(), (w * y).sum() / w.sum()
    slope = (w * (x - xm) * (y - ym)).sum() / (w * (x - xm) ** 2).sum()
    intercept = ym - slope * xm
    if slope <= 0:
        raise ValueError("the times do not grow with the message size: no bandwidth to fit.")
    return AlphaBeta(
        alpha_s=max(0.0, intercept.item()) / (2 * (world - 1)),
        bandwidth=2 * (world - 1) / (world * slope.item()),
    )


def time_allreduce(
    rank: int, world_size: int, sizes_bytes: list[int], repeats: int = 10, warmup: int = 3
) -> list[dict[str, Any]]:
    """Median and fastest seconds of an fp32 all-reduce of each size (ranks aligned by a barrier).

    Sizes are interleaved over the repeats, so a burst of load from elsewhere hits them alike.
    """
    device = current_device()
    buffers = {n: torch.ones(max(1, n // 4), device=device) for n in sizes_bytes}
    times: dict[int, list[float]] = {n: [] for n in sizes_bytes}
    for repeat in range(warmup + repeats):
        for n, buffer in buffers.items():
            dist.barrier()
            started = time.perf_counter()
            dist.all_reduce(buffer)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            if repeat >= warmup:
                times[n].append(time.perf_counter() - started)
    return [
        {
            "rank": rank,
            "bytes": 4 * buffers[n].numel(),
            "median_s": statistics.median(t),
            "best_s": min(t),
        }
        for n, t in times.items()
    ]
