"""Fine-tuning recipes: layer-wise LR decay parameter groups, no-decay sets, freezing by ratio.

Everything here works on the *structure* of a model (which module owns a parameter, which block
it sits in), never on substrings of parameter names, so a renamed attribute cannot silently move
a parameter into the wrong group:

- ``ResidualMLP``: a small pre-LayerNorm residual MLP (a Transformer block without attention),
  quick enough to pretrain and fine-tune many times on a CPU.
- ``blocks_of(model)``: the bottom-to-top blocks and the head of a ``ResidualMLP`` or of a
  :class:`~helpers.models.TransformerClassifier` (embeddings, then each encoder layer).
- ``is_no_decay(module, name)``: biases and the parameters of normalisation layers get no weight
  decay (LayerNorm's gain is pulled towards 1 by the data, not towards 0).
- ``layerwise_param_groups(...)``: AdamW parameter groups with layer-wise learning-rate decay
  (top block at the base LR, each block below multiplied by ``layer_decay``), the head at
  ``head_lr_mult`` × the base LR, and weight decay only where it belongs. Every trainable
  parameter lands in exactly one group, or a ValueError says which did not.
- ``freeze_by_ratio(blocks, ratio)``: freeze the bottom ``floor(ratio × len(blocks))`` blocks.
- ``set_dropout(model, p)``: the dropout of hidden layers *and* attention probabilities.

Ablations train with ``helpers.training.fit(..., keep_best=True)`` (best weights in memory).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, cast

import pandas as pd
import torch
from torch import nn

NORM_TYPES: tuple[type[nn.Module], ...] = (
    nn.LayerNorm,
    nn.GroupNorm,
    nn.LocalResponseNorm,
    nn.modules.batchnorm._NormBase,  # BatchNorm1d/2d/3d, SyncBatchNorm, InstanceNorm*
    *((nn.RMSNorm,) if hasattr(nn, "RMSNorm") else ()),
)

Part = nn.Module | nn.Parameter
Block = Part | Sequence[Part]


class ResidualBlock(nn.Module):
    """Pre-LN residual MLP block: ``x + dropout(W2 · GELU(W1 · LayerNorm(x)))``."""

    def __init__(self, width: int, expansion: int = 2, dropout: float = 0.1):
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.fc1 = nn.Linear(width, expansion * width)
        self.fc2 = nn.Linear(expansion * width, width)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.dropout(self.fc2(nn.functional.gelu(self.fc1(self.norm(x)))))


class ResidualMLP(nn.Module):
    """``stem`` (linear) → ``blocks`` (pre-LN residual MLP blocks) → ``norm`` → ``head`` (linear).

    The layout of a pre-LN Transformer encoder with the attention taken out: LayerNorms, biases,
    residual connections, dropout and a classifier head, so every fine-tuning recipe applies.
    """

    def __init__(
        self,
        n_inputs: int,
        n_classes: int,
        width: int = 64,
        n_blocks: int = 4,
        expansion: int = 2,
        dropout: float = 0.1,
    ):
        super().__init__()
        if min(n_inputs, n_classes, width, n_blocks, expansion) < 1:
            raise ValueError("ResidualMLP sizes must all be >= 1.")
        self.stem = nn.Linear(n_inputs, width)
        self.blocks = nn.ModuleList(
            ResidualBlock(width, expansion, dropout) for _ in range(n_blocks)
        )
        self.norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, n_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The representation the head reads (after the final LayerNorm)."""
        hidden = self.stem(x)
        for block in self.blocks:
            hidden = block(hidden)
        return self.norm(hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


@dataclass(frozen=True)
class ParamInfo:
    """Where one parameter lives: its full name, the module that owns it, its name there."""

    name: str
    module: nn.Module
    local_name: str


def is_no_decay(module: nn.Module, local_name: str) -> bool:
    """Whether the parameter ``local_name`` of ``module`` should get no weight decay.

    True for the parameters of normalisation layers (LayerNorm, BatchNorm, GroupNorm, RMSNorm…)
    and for biases (``bias``, or a name ending in ``_bias`` such as MultiheadAttention's
    ``in_proj_bias``). Decided by the owning module's type, not by a substring of the full name.
    """
    return isinstance(module, NORM_TYPES) or local_name == "bias" or local_name.endswith("_bias")


def param_info(model: nn.Module) -> dict[int, ParamInfo]:
    """``id(parameter)`` → :class:`ParamInfo` for every parameter of ``model`` (shared ones once)."""
    info: dict[int, ParamInfo] = {}
    for module_name, module in model.named_modules():
        for local_name, param in module.named_parameters(recurse=False):
            if id(param) not in info:
                full = f"{module_name}.{local_name}" if module_name else local_name
                info[id(param)] = ParamInfo(full, module, local_name)
    return info


def _params_of(block: Block) -> Iterator[nn.Parameter]:
    parts: Iterable[Part] = [block] if isinstance(block, nn.Module | nn.Parameter) else block
    for part in parts:
        if isinstance(part, nn.Parameter):
            yield part
        elif isinstance(part, nn.Module):
            yield from part.parameters()
        else:
            raise TypeError(f"A block holds modules or parameters, got {type(part).__name__}.")


def blocks_of(model: nn.Module) -> tuple[list[list[Part]], nn.Module]:
    """Bottom-to-top blocks and the head of a ``ResidualMLP`` or a ``TransformerClassifier``.

    Read from the module structure, never from parameter names:

    - ``ResidualMLP``: ``[stem], [blocks[0]], …, [blocks[-1], norm]`` and ``head``;
    - ``TransformerClassifier``: ``[embed, position], [encoder.layers[0]], …`` and ``head``.

    For another architecture, list its blocks bottom to top yourself (any sequence of modules
    and parameters works with :func:`layerwise_param_groups` and :func:`freeze_by_ratio`).
    """
    if isinstance(head := getattr(model, "head", None), nn.Module):
        if isinstance(model_blocks := getattr(model, "blocks", None), nn.ModuleList) and hasattr(
            model, "stem"
        ):
            blocks: list[list[Part]] = [[cast(Part, model.stem)]] + [
                [block] for block in model_blocks
            ]
            if isinstance(norm := getattr(model, "norm", None), nn.Module):
                blocks[-1].append(norm)
            return blocks, head
        encoder = getattr(model, "encoder", None)
        if hasattr(model, "embed") and isinstance(
            layers := getattr(encoder, "layers", None), nn.ModuleList
        ):
            parts: list[Part] = [cast(Part, model.embed)]
            if isinstance(position := getattr(model, "position", None), nn.Parameter):
                parts.append(position)
            return [parts] + [[layer] for layer in layers], head
    raise ValueError(
        f"blocks_of() knows ResidualMLP (stem, blocks, norm, head) and TransformerClassifier "
        f"(embed, position, encoder.layers, head), not {type(model).__name__}: list its blocks "
        "bottom to top yourself."
    )


def layerwise_param_groups(
    model: nn.Module,
    blocks: Sequence[Block],
    head: Block,
    base_lr: float,
    *,
    layer_decay: float = 0.95,
    head_lr_mult: float = 2.0,
    weight_decay: float = 0.1,
    decay_norm_and_bias: bool = False,
) -> list[dict[str, Any]]:
    """Optimizer parameter groups with layer-wise LR decay, a faster head and no-decay sets.

    ``blocks`` run bottom (input) to top; block ``d`` of ``L`` gets
    ``base_lr * layer_decay ** (L - 1 - d)`` (the top block trains at ``base_lr``), the ``head``
    gets ``head_lr_mult * base_lr``. Within each, parameters for which :func:`is_no_decay` holds
    get ``weight_decay=0`` unless ``decay_norm_and_bias``. Frozen parameters
    (``requires_grad=False``) are left out. Each group carries a ``"name"`` key (PyTorch keeps
    extra keys) and at most two groups per block are made.

    Raises ValueError if a trainable parameter of ``model`` is in no block, in two blocks, or if
    a block holds a parameter that is not ``model``'s.
    """
    if base_lr <= 0 or not 0 < layer_decay <= 1 or head_lr_mult <= 0 or weight_decay < 0:
        raise ValueError(
            f"Need base_lr > 0, 0 < layer_decay <= 1, head_lr_mult > 0, weight_decay >= 0; got "
            f"{base_lr=}, {layer_decay=}, {head_lr_mult=}, {weight_decay=}."
        )
    info = param_info(model)
    n_blocks = len(blocks)
    owner: dict[int, str] = {}
    groups: dict[tuple[str, bool], dict[str, Any]] = {}
    labelled = [
        (f"block {d}", block, base_lr * layer_decay ** (n_blocks - 1 - d))
        for d, block in enumerate(blocks)
    ]
    labelled.append(("head", head, base_lr * head_lr_mult))
    for label, block, lr in labelled:
        for param in _params_of(block):
            if id(param) not in info:
                raise ValueError(
                    f"{label} holds a parameter {tuple(param.shape)} that is not the model's."
                )
            name = info[id(param)].name
            if id(param) in owner:
                if owner[id(param)] == label:
                    continue  # listed twice in one block (e.g. a module and its own parameter)
                raise ValueError(f"Parameter {name!r} is in both {owner[id(param)]} and {label}.")
            owner[id(param)] = label
            if not param.requires_grad:
                continue
            decay = decay_norm_and_bias or not is_no_decay(
                info[id(param)].module, info[id(param)].local_name
            )
            group = groups.setdefault(
                (label, decay),
                {
                    "params": [],
                    "lr": lr,
                    "weight_decay": weight_decay if decay else 0.0,
                    "name": f"{label} ({'decay' if decay else 'no decay'})",
                },
            )
            group["params"].append(param)
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    missing = [i.name for pid, i in info.items() if pid not in owner and pid in trainable]
    if missing:
        raise ValueError(f"Trainable parameters in no block and not in the head: {missing}.")
    return list(groups.values())


def group_table(model: nn.Module, groups: Sequence[dict[str, Any]]) -> pd.DataFrame:
    """One row per parameter in ``groups``: name, shape, count, lr, weight_decay, group name."""
    info = param_info(model)
    rows = []
    for group in groups:
        params = group["params"]
        params = [params] if isinstance(params, torch.Tensor) else params
        for param in params:
            rows.append(
                {
                    "parameter": info[id(param)].name if id(param) in info else "?",
                    "shape": tuple(param.shape),
                    "numel": param.numel(),
                    "lr": group["lr"],
                    "weight_decay": group.get("weight_decay", 0.0),
                    "group": group.get("name", ""),
                }
            )
    return pd.DataFrame(rows)


def freeze_by_ratio(blocks: Sequence[Block], ratio: float) -> int:
    """Freeze the bottom ``floor(ratio × len(blocks))`` blocks and unfreeze the rest.

    The lower blocks are the general feature extractors; the upper ones and the head (not in
    ``blocks``) adapt to the new task. Returns the number of frozen blocks.
    """
    if not 0.0 <= ratio <= 1.0:
        raise ValueError(f"ratio must be in [0, 1], got {ratio}.")
    n_frozen = math.floor(ratio * len(blocks) + 1e-9)
    for index, block in enumerate(blocks):
        for param in _params_of(block):
            param.requires_grad_(index >= n_frozen)
    return n_frozen


def count_parameters(model: nn.Module, trainable_only: bool = True) -> int:
    """Number of (trainable) scalar parameters of ``model``."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def set_dropout(model: nn.Module, p: float) -> int:
    """Set every dropout of ``model`` to ``p``: ``nn.Dropout`` layers and attention dropout.

    ``nn.MultiheadAttention`` keeps its attention-probability dropout as a float attribute, not
    as an ``nn.Dropout`` module, so both are set. Returns how many were changed. Dropout has no
    parameters: a pretrained state dict loads the same whatever ``p`` is.
    """
    if not 0.0 <= p < 1.0:
        raise ValueError(f"dropout p must be in [0, 1), got {p}.")
    changed = 0
    for module in model.modules():
        if isinstance(module, nn.Dropout):
            module.p = p
            changed += 1
        elif isinstance(module, nn.MultiheadAttention):
            module.dropout = p
            changed += 1
    return changed
