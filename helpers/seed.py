"""One call seeds Python, NumPy and PyTorch; DataLoader workers get their own seeds."""

from __future__ import annotations

import os
import random

import numpy as np
import torch


def seed_everything(seed: int, deterministic: bool = False) -> torch.Generator:
    """Seed ``random``, NumPy and PyTorch (CPU and CUDA) and return a seeded generator.

    Pass the returned generator to ``DataLoader(generator=...)`` so the shuffle order depends
    on ``seed`` alone. ``deterministic=True`` also asks PyTorch for deterministic kernels
    (slower on GPU; raises if an op has no deterministic version).
    """
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(deterministic)
    torch.backends.cudnn.benchmark = not deterministic
    torch.backends.cudnn.deterministic = deterministic
    generator = torch.Generator()
    generator.manual_seed(seed)
    return generator


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
