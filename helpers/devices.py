"""Device selection: CPU or CUDA, GPU count, mixed-precision support, distributed backend."""

from __future__ import annotations

import os
import platform

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
    """The autocast dtype for ``device``: float16 on CUDA, bfloat16 on CPU."""
    return torch.float16 if device.type == "cuda" else torch.bfloat16


def bf16_supported(device: torch.device) -> bool:
    """Whether bfloat16 math is supported natively on ``device``."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
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
