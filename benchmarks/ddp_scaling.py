"""DDP scaling on this machine: samples/s at world size 1 and 2 for two model shapes.

Each process gets one thread (``torch.set_num_threads(1)``), so world size 2 uses two cores
and world size 1 one. The two shapes are the extremes of notebook 02, section 6:

- a wide MLP (3.2 M parameters, little compute per sample): communication-bound;
- a small CNN (29 k parameters, many FLOPs per sample): compute-bound.

Usage::

    .venv/bin/python benchmarks/ddp_scaling.py [--steps 20] [--repeats 3] [--stat best|median]

The table shows each figure two ways: from the median step and from the fastest step. On an
idle machine they agree; on a shared one another process's burst lands on some steps, and the
fastest step is the better estimate of what the machine can do (``timeit``'s convention). The
last line holds the headline figures (throughput at world size 2 / world size 1, by ``--stat``)::

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
    parser.add_argument("--steps", type=int, default=20, help="timed steps per measurement")
    parser.add_argument("--repeats", type=int, default=3,
                        help="jobs per world size, interleaved; the median over jobs is reported")
    parser.add_argument("--device", default="cpu", help="cpu (default), cuda or auto")
    parser.add_argument("--stat", choices=("best", "median"), default="best",
                        help="step time behind the headline: the fastest step (default, timeit's "
                             "convention) or the median step")
    args = parser.parse_args(argv)

    import pandas as pd

    specs = [COMPUTE_BOUND, COMM_BOUND]
    runs = []
    for repeat in range(args.repeats):
        rows = []
        for world_size in (1, 2):  # interleaved, so a burst of load hits both alike
            rows += [row for rank_rows in launch(
                ddp_examples.measure_scaling, world_size, specs, args.steps, device=args.device,
                threads_per_worker=1, echo=False) for row in rank_rows]
        for stat in ("median", "best"):  # speed-ups within a repeat, then the median over repeats
            runs.append(ddp_examples.summarize_scaling(rows, stat).assign(stat=stat, repeat=repeat))

    frame = pd.concat(runs)
    table = (frame.pivot_table(index=["model", "world_size"], columns="stat", sort=False,
                               values=["step_s", "samples_per_s", "speedup"], aggfunc="median"))
    table.columns = [f"{value}_{stat}" for value, stat in table.columns]
    median = frame[frame["stat"] == "median"].groupby(["model", "world_size"], sort=False)
    table["compute_ms"] = 1e3 * median["compute_s"].median()
    table["comm_ms"] = 1e3 * median["comm_s"].median()
    table = table.reset_index()
    shown = pd.DataFrame({
        "model": table["model"], "world_size": table["world_size"],
        "compute_ms": table["compute_ms"], "exposed_comm_ms": table["comm_ms"],
        "step_ms_median": 1e3 * table["step_s_median"], "step_ms_best": 1e3 * table["step_s_best"],
        "samples_per_s_median": table["samples_per_s_median"],
        "samples_per_s_best": table["samples_per_s_best"],
        "speedup_median": table["speedup_median"], "speedup_best": table["speedup_best"],
    })
    print(f"DDP scaling, device {args.device}, 1 thread per process; median over {args.repeats} "
          f"jobs per world size of {args.steps} timed steps each (per job: median step and "
          "fastest step)")
    print(shown.to_string(index=False, float_format=lambda v: f"{v:.2f}"))
    headline = shown[shown["world_size"] == 2].set_index("model")[f"speedup_{args.stat}"]
    print(f"speedup_compute_bound={headline[COMPUTE_BOUND.name]:.2f} "
          f"speedup_comm_bound={headline[COMM_BOUND.name]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
