"""The anatomy of training memory: bytes per parameter, ZeRO's per-rank table, activations.

Formulas (Ψ parameters, N data-parallel ranks, a Transformer block of width h, a heads,
sequence length s, micro-batch b):

- **model states** per parameter: weights + gradients + optimizer state. Adam keeps two
  moments; mixed precision adds an fp32 master copy of the weights
  (:data:`PRECISION_RECIPES`). ZeRO (Rajbhandari et al., 2020) writes them as 2Ψ + 2Ψ + KΨ
  (K = 12 for mixed-precision Adam) and divides the terms by N stage by stage
  (:func:`zero_model_state_bytes`).
- **activations** of one block (Korthikanti et al., 2022, 16-bit values with dropout):
  sbh(34 + 5as/h) bytes. :func:`block_activation_bytes` keeps the value size and the
  dropout masks as arguments, so the same count describes the fp32, dropout-free block of
  :mod:`helpers.scale.recompute` exactly (plus the two small terms the paper drops).
- **counted** on a live model: :func:`parameter_bytes`, :func:`gradient_bytes`,
  :func:`optimizer_state_bytes` (the local shard of a ``DTensor`` only).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import cast

import torch
from torch import nn


@dataclass(frozen=True)
class PrecisionRecipe:
    """Bytes per parameter of each model state in one training recipe."""

    weights: int
    gradients: int
    master_weights: int  # fp32 copy the optimizer updates (mixed precision only)
    optimizer: int  # Adam: first and second moment
    fp32_gradients: int = 0  # fp32 gradient buffer for accumulation (some frameworks)

    @property
    def total(self) -> int:
        return (
            self.weights
            + self.gradients
            + self.master_weights
            + self.optimizer
            + self.fp32_gradients
        )

    @property
    def k(self) -> int:
        """ZeRO's K: optimizer-state bytes per parameter (master copy + moments)."""
        return self.master_weights + self.optimizer + self.fp32_gradients


PRECISION_RECIPES: dict[str, PrecisionRecipe] = {
    "fp32 + Adam": PrecisionRecipe(4, 4, 0, 8),
    "bf16/fp16 mixed + Adam": PrecisionRecipe(2, 2, 4, 8),
    "bf16 mixed + Adam + fp32 grad accumulation": PrecisionRecipe(2, 2, 4, 8, 4),
}

ZERO_STAGES = (0, 1, 2, 3)


def zero_model_state_bytes(
    psi: float, world: int, stage: int, k: int = 12, weight_bytes: int = 2, grad_bytes: int = 2
) -> float:
    """Model-state bytes per rank under ZeRO stage ``stage`` (0 = plain data parallelism).

    Rajbhandari et al. (2020), Figure 1: (2 + 2 + K)Ψ; P_os: 2Ψ + 2Ψ + KΨ/N;
    P_os+g: 2Ψ + (2 + K)Ψ/N; P_os+g+p: (2 + 2 + K)Ψ/N.
    """
    if stage not in ZERO_STAGES:
        raise ValueError(f"stage must be one of {ZERO_STAGES}, got {stage!r}.")
    if world < 1:
        raise ValueError(f"world must be >= 1, got {world}.")
    w, g, o = weight_bytes * psi, grad_bytes * psi, k * psi
    sharded = {0: 0.0, 1: o, 2: o + g, 3: o + g + w}[stage]
    return w + g + o - sharded + sharded / world


def zero_communication_volume(stage: int) -> float:
    """Elements each rank sends per step, in units of Ψ (large-N limit, ring collectives).

    An all-reduce is a reduce-scatter (Ψ) plus an all-gather (Ψ). DDP: 2Ψ. ZeRO-1 and ZeRO-2
    reduce-scatter the gradients and all-gather the updated parameters: 2Ψ. ZeRO-3 all-gathers
    the parameters in forward and again in backward, and reduce-scatters the gradients: 3Ψ.
    """
    if stage not in ZERO_STAGES:
        raise ValueError(f"stage must be one of {ZERO_STAGES}, got {stage!r}.")
    return 3.0 if stage == 3 else 2.0


def block_parameters(width: int) -> int:
    """Parameters of one block: 12h^2 + 13h (QKV, projection, 4h MLP, two LayerNorms)."""
    return 12 * width * width + 13 * width


def block_activation_bytes(
    seq: int,
    batch: int,
    width: int,
    heads: int,
    value_bytes: int = 2,
    dropout: bool = True,
    small_terms: bool = False,
) -> int:
    """Bytes one block saves for backward (Korthikanti et al., 2022, section 4.1).

    Per ``sbh`` value: 2 LayerNorm inputs, QKV input, Q, K, V, projection input (5), MLP input,
    GELU input (4h), fc2 input (4h): 16 values; the softmax output is ``as^2b`` values. Dropout
    adds one-byte masks (after attention, after MLP: 2 sbh; on the attention weights: as^2b)
    and the dropped attention weights (as^2b values). With 2-byte values and dropout this is
    the paper's ``sbh(34 + 5as/h)``. ``small_terms`` adds what the paper leaves out: the
    LayerNorms' mean and 1/std (4sb values) and the boolean causal mask (s^2 bytes).
    """
    sbh, as2b = seq * batch * width, heads * seq * seq * batch
    total = 16 * value_bytes * sbh + value_bytes * as2b
    if dropout:
        total += 2 * sbh + (1 + value_bytes) * as2b
    if small_terms:
        total += 4 * seq * batch * value_bytes + seq * seq
    return total


def full_recompute_activation_bytes(
    seq: int, batch: int, width: int, n_blocks: int, value_bytes: int = 2
) -> int:
    """Saved bytes under full recomputation: only each block's input, ``L * sbh`` values."""
    return n_blocks * seq * batch * width * value_bytes


def _local(t: torch.Tensor) -> torch.Tensor:
    to_local = getattr(t, "to_local", None)  # a DTensor holds only its shard here
    return to_local() if callable(to_local) else t


def _nbytes(tensors: Iterable[torch.Tensor]) -> int:
    seen, total = set(), 0
    for t in tensors:
        t = _local(t)
        key = t.untyped_storage().data_ptr()
        if key not in seen:  # views of one buffer (a flat parameter, a bucket) count once
            seen.add(key)
            total += t.untyped_storage().nbytes()
    return total


def parameter_bytes(model: nn.Module) -> int:
    """Bytes of the parameter storage this process holds (views of one buffer counted once)."""
    return _nbytes(model.parameters())


def gradient_bytes(model: nn.Module) -> int:
    """Bytes of the ``.grad`` storage this process holds."""
    return _nbytes(p.grad for p in model.parameters() if p.grad is not None)


def optimizer_state_bytes(optimizer: torch.optim.Optimizer | object) -> int:
    """Bytes of every tensor in ``optimizer.state`` (Adam: moments and step counters).

    Works for ``torch.optim`` optimizers, for ``ZeroRedundancyOptimizer`` (its local
    optimizer) and for objects with a ``state_tensors()`` method (the course's ZeRO).
    """
    if hasattr(optimizer, "state_tensors"):
        return _nbytes(optimizer.state_tensors())
    # ZeroRedundancyOptimizer wraps a local one
    inner = cast(torch.optim.Optimizer, getattr(optimizer, "optim", optimizer))
    tensors = [
        v for state in inner.state.values() for v in state.values() if isinstance(v, torch.Tensor)
    ]
    return _nbytes(tensors)
