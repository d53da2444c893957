"""PyTorch mechanics that bite (notebook 00): unregistered layers, and hooks that clean up.

``ListMLP`` keeps its layers in a plain Python list — a bug: ``nn.Module`` registers only
attributes that are modules, parameters, ``nn.ModuleList`` or ``nn.ModuleDict``, so those layers
have no parameters as far as ``parameters()``, the optimizer, ``.to()`` and ``state_dict`` know.
``ModuleListMLP`` is the fix. ``LayerRecorder`` records per-layer activation statistics with
forward hooks and gradient norms with tensor hooks, and removes every hook when its ``with``
block ends, even after an error, so a notebook cell can be re-run without stacking hooks.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import cast

import torch
from torch import nn


class ListMLP(nn.Module):
    """The bug: hidden layers in a plain Python list are invisible to ``nn.Module``."""

    def __init__(self, sizes: list[int]) -> None:
        super().__init__()
        self.layers: list[nn.Linear] | nn.ModuleList = [
            nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:], strict=True)
        ]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers[:-1]:
            x = torch.relu(layer(x))
        return self.layers[-1](x)


class ModuleListMLP(ListMLP):
    """The fix: the same layers in an ``nn.ModuleList``, so they are registered submodules."""

    def __init__(self, sizes: list[int]) -> None:
        super().__init__(sizes)
        self.layers = nn.ModuleList(self.layers)


@dataclass
class LayerRecorder:
    """Forward hooks on ``layer_types`` record each call's output statistics; with
    ``gradients=True`` tensor hooks on the parameters record each gradient's norm.

    ``rows`` gets one dict per layer call: layer name, mean, std, share of exact zeros,
    whether every value is finite. ``grad_norms`` maps parameter name -> norm of its last
    gradient. Use it as a context manager: the hooks exist only inside the ``with`` block.
    """

    model: nn.Module
    layer_types: tuple[type[nn.Module], ...] = (nn.Linear, nn.ReLU)
    gradients: bool = False
    rows: list[dict[str, object]] = field(default_factory=list)
    grad_norms: dict[str, float] = field(default_factory=dict)
    handles: list[torch.utils.hooks.RemovableHandle] = field(default_factory=list)

    def _forward_hook(self, name: str):
        def hook(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
            out = output.detach().float()
            self.rows.append(
                {
                    "layer": name,
                    "type": type(module).__name__,
                    "mean": out.mean().item(),
                    "std": out.std().item(),
                    "zero_share": (out == 0).float().mean().item(),
                    "finite": bool(torch.isfinite(out).all()),
                }
            )

        return hook

    def _gradient_hook(self, name: str):
        def hook(grad: torch.Tensor) -> None:
            self.grad_norms[name] = grad.detach().norm().item()

        return hook

    def __enter__(self) -> LayerRecorder:
        for name, module in self.model.named_modules():
            if isinstance(module, self.layer_types):
                self.handles.append(module.register_forward_hook(self._forward_hook(name)))
        if self.gradients:
            for name, parameter in self.model.named_parameters():
                self.handles.append(parameter.register_hook(self._gradient_hook(name)))
        return self

    def __exit__(self, *exc: object) -> None:
        for handle in self.handles:
            handle.remove()
        self.handles.clear()

    def first_nonfinite(self) -> str | None:
        """Name of the first layer (in call order) whose output held a NaN or an infinity."""
        return next((cast(str, row["layer"]) for row in self.rows if not row["finite"]), None)


def hook_count(model: nn.Module) -> int:
    """Forward, forward-pre and backward hooks on every module, plus tensor hooks on the
    parameters: 0 when nothing is left registered."""
    modules = sum(
        len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks)
        for m in model.modules()
    )
    tensors = sum(len(p._backward_hooks or {}) for p in model.parameters())
    return modules + tensors
