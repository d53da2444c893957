"""GPU status: device count, memory and utilisation, from PyTorch and from ``nvidia-smi``.

Both ``gpu_status`` and ``nvidia_smi`` degrade gracefully — an empty result and a reason — on
a machine without a GPU.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch


@dataclass
class GpuReport:
    """Rows of per-GPU facts (empty without a GPU) and a note saying where they came from."""

    rows: list[dict[str, Any]]
    note: str


def gpu_status() -> GpuReport:
    """Per visible GPU: name, compute capability, total/free memory, this process's allocated
    and reserved memory, and utilisation (``None`` when ``pynvml`` is missing)."""
    if not torch.cuda.is_available() or torch.cuda.device_count() == 0:
        return GpuReport([], "no CUDA GPU visible to PyTorch (torch.cuda.is_available() is False)")
    rows = []
    for index in range(torch.cuda.device_count()):
        free, total = torch.cuda.mem_get_info(index)
        try:
            utilisation: int | None = torch.cuda.utilization(index)
        except Exception:  # pynvml missing or NVML unavailable
            utilisation = None
        major, minor = torch.cuda.get_device_capability(index)
        rows.append(
            {
                "index": index,
                "name": torch.cuda.get_device_name(index),
                "capability": f"{major}.{minor}",
                "total_gib": round(total / 2**30, 2),
                "free_gib": round(free / 2**30, 2),
                "allocated_gib": round(torch.cuda.memory_allocated(index) / 2**30, 3),
                "reserved_gib": round(torch.cuda.memory_reserved(index) / 2**30, 3),
                "utilization_pct": utilisation,
            }
        )
    return GpuReport(
        rows, "from torch.cuda (free/total: whole device; allocated/reserved: this process)"
    )


NVIDIA_SMI_FIELDS = (
    "index",
    "name",
    "utilization.gpu",
    "memory.used",
    "memory.total",
    "temperature.gpu",
)


def nvidia_smi(fields: Iterable[str] = NVIDIA_SMI_FIELDS, timeout_s: float = 10.0) -> GpuReport:
    """Query ``nvidia-smi`` (all processes' view of every GPU); empty with a reason if absent."""
    fields = list(fields)
    binary = shutil.which("nvidia-smi")
    if binary is None:
        return GpuReport([], "nvidia-smi not found on PATH (no NVIDIA driver on this machine)")
    try:
        completed = subprocess.run(
            [binary, f"--query-gpu={','.join(fields)}", "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return GpuReport([], f"nvidia-smi could not run: {type(exc).__name__}")
    if completed.returncode != 0:
        return GpuReport([], f"nvidia-smi failed: {completed.stderr.strip()[:200]}")
    rows = [
        dict(zip(fields, (v.strip() for v in line.split(",")), strict=False))
        for line in completed.stdout.strip().splitlines()
        if line.strip()
    ]
    return GpuReport(rows, "from nvidia-smi (memory in MiB, utilisation in % over the last sample)")
