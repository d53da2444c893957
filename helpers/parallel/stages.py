"""Pipeline stages: the models notebook 03 splits, where to cut them, and what each layer costs.

- models: :func:`make_mini_alexnet` (an AlexNet-shaped CNN for 3x32x32 images) and
  :func:`make_block_stack` (identical Linear+ReLU blocks: stages balanced by construction);
- splitting: :func:`split_sequential`, :func:`even_cuts`, :func:`stage_costs`,
  :func:`balanced_cuts` (split points that minimise the slowest stage);
- measuring: :func:`profile_layers` (time per layer), :func:`activation_shapes` (what each
  stage sends on), :func:`layer_name`.

Nothing here needs a process group.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from itertools import combinations
from typing import Any

import torch
from torch import nn

MODELS = ("alexnet", "stack")


def make_mini_alexnet(classes: int = 10, channels: int = 32) -> nn.Sequential:
    """An AlexNet-shaped CNN for 3x32x32 images: five convolutions, then three linear layers.

    A flat ``nn.Sequential`` (so it can be cut at any index). Like AlexNet, the convolutions do
    most of the computing and the linear layers hold most of the parameters. No dropout, so a
    split model and the unsplit one compute exactly the same function.
    """
    c = channels
    return nn.Sequential(
        nn.Conv2d(3, c, 5, padding=2),
        nn.ReLU(),
        nn.MaxPool2d(2),  # c x 16 x 16
        nn.Conv2d(c, 2 * c, 5, padding=2),
        nn.ReLU(),
        nn.MaxPool2d(2),  # 2c x 8 x 8
        nn.Conv2d(2 * c, 3 * c, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(3 * c, 3 * c, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(3 * c, 2 * c, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),  # 2c x 4 x 4
        nn.Flatten(),
        nn.Linear(2 * c * 16, 16 * c),
        nn.ReLU(),
        nn.Linear(16 * c, 16 * c),
        nn.ReLU(),
        nn.Linear(16 * c, classes),
    )


def make_block_stack(width: int, n_blocks: int, classes: int = 10) -> nn.Sequential:
    """``n_blocks`` identical ``Linear(width, width) + ReLU`` blocks and a linear head.

    Element ``i < n_blocks`` is block ``i`` (an ``nn.Sequential``), the last element the head,
    so :func:`even_cuts` over ``n_blocks`` gives stages with equal work (the head is small).
    """
    if width < 1 or n_blocks < 1:
        raise ValueError(f"width and n_blocks must be >= 1, got {width}, {n_blocks}.")
    blocks: list[nn.Module] = [
        nn.Sequential(nn.Linear(width, width), nn.ReLU()) for _ in range(n_blocks)
    ]
    return nn.Sequential(*blocks, nn.Linear(width, classes))


def input_shape(model_name: str, width: int = 0) -> tuple[int, ...]:
    """The shape of one input sample of a model built by :func:`build_model`."""
    if model_name == "alexnet":
        return (3, 32, 32)
    if model_name == "stack":
        return (width,)
    raise ValueError(f"unknown model {model_name!r}; known: {', '.join(MODELS)}")


def split_sequential(model: nn.Sequential, cuts: Sequence[int]) -> list[nn.Sequential]:
    """Cut ``model`` before each index in ``cuts``: ``len(cuts) + 1`` stages.

    The stages hold the *same* module objects (no copies), so running them one after the other
    is exactly the model. ``cuts`` must be strictly increasing, inside ``(0, len(model))``.
    """
    cuts = list(cuts)
    bounds = [0, *cuts, len(model)]
    if any(b <= a for a, b in zip(bounds, bounds[1:], strict=False)):
        raise ValueError(
            f"cuts {cuts} must be strictly increasing and inside (0, {len(model)}): "
            "every stage needs at least one layer."
        )
    return [
        nn.Sequential(*[model[i] for i in range(a, b)])
        for a, b in zip(bounds, bounds[1:], strict=False)
    ]


def even_cuts(n_layers: int, n_stages: int) -> list[int]:
    """Cut points giving each of ``n_stages`` stages the same number of layers (±1)."""
    if not 1 <= n_stages <= n_layers:
        raise ValueError(f"cannot cut {n_layers} layers into {n_stages} non-empty stages.")
    return [round(k * n_layers / n_stages) for k in range(1, n_stages)]


def stage_costs(costs: Sequence[float], cuts: Sequence[int]) -> list[float]:
    """The summed cost of each stage for per-layer ``costs`` cut at ``cuts``."""
    bounds = [0, *cuts, len(costs)]
    return [float(sum(costs[a:b])) for a, b in zip(bounds, bounds[1:], strict=False)]


def balanced_cuts(costs: Sequence[float], n_stages: int) -> list[int]:
    """Cut points that minimise the largest stage cost (the pipeline runs at its slowest stage).

    Exhaustive over all ``C(n-1, p-1)`` ways to cut ``n`` layers into ``p`` contiguous stages;
    among equally good cuts the first in lexicographic order wins. Fine for the few dozen
    layers of a course model.
    """
    n = len(costs)
    if not 1 <= n_stages <= n:
        raise ValueError(f"cannot cut {n} layers into {n_stages} non-empty stages.")
    if any(c < 0 for c in costs):
        raise ValueError("layer costs must be >= 0.")
    best: tuple[float, list[int]] | None = None
    for cuts in combinations(range(1, n), n_stages - 1):
        worst = max(stage_costs(costs, cuts))
        if best is None or worst < best[0] - 1e-15:
            best = (worst, list(cuts))
    assert best is not None
    return best[1]


def layer_name(module: nn.Module) -> str:
    """A short readable name: ``Conv2d 3->32 5x5``, ``Linear 1024->512``, ``ReLU``."""
    if isinstance(module, nn.Conv2d):
        k = module.kernel_size
        return f"Conv2d {module.in_channels}->{module.out_channels} {k[0]}x{k[1]}"
    if isinstance(module, nn.Linear):
        return f"Linear {module.in_features}->{module.out_features}"
    if isinstance(module, nn.Sequential) and len(module) and isinstance(module[0], nn.Linear):
        return "block " + layer_name(module[0]).split(" ", 1)[1]
    return type(module).__name__


def profile_layers(model: nn.Sequential, x: torch.Tensor, repeats: int = 5) -> list[dict[str, Any]]:
    """Measured forward+backward seconds and parameter count of each layer.

    Each layer is timed alone on the activation it sees in the full model: forward, then
    backward of a gradient of ones, so the backward includes its weight gradients. The layers
    are timed in ``repeats`` rounds (one pass over all layers per round, after a warm-up
    round) and each keeps its fastest time: other programs on a shared machine can only add
    time, and rounds spread a burst of their load over all layers alike.
    """
    if repeats < 1:
        raise ValueError("repeats must be >= 1")
    with torch.no_grad():
        acts = [x]
        for layer in model:
            acts.append(layer(acts[-1]))
    inputs = [a.detach().requires_grad_(True) for a in acts[:-1]]
    best = [float("inf")] * len(model)
    for round_ in range(repeats + 1):  # round 0 warms up
        for index, layer in enumerate(model):
            inputs[index].grad = None
            start = time.perf_counter()
            out = layer(inputs[index])
            out.backward(torch.ones_like(out))
            if round_ > 0:
                best[index] = min(best[index], time.perf_counter() - start)
    model.zero_grad(set_to_none=True)
    return [
        {
            "index": index,
            "layer": layer_name(layer),
            "params": sum(p.numel() for p in layer.parameters()),
            "seconds": best[index],
        }
        for index, layer in enumerate(model)
    ]


def activation_shapes(
    stages: Sequence[nn.Module], sample_shape: Sequence[int]
) -> list[tuple[int, ...]]:
    """Per-sample shape of each stage's output (stage ``s`` receives ``shapes[s-1]``)."""
    shapes = []
    device = next((p.device for s in stages for p in s.parameters()), torch.device("cpu"))
    with torch.no_grad():
        h = torch.zeros(1, *sample_shape, device=device)
        for stage in stages:
            h = stage(h)
            shapes.append(tuple(h.shape[1:]))
    return shapes
