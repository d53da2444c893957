"""A bounded load generator (asyncio streams, keep-alive HTTP/1.1) and latency percentiles.

``run_load`` sends a fixed number of requests with a fixed number in flight, to a loopback URL
only, and stops by itself; it returns throughput, latency percentiles, the status codes and the
CPU time the client itself spent. It is a *closed-loop* generator: a worker sends its next
request only when the previous one is answered, so a slow server also slows the arrivals (and
hides part of its own queueing: "coordinated omission"). ``interleaved_sweep`` runs it on
several paths and concurrency levels in interleaved rounds and, when the server exposes
``/lab/cpu``, also records the server's CPU time per request.
"""

from __future__ import annotations

import asyncio
import json
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
    client_cpu_s: float = 0.0

    @property
    def requests_per_s(self) -> float:
        return len(self.latencies) / self.wall_s

    def ms(self, q: float) -> float:
        return 1000 * percentile(self.latencies, q)

    def row(self) -> dict[str, float]:
        """One table row: concurrency, requests/s and p50/p95/p99 in milliseconds."""
        return {
            "concurrency": self.concurrency,
            "requests": len(self.latencies),
            "requests_per_s": self.requests_per_s,
            "p50_ms": self.ms(50),
            "p95_ms": self.ms(95),
            "p99_ms": self.ms(99),
            "non_2xx": sum(n for code, n in self.status_counts.items() if code >= 300),
            "client_cpu_ms": 1000 * self.client_cpu_s / len(self.latencies),
        }


class Connection:
    """One keep-alive HTTP/1.1 connection that POSTs JSON: a minimal client on asyncio streams.

    A general client (httpx) costs the load generator a few CPU milliseconds per request in
    Python, enough on a small machine for the generator, not the server, to set the pace; this
    one only writes a request line, three headers and the body, and reads the status line, the
    headers and ``Content-Length`` bytes back."""

    def __init__(self, host: str, port: int, timeout_s: float):
        self.host, self.port, self.timeout_s = host, port, timeout_s
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def post(self, path: str, body: bytes) -> tuple[int, bytes]:
        return await asyncio.wait_for(self._post(path, body), self.timeout_s)

    async def _post(self, path: str, body: bytes) -> tuple[int, bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        assert self.reader is not None
        self.writer.write(
            f"POST {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        head = (await self.reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
        status = int(head[0].split(" ", 2)[1])
        headers = dict(line.split(":", 1) for line in head[1:] if ":" in line)
        headers = {name.strip().lower(): value.strip() for name, value in headers.items()}
        if "content-length" not in headers:
            raise RuntimeError(f"{path}: response without Content-Length ({headers}).")
        content = await self.reader.readexactly(int(headers["content-length"]))
        if headers.get("connection", "").lower() == "close":
            await self.close()
        return status, content

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            try:
                await self.writer.wait_closed()
            except OSError:
                pass
            self.reader = self.writer = None


async def run_load(
    url: str,
    bodies: Sequence[Any],
    concurrency: int,
    timeout_s: float = 30.0,
    keep_responses: bool = False,
) -> LoadResult:
    """POST each of ``bodies`` (JSON) to ``url``, at most ``concurrency`` in flight at a time:
    ``concurrency`` workers, one keep-alive connection each, share one iterator over the bodies."""
    parts = urlsplit(url)
    host = require_loopback(parts.hostname or "")
    if concurrency < 1 or not bodies:
        raise ValueError("run_load needs concurrency >= 1 and at least one body.")
    path = parts.path or "/"
    payloads = [json.dumps(body).encode() for body in bodies]
    latencies = [0.0] * len(bodies)
    statuses = [0] * len(bodies)
    responses: list[Any] = [None] * len(bodies)
    next_index = iter(range(len(bodies)))

    async def worker() -> None:
        connection = Connection(host, parts.port or 80, timeout_s)
        try:
            for i in next_index:  # shared iterator: each body sent once
                started = time.perf_counter()
                statuses[i], content = await connection.post(path, payloads[i])
                latencies[i] = time.perf_counter() - started
                if keep_responses:
                    responses[i] = json.loads(content)
        finally:
            await connection.close()

    started, cpu_started = time.perf_counter(), time.thread_time()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    wall_s = time.perf_counter() - started
    client_cpu_s = time.thread_time() - cpu_started  # the whole client runs in this thread
    return LoadResult(
        concurrency,
        tuple(latencies),
        wall_s,
        dict(Counter(statuses)),
        tuple(responses) if keep_responses else (),
        client_cpu_s,
    )


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


def server_cpu_s(base_url: str, cpu_path: str = "/lab/cpu") -> float:
    """The server process's CPU time so far (all its threads), from its ``/lab/cpu`` route."""
    require_loopback(urlsplit(base_url).hostname or "")
    return float(httpx.get(base_url + cpu_path, timeout=10).json()["process_cpu_s"])


def interleaved_sweep(
    base_url: str,
    paths: Sequence[str],
    bodies: Sequence[Any],
    concurrencies: Sequence[int],
    rounds: int = 3,
    warmup: int = 16,
    cpu_path: str | None = "/lab/cpu",
) -> list[dict[str, Any]]:
    """One protocol for a whole load test: in each of ``rounds`` rounds, every concurrency
    level, and at each level every path in turn, so a busy spell of a shared machine is spread
    over all of them. One row per (path, concurrency): the medians over rounds of requests/s,
    p50/p95/p99 (ms), the client's and (with ``cpu_path``) the server's CPU milliseconds per
    request, each round's requests/s (``rounds_requests_per_s``, for ratios paired by round)
    and the non-2xx count over all rounds."""
    if rounds < 1 or not paths or not concurrencies:
        raise ValueError("interleaved_sweep needs rounds >= 1, a path and a concurrency level.")
    for path in paths:
        measure_load(base_url + path, bodies[:warmup], min(max(concurrencies), warmup))
    runs: dict[tuple[str, int], list[dict[str, Any]]] = {
        (p, c): [] for c in concurrencies for p in paths
    }
    for _ in range(rounds):
        for concurrency in concurrencies:
            for path in paths:
                cpu_before = server_cpu_s(base_url, cpu_path) if cpu_path else math.nan
                row: dict[str, Any] = measure_load(base_url + path, bodies, concurrency).row()
                if cpu_path:
                    row["server_cpu_ms"] = (
                        1000 * (server_cpu_s(base_url, cpu_path) - cpu_before) / len(bodies)
                    )
                runs[(path, concurrency)].append(row)
    keys = ["requests_per_s", "p50_ms", "p95_ms", "p99_ms", "client_cpu_ms"] + (
        ["server_cpu_ms"] if cpu_path else []
    )
    return [
        {
            "path": path,
            "concurrency": concurrency,
            "requests": len(bodies),
            "rounds": rounds,
            **{key: statistics.median(run[key] for run in rs) for key in keys},
            "non_2xx": sum(run["non_2xx"] for run in rs),
            "rounds_requests_per_s": [run["requests_per_s"] for run in rs],
        }
        for (path, concurrency), rs in runs.items()
    ]
