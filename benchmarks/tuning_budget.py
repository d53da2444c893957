"""Random search vs ASHA on the course's tuning objective: epochs spent and best score found.

Both searches draw the same ``--trials`` configurations from ``digits_search_space()`` (same
seed), random search trains each for ``--max-epochs``, ASHA (eta ``--eta``, rungs from one
epoch) prunes; repeated for ``--seeds`` seeds. One torch thread by default.

Usage::

    .venv/bin/python benchmarks/tuning_budget.py [--seeds 5] [--trials 27] [--max-epochs 9] [--eta 3]

The last line holds the headline figures, means over the seeds: ASHA's epochs as a fraction of
random search's, and random search's best validation accuracy minus ASHA's::

    asha_epoch_fraction=<fraction> asha_score_gap=<accuracy difference>
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a file: make the repository's helpers importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from helpers.devices import pick_device  # noqa: E402
from helpers.tuning.compare import compare_searches  # noqa: E402
from helpers.tuning.objective import digits_objective, digits_search_space, digits_split  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--trials", type=int, default=27)
    parser.add_argument("--max-epochs", type=int, default=9)
    parser.add_argument("--eta", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    objective = digits_objective(digits_split(), pick_device(args.device))
    fractions, gaps = [], []
    print("seed  random_epochs  asha_epochs  random_best  asha_best")
    for seed in range(args.seeds):
        random, asha = compare_searches(
            digits_search_space(),
            objective,
            seed,
            args.trials,
            args.max_epochs,
            args.eta,
            searches=("random", "ASHA"),
        )
        fractions.append(asha.epochs_used / random.epochs_used)
        gaps.append(random.best_score - asha.best_score)
        print(
            f"{seed:4d}  {random.epochs_used:13d}  {asha.epochs_used:11d}  {random.best_score:11.4f}  {asha.best_score:9.4f}"
        )
    print(
        f"asha_epoch_fraction={statistics.mean(fractions):.3f} asha_score_gap={statistics.mean(gaps):.4f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
