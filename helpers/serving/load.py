"""A bounded load generator (asyncio + httpx) and latency percentiles.

``run_load`` sends a fixed number of requests with a fixed number in flight, to a loopback URL
only, and stops by itself; it returns throughput, latency percentiles and the status codes.
"""

from __future__ import annotations

import asyncio
import math
import statistics
import threading
import time
from collections import Counter
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import httpx

from helpers.serving.server import require_loopback


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100) with linear interpolation between order statistics
    (NumPy's default): rank ``(n - 1) * q / 100`` in the sorted values."""
    if not values:
        raise ValueError("percentile needs at least one value.")
    if not 0 <= q <= 100:
        raise ValueError(f"q must be in [0, 100], got {q}.")
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


@dataclass(frozen=True)
class LoadResult:
    """What one load run measured; latencies in seconds."""

    concurrency: int
    latencies: tuple[float, ...]
    wall_s: float
    status_counts: dict[int, int] = field(default_factory=dict)
    responses: tuple[Any, ...] = ()

    @property
    def requests_per_s(self) -> float:
        return len(self.latencies) / self.wall_s

    def ms(self, q: float) -> float:
        return 1000 * percentile(self.latencies, q)

    def row(self) -> dict[str, float]:
        """One table row: concurrency, requests/s and p50/p95/p99 in milliseconds."""
        return {"concurrency": self.concurrency, "requests": len(self.latencies),
                "requests_per_s": self.requests_per_s, "p50_ms": self.ms(50),
                "p95_ms": self.ms(95), "p99_ms": self.ms(99),
                "non_2xx": sum(n for code, n in self.status_counts.items() if code >= 300)}


async def run_load(url: str, bodies: Sequence[Any], concurrency: int, timeout_s: float = 30.0,
                   keep_responses: bool = False) -> LoadResult:
    """POST each of ``bodies`` (JSON) to ``url``, at most ``concurrency`` in flight at a time."""
    require_loopback(urlsplit(url).hostname or "")
    if concurrency < 1 or not bodies:
        raise ValueError("run_load needs concurrency >= 1 and at least one body.")
    latencies = [0.0] * len(bodies)
    statuses = [0] * len(bodies)
    responses: list[Any] = [None] * len(bodies)
    next_index = iter(range(len(bodies)))
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)

    async with httpx.AsyncClient(timeout=timeout_s, limits=limits) as client:
        async def worker() -> None:
            for i in next_index:                      # shared iterator: each body sent once
                started = time.perf_counter()
                response = await client.post(url, json=bodies[i])
                latencies[i] = time.perf_counter() - started
                statuses[i] = response.status_code
                if keep_responses:
                    responses[i] = response.json()

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall_s = time.perf_counter() - started
    return LoadResult(concurrency, tuple(latencies), wall_s, dict(Counter(statuses)),
                      tuple(responses) if keep_responses else ())


def run_sync(make_coroutine: Callable[[], Coroutine[Any, Any, Any]]) -> Any:
    """Run a coroutine to completion from sync code, even inside Jupyter's running event loop
    (it gets its own loop in a short-lived thread)."""
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = asyncio.run(make_coroutine())
        except BaseException as exc:  # re-raised in the caller's thread
            box["error"] = exc

    thread = threading.Thread(target=target, name="load-generator")
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]
    return box["value"]


def measure_load(url: str, bodies: Sequence[Any], concurrency: int, **kwargs: Any) -> LoadResult:
    """``run_load`` from sync code (a notebook cell, a benchmark script)."""
    return run_sync(lambda: run_load(url, bodies, concurrency, **kwargs))


def interleaved_load(base_url: str, paths: Sequence[str], bodies: Sequence[Any], concurrency: int,
                     rounds: int = 2, warmup: int = 16) -> dict[str, dict[str, float]]:
    """Load each path in turn, ``rounds`` times (path 1, path 2, ..., then again), so a busy
    spell on a shared machine does not land on one path only; per path, the median over rounds
    of requests/s, p50, p95 and p99 (ms), the total count of non-2xx answers, and each round's
    requests/s (``rounds_requests_per_s``, for ratios paired by round)."""
    rows: dict[str, list[dict[str, float]]] = {path: [] for path in paths}
    for path in paths:
        measure_load(base_url + path, bodies[:warmup], min(concurrency, warmup))
    for _ in range(rounds):
        for path in paths:
            rows[path].append(measure_load(base_url + path, bodies, concurrency).row())
    summary = {}
    for path, runs in rows.items():
        summary[path] = {key: statistics.median(run[key] for run in runs)
                         for key in ("requests_per_s", "p50_ms", "p95_ms", "p99_ms")}
        summary[path].update(concurrency=concurrency, requests=len(bodies),
                             non_2xx=sum(run["non_2xx"] for run in runs),
                             rounds_requests_per_s=[run["requests_per_s"] for run in runs])
    return summary
