"""One call seeds Python, NumPy and PyTorch; DataLoader workers get their own seeds."""

from __future__ import annotations

import os
import random

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
