"""One prepared check of every CUDA path of the course: ``make gpu-check``.

On a machine with at least one CUDA GPU it runs, within about 8 minutes, every single-GPU path —
device auto-detection; ``fit`` in FP32, FP16 with GradScaler and BF16 (each held against FP32
within a stated tolerance); CUDA memory statistics, the saved-tensor meter and the OOM back-off
against a real allocator; DDP at world size 1 on NCCL — then the GPU cells of notebooks 00, 01,
05 and 09 under the reduced ``gpu-check`` profile, and with two or more GPUs the NCCL DDP proof.
It writes ``build/gpu-check/report.md`` with every figure and every check's verdict. Checks that
need more GPUs than are visible are listed as *not run*, never as passed.

Exit status: 0 every check that could run passed; 1 a check failed (or could not run for want of
time); 2 no CUDA GPU is visible (nothing was run).

Every check takes the device it runs on, so ``tests/test_gpu_check.py`` runs the same code on the
CPU at small sizes: on a GPU machine only the device changes.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from helpers import BUILD_DIR, REPO_ROOT

Figures = dict[str, object]
GPU_NOTEBOOKS = (
    "00_setup_and_workflow",
    "01_training_loop",
    "05_lr_schedulers",
    "09_mixed_precision_and_memory",
)
TIME_LIMIT_S = 8 * 60
ACCURACY_TOLERANCE = 0.03  # |accuracy(mixed precision) - accuracy(FP32)| on the digits, 3 seeds


@dataclass(frozen=True)
class Check:
    """One check: its name, the GPUs it needs, what it covers, and the code that runs it."""

    name: str
    needs_gpus: int
    covers: str
    run: Callable[[torch.device, bool], Figures]  # (device, small) -> figures; raises on failure


@dataclass
class Outcome:
    """What one check did: ``passed``, ``failed`` or ``not run``, with its figures."""

    name: str
    status: str
    covers: str
    seconds: float = 0.0
    figures: Figures = field(default_factory=dict)
    detail: str = ""


# --------------------------------------------------------------------------- the checks


def check_device(device: torch.device, small: bool) -> Figures:
    """``DEVICE="auto"`` picks this device, and the machine description agrees."""
    from helpers.devices import describe, pick_device

    picked = pick_device("auto")
    assert picked.type == device.type, f"auto picked {picked}, expected {device.type}"
    info = describe(picked)
    return {k: info[k] for k in ("device", "gpus", "amp_dtype", "tensor_cores") if k in info} | (
        {"gpu_name": info["gpu_name"]} if "gpu_name" in info else {}
    )


def _digits_accuracy(
    device: torch.device, dtype: torch.dtype | None, seed: int, epochs: int
) -> float:
    from helpers.data import digits_loaders
    from helpers.models import mlp
    from helpers.seed import seed_everything
    from helpers.training import fit

    seed_everything(seed)
    train_loader, val_loader = digits_loaders(batch_size=64, seed=seed)
    model = mlp(64, 10, hidden=128, depth=2).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    result = fit(
        model,
        train_loader,
        val_loader,
        optimizer,
        epochs,
        device=device,
        amp=dtype if dtype is not None else False,
        show_progress=False,
    )
    return float(result.history[-1]["val_accuracy"])


def check_fit_precisions(device: torch.device, small: bool) -> Figures:
    """``fit`` in FP16 (+ GradScaler) and BF16 reaches FP32's accuracy within the tolerance."""
    epochs, seeds = (2, (0,)) if small else (8, (0, 1, 2))
    figures: Figures = {}
    fp32 = [_digits_accuracy(device, None, s, epochs) for s in seeds]
    figures["fp32_accuracy"] = round(sum(fp32) / len(fp32), 4)
    for name, dtype in (("fp16", torch.float16), ("bf16", torch.bfloat16)):
        accs = [_digits_accuracy(device, dtype, s, epochs) for s in seeds]
        gap = max(abs(a - b) for a, b in zip(accs, fp32, strict=True))
        figures[f"{name}_accuracy"] = round(sum(accs) / len(accs), 4)
        figures[f"{name}_max_gap"] = round(gap, 4)
        if not small:
            assert gap <= ACCURACY_TOLERANCE, f"{name} differs from FP32 by {gap:.3f} on a seed"
    return figures


def check_memory(device: torch.device, small: bool) -> Figures:
    """Memory readings move with a real allocation; the saved-tensor meter counts a known graph;
    the OOM back-off finds a batch size under a real cap on the allocator (GPU)."""
    from helpers.precision.memory import activation_bytes, memory_reading, reset_peak

    reset_peak(device)
    before = memory_reading(device)
    block = torch.empty(64 * 2**20, dtype=torch.uint8, device=device)  # 64 MiB
    after = memory_reading(device)
    figures: Figures = {
        "reading_delta_mib": round((after.current_bytes - before.current_bytes) / 2**20, 1)
    }
    del block
    if device.type == "cuda":
        assert after.current_bytes - before.current_bytes >= 64 * 2**20
    # A linear layer saves its input for backward: batch x features x 4 bytes.
    layer = torch.nn.Linear(256, 256).to(device)
    x = torch.randn(512, 256, device=device, requires_grad=True)
    saved = activation_bytes(layer, x)
    assert saved == 512 * 256 * 4, f"meter counted {saved} bytes, expected {512 * 256 * 4}"
    figures["linear_saved_bytes"] = saved
    if device.type == "cuda":
        figures |= _oom_backoff(device)
    return figures


def _oom_backoff(device: torch.device) -> Figures:
    from helpers.precision.oom import find_max_batch_size

    cap_bytes = 2 * 2**30
    total = torch.cuda.get_device_properties(device).total_memory
    torch.cuda.set_per_process_memory_fraction(cap_bytes / total, device)
    try:

        def step(batch: int) -> None:
            x = torch.empty(batch, 2**20, dtype=torch.uint8, device=device)  # 1 MiB a sample
            del x

        result = find_max_batch_size(step, start=8192, refine=True)
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0, device)
    assert 1024 <= result.batch_size < 2048, f"back-off found {result.batch_size} under a 2 GiB cap"
    return {"backoff_batch_under_2GiB": result.batch_size, "backoff_ooms": result.ooms}


def check_ddp_world(world: int) -> Callable[[torch.device, bool], Figures]:
    """DDP at ``world`` ranks (NCCL on GPUs, gloo on CPU) equals one process, and the negative
    control (no all-reduce) does not."""

    def run(device: torch.device, small: bool) -> Figures:
        from helpers.parallel import ddp_examples
        from helpers.parallel.launch import launch

        result = launch(
            ddp_examples.ddp_equivalence,
            world,
            8 * world,
            4,
            device=device,
            echo=False,
            timeout_s=300,
        )[0]
        gap = result["ddp_max_abs_diff"]
        assert gap < 1e-5, f"DDP differs from one process by {gap:.2e}"
        if world > 1:
            assert result["no_allreduce_max_abs_diff"] > 1e-4, (
                "the control without all-reduce matched"
            )
        return {k: float(f"{v:.3g}") for k, v in result.items() if isinstance(v, float)}

    return run


def check_notebooks(device: torch.device, small: bool) -> Figures:
    """Notebooks 00, 01, 05 and 09 (the ones with GPU cells) under the ``gpu-check`` profile."""
    if small:  # the CPU test proves the command line, not the notebooks (make test runs those)
        return {"command": " ".join(notebook_command())}
    proc = subprocess.run(
        notebook_command(), cwd=REPO_ROOT, capture_output=True, text=True, timeout=TIME_LIMIT_S
    )
    assert proc.returncode == 0, f"course.run failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}"
    return {"report": "build/gpu-check/report.md"}


def notebook_command() -> list[str]:
    return [sys.executable, "-m", "course.run", "--profile", "gpu-check", "--only", *GPU_NOTEBOOKS]


CHECKS: tuple[Check, ...] = (
    Check("device auto-detection", 1, "pick_device('auto'), describe()", check_device),
    Check(
        "fit: FP32 vs FP16+GradScaler vs BF16",
        1,
        "fit(amp=torch.float16 / torch.bfloat16), autocast, GradScaler",
        check_fit_precisions,
    ),
    Check(
        "memory statistics, meter, OOM back-off",
        1,
        "memory_reading, reset_peak, activation_bytes, find_max_batch_size",
        check_memory,
    ),
    Check(
        "DDP, world size 1 (NCCL)", 1, "launch(device='cuda'), DDP device_ids", check_ddp_world(1)
    ),
    Check(
        "notebooks 00, 01, 05, 09 (gpu-check profile)",
        1,
        "the GPU cells and GPU sizes of the notebooks that have them",
        check_notebooks,
    ),
    Check("DDP, world size 2 (NCCL all-reduce)", 2, "multi-GPU DDP proof", check_ddp_world(2)),
)


# --------------------------------------------------------------------------- running


def plan(gpus: int, checks: tuple[Check, ...] = CHECKS) -> list[tuple[Check, bool]]:
    """Every check with whether it can run on ``gpus`` visible GPUs (none can with 0)."""
    return [(check, gpus >= 1 and gpus >= check.needs_gpus) for check in checks]


def run_checks(
    device: torch.device,
    gpus: int,
    checks: tuple[Check, ...] = CHECKS,
    small: bool = False,
    time_limit_s: float = TIME_LIMIT_S,
) -> list[Outcome]:
    """Run what :func:`plan` allows, in order, each timed; a failure does not stop the rest."""
    started = time.monotonic()
    outcomes = []
    for check, runnable in plan(gpus, checks):
        if not runnable:
            outcomes.append(
                Outcome(
                    check.name,
                    "not run",
                    check.covers,
                    detail=f"needs {check.needs_gpus} GPUs, {gpus} visible",
                )
            )
            continue
        if time.monotonic() - started > time_limit_s:
            outcomes.append(
                Outcome(
                    check.name,
                    "not run",
                    check.covers,
                    detail=f"the {time_limit_s:.0f} s limit was reached",
                )
            )
            continue
        t0 = time.monotonic()
        try:
            figures = check.run(device, small)
            outcomes.append(
                Outcome(check.name, "passed", check.covers, time.monotonic() - t0, figures)
            )
        except Exception as exc:  # a failed check is reported, and the others still run
            detail = "".join(traceback.format_exception_only(type(exc), exc)).strip()
            outcomes.append(
                Outcome(
                    check.name, "failed", check.covers, time.monotonic() - t0, detail=detail[-600:]
                )
            )
    return outcomes


def exit_status(outcomes: list[Outcome], gpus: int) -> int:
    """0 all runnable checks passed; 1 one failed or ran out of time; 2 no GPU (nothing ran)."""
    if gpus == 0:
        return 2
    blocked = any(o.status == "not run" and "limit" in o.detail for o in outcomes)
    return 1 if blocked or any(o.status == "failed" for o in outcomes) else 0


def write_report(outcomes: list[Outcome], machine: str, path: Path) -> Path:
    """The Markdown report: one row per check, its verdict, its figures."""
    lines = [
        f"# GPU check — {machine}",
        "",
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} · torch {torch.__version__}",
        "",
        "| check | verdict | seconds | figures | covers |",
        "|---|---|---:|---|---|",
    ]
    for o in outcomes:
        figures = "; ".join(f"{k}={v}" for k, v in o.figures.items()) or "—"
        if o.detail:
            figures = f"{o.detail}" if figures == "—" else f"{figures}; {o.detail}"
        lines.append(
            f"| {o.name} | {o.status} | {o.seconds:.1f} | {figures.replace('|', '/')} "
            f"| {o.covers} |"
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=BUILD_DIR / "gpu-check" / "report.md")
    args = parser.parse_args(argv)
    from helpers.devices import gpu_count

    gpus = gpu_count()
    if gpus == 0:
        print(
            "make gpu-check: no CUDA GPU is visible on this machine, so nothing was run. "
            "Run it on a machine with an NVIDIA GPU (torch.cuda.is_available() must be True).",
            file=sys.stderr,
        )
        return 2
    device = torch.device("cuda")
    machine = f"{gpus} × {torch.cuda.get_device_name(0)}"
    outcomes = run_checks(device, gpus)
    report = write_report(outcomes, machine, args.out)
    for o in outcomes:
        print(f"{o.status:>8}  {o.name} ({o.seconds:.1f} s) {o.detail}")
    print(
        f"Report: {report.relative_to(REPO_ROOT) if report.is_relative_to(REPO_ROOT) else report}"
    )
    return exit_status(outcomes, gpus)


if __name__ == "__main__":
    sys.exit(main())
