"""Data parallelism built from gradient hooks: per parameter, in buckets, asynchronously.

:class:`HookDDP` registers ``register_post_accumulate_grad_hook`` on every parameter: autograd
calls the hook the moment that parameter's gradient is complete, in the middle of backward.

- ``bucket_bytes=None``, ``async_op=False``: one blocking all-reduce per parameter, inside the
  hook (backward waits for each);
- ``bucket_bytes=n``: parameters are grouped, in the reverse order of ``model.parameters()``
  (roughly the order backward finishes them), into buckets of about ``n`` bytes; when a
  bucket's last gradient arrives its gradients are flattened into one buffer and all-reduced
  as one message (fewer, larger messages: less latency paid);
- ``async_op=True``: the all-reduce is started (``async_op=True``) and backward goes on while
  it runs; :meth:`HookDDP.finish` waits for every handle before the optimizer step, then
  divides by the world size and copies the buckets back into ``.grad``.

:func:`hook_ddp_equivalence` proves each mode equal to ``DistributedDataParallel`` (and that
skipping the all-reduce breaks it); :func:`exposed_communication` times a step against bucket
sizes.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import Any, cast

import torch
import torch.distributed as dist
from torch import nn

from helpers.parallel.ranks import current_device
from helpers.scale.recompute import ModelSpec, lm_loss, random_tokens


def assign_buckets(sizes_bytes: list[int], bucket_bytes: int | None) -> list[list[int]]:
    """Indices of the parameters in each bucket, filled in reverse order (last parameter first).

    A bucket is closed as soon as it holds at least ``bucket_bytes``; ``None`` gives every
    parameter its own bucket. One parameter is never split.
    """
    if bucket_bytes is not None and bucket_bytes < 1:
        raise ValueError(f"bucket_bytes must be >= 1 or None, got {bucket_bytes}.")
    buckets: list[list[int]] = []
    current: list[int] = []
    filled = 0
    for index in reversed(range(len(sizes_bytes))):
        current.append(index)
        filled += sizes_bytes[index]
        if bucket_bytes is None or filled >= bucket_bytes:
            buckets.append(current)
            current, filled = [], 0
    if current:
        buckets.append(current)
    return buckets


class HookDDP:
    """Average gradients over the process group from post-accumulate-grad hooks."""

    def __init__(
        self,
        model: nn.Module,
        bucket_bytes: int | None = None,
        async_op: bool = False,
        communicate: bool = True,
    ) -> None:
        self.model, self.async_op, self.communicate = model, async_op, communicate
        self.world = dist.get_world_size()
        self.params = [p for p in model.parameters() if p.requires_grad]
        for p in self.params:  # every replica starts from rank 0's weights
            dist.broadcast(p.data, src=0)
        sizes = [p.numel() * p.element_size() for p in self.params]
        self.buckets = [[self.params[i] for i in b] for b in assign_buckets(sizes, bucket_bytes)]
        self.bucket_of = {id(p): n for n, bucket in enumerate(self.buckets) for p in bucket}
        self.ready = [0] * len(self.buckets)
        self.pending: list[tuple[Any, torch.Tensor, list[nn.Parameter]]] = []
        self.handles = [p.register_post_accumulate_grad_hook(self._on_grad) for p in self.params]

    def _on_grad(self, param: nn.Parameter) -> None:
        """Called by autograd when ``param.grad`` is final for this backward."""
        n = self.bucket_of[id(param)]
        self.ready[n] += 1
        if self.ready[n] < len(self.buckets[n]):
            return  # the bucket waits for its other gradients
        self.ready[n] = 0
        bucket = self.buckets[n]
        # autograd calls this hook once a .grad is final, so none of the bucket's is None
        grads = [cast(torch.Tensor, p.grad) for p in bucket]
        flat = torch.cat([g.reshape(-1) for g in grads]) if len(bucket) > 1 else grads[0]
        work = dist.all_reduce(flat, async_op=self.async_op) if self.communicate else None
        self.pending.append((work, flat, bucket))
        if not self.async_op:
            self._unpack(flat, bucket)

    def _unpack(self, flat: torch.Tensor, bucket: list[nn.Parameter]) -> None:
        flat /= self.world
        if len(bucket) > 1:  # copy the averaged buffer back into each .grad
            offset = 0
            for p in bucket:
                grad = cast(torch.Tensor, p.grad)
                grad.copy_(flat[offset : offset + p.numel()].view_as(grad))
                offset += p.numel()

    def finish(self) -> None:
        """Wait for the outstanding all-reduces (async mode); call before ``optimizer.step()``.

        Raises ``RuntimeError`` when some bucket never fired: a parameter got no gradient in
        this backward (an unused layer), so its gradients were not averaged.
        """
        fired = len(self.pending)
        if fired != len(self.buckets):
            for work, _, _ in self.pending:  # leave no collective in flight
                if work is not None and self.async_op:
                    work.wait()
            self.ready = [0] * len(self.buckets)
            self.pending.clear()
            raise RuntimeError(
                f"{len(self.buckets) - fired} of {len(self.buckets)} gradient buckets were not "
                "all-reduced: some parameter received no gradient in this backward (an unused "
                "layer?). Every parameter must get a gradient in each backward."
            )
        for work, flat, bucket in self.pending:
            if self.async_op:
                if work is not None:
                    work.wait()
                self._unpack(flat, bucket)
        self.pending.clear()

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()


@dataclass(frozen=True)
class HookJob:
    """Model and data of the hook-DDP proofs and timings (``batch`` is the global batch)."""

    spec: ModelSpec = ModelSpec()
    batch: int = 8
    seq: int = 16
    steps: int = 3
    lr: float = 0.1
    seed: int = 0


MODES: dict[str, dict[str, Any]] = {
    "per-parameter": {"bucket_bytes": None, "async_op": False},
    "bucketed": {"bucket_bytes": 64 * 1024, "async_op": False},
    "bucketed async": {"bucket_bytes": 64 * 1024, "async_op": True},
    "no all-reduce (control)": {"bucket_bytes": 64 * 1024, "async_op": True, "communicate": False},
}


def _batches(job: HookJob, rank: int, world_size: int, device: torch.device) -> list[torch.Tensor]:
    per_rank = job.batch // world_size
    return [
        random_tokens(job.batch, job.seq, job.spec.vocab, job.seed + t)[
            rank * per_rank : (rank + 1) * per_rank
        ].to(device)
        for t in range(job.steps)
    ]


def hook_ddp_equivalence(rank: int, world_size: int, job: HookJob) -> dict[str, Any]:
    """Train with ``DistributedDataParallel`` and each :data:`MODES` entry (SGD); compare.

    Returns, per mode, the largest ``|Δ|`` of the final parameters from DDP's (max over ranks),
    the number of buckets and all-reduces per step, and, for the control, how far the ranks'
    replicas drifted apart.
    """
    from torch.nn.parallel import DistributedDataParallel as DDP

    if job.batch % world_size:
        raise ValueError(f"batch {job.batch} does not split evenly over {world_size} ranks.")
    device = current_device()
    batches = _batches(job, rank, world_size, device)
    model = job.spec.build().to(device)
    ddp = DDP(model, device_ids=[device.index] if device.type == "cuda" else None)
    opt = torch.optim.SGD(ddp.parameters(), lr=job.lr)
    for tokens in batches:
        opt.zero_grad()
        lm_loss(ddp, tokens).backward()
        opt.step()
    reference = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    results: dict[str, Any] = {}
    for name, options in MODES.items():
        model = job.spec.build().to(device)
        hooked = HookDDP(model, **options)
        opt = torch.optim.SGD(model.parameters(), lr=job.lr)
        calls = 0
        for tokens in batches:
            opt.zero_grad()
            lm_loss(model, tokens).backward()
            calls += len(hooked.pending) if hooked.communicate else 0
            hooked.finish()
            opt.step()
        hooked.remove()
        flat = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
        delta = (flat - reference).abs().max()
        dist.all_reduce(delta, op=dist.ReduceOp.MAX)
        rank0 = flat.clone()
        dist.broadcast(rank0, src=0)
        spread = (flat - rank0).abs().max()
        dist.all_reduce(spread, op=dist.ReduceOp.MAX)
        results[name] = {
            "max_abs_diff": delta.item(),
            "rank_spread": spread.item(),
            "buckets": len(hooked.buckets),
            "allreduces_per_step": calls / job.steps,
        }
    return {"rank": rank, "n_params": len(list(model.parameters())), "modes": results}


def exposed_communication(
    rank: int,
    world_size: int,
    job: HookJob,
    bucket_sizes: list[int | None],
    repeats: int = 10,
    warmup: int = 2,
) -> list[dict[str, Any]]:
    """Median seconds of forward + backward (+ wait) with each bucket size, sync and async.

    ``compute`` is the same step with the hooks doing no communication; ``exposed`` = step −
    compute is the communication time the step did not hide; it is not clipped at 0, so a
    negative value shows the timing noise. Configurations are interleaved
    (one step of each in turn) so that load from elsewhere hits them alike.
    """
    device = current_device()
    tokens = _batches(job, rank, world_size, device)[0]
    configs: dict[str, HookDDP] = {}
    models = {}
    labels: list[tuple[str, int | None, bool, bool]] = [("compute", None, False, False)]
    labels += [
        (f"{'async' if a else 'sync'} {b}", b, a, True) for b in bucket_sizes for a in (False, True)
    ]
    for label, bucket_bytes, async_op, communicate in labels:
        models[label] = job.spec.build().to(device)
        configs[label] = HookDDP(models[label], bucket_bytes, async_op, communicate)
    times: dict[str, list[float]] = {label: [] for label, *_ in labels}
    for repeat in range(warmup + repeats):
        for label, *_ in labels:
            model, hooked = models[label], configs[label]
            model.zero_grad(set_to_none=True)
            dist.barrier()
            started = time.perf_counter()
            lm_loss(model, tokens).backward()
            hooked.finish()
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            if repeat >= warmup:
                times[label].append(time.perf_counter() - started)
    compute = statistics.median(times["compute"])
    rows = []
    for label, bucket_bytes, async_op, _ in labels[1:]:
        step = statistics.median(times[label])
        rows.append(
            {
                "rank": rank,
                "bucket_bytes": bucket_bytes,
                "async": async_op,
                "buckets": len(configs[label].buckets),
                "step_s": step,
                "compute_s": compute,
                "exposed_s": step - compute,
            }
        )
    return rows
