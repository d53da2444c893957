"""Dynamic batching: requests that arrive together are run through the model as one batch.

Each request puts ``(item, future)`` on an ``asyncio.Queue`` and awaits its future. One
background task takes the first waiting item, then keeps collecting until the batch holds
``max_batch_size`` items or ``max_wait_s`` has passed since the first one, runs the whole batch
in a worker thread (so the event loop keeps accepting requests meanwhile) and hands each request
its own result.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from typing import Any


class DynamicBatcher:
    """Collect concurrent ``submit`` calls into batches for ``run_batch(items) -> results``."""

    def __init__(
        self,
        run_batch: Callable[[list[Any]], Sequence[Any]],
        max_batch_size: int = 32,
        max_wait_s: float = 0.005,
    ):
        if max_batch_size < 1 or max_wait_s < 0:
            raise ValueError("max_batch_size must be >= 1 and max_wait_s >= 0.")
        self.run_batch, self.max_batch_size, self.max_wait_s = run_batch, max_batch_size, max_wait_s
        self.queue: asyncio.Queue | None = None
        self.worker: asyncio.Task | None = None
        self.batch_sizes: list[int] = []

    async def start(self) -> None:
        self.queue = asyncio.Queue()
        self.worker = asyncio.create_task(self._loop())

    async def stop(self) -> None:
        if self.worker is not None:
            self.worker.cancel()
            await asyncio.gather(self.worker, return_exceptions=True)
            self.worker = None

    async def submit(self, item: Any) -> Any:
        """Queue ``item`` and wait for its result (an exception in the batch is re-raised here)."""
        if self.queue is None or self.worker is None:
            raise RuntimeError("DynamicBatcher.start() was not awaited.")
        future = asyncio.get_running_loop().create_future()
        await self.queue.put((item, future))
        return await future

    async def _collect(self) -> list[tuple[Any, asyncio.Future]]:
        queue = self.queue
        assert queue is not None, "start() creates the queue before the worker runs"
        batch = [await queue.get()]  # wait for the first request
        deadline = time.monotonic() + self.max_wait_s
        while len(batch) < self.max_batch_size:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                batch.append(await asyncio.wait_for(queue.get(), remaining))
            except asyncio.TimeoutError:
                break
        return batch

    async def _loop(self) -> None:
        while True:
            batch = await self._collect()
            items = [item for item, _ in batch]
            self.batch_sizes.append(len(items))
            try:
                results = await asyncio.to_thread(self.run_batch, items)
                if len(results) != len(items):
                    raise RuntimeError(
                        f"run_batch returned {len(results)} results for {len(items)} items."
                    )
            except Exception as exc:  # every waiting request gets the error, none hangs
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                continue
            for (_, future), result in zip(batch, results, strict=True):
                if not future.done():
                    future.set_result(result)
