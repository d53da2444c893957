"""Activation recomputation on an 8-block Transformer: saved-activation bytes and step time.

Three models with the same weights — plain, selective recomputation (attention core), full
recomputation (every block) — run the same Adam training step. Bytes saved for backward are
counted with ``helpers.precision.memory.SavedTensorMeter`` (exact); step times are the best of
interleaved repeats (``helpers.timing.compare_seconds``), one torch thread.

Usage::

    .venv/bin/python benchmarks/recompute.py [--blocks 8] [--width 192] [--seq 128] [--batch 4]

The last line holds the headline figures (full recomputation over the plain model)::

    recompute_activation_ratio=<x> recompute_time_ratio=<y>
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a file: make the repository's helpers importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from helpers.precision.memory import SavedTensorMeter  # noqa: E402
from helpers.scale import recompute as rc  # noqa: E402
from helpers.timing import compare_seconds, torch_threads  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--blocks", type=int, default=8)
    parser.add_argument("--width", type=int, default=192)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    if args.blocks < 8:
        print("note: the acceptance figure is defined on a model of at least 8 blocks")

    spec = rc.ModelSpec(
        vocab=64, width=args.width, heads=args.heads, n_blocks=args.blocks, max_len=args.seq + 1
    )
    tokens = rc.random_tokens(args.batch, args.seq + 1, spec.vocab)
    saved, steps = {}, {}
    with torch_threads(args.threads):
        for mode in rc.RECOMPUTE_MODES:
            model = spec.build(mode)
            with SavedTensorMeter(exclude=model.parameters()) as meter:
                loss = rc.lm_loss(model, tokens)
            saved[mode] = meter.bytes
            del loss
            opt = torch.optim.Adam(model.parameters(), lr=1e-4)
            steps[mode] = lambda m=model, o=opt: rc.training_step(m, o, tokens)
        seconds = compare_seconds(steps, repeats=args.repeats, number=2, warmup=1)
    print(
        f"{args.blocks} blocks, width {args.width}, {args.heads} heads, seq {args.seq}, "
        f"batch {args.batch}, {args.threads} thread(s)"
    )
    print(f"{'recompute':>10} {'saved MiB':>10} {'vs plain':>9} {'step ms':>9} {'vs plain':>9}")
    for mode in rc.RECOMPUTE_MODES:
        print(
            f"{mode:>10} {saved[mode] / 2**20:10.2f} {saved[mode] / saved['none']:9.3f} "
            f"{1e3 * seconds[mode]:9.1f} {seconds[mode] / seconds['none']:9.3f}"
        )
    print(
        f"recompute_activation_ratio={saved['full'] / saved['none']:.3f} "
        f"recompute_time_ratio={seconds['full'] / seconds['none']:.3f}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
