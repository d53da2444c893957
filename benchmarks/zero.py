"""ZeRO-1/2 against DDP on 2 gloo ranks: optimizer-state bytes per rank, and equality.

Runs ``helpers.scale.zero.zero_demo`` (DDP + Adam, ZeRO-1, ZeRO-2, PyTorch's
``ZeroRedundancyOptimizer``, FSDP2) and prints, per variant, the model-state bytes this rank
holds and the distance of the final parameters from DDP's.

Usage::

    .venv/bin/python benchmarks/zero.py [--world 2] [--width 64] [--blocks 2] [--steps 5]

The last line holds the headline figure (ZeRO-1's Adam state per rank over DDP's; 1/W is the
ideal)::

    zero1_state_fraction=<x>
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a file: make the repository's helpers importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from helpers.parallel.launch import launch  # noqa: E402
from helpers.scale import zero  # noqa: E402
from helpers.scale.recompute import ModelSpec  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--world", type=int, default=2)
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--blocks", type=int, default=2)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    job = zero.ZeroJob(
        spec=ModelSpec(width=args.width, n_blocks=args.blocks),
        batch=4 * args.world,
        steps=args.steps,
    )
    ranks = launch(
        zero.zero_demo, args.world, job, device=args.device, threads_per_worker=1, echo=False
    )
    psi = ranks[0]["psi"]
    print(f"{psi} parameters, world size {args.world}, {args.steps} Adam steps")
    print(
        f"{'variant':>22} {'param B':>9} {'grad B':>9} {'optim B (max rank)':>19} "
        f"{'vs DDP':>7} {'max |Δ| vs DDP':>15}"
    )
    ddp_state = max(r["variants"]["ddp"]["optimizer_bytes"] for r in ranks)
    for name in ranks[0]["variants"]:
        rows = [r["variants"][name] for r in ranks]
        state = max(row["optimizer_bytes"] for row in rows)
        print(
            f"{name:>22} {rows[0]['param_bytes']:9d} {rows[0]['grad_bytes']:9d} {state:19d} "
            f"{state / ddp_state:7.3f} {rows[0]['max_abs_diff']:15.2e}"
        )
    fraction = max(r["variants"]["zero1"]["optimizer_bytes"] for r in ranks) / ddp_state
    print(f"zero1_state_fraction={fraction:.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
