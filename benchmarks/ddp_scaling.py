"""DDP scaling on this machine: samples/s at world size 1 and 2 for two model shapes.

Each process gets one thread (``torch.set_num_threads(1)``), so world size 2 uses two cores
and world size 1 one. The two shapes are the extremes of notebook 02, section 6:

- a wide MLP (3.2 M parameters, little compute per sample): communication-bound;
- a small CNN (29 k parameters, many FLOPs per sample): compute-bound.

Usage::

    .venv/bin/python benchmarks/ddp_scaling.py [--steps 20] [--repeats 3]

Every figure of a job is the fastest of ``--steps`` interleaved calls
(``helpers.timing.compare_seconds``: on a shared machine another process's burst lands on some
calls, and the fastest is the best estimate of what the machine can do); the table shows the
median over ``--repeats`` jobs per world size, interleaved. ``ddp_extra_ms`` is the DDP step
minus the ``no_sync`` step: DDP's own bookkeeping at world size 1, plus the exposed all-reduce
above it. The last line holds the headline figures (throughput at world size 2 over one plain
process, the model without DDP: ``summarize_scaling``'s ``speedup``)::

    speedup_compute_bound=<x> speedup_comm_bound=<y>
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a file: make the repository's helpers importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from helpers.parallel import ddp_examples  # noqa: E402
from helpers.parallel.launch import launch  # noqa: E402

COMM_BOUND = ddp_examples.ScalingSpec("comm-bound MLP", "mlp", size=1024, per_rank_batch=16)
COMPUTE_BOUND = ddp_examples.ScalingSpec("compute-bound CNN", "cnn", size=32, per_rank_batch=16)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20, help="timed calls per measurement")
    parser.add_argument(
        "--repeats",
        type=int,
        default=3,
        help="jobs per world size, interleaved; the median over jobs is reported",
    )
    parser.add_argument("--device", default="cpu", help="cpu (default), cuda or auto")
    args = parser.parse_args(argv)

    import pandas as pd

    specs = [COMPUTE_BOUND, COMM_BOUND]
    runs = []
    for repeat in range(args.repeats):
        rows = []
        for world_size in (1, 2):  # interleaved, so a burst of load hits both alike
            rows += [
                row
                for rank_rows in launch(
                    ddp_examples.measure_scaling,
                    world_size,
                    specs,
                    args.steps,
                    device=args.device,
                    threads_per_worker=1,
                    echo=False,
                )
                for row in rank_rows
            ]
        runs.append(ddp_examples.summarize_scaling(rows).assign(repeat=repeat))

    frame = pd.concat(runs)
    table = (
        frame.groupby(["model", "world_size"], sort=False)[
            [
                "compute_s",
                "step_s",
                "ddp_extra_s",
                "exposed_comm_s",
                "allreduce_s",
                "samples_per_s",
                "speedup",
            ]
        ]
        .median()
        .reset_index()
    )
    for column in ("compute_s", "step_s", "ddp_extra_s", "exposed_comm_s", "allreduce_s"):
        table[column.replace("_s", "_ms")] = 1e3 * table.pop(column)
    print(
        f"DDP scaling, device {args.device}, 1 thread per process; median over {args.repeats} "
        f"jobs per world size of the fastest of {args.steps} calls each"
    )
    print(table.to_string(index=False, float_format=lambda v: f"{v:.2f}"))
    headline = table[table["world_size"] == 2].set_index("model")["speedup"]
    print(
        f"speedup_compute_bound={headline[COMPUTE_BOUND.name]:.2f} "
        f"speedup_comm_bound={headline[COMM_BOUND.name]:.2f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
