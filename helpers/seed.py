"""One call seeds Python, NumPy and PyTorch; DataLoader workers get their own seeds."""

from __future__ import annotations

import os
import random
from collections.abc import Sequence
from typing import Any, cast

import numpy as np
import torch


def seed_everything(seed: int) -> torch.Generator:
    """Seed ``random``, NumPy and PyTorch (CPU and CUDA) and return a seeded generator.

    It seeds and changes nothing else. Pass the returned generator to
    ``DataLoader(generator=...)`` so the shuffle order depends on ``seed`` alone. Bit-identical
    results on a GPU also need deterministic kernels: call :func:`use_deterministic` as well.
    """
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    generator = torch.Generator()
    generator.manual_seed(seed)
    return generator


def use_deterministic(enabled: bool = True) -> None:
    """Ask PyTorch for deterministic kernels (or give them up again): the explicit switch.

    With ``enabled`` it sets ``CUBLAS_WORKSPACE_CONFIG`` (required by cuBLAS), turns on
    ``torch.use_deterministic_algorithms`` (an op with no deterministic version then raises),
    and makes cuDNN pick deterministic algorithms instead of benchmarking for the fastest. It is
    slower on GPUs and changes nothing on the CPU, whose kernels are deterministic already for
    the ops this course uses.
    """
    if enabled:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(enabled)
    torch.backends.cudnn.deterministic = enabled
    torch.backends.cudnn.benchmark = False


def seed_worker(worker_id: int) -> None:
    """``worker_init_fn`` for DataLoader: seeds NumPy and ``random`` from the worker's torch seed.

    Each worker's torch seed is ``base_seed + worker_id``, and the base seed comes from the
    loader's ``generator``. PyTorch >= 1.9 also reseeds NumPy and ``random`` in workers; this
    function (from the PyTorch reproducibility notes) makes that explicit and independent of the
    version, so worker randomness depends on the loader's generator alone.
    """
    worker_seed = torch.initial_seed() % 2**32
    np.random.seed(worker_seed)
    random.seed(worker_seed)


def rng_states(loader_generator: torch.Generator | None = None) -> dict[str, object]:
    """Every RNG state a resumed run needs: Python, NumPy, torch CPU, CUDA (when present) and a
    DataLoader's ``generator``, as plain values and tensors that ``weights_only=True`` loads."""
    version, internal, gauss = random.getstate()
    numpy_state = np.random.get_state()  # legacy=True: the tuple form
    assert isinstance(numpy_state, tuple)
    name, keys, position, has_gauss, cached = numpy_state
    return {
        "python": (version, internal, gauss),
        "numpy": {
            "name": name,
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(position),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
        "loader": loader_generator.get_state() if loader_generator is not None else None,
    }


def restore_rng_states(
    states: dict[str, object], loader_generator: torch.Generator | None = None
) -> None:
    """Put back the states :func:`rng_states` captured (the CUDA one only where a GPU is visible)."""
    version, internal, gauss = cast("tuple[int, Sequence[int], float | None]", states["python"])
    random.setstate((version, tuple(internal), gauss))
    numpy_state = cast("dict[str, Any]", states["numpy"])
    np.random.set_state(
        (
            numpy_state["name"],
            numpy_state["keys"].numpy().astype(np.uint32),
            numpy_state["pos"],
            numpy_state["has_gauss"],
            numpy_state["cached_gaussian"],
        )
    )
    torch.set_rng_state(cast(torch.Tensor, states["torch"]))
    if states.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cast("list[torch.Tensor]", states["cuda"]))
    if loader_generator is not None and states.get("loader") is not None:
        loader_generator.set_state(cast(torch.Tensor, states["loader"]))
