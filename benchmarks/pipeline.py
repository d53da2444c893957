"""Pipeline parallelism on this machine: naive split vs GPipe, and the bubble against theory.

Two processes (one thread each, gloo) hold the two halves of a stack of identical
``Linear(512, 512) + ReLU`` blocks, 8 per stage, so the stages are balanced (up to the first
stage not needing its input's gradient and the last computing the loss). One training step
(forward + backward of a batch of 2,048) runs with the hand-written GPipe schedule of
``helpers.parallel.sendrecv`` for m = 1 (the naive split: one stage works at a time), 2, 4 and 8
micro-batches; ``--torch`` adds ``torch.distributed.pipelining``'s ScheduleGPipe.
The measured bubble is 1 - (busy time summed over stages) / (stages x step time), from each
stage's recorded compute intervals; the theory is (p - 1) / (m + p - 1).
For each configuration the step of median duration among ``--repeats`` is kept. ``model`` is
the bubble predicted by the ideal schedule plus that step's own measured per-op overhead and hop
latency (``helpers.parallel.pipeline_schedules.gpipe_overhead_model``).
``cpu_wait_ms`` is how long a stage's compute thread was ready but found no free core
(Linux schedstat): near 0 on an idle machine; when other programs run, the pipelined steps
(which need both cores) lose far more than the naive split, and the figures say more about
the machine than about the schedule.

Usage::

    .venv/bin/python benchmarks/pipeline.py [--repeats 9] [--width 512] [--blocks-per-stage 8]
        [--batch 2048] [--torch]

The last line holds the headline figures::

    speedup_gpipe_m8=<GPipe m=8 throughput / naive> bubble_error_m8=<|measured - theory|>
    model_error_m8=<|measured - overhead model|>
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a file: make the repository's helpers importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from helpers.parallel import pipeline as pl  # noqa: E402
from helpers.parallel import pipeline_results as pr  # noqa: E402
from helpers.parallel.launch import launch  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=9, help="timed steps per configuration")
    parser.add_argument("--width", type=int, default=512, help="width of the Linear blocks")
    parser.add_argument("--blocks-per-stage", type=int, default=8)
    parser.add_argument("--batch", type=int, default=2048, help="samples per step")
    parser.add_argument("--micro-batches", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--torch", action="store_true", help="also time torch's ScheduleGPipe")
    parser.add_argument("--device", default="cpu", help="cpu (default), cuda or auto")
    args = parser.parse_args(argv)
    if 1 not in args.micro_batches or 8 not in args.micro_batches:
        parser.error("--micro-batches must include 1 (the naive split) and 8 (the headline)")

    schedules = ("gpipe", "torch-gpipe") if args.torch else ("gpipe",)
    job = pl.PipelineJob(
        model="stack",
        width=args.width,
        blocks_per_stage=args.blocks_per_stage,
        batch=args.batch,
        schedules=schedules,
        micro_batches=tuple(sorted(args.micro_batches)),
        warmup=2,
        repeats=args.repeats,
    )
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    rows = launch(
        pl.measure_pipeline,
        2,
        job,
        device=args.device,
        threads_per_worker=1 if args.device == "cpu" else None,
        echo=False,
    )
    table = pr.typical_steps(pr.summarize_steps(rows, job.batch))
    model = pr.overhead_table(rows, schedules, 2).set_index(["schedule", "m"])["predicted_bubble"]
    table["model"] = [model[(s, m)] for s, m in zip(table["schedule"], table["m"], strict=True)]
    table["name"] = [
        (
            "naive split"
            if m == 1 and s == "gpipe"
            else ("GPipe" if s == "gpipe" else "torch ScheduleGPipe") + f" m={m}"
        )
        for s, m in zip(table["schedule"], table["m"], strict=True)
    ]
    shown = table.assign(step_ms=1e3 * table["step_s"], cpu_wait_ms=1e3 * table["cpu_wait_s"])[
        [
            "name",
            "m",
            "step_ms",
            "samples_per_s",
            "speedup_vs_naive",
            "bubble",
            "theory",
            "model",
            "bubble_error",
            "cpu_wait_ms",
        ]
    ]
    print(
        f"2 stages x {args.blocks_per_stage} blocks of Linear({args.width}, {args.width}), batch "
        f"{args.batch}, {args.device}, one thread per stage; median of {args.repeats} steps; "
        f"load average at start {load:.1f}"
    )
    print(shown.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    m8 = table[(table["schedule"] == "gpipe") & (table["m"] == 8)].iloc[0]
    print(
        f"speedup_gpipe_m8={m8['speedup_vs_naive']:.3f} bubble_error_m8={m8['bubble_error']:.3f} "
        f"model_error_m8={abs(m8['bubble'] - m8['model']):.3f}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
