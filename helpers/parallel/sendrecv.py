"""The send/recv engine of a pipeline: one training step of one stage, for any order of ops.

- :func:`run_schedule`: forward = receive the input, compute, send the output on; backward =
  receive the output's gradient, ``backward``, send the input's gradient back;
- :class:`Mailbox`: how the receives and sends are posted (early receives on gloo, sends paired
  with the next receive on NCCL);
- :class:`Recorder`: busy intervals and the activation bytes autograd holds;
  :func:`cpu_wait_seconds`: how long this thread waited for a free core.

Timestamps are ``time.perf_counter()``, a system-wide monotonic clock on Linux, so intervals of
ranks on the same machine share one time axis.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from helpers.parallel.pipeline_schedules import Interval, Op
from helpers.parallel.ranks import current_device


@dataclass
class Recorder:
    """Busy intervals of one rank, and the activation bytes autograd holds for backward.

    ``busy(kind, i)`` times a block of work; ``saving(i, parameters)`` counts the bytes of the
    non-parameter tensors that autograd saves during micro-batch ``i``'s forward;
    ``release(i)`` forgets them once its backward has run. ``peak_bytes`` and
    ``peak_in_flight`` are the largest totals seen. On CUDA the device is synchronised around
    each busy block so that the interval covers the kernels, not just their launch.
    """

    rank: int
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    intervals: list[Interval] = field(default_factory=list)
    held: dict[int, int] = field(default_factory=dict)
    peak_bytes: int = 0
    peak_in_flight: int = 0

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    @contextmanager
    def busy(self, kind: str, microbatch: int) -> Iterator[None]:
        self._sync()
        start = time.perf_counter()
        yield
        self._sync()
        self.intervals.append(Interval(self.rank, kind, microbatch, start, time.perf_counter()))

    @contextmanager
    def saving(self, microbatch: int, parameters: Sequence[torch.Tensor]) -> Iterator[None]:
        param_ptrs = {p.data_ptr() for p in parameters}
        seen: dict[
            int, int
        ] = {}  # tensors saved twice (a ReLU's output, the next input) count once

        def pack(t: torch.Tensor) -> torch.Tensor:
            ptr = t.data_ptr()
            if ptr not in param_ptrs:
                seen[ptr] = max(seen.get(ptr, 0), t.numel() * t.element_size())
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            yield
        self.held[microbatch] = sum(seen.values())
        self.peak_bytes = max(self.peak_bytes, sum(self.held.values()))
        self.peak_in_flight = max(self.peak_in_flight, len(self.held))

    def release(self, microbatch: int) -> None:
        self.held.pop(microbatch, None)

    def reset(self) -> None:
        self.intervals, self.held, self.peak_bytes, self.peak_in_flight = [], {}, 0, 0


def cpu_wait_seconds() -> float:
    """Seconds this thread has spent ready to run but waiting for a CPU core (Linux; else NaN).

    The ``run_delay`` of ``/proc/thread-self/schedstat``: time another program (or another
    thread) held the core. The difference over a step says how much of that step's idle time
    was the machine's, not the schedule's.
    """
    try:
        with open("/proc/thread-self/schedstat") as handle:
            return int(handle.read().split()[1]) / 1e9
    except (OSError, IndexError, ValueError):
        return float("nan")


class Mailbox:
    """One step's point-to-point traffic of one rank: receives in the order of ``order``, sends.

    Sends never make a rank wait for its neighbour, and receives are posted early:

    - on gloo (CPU) each receive is posted as soon as the previous one has completed, before the
      computing starts. Gloo moves a message only once its receive is posted; posted early, the
      sender writes the data at once from its own thread, instead of a helper thread having to
      find a free core later while both cores compute. Sends start at once (``isend``).
    - on NCCL a send is started together with the rank's next receive when one follows
      (``batch_isend_irecv``), as ``torch.distributed.pipelining`` does: in 1F1B two neighbours
      send to each other at the same time, and a send queued before a receive on each side
      would wait for the other forever.
    """

    def __init__(
        self,
        order: Sequence[Op],
        *,
        rank: int,
        n_stages: int,
        sizes: Sequence[int],
        in_shape: Sequence[int],
        out_shape: Sequence[int],
    ) -> None:
        self.rank, self.last = rank, rank == n_stages - 1
        self.sizes, self.in_shape, self.out_shape = sizes, in_shape, out_shape
        self.device = current_device()
        self.early = dist.is_initialized() and dist.get_backend() == "gloo"
        self.planned = [op for op in order if self.receives(op)]
        self.posted: list[tuple[torch.Tensor, Any]] = []  # receives started, in order
        self.taken = 0  # receives handed out so far
        self.pending: list[dist.P2POp] = []  # NCCL: a send waiting to go out with the next receive
        self.in_flight: list[Any] = []  # started sends, kept alive until done
        if self.early and self.planned:
            self._post()

    def receives(self, op: Op) -> bool:
        """Whether ``op`` needs a tensor from a neighbour (an input, or an output's gradient)."""
        return (op.kind == "F" and self.rank > 0) or (op.kind == "B" and not self.last)

    def _post(self) -> None:
        op = self.planned[len(self.posted)]
        shape, peer = (
            (self.in_shape, self.rank - 1) if op.kind == "F" else (self.out_shape, self.rank + 1)
        )
        buffer = torch.empty(self.sizes[op.microbatch], *shape, device=self.device)
        ops, self.pending = [*self.pending, dist.P2POp(dist.irecv, buffer, peer)], []
        self.posted.append((buffer, dist.batch_isend_irecv(ops)))

    def receive(self) -> torch.Tensor:
        """The next tensor this rank receives (waits for it)."""
        if self.taken == len(self.posted):
            self._post()
        buffer, works = self.posted[self.taken]
        self.taken += 1
        for work in works:
            work.wait()
        if self.early and len(self.posted) < len(self.planned):
            self._post()  # the next receive, before this rank starts computing
        return buffer

    def send(self, tensor: torch.Tensor, peer: int, receive_follows: bool) -> None:
        """Start sending ``tensor`` to ``peer`` (NCCL: with the next receive, if one follows)."""
        op = dist.P2POp(dist.isend, tensor.contiguous(), peer)
        if not self.early and receive_follows:
            self.pending.append(op)
        else:
            self.in_flight.append(dist.batch_isend_irecv([op]))

    def finish(self) -> None:
        """Wait until every send has gone out."""
        if self.pending:  # cannot happen for a valid order (the last op never precedes a receive)
            self.in_flight.append(dist.batch_isend_irecv(self.pending))
        for works in self.in_flight:
            for work in works:
                work.wait()


def run_schedule(
    stage: nn.Module,
    order: Sequence[Op],
    *,
    rank: int,
    n_stages: int,
    sizes: Sequence[int],
    in_shape: Sequence[int],
    out_shape: Sequence[int],
    inputs: Sequence[torch.Tensor] | None,
    targets: Sequence[torch.Tensor] | None,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    recorder: Recorder | None = None,
) -> float | None:
    """One training step of this rank's ``stage`` in the given ``order``, by send/recv.

    Rank 0 reads micro-batch ``i`` from ``inputs``, the others receive it (per-sample shape
    ``in_shape``, ``sizes[i]`` samples). The last rank computes ``loss_fn(output, target) / m``,
    so the gradients summed over the m micro-batches equal the whole batch's, and returns the
    summed loss (the others return None). Backward receives the output's gradient
    (``out_shape``) and sends the input's gradient back. Gradients accumulate into ``stage``.
    """
    last, n_micro = rank == n_stages - 1, len(sizes)
    if rank == 0 and (inputs is None or len(inputs) != n_micro):
        raise ValueError(f"rank 0 needs {n_micro} input micro-batches")
    if last and (targets is None or len(targets) != n_micro):
        raise ValueError(f"the last rank needs {n_micro} target micro-batches")
    params = list(stage.parameters())
    rec = recorder or Recorder(rank, current_device())
    mail = Mailbox(
        order, rank=rank, n_stages=n_stages, sizes=sizes, in_shape=in_shape, out_shape=out_shape
    )
    saved_inputs, saved_outputs = {}, {}
    loss_total = 0.0
    for position, op in enumerate(order):
        i = op.microbatch
        receive_follows = position + 1 < len(order) and mail.receives(order[position + 1])
        if op.kind == "F":
            if rank == 0:
                assert inputs is not None, "rank 0 feeds the micro-batches"
                inp = inputs[i]
            else:
                inp = mail.receive().requires_grad_(True)
            with rec.busy("F", i), rec.saving(i, params):
                out = stage(inp)
                if last:
                    assert targets is not None, "the last rank computes the loss"
                    out = loss_fn(out, targets[i]) / n_micro
            if last:
                loss_total += out.item()
            else:
                mail.send(out.detach(), rank + 1, receive_follows)  # activations on
            saved_inputs[i], saved_outputs[i] = inp, out
        elif op.kind == "B":
            out = saved_outputs.pop(i)
            grad = None if last else mail.receive()  # the output's gradient (last: out is the loss)
            with rec.busy("B", i):
                out.backward(grad)
            rec.release(i)
            inp = saved_inputs.pop(i)
            if rank > 0:
                assert inp.grad is not None, "the received activation required grad"
                mail.send(inp.grad, rank - 1, receive_follows)  # the input's gradient back
        else:
            raise ValueError(f"unknown op kind {op.kind!r}")
    mail.finish()
    return loss_total if last else None
