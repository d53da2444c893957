"""Tensor parallelism and fully sharded data parallelism (FSDP2) on a device mesh.

Both split the *parameters* of every layer over the ranks, unlike a pipeline (which splits
the layers) or DDP (which splits only the data):

- **tensor parallelism** (Megatron-LM): each MLP block's first linear layer is split by output
  columns (``ColwiseParallel``), its second by input rows (``RowwiseParallel``); every rank
  sees the same batch and one all-reduce per block joins the partial outputs;
- **FSDP2** (``torch.distributed.fsdp.fully_shard``, ZeRO-3): each rank stores 1/W of every
  parameter, all-gathers a block's parameters just before using them, and reduce-scatters the
  gradients; every rank sees a different slice of the batch, as in DDP.

The pieces:

- :class:`BlockMLP`, :func:`make_block_mlp`, :func:`tensor_parallel_plan`;
- :func:`parameter_bytes` (what this rank holds: the local shard of a ``DTensor``, a
  gathered block in full) and :func:`full_parameter_bytes`;
- :class:`CollectiveCounter`: which collectives run, how many, how many bytes;
- workers for :func:`helpers.parallel.launch.launch`: :func:`tensor_parallel_equivalence`,
  :func:`fsdp_equivalence`, and :func:`sharding_demo` (both in one job), each proving that a
  few Adam steps give the same losses, gradients and parameters as one process.

Everything runs on CPU process groups (gloo) as well as on GPUs (NCCL): the mesh's device type
follows :func:`helpers.parallel.launch.current_device`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

import torch
import torch.distributed as dist
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from helpers.parallel.ranks import current_device
from helpers.stats import max_abs_diff


class BlockMLP(nn.Module):
    """``embed`` -> residual MLP blocks ``h + W2 gelu(W1 h)`` -> ``head`` (a Transformer's MLP part)."""

    def __init__(
        self, in_features: int, dim: int, hidden: int, n_blocks: int, classes: int
    ) -> None:
        super().__init__()
        self.embed = nn.Linear(in_features, dim)
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))
            for _ in range(n_blocks)
        )
        self.head = nn.Linear(dim, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.embed(x)
        for block in self.blocks:
            h = h + block(h)
        return self.head(h)


@dataclass(frozen=True)
class ShardingJob:
    """The model, data and optimisation of the tensor-parallel and FSDP proofs.

    ``batch`` is the global batch: tensor parallelism gives all of it to every rank, FSDP a
    ``batch / W`` slice to each. The optimizer is Adam (``lr``), so there is optimizer state
    (two moments per parameter) whose sharding the proofs can measure.
    """

    in_features: int = 32
    dim: int = 64
    hidden: int = 256
    n_blocks: int = 2
    classes: int = 10
    batch: int = 16
    steps: int = 3
    lr: float = 1e-3  # Adam's default
    seed: int = 0


def make_block_mlp(job: ShardingJob) -> BlockMLP:
    """The job's model, seeded (every rank builds the same weights)."""
    torch.manual_seed(job.seed)
    return BlockMLP(job.in_features, job.dim, job.hidden, job.n_blocks, job.classes)


def make_data(job: ShardingJob) -> tuple[torch.Tensor, torch.Tensor]:
    """A seeded global batch (inputs, labels), the same on every rank."""
    g = torch.Generator().manual_seed(job.seed + 1)
    x = torch.randn(job.batch, job.in_features, generator=g)
    y = torch.randint(0, job.classes, (job.batch,), generator=g)
    return x, y


def tensor_parallel_plan(model: BlockMLP) -> dict[str, Any]:
    """Megatron's MLP split: first linear of each block column-wise, second row-wise.

    ``embed`` and ``head`` stay whole (replicated) on every rank.
    """
    from torch.distributed.tensor.parallel import ColwiseParallel, RowwiseParallel

    plan: dict[str, Any] = {}
    for index in range(len(model.blocks)):
        plan[f"blocks.{index}.0"] = ColwiseParallel()
        plan[f"blocks.{index}.2"] = RowwiseParallel()
    return plan


def fsdp_wrap(model: BlockMLP, mesh: Any) -> BlockMLP:
    """FSDP2: shard every block on ``mesh``, then the root (``embed`` and ``head`` with it).

    Each ``fully_shard`` call is one unit that is all-gathered just before it runs and freed
    after; the root's unit is gathered first and kept until the backward is done.
    """
    from torch.distributed.fsdp import fully_shard

    for block in model.blocks:
        fully_shard(block, mesh=mesh)
    fully_shard(model, mesh=mesh)
    return model


def _local(t: torch.Tensor) -> torch.Tensor:
    from torch.distributed.tensor import DTensor

    return t.to_local() if isinstance(t, DTensor) else t


def _full(t: torch.Tensor) -> torch.Tensor:
    from torch.distributed.tensor import DTensor

    return t.full_tensor() if isinstance(t, DTensor) else t


def parameter_bytes(module: nn.Module) -> int:
    """Bytes of parameters this rank holds right now (for a ``DTensor``, only its local shard).

    FSDP2 swaps a module's registered parameters between sharded ``DTensor``s and gathered
    plain tensors, so called during a forward this counts the gathered block in full.
    """
    return sum(_local(p).numel() * p.element_size() for p in module.parameters())


def full_parameter_bytes(module: nn.Module) -> int:
    """Bytes of the whole model's parameters (the global shape of each ``DTensor``)."""
    return sum(p.numel() * p.element_size() for p in module.parameters())


def optimizer_state_bytes(optimizer: torch.optim.Optimizer, local: bool = True) -> int:
    """Bytes of the optimizer's tensor state (Adam: ``exp_avg``, ``exp_avg_sq``; not ``step``).

    ``local=True`` counts what this rank stores (a ``DTensor``'s local shard), ``False`` the
    global shapes (the state of the whole model).
    """
    total = 0
    for state in optimizer.state.values():
        for name, t in state.items():
            if isinstance(t, torch.Tensor) and name != "step":
                total += (_local(t) if local else t).numel() * t.element_size()
    return total


_COLLECTIVE_NAMESPACES = ("c10d", "_c10d_functional")
_NOT_COLLECTIVES = ("wait", "wrap", "barrier", "monitored")


class CollectiveCounter(TorchDispatchMode):
    """Counts the collectives run inside ``with CollectiveCounter() as c:`` and their bytes.

    Sees both the functional collectives of ``DTensor`` (``all_reduce``,
    ``all_gather_into_tensor``, ...) and the in-place c10d ones FSDP2 uses
    (``_allgather_base_``, ``_reduce_scatter_base_``). ``bytes`` counts the largest tensor of
    each call: the full buffer that is gathered, reduced or scattered.
    ``counts`` and ``bytes`` are keyed by the operator's name.
    """

    def __init__(self) -> None:
        super().__init__()
        self.counts: Counter[str] = Counter()
        self.bytes: Counter[str] = Counter()

    def __torch_dispatch__(
        self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None
    ) -> Any:
        name = func.__name__.split(".")[0]
        if func.namespace in _COLLECTIVE_NAMESPACES and not any(
            w in name for w in _NOT_COLLECTIVES
        ):
            tensors = [t for t in _flatten(args) if isinstance(t, torch.Tensor)]
            self.counts[name] += 1
            self.bytes[name] += max((t.numel() * t.element_size() for t in tensors), default=0)
        return func(*args, **(kwargs or {}))

    def summary(self) -> dict[str, tuple[int, int]]:
        """``{name: (calls, bytes)}``."""
        return {name: (self.counts[name], self.bytes[name]) for name in sorted(self.counts)}


def _flatten(value: Any) -> list[Any]:
    if isinstance(value, list | tuple):
        return [item for v in value for item in _flatten(v)]
    return [value]


def _no_tf32() -> None:
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False


def _mesh(world_size: int) -> Any:
    from torch.distributed.device_mesh import init_device_mesh

    return init_device_mesh(current_device().type, (world_size,))


def _adam(model: nn.Module, job: ShardingJob) -> torch.optim.Optimizer:
    return torch.optim.Adam(model.parameters(), lr=job.lr, foreach=False)


def _reference_run(
    job: ShardingJob, device: torch.device
) -> tuple[BlockMLP, list[float], dict[str, torch.Tensor]]:
    """One process, the whole batch: the model after ``job.steps`` Adam steps, the losses, first grads."""
    model = make_block_mlp(job).to(device)
    x, y = (t.to(device) for t in make_data(job))
    opt = _adam(model, job)
    losses, first_grads = [], {}
    for step in range(job.steps):
        opt.zero_grad(set_to_none=True)
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        if step == 0:
            first_grads = {
                n: cast(torch.Tensor, p.grad).detach().clone() for n, p in model.named_parameters()
            }
        opt.step()
        losses.append(loss.item())
    return model, losses, first_grads


def _train_and_compare(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    opt: torch.optim.Optimizer,
    job: ShardingJob,
    reference: tuple[BlockMLP, list[float], dict[str, torch.Tensor]],
    step_loss: Callable[[torch.Tensor], float],
) -> dict[str, Any]:
    """``job.steps`` optimizer steps of a parallelised ``model`` and what both proofs report: the largest
    differences from ``reference`` (losses, first-step gradients, final parameters), the
    collectives of the first forward and backward, and where each parameter lives.
    ``step_loss`` turns a rank's loss into the loss compared with the single-process run."""
    reference_model, ref_losses, ref_grads = reference
    losses, forward_comm, backward_comm, grad_diff = [], {}, {}, float("nan")
    for step in range(job.steps):
        opt.zero_grad(set_to_none=True)
        with CollectiveCounter() as fwd:
            loss = nn.functional.cross_entropy(model(x), y)
        with CollectiveCounter() as bwd:
            loss.backward()
        if step == 0:
            forward_comm, backward_comm = fwd.summary(), bwd.summary()
            grad_diff = max_abs_diff(
                {n: _full(cast(torch.Tensor, p.grad)) for n, p in model.named_parameters()},
                ref_grads,
            )
        opt.step()
        losses.append(step_loss(loss))
    ref_params = dict(reference_model.named_parameters())
    return {
        "loss_diff": max(abs(a - b) for a, b in zip(losses, ref_losses, strict=True)),
        "grad_diff": grad_diff,
        "param_diff": max_abs_diff(
            {n: _full(p.detach()) for n, p in model.named_parameters()},
            {n: p.detach() for n, p in ref_params.items()},
        ),
        "losses": losses,
        "forward_collectives": forward_comm,
        "backward_collectives": backward_comm,
        "full_param_bytes": full_parameter_bytes(model),
        "optimizer_state_bytes": optimizer_state_bytes(opt),
        "full_optimizer_state_bytes": optimizer_state_bytes(opt, local=False),
        "placements": {
            n: str(getattr(p, "placements", "plain tensor (replicated)"))
            for n, p in model.named_parameters()
        },
    }


def tensor_parallel_equivalence(rank: int, world_size: int, job: ShardingJob) -> dict[str, Any]:
    """Tensor parallelism (Colwise/Rowwise on a 1-D mesh) against one process: a proof and costs.

    Every rank gets the whole batch. Returns the largest differences of losses, first-step
    gradients and final parameters from the single-process run, the collectives of one
    forward and one backward, and the parameter bytes this rank stores.
    """
    from torch.distributed.tensor.parallel import parallelize_module

    _no_tf32()
    device = current_device()
    reference = _reference_run(job, device)
    model = make_block_mlp(job).to(device)
    parallelize_module(model, _mesh(world_size), tensor_parallel_plan(model))
    x, y = (t.to(device) for t in make_data(job))
    opt = _adam(model, job)
    compared = _train_and_compare(
        model, x, y, opt, job, reference, step_loss=lambda loss: loss.item()
    )
    return {"rank": rank, **compared, "param_bytes": parameter_bytes(model)}


def fsdp_equivalence(rank: int, world_size: int, job: ShardingJob) -> dict[str, Any]:
    """FSDP2 (``fully_shard`` per block and at the root) against one process: a proof and costs.

    Rank ``r`` trains on the ``r``-th slice of the global batch; FSDP averages the gradients
    (reduce-scatter), so with equal slices the update equals the whole batch's. Returns the
    largest differences of losses (averaged over ranks), first-step gradients and final
    parameters from the single-process run, the collectives of one forward and one backward,
    the parameter bytes this rank stores between steps, and the most it holds during a forward
    (local shards plus the gathered block).
    """
    if job.batch % world_size:
        raise ValueError(f"batch {job.batch} does not split evenly over {world_size} ranks.")
    _no_tf32()
    device = current_device()
    reference = _reference_run(job, device)
    model = make_block_mlp(job).to(device)
    fsdp_wrap(model, _mesh(world_size))
    x, y = (t.to(device).chunk(world_size)[rank] for t in make_data(job))
    opt = _adam(model, job)

    peak = {"bytes": 0}

    def watch(module: nn.Module, args: Any, output: Any) -> None:
        peak["bytes"] = max(peak["bytes"], parameter_bytes(model))

    def global_loss(loss: torch.Tensor) -> float:
        total = loss.detach().clone()
        dist.all_reduce(total)
        return total.item() / world_size

    hooks = [
        layer.register_forward_hook(watch) for block in model.blocks for layer in block.children()
    ]
    at_rest = parameter_bytes(model)
    compared = _train_and_compare(model, x, y, opt, job, reference, step_loss=global_loss)
    for hook in hooks:
        hook.remove()
    return {
        "rank": rank,
        **compared,
        "param_bytes": at_rest,
        "peak_forward_param_bytes": peak["bytes"],
    }


def sharding_demo(rank: int, world_size: int, job: ShardingJob) -> dict[str, dict[str, Any]]:
    """Both proofs in one job (one process start-up instead of two)."""
    result = {
        "tensor_parallel": tensor_parallel_equivalence(rank, world_size, job),
        "fsdp": fsdp_equivalence(rank, world_size, job),
    }
    dist.barrier()
    return result
