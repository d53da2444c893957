"""Device selection: CPU or CUDA, GPU count, mixed-precision support, distributed backend."""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass

import torch


def gpu_count() -> int:
    """Number of CUDA devices visible to this process (0 on a CPU-only machine)."""
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def pick_device(preference: str = "auto") -> torch.device:
    """Return the device to use.

    ``"auto"`` picks ``cuda`` when a GPU is visible, else ``cpu``. ``"cpu"``, ``"cuda"`` and
    ``"cuda:N"`` are taken literally; asking for CUDA without a GPU raises a clear error.
    """
    if preference == "auto":
        return torch.device("cuda" if gpu_count() > 0 else "cpu")
    try:
        device = torch.device(preference)
    except RuntimeError as exc:
        raise ValueError(
            f"Unknown device {preference!r}: use 'auto', 'cpu', 'cuda' or 'cuda:N'."
        ) from exc
    if device.type == "cuda":
        index = device.index or 0
        if index >= gpu_count():
            raise RuntimeError(
                f"Device {preference!r} was asked for but only {gpu_count()} GPU(s) are visible; "
                "use DEVICE='auto' to fall back to the CPU."
            )
    elif device.type != "cpu":
        raise ValueError(f"Unsupported device type {device.type!r}: use 'auto', 'cpu' or 'cuda'.")
    return device


def amp_dtype(device: torch.device) -> torch.dtype:
    """The autocast dtype for ``device``: bfloat16 on the CPU and on CUDA GPUs with native BF16
    (Ampere, compute capability 8.0, and newer); float16 on older CUDA GPUs, which then need a
    ``GradScaler``."""
    if device.type == "cuda":
        return torch.bfloat16 if bf16_supported(device) else torch.float16
    return torch.bfloat16


def bf16_supported(device: torch.device) -> bool:
    """Whether bfloat16 math is supported natively on ``device`` (emulation does not count)."""
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported(including_emulation=False)
    return True


def has_tensor_cores(device: torch.device) -> bool:
    """Whether ``device`` is a GPU with Tensor Cores (compute capability 7.0, Volta, or newer)."""
    if device.type != "cuda":
        return False
    major, _ = torch.cuda.get_device_capability(device)
    return major >= 7


def default_backend(device: torch.device) -> str:
    """The ``torch.distributed`` backend for ``device``: NCCL on CUDA, gloo on CPU."""
    return "nccl" if device.type == "cuda" else "gloo"


def describe(device: torch.device) -> dict[str, object]:
    """A short description of the machine for the device-check cell of a notebook."""
    info: dict[str, object] = {
        "torch": torch.__version__.split("+")[0],
        "device": device.type,
        "gpus": gpu_count(),
        "cpu_cores": os.cpu_count() or 1,
        "torch_threads": torch.get_num_threads(),
        "machine": platform.machine(),
        "amp_dtype": str(amp_dtype(device)).replace("torch.", ""),
        "tensor_cores": has_tensor_cores(device),
        "distributed_backend": default_backend(device),
    }
    if device.type == "cuda":
        info["gpu_name"] = torch.cuda.get_device_name(device)
    return info


@dataclass(frozen=True)
class NotebookSetup:
    """What :func:`setup_notebook` chose: the device, and the seeds every experiment repeats over."""

    device: torch.device
    seeds: tuple[int, ...]


def setup_notebook(
    device: str = "auto", threads: int | None = None, seed: int = 0, n_seeds: int = 1
) -> NotebookSetup:
    """The one prologue of every notebook: pick the device, set the CPU threads, seed.

    ``threads`` sets ``torch.set_num_threads`` (``None`` keeps PyTorch's default); tiny models run
    fastest and steadiest on one thread. ``seed`` seeds Python, NumPy and PyTorch; repeated
    experiments use the seeds ``seed, seed + 1, ..., seed + n_seeds - 1``. It prints one line.
    """
    from helpers.seed import seed_everything

    if threads is not None:
        if threads < 1:
            raise ValueError(f"threads must be >= 1 (or None), got {threads}.")
        torch.set_num_threads(threads)
    if n_seeds < 1:
        raise ValueError(f"n_seeds must be >= 1, got {n_seeds}.")
    chosen = pick_device(device)
    seed_everything(seed)
    seeds = tuple(range(seed, seed + n_seeds))
    print(f"device: {chosen.type}, torch threads: {torch.get_num_threads()}, seeds: {list(seeds)}")
    return NotebookSetup(chosen, seeds)
