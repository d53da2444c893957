"""Worker functions for notebook 02 (data parallelism), run by :func:`helpers.parallel.launch.launch`.

Each function has the signature ``fn(rank, world_size, ...)`` and runs inside an initialised
process group (gloo on CPU, NCCL on GPUs). They live in a module, not in the notebook, because
worker processes start fresh and can only run functions they can import.

- :func:`hello`: who am I (rank, local rank, device, threads).
- :func:`ddp_equivalence`: the proof that DDP with world size W and per-rank batch B/W ends
  with the same parameters as one process with batch B, with and without ``no_sync``
  gradient accumulation, and that removing the all-reduce breaks it.
- :func:`measure_scaling`: samples/s of a DDP training step, split into compute and all-reduce
  (:func:`summarize_scaling` makes the table).
- :func:`double_averaging_ratio`: what dividing the loss by the world size (on top of DDP's
  own averaging) does to the update.
"""

from __future__ import annotations

import os
from contextlib import nullcontext
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.algorithms.ddp_comm_hooks import default_hooks
from torch.nn.parallel import DistributedDataParallel as DDP

from helpers.models import mlp
from helpers.parallel.ranks import current_device
from helpers.stats import max_abs_diff
from helpers.timing import compare_seconds

if TYPE_CHECKING:  # pandas is imported where it is used: the workers do not need it
    import pandas as pd


def make_small_cnn(channels: int = 32, classes: int = 10) -> nn.Sequential:
    """A small CNN on 3x32x32 images: few parameters, many FLOPs per sample — compute-bound."""
    c = channels
    return nn.Sequential(
        nn.Conv2d(3, c, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(c, c, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(c, 2 * c, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(2 * c, classes),
    )


def _wrap(model: nn.Module, device: torch.device) -> DDP:
    return DDP(model, device_ids=[device.index] if device.type == "cuda" else None)


def hello(rank: int, world_size: int) -> dict[str, object]:
    """Who this process is: rank, world size, local rank, device, backend, torch threads."""
    return {
        "rank": rank,
        "world_size": world_size,
        "local_rank": int(os.environ.get("LOCAL_RANK", rank)),
        "device": str(current_device()),
        "backend": dist.get_backend(),
        "threads": torch.get_num_threads(),
    }


# ----------------------------------------------------------------------------------------------
# The proof: DDP == one process with the big batch
# ----------------------------------------------------------------------------------------------


def _counting_allreduce(state, bucket):
    """DDP communication hook: the default all-reduce (average), counted in ``state["calls"]``.

    Left unannotated on purpose: DDP checks a hook's annotations, and this module's are strings
    (``from __future__ import annotations``), which that check rejects.
    """
    state["calls"] += 1
    return default_hooks.allreduce_hook(None, bucket)


def _flat(model: nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()])


def ddp_equivalence(
    rank: int,
    world_size: int,
    global_batch: int = 32,
    steps: int = 10,
    lr: float = 0.1,
    accumulation: int = 2,
    seed: int = 0,
) -> dict[str, float]:
    """Train the same MLP four ways for ``steps`` SGD steps and compare the parameters.

    - ``reference``: one process, the whole global batch ``B`` per step (computed on every rank);
    - ``ddp``: DDP, rank ``r`` takes rows ``[r*B/W, (r+1)*B/W)`` of each global batch;
    - ``ddp_accumulation``: the same, each rank's share split into ``accumulation``
      micro-batches, the all-reduce skipped with ``no_sync()`` on all but the last;
    - ``no_allreduce``: every backward under ``no_sync()``: each rank steps on its own gradient.

    Returns the largest ``|Δ|`` of each variant against the reference (max over ranks), the
    spread between ranks of the ``no_allreduce`` run, and the number of all-reduces per
    optimizer step counted by a communication hook.
    """
    per_rank = global_batch // world_size
    if per_rank * world_size != global_batch or per_rank % accumulation:
        raise ValueError(
            f"global_batch={global_batch} must split into {world_size} ranks x {accumulation} "
            "micro-batches of equal size."
        )
    device = current_device()
    data = torch.Generator().manual_seed(seed)
    inputs = torch.randn(steps, global_batch, 64, generator=data).to(device)
    targets = torch.randint(0, 10, (steps, global_batch), generator=data).to(device)
    loss_fn = nn.CrossEntropyLoss()

    def fresh_model() -> nn.Module:
        torch.manual_seed(seed)  # the same initial weights on every rank (DDP also broadcasts)
        return mlp(64, 10, hidden=32).to(device)  # the digits MLP's shape

    def sgd(model: nn.Module) -> torch.optim.Optimizer:
        return torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)

    reference = fresh_model()
    opt = sgd(reference)
    for t in range(steps):
        opt.zero_grad()
        loss_fn(reference(inputs[t]), targets[t]).backward()
        opt.step()

    mine = slice(rank * per_rank, (rank + 1) * per_rank)
    results: dict[str, float] = {}
    for variant, micro_batches in (
        ("ddp", 1),
        ("ddp_accumulation", accumulation),
        ("no_allreduce", 1),
    ):
        model = fresh_model()
        ddp = _wrap(model, device)
        counter = {"calls": 0}
        ddp.register_comm_hook(counter, _counting_allreduce)
        opt = sgd(ddp)
        for t in range(steps):
            opt.zero_grad()
            x_chunks = inputs[t, mine].chunk(micro_batches)
            y_chunks = targets[t, mine].chunk(micro_batches)
            for i, (x, y) in enumerate(zip(x_chunks, y_chunks, strict=True)):
                last = i == micro_batches - 1 and variant != "no_allreduce"
                with nullcontext() if last else ddp.no_sync():
                    (loss_fn(ddp(x), y) / micro_batches).backward()
            opt.step()
        delta = torch.tensor(
            max_abs_diff(dict(model.named_parameters()), dict(reference.named_parameters())),
            device=device,
        )
        dist.all_reduce(delta, op=dist.ReduceOp.MAX)
        results[f"{variant}_max_abs_diff"] = delta.item()
        results[f"{variant}_allreduces_per_step"] = counter["calls"] / steps
        if variant == "no_allreduce":
            flat, rank0 = _flat(model), _flat(model).clone()
            dist.broadcast(rank0, src=0)
            spread = (flat - rank0).abs().max()
            dist.all_reduce(spread, op=dist.ReduceOp.MAX)
            results["no_allreduce_rank_spread"] = spread.item()
    return results


# ----------------------------------------------------------------------------------------------
# Scaling: compute vs all-reduce
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ScalingSpec:
    """One model shape for :func:`measure_scaling` (``kind`` is ``"mlp"`` or ``"cnn"``).

    ``bucket_cap_mb`` is passed to DDP as given. PyTorch's own default is ``None``: 25 MB buckets
    *plus* a small (1 MiB) first bucket that can start its all-reduce early; an explicit
    ``25.0`` (the default here) gives 25 MB buckets with no small first bucket.
    """

    name: str
    kind: str
    size: int  # MLP width, or CNN channels
    per_rank_batch: int
    bucket_cap_mb: float | None = 25.0

    def build(self) -> nn.Module:
        if self.kind == "mlp":  # a wide MLP: many parameters, few FLOPs per sample
            return mlp(self.size, 10, hidden=self.size, depth=3)
        if self.kind == "cnn":
            return make_small_cnn(self.size)
        raise ValueError(f"Unknown model kind {self.kind!r}: use 'mlp' or 'cnn'.")

    def batch(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        shape = (self.size,) if self.kind == "mlp" else (3, 32, 32)
        x = torch.randn(self.per_rank_batch, *shape, device=device)
        return x, torch.randint(0, 10, (self.per_rank_batch,), device=device)


def gradient_buckets(ddp: DDP) -> int:
    """How many buckets DDP all-reduces per step (as rebuilt after its first backward).

    DDP starts a bucket's all-reduce as soon as all its gradients are ready, so only a model
    with several buckets can overlap communication with the rest of its backward. Read from
    DDP's logging data (a private API: -1 if this PyTorch version lacks it).
    """
    getter = getattr(ddp, "_get_ddp_logging_data", None)
    data = getter() if getter is not None else {}
    sizes = str(data.get("rebuilt_bucket_sizes") or data.get("bucket_sizes") or "")
    return len([size for size in sizes.split(",") if size.strip()]) or -1


def _plain_step(
    model: nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor
) -> None:
    """One SGD step of the unwrapped model: no DDP at all (the single-process baseline)."""
    nn.functional.cross_entropy(model(x), y).backward()
    opt.step()
    opt.zero_grad(set_to_none=True)


def _train_step(
    ddp: DDP, opt: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor, sync: bool
) -> None:
    """One SGD step; ``sync=False`` skips the gradient all-reduce (``no_sync``)."""
    with nullcontext() if sync else ddp.no_sync():
        nn.functional.cross_entropy(ddp(x), y).backward()
    opt.step()
    opt.zero_grad(set_to_none=True)


def measure_scaling(
    rank: int, world_size: int, specs: list[ScalingSpec], steps: int = 10, warmup: int = 3
) -> list[dict[str, object]]:
    """Time a DDP training step (SGD) for each spec: with and without the gradient all-reduce.

    Seconds per call, each the **fastest** of ``steps`` repeats
    (:func:`helpers.timing.compare_seconds`, the three interleaved so that a burst of load from
    other programs hits all of them alike):

    - ``compute_s``: forward + backward + step under ``no_sync()`` (no communication at all);
    - ``step_s``: the real DDP step (buckets all-reduced while the backward runs);
    - ``allreduce_s``: one all-reduce of a buffer as large as all the gradients, alone;
    - ``plain_s`` (world size 1 only, else ``None``): the same step on an unwrapped copy of the
      model, no DDP at all: the baseline a single-process run would really take.

    Each rank returns its own timings; :func:`summarize_scaling` turns them into a table.
    """
    device = current_device()
    rows: list[dict[str, object]] = []
    for spec in specs:
        torch.manual_seed(0)
        model = spec.build().to(device)
        ddp = DDP(
            model,
            device_ids=[device.index] if device.type == "cuda" else None,
            bucket_cap_mb=spec.bucket_cap_mb,
        )
        opt = torch.optim.SGD(ddp.parameters(), lr=1e-3)
        x, y = spec.batch(device)
        n_params = sum(p.numel() for p in model.parameters())
        buffer = torch.zeros(n_params, device=device)
        calls = {
            "compute": partial(_train_step, ddp, opt, x, y, False),
            "step": partial(_train_step, ddp, opt, x, y, True),
            "allreduce": partial(dist.all_reduce, buffer),
        }
        if world_size == 1:  # the single-process baseline: the model without DDP
            torch.manual_seed(0)
            plain = spec.build().to(device)
            calls["plain"] = partial(
                _plain_step, plain, torch.optim.SGD(plain.parameters(), lr=1e-3), x, y
            )
        dist.barrier()
        best = compare_seconds(
            calls,
            device=device,
            repeats=steps,
            number=1,
            warmup=warmup,
        )
        rows.append(
            {
                "model": spec.name,
                "world_size": world_size,
                "rank": rank,
                "per_rank_batch": spec.per_rank_batch,
                "params": n_params,
                "bucket_cap_mb": spec.bucket_cap_mb,
                "buckets": gradient_buckets(ddp),
                "compute_s": best["compute"],
                "step_s": best["step"],
                "allreduce_s": best["allreduce"],
                "plain_s": best.get("plain"),
            }
        )
    return rows


def summarize_scaling(rows: list[dict[str, object]]) -> pd.DataFrame:
    """One row per (model, world size): samples/s, the step split up, speed-ups.

    Times are the ranks' mean of their fastest calls. ``ddp_extra_s = step_s - compute_s`` is
    what DDP adds to a ``no_sync`` step: at world size 1 there is nothing to send, so it is
    DDP's own bookkeeping (copying gradients into buckets, the hooks); above that,
    ``exposed_comm_s`` is the rest: the all-reduce time the backward did not hide *plus* any
    wait for a slower rank (a straggler), which this split cannot tell apart; ``hidden`` is
    ``1 - exposed / all-reduce alone``, clipped to [0, 1]. Throughput counts all ranks' samples.

    Speed-ups: ``speedup`` is over the **plain** single-process step (``plain_s`` at world
    size 1, the model without DDP: what one process would really run); ``speedup_vs_ddp1`` is
    over DDP at world size 1 (which carries DDP's bookkeeping, so it flatters DDP);
    ``compute_speedup = W * compute_s(1) / compute_s(W)`` is the scaling of the ``no_sync``
    step alone, no communication at all (below ``W`` when the ranks slow each other down).
    """
    import pandas as pd

    frame = pd.DataFrame(rows)
    if "plain_s" not in frame:
        frame["plain_s"] = float("nan")
    frame["plain_s"] = frame["plain_s"].astype(float)
    table = (
        frame.groupby(["model", "world_size"], sort=False)
        .agg(
            per_rank_batch=("per_rank_batch", "first"),
            params=("params", "first"),
            plain_s=("plain_s", "mean"),
            compute_s=("compute_s", "mean"),
            step_s=("step_s", "mean"),
            allreduce_s=("allreduce_s", "mean"),
            buckets=("buckets", "first"),
        )
        .reset_index()
    )
    table["ddp_extra_s"] = table["step_s"] - table["compute_s"]
    table["samples_per_s"] = table["world_size"] * table["per_rank_batch"] / table["step_s"]
    at_one = table[table["world_size"] == 1].set_index("model")
    exposed = (table["ddp_extra_s"] - table["model"].map(at_one["ddp_extra_s"])).clip(lower=0.0)
    table["exposed_comm_s"] = exposed.where(table["world_size"] > 1)
    table["hidden"] = (1 - table["exposed_comm_s"] / table["allreduce_s"]).clip(0.0, 1.0)
    plain_rate = at_one["per_rank_batch"] / at_one["plain_s"]  # samples/s of one plain process
    table["speedup"] = table["samples_per_s"] / table["model"].map(plain_rate)
    table["speedup_vs_ddp1"] = table["samples_per_s"] / table["model"].map(at_one["samples_per_s"])
    table["compute_speedup"] = (
        table["world_size"] * table["model"].map(at_one["compute_s"]) / table["compute_s"]
    )
    return table


# ----------------------------------------------------------------------------------------------
# Exercise: the loss averaged twice
# ----------------------------------------------------------------------------------------------


def double_averaging_ratio(rank: int, world_size: int, seed: int = 0) -> float:
    """Size of one SGD update when the loss is also divided by ``world_size``, over the correct one.

    DDP already averages the gradients over ranks; dividing the loss by the world size on top
    shrinks every update (as if the learning rate were divided by W).
    """
    device = current_device()
    data = torch.Generator().manual_seed(seed + rank)
    x = torch.randn(16, 8, generator=data).to(device)
    y = torch.randn(16, 1, generator=data).to(device)
    updates = []
    for divide in (False, True):
        torch.manual_seed(seed)
        model = nn.Linear(8, 1).to(device)
        ddp = _wrap(model, device)
        before = _flat(model).clone()
        opt = torch.optim.SGD(ddp.parameters(), lr=1.0)
        loss = nn.functional.mse_loss(ddp(x), y)
        (loss / world_size if divide else loss).backward()
        opt.step()
        updates.append(_flat(model) - before)
    return (updates[1].norm() / updates[0].norm()).item()
