"""ZeRO stages 1 and 2 written on the process group, for Adam, and the proofs against DDP.

:class:`ZeroAdam` keeps the model's parameters in one flat buffer (each parameter a view into
it) and splits the buffer into ``W`` equal slices: rank ``r`` owns slice ``r`` and keeps Adam's
two moments for that slice only. One step:

1. **stage 1**: all-reduce the flat gradient (as DDP does) and read this rank's slice of it;
   **stage 2**: reduce-scatter it instead, so each rank receives only its slice, and drop the
   full gradient;
2. Adam on this rank's slice of the parameters (the update is elementwise, so a slice of the
   update is the update of the slice: sharding changes nothing in the arithmetic);
3. all-gather the updated slices so every rank has the whole model again.

:func:`zero_demo` (run by :func:`helpers.parallel.launch.launch`) trains the same model with
DDP + ``torch.optim.Adam`` (the reference), ZeRO-1, ZeRO-2, ZeRO-1 without its all-gather
(the negative control), PyTorch's ``ZeroRedundancyOptimizer`` and FSDP2 (ZeRO-3), and
returns each one's distance to the reference, the model-state bytes this rank holds and the
collectives each step ran.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from helpers.parallel.ranks import current_device
from helpers.parallel.sharding import CollectiveCounter
from helpers.scale.anatomy import gradient_bytes, optimizer_state_bytes, parameter_bytes
from helpers.scale.recompute import ModelSpec, lm_loss, random_tokens


class ZeroAdam:
    """Adam with its state sharded over the ranks (ZeRO stage 1 or 2); no weight decay."""

    def __init__(
        self,
        params: list[nn.Parameter],
        stage: int = 1,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        all_gather: bool = True,
    ) -> None:
        if stage not in (1, 2):
            raise ValueError(f"ZeroAdam implements stages 1 and 2, got {stage!r}.")
        self.params, self.stage, self.lr, self.betas, self.eps = list(params), stage, lr, betas, eps
        self.all_gather = all_gather  # False only for the negative control
        self.world, self.rank = dist.get_world_size(), dist.get_rank()
        numel = sum(p.numel() for p in self.params)
        self.shard_size = math.ceil(numel / self.world)  # pad so the slices are equal
        self.flat = torch.zeros(self.shard_size * self.world, device=self.params[0].device)
        offset = 0
        for p in self.params:  # each parameter becomes a view into the flat buffer
            self.flat[offset : offset + p.numel()].copy_(p.detach().reshape(-1))
            p.data = self.flat[offset : offset + p.numel()].view_as(p)
            offset += p.numel()
        lo = self.rank * self.shard_size
        self.shard = self.flat[lo : lo + self.shard_size]  # the slice this rank updates
        self.exp_avg = torch.zeros_like(self.shard)
        self.exp_avg_sq = torch.zeros_like(self.shard)
        self.steps = 0
        self.grad_bytes_at_update = 0  # gradient bytes held at the Adam update
        self.grad_peak_bytes = 0  # gradient bytes held at once while the flat copy is built

    def flat_gradient(self) -> torch.Tensor:
        """The gradients in one padded buffer (the per-parameter ``.grad`` are then dropped)."""
        flat = torch.zeros_like(self.flat)
        # here the per-parameter gradients and their full flat copy coexist: the gradient peak
        self.grad_peak_bytes = flat.numel() * flat.element_size() + sum(
            p.grad.numel() * p.grad.element_size() for p in self.params if p.grad is not None
        )
        offset = 0
        for p in self.params:
            if p.grad is not None:
                flat[offset : offset + p.numel()].copy_(p.grad.reshape(-1))
                p.grad = None
            offset += p.numel()
        return flat

    @torch.no_grad()
    def step(self) -> None:
        flat_grad = self.flat_gradient()
        if self.stage == 1:  # everyone gets the whole averaged gradient, uses its slice
            dist.all_reduce(flat_grad)
            lo = self.rank * self.shard_size
            grad = flat_grad[lo : lo + self.shard_size] / self.world
            self.grad_bytes_at_update = flat_grad.numel() * flat_grad.element_size()
        else:  # stage 2: each rank receives only the sum of its own slice
            grad = torch.empty_like(self.shard)
            dist.reduce_scatter_tensor(grad, flat_grad)
            del flat_grad
            grad /= self.world
            self.grad_bytes_at_update = grad.numel() * grad.element_size()
        self.steps += 1
        beta1, beta2 = self.betas  # Adam, as torch.optim.Adam computes it
        self.exp_avg.lerp_(grad, 1 - beta1)
        self.exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        bias1, bias2 = 1 - beta1**self.steps, 1 - beta2**self.steps
        denom = (self.exp_avg_sq.sqrt() / math.sqrt(bias2)).add_(self.eps)
        self.shard.addcdiv_(self.exp_avg, denom, value=-self.lr / bias1)
        if self.all_gather:  # every rank receives every updated slice
            dist.all_gather_into_tensor(self.flat, self.shard.clone())

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    def state_tensors(self) -> list[torch.Tensor]:
        """Adam's state on this rank: the moments of its slice."""
        return [self.exp_avg, self.exp_avg_sq]


@dataclass(frozen=True)
class ZeroJob:
    """Model, data and optimisation of :func:`zero_demo` (``batch`` is the global batch)."""

    spec: ModelSpec = ModelSpec()
    batch: int = 8
    seq: int = 16
    steps: int = 5
    lr: float = 1e-3
    seed: int = 0


def _flat_params(model: nn.Module) -> torch.Tensor:
    full = [getattr(p, "full_tensor", lambda p=p: p)() for p in model.parameters()]
    return torch.cat([t.detach().reshape(-1) for t in full])


def _ring_volume(summary: dict[str, tuple[int, int]], psi_bytes: int) -> float:
    """Elements sent per rank in units of Ψ, large-N convention: all-reduce 2, others 1."""
    factor = {
        "allreduce_": 2.0,
        "_reduce_scatter_base_": 1.0,
        "_allgather_base_": 1.0,
        "broadcast_": 1.0,
    }
    return sum(factor.get(name, 0.0) * nbytes for name, (_, nbytes) in summary.items()) / psi_bytes


def _logged_allreduce(state, bucket):
    """DDP communication hook: the default averaging all-reduce, its calls and bytes logged.

    Unannotated on purpose: DDP inspects a hook's annotations, and this module's are strings.
    """
    from torch.distributed.algorithms.ddp_comm_hooks import default_hooks

    state["calls"] += 1
    state["bytes"] += bucket.buffer().numel() * bucket.buffer().element_size()
    return default_hooks.allreduce_hook(None, bucket)


def zero_demo(rank: int, world_size: int, job: ZeroJob) -> dict[str, Any]:
    """Train one model six ways for ``job.steps`` Adam steps; compare with DDP + Adam.

    Rank ``r`` trains on the ``r``-th slice of each global batch. For each variant: the largest
    ``|Δ|`` of the final parameters from the DDP reference (max over ranks), the bytes of
    parameters, gradients (at the update; for ``ZeroAdam`` also ``grad_peak_bytes``, the most
    held at once) and optimizer state this rank holds, and the
    collectives of the last step (``{name: (calls, bytes)}``) with their volume in units of Ψ.
    """
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard
    from torch.distributed.optim import ZeroRedundancyOptimizer
    from torch.nn.parallel import DistributedDataParallel as DDP

    if job.batch % world_size:
        raise ValueError(f"batch {job.batch} does not split evenly over {world_size} ranks.")
    device = current_device()
    per_rank = job.batch // world_size
    data = [
        random_tokens(job.batch, job.seq, job.spec.vocab, job.seed + t)[
            rank * per_rank : (rank + 1) * per_rank
        ].to(device)
        for t in range(job.steps)
    ]

    def train(model: nn.Module, optimizer: Any, forward: nn.Module | None = None) -> dict[str, Any]:
        """``job.steps`` steps; the collectives and gradient bytes of the last one."""
        for tokens in data:
            with CollectiveCounter() as counter:  # sees c10d calls from Python (not DDP's C++)
                optimizer.zero_grad()
                lm_loss(forward or model, tokens).backward()
                grads_at_update = gradient_bytes(model)
                optimizer.step()
        return {"grad_bytes": grads_at_update, "step_collectives": counter.summary()}

    results: dict[str, Any] = {}
    reference = None
    opt: torch.optim.Optimizer | ZeroAdam
    variants = ("ddp", "zero1", "zero2", "zero1_no_allgather", "torch_zero_redundancy", "fsdp2")
    for name in variants:
        model = job.spec.build().to(device)
        if name in ("ddp", "torch_zero_redundancy"):
            ddp = DDP(model, device_ids=[device.index] if device.type == "cuda" else None)
            bucket_log = {"calls": 0, "bytes": 0}
            ddp.register_comm_hook(bucket_log, _logged_allreduce)
            if name == "ddp":
                opt = torch.optim.Adam(model.parameters(), lr=job.lr, foreach=False)
            else:
                opt = ZeroRedundancyOptimizer(
                    model.parameters(), optimizer_class=torch.optim.Adam, lr=job.lr, foreach=False
                )
            out = train(model, opt, ddp)
            calls, nbytes = bucket_log["calls"] // job.steps, bucket_log["bytes"] // job.steps
            out["step_collectives"]["allreduce_"] = (calls, nbytes)  # DDP's reducer, per step
        elif name == "fsdp2":
            mesh = init_device_mesh(device.type, (world_size,))
            for block in model.blocks:
                fully_shard(block, mesh=mesh)
            fully_shard(model, mesh=mesh)
            opt = torch.optim.Adam(model.parameters(), lr=job.lr, foreach=False)
            out = train(model, opt)
        else:
            stage = 2 if name == "zero2" else 1
            opt = ZeroAdam(
                list(model.parameters()),
                stage=stage,
                lr=job.lr,
                all_gather=name != "zero1_no_allgather",
            )
            out = train(model, opt)
            out["grad_bytes"] = opt.grad_bytes_at_update
            out["grad_peak_bytes"] = opt.grad_peak_bytes
        flat = _flat_params(model)
        if reference is None:
            reference = flat.clone()
        delta = (flat - reference).abs().max()
        dist.all_reduce(delta, op=dist.ReduceOp.MAX)
        out.update(
            max_abs_diff=delta.item(),
            param_bytes=parameter_bytes(model),
            optimizer_bytes=optimizer_state_bytes(opt),
        )
        results[name] = out
        dist.barrier()
    psi = sum(p.numel() for p in job.spec.build().parameters())
    for out in results.values():
        out["volume_psi"] = _ring_volume(out["step_collectives"], 4 * psi)
    return {"rank": rank, "psi": psi, "variants": results}
