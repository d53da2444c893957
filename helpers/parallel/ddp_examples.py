"""Worker functions for notebook 02 (data parallelism), run by :func:`helpers.parallel.launch.launch`.

Each function has the signature ``fn(rank, world_size, ...)`` and runs inside an initialised
process group (gloo on CPU, NCCL on GPUs). They live in a module, not in the notebook, because
worker processes start fresh and can only run functions they can import.

- :func:`hello`: who am I (rank, local rank, device, threads).
- :func:`ddp_equivalence`: the proof that DDP with world size W and per-rank batch B/W ends
  with the same parameters as one process with batch B, with and without ``no_sync``
  gradient accumulation, and that removing the all-reduce breaks it.
- :func:`measure_scaling`: samples/s of a DDP training step, split into compute and all-reduce.
- :func:`double_averaging_ratio`: what dividing the loss by the world size (on top of DDP's
  own averaging) does to the update.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.algorithms.ddp_comm_hooks import default_hooks
from torch.nn.parallel import DistributedDataParallel as DDP

from helpers.parallel.launch import current_device

if TYPE_CHECKING:  # pandas is imported where it is used: the workers do not need it
    import pandas as pd


def make_mlp(in_features: int = 64, hidden: int = 32, classes: int = 10) -> nn.Sequential:
    """A small two-layer MLP (the digits classifier of the course)."""
    return nn.Sequential(nn.Linear(in_features, hidden), nn.ReLU(), nn.Linear(hidden, classes))


def make_wide_mlp(width: int, depth: int = 3, classes: int = 10) -> nn.Sequential:
    """A wide MLP: many parameters, few FLOPs per sample — communication-bound under DDP."""
    layers: list[nn.Module] = []
    for _ in range(depth):
        layers += [nn.Linear(width, width), nn.ReLU()]
    return nn.Sequential(*layers, nn.Linear(width, classes))


def make_small_cnn(channels: int = 32, classes: int = 10) -> nn.Sequential:
    """A small CNN on 3x32x32 images: few parameters, many FLOPs per sample — compute-bound."""
    c = channels
    return nn.Sequential(
        nn.Conv2d(3, c, 3, padding=1), nn.ReLU(),
        nn.Conv2d(c, c, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(c, 2 * c, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2 * c, classes),
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


def _max_abs_diff(a: nn.Module, b: nn.Module) -> float:
    return max((p - q).abs().max().item() for p, q in zip(a.parameters(), b.parameters(), strict=True))


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
        return make_mlp().to(device)

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
    for variant, micro_batches in (("ddp", 1), ("ddp_accumulation", accumulation),
                                   ("no_allreduce", 1)):
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
        delta = torch.tensor(_max_abs_diff(model, reference), device=device)
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
    """One model shape for :func:`measure_scaling` (``kind`` is ``"mlp"`` or ``"cnn"``)."""

    name: str
    kind: str
    size: int  # MLP width, or CNN channels
    per_rank_batch: int

    def build(self) -> nn.Module:
        if self.kind == "mlp":
            return make_wide_mlp(self.size)
        if self.kind == "cnn":
            return make_small_cnn(self.size)
        raise ValueError(f"Unknown model kind {self.kind!r}: use 'mlp' or 'cnn'.")

    def batch(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        shape = (self.size,) if self.kind == "mlp" else (3, 32, 32)
        x = torch.randn(self.per_rank_batch, *shape, device=device)
        return x, torch.randint(0, 10, (self.per_rank_batch,), device=device)


def _call_times(fn: Callable[[], object], repeats: int, device: torch.device) -> list[float]:
    """Seconds taken by each of ``repeats`` calls of ``fn``, the ranks started together."""
    dist.barrier()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - started)
    return times


def _train_step(ddp: DDP, opt: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor,
                sync: bool) -> None:
    """One SGD step; ``sync=False`` skips the gradient all-reduce (``no_sync``)."""
    with nullcontext() if sync else ddp.no_sync():
        nn.functional.cross_entropy(ddp(x), y).backward()
    opt.step()
    opt.zero_grad(set_to_none=True)


def measure_scaling(
    rank: int, world_size: int, specs: list[ScalingSpec], steps: int = 10, warmup: int = 3
) -> list[dict[str, object]]:
    """Time a DDP training step (SGD) for each spec: with and without the gradient all-reduce.

    Seconds per step, the median over ``steps`` steps (and, ``*_best_s``, the fastest step):

    - ``compute_s``: forward + backward + step under ``no_sync()`` (no communication at all);
    - ``step_s``: the real DDP step (all-reduce overlapped with backward);
    - ``allreduce_s``: one all-reduce of a buffer as large as all the gradients, alone.

    The median, not the mean: on a shared machine a rank that is descheduled for a moment stalls
    its peers at the next all-reduce, and one such hiccup should not set the figure. The fastest
    step is what the machine can do when nothing else runs (``timeit``'s convention).
    Each rank returns its own timings; :func:`summarize_scaling` turns them into a table.
    """
    device = current_device()
    rows: list[dict[str, object]] = []
    for spec in specs:
        torch.manual_seed(0)
        model = spec.build().to(device)
        ddp = _wrap(model, device)
        opt = torch.optim.SGD(ddp.parameters(), lr=1e-3)
        x, y = spec.batch(device)
        n_params = sum(p.numel() for p in model.parameters())
        buffer = torch.zeros(n_params, device=device)
        synced = partial(_train_step, ddp, opt, x, y, True)
        local = partial(_train_step, ddp, opt, x, y, False)
        allreduce = partial(dist.all_reduce, buffer)
        _call_times(synced, warmup, device)
        _call_times(local, warmup, device)
        compute = _call_times(local, steps, device)
        step = _call_times(synced, steps, device)
        _call_times(allreduce, 2, device)
        allreduce_s = statistics.median(_call_times(allreduce, steps, device))
        rows.append({"model": spec.name, "world_size": world_size, "rank": rank,
                     "per_rank_batch": spec.per_rank_batch, "params": n_params,
                     "compute_s": statistics.median(compute), "step_s": statistics.median(step),
                     "compute_best_s": min(compute), "step_best_s": min(step),
                     "allreduce_s": allreduce_s})
    return rows


def summarize_scaling(rows: list[dict[str, object]], stat: str = "median") -> pd.DataFrame:
    """One row per (model, world size): samples/s, time split, speed-up over world size 1.

    ``stat="median"`` uses the median step times, ``"best"`` the fastest steps. ``comm_s`` is
    the all-reduce time the step could not hide behind the backward pass (``step_s -
    compute_s``, at least 0). Throughput counts the samples of all ranks.
    """
    import pandas as pd

    if stat not in ("median", "best"):
        raise ValueError(f"stat must be 'median' or 'best', got {stat!r}.")
    frame = pd.DataFrame(rows)
    if stat == "best":
        frame = frame.assign(compute_s=frame["compute_best_s"], step_s=frame["step_best_s"])
    table = (frame.groupby(["model", "world_size"], sort=False)
             .agg(per_rank_batch=("per_rank_batch", "first"), params=("params", "first"),
                  compute_s=("compute_s", "mean"), step_s=("step_s", "mean"),
                  allreduce_s=("allreduce_s", "mean"))
             .reset_index())
    table["comm_s"] = (table["step_s"] - table["compute_s"]).clip(lower=0.0)
    table["samples_per_s"] = table["world_size"] * table["per_rank_batch"] / table["step_s"]
    base = table[table["world_size"] == 1].set_index("model")["samples_per_s"]
    table["speedup"] = table["samples_per_s"] / table["model"].map(base)
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
