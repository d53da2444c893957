"""Batch bucketing on this machine: padding tokens and epoch time, random vs length-bucketed batches.

One training epoch of a surname classifier (a packed GRU, or the small pre-LN Transformer of
notebook 10) over the same samples, with random batches (one bucket) and with ``--buckets``
equally populated length buckets (``helpers.sequences.bucketing``). The two arms alternate within each
repeat so that load from other jobs hits both alike; one torch thread by default.

Usage::

    .venv/bin/python benchmarks/bucketing.py [--model gru|transformer] [--repeats 5]
        [--samples 4000] [--batch-size 64] [--buckets 8] [--device cpu]

The last line holds the headline figures: the share of padding tokens that bucketing removes,
and the share of the epoch's wall-clock time it saves (median of the paired repeats)::

    padding_removed=<fraction> time_saved=<fraction>
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a file: make the repository's helpers importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402
from torch.nn import functional as F  # noqa: E402

from helpers.data import (
    CharVocab,  # noqa: E402
    load_surnames,  # noqa: E402
)
from helpers.devices import pick_device  # noqa: E402
from helpers.models import GRUClassifier, TransformerClassifier  # noqa: E402
from helpers.sequences.bucketing import SequenceDataset, padding_tokens, sequence_loader  # noqa: E402
from helpers.training import train_one_epoch  # noqa: E402

MODELS = ("gru", "transformer")


def build_model(kind: str, vocab_size: int, n_classes: int, max_len: int) -> nn.Module:
    """The packed GRU (embedding 32, hidden 64) or the pre-LN Transformer (64 dims x 3 layers)."""
    if kind == "gru":
        return GRUClassifier(vocab_size, n_classes, embed_dim=32, hidden=64)
    if kind == "transformer":
        return TransformerClassifier(
            vocab_size, n_classes, max_len, d_model=64, n_heads=4, n_layers=3, norm_first=True
        )
    raise ValueError(f"Unknown model {kind!r}; choose from {', '.join(MODELS)}.")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="gru", choices=MODELS)
    parser.add_argument("--repeats", type=int, default=5, help="timed epochs per arm")
    parser.add_argument("--samples", type=int, default=4000, help="surnames per epoch")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--buckets", type=int, default=8, help="length buckets of the bucketed arm")
    parser.add_argument("--device", default="cpu", help="cpu (default), cuda or auto")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.repeats < 2:
        parser.error("--repeats must be at least 2 (a standard deviation needs two runs).")

    torch.set_num_threads(args.threads)
    device = pick_device(args.device)
    surnames = load_surnames()
    countries = sorted(surnames["country"].unique())
    labels = surnames["country"].map({c: i for i, c in enumerate(countries)}).to_numpy()
    vocab = CharVocab.from_texts(surnames["surname"])
    full = SequenceDataset.from_texts(list(surnames["surname"]), labels, vocab)
    chosen = np.random.default_rng(args.seed).permutation(len(full))[: args.samples]
    dataset = full.subset(chosen)
    lengths = dataset.lengths

    torch.manual_seed(args.seed)
    model = build_model(args.model, len(vocab), len(countries), int(full.lengths.max())).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    arms = {"random": 1, "bucketed": args.buckets}

    def epoch(n_buckets: int, seed: int) -> tuple[float, float, int]:
        loader = sequence_loader(dataset, args.batch_size, n_buckets, seed=seed)
        pads = padding_tokens(lengths, loader.batch_sampler)  # same seed: the epoch's batches
        wall, cpu = time.perf_counter(), time.process_time()
        train_one_epoch(model, loader, optimizer, device, F.cross_entropy)
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - wall, time.process_time() - cpu, pads

    epoch(1, args.seed)  # warm-up: allocator, kernels
    results: dict[str, dict[str, list[float]]] = {
        arm: {"wall": [], "cpu": [], "pads": []} for arm in arms
    }
    for repeat in range(args.repeats):
        order = list(arms) if repeat % 2 == 0 else list(arms)[::-1]
        for arm in order:
            wall, cpu, pads = epoch(arms[arm], args.seed + 1 + repeat)
            results[arm]["wall"].append(wall)
            results[arm]["cpu"].append(cpu)
            results[arm]["pads"].append(pads)

    real_tokens = int(lengths.sum())
    print(
        f"{args.model}, {args.samples} surnames, batch {args.batch_size}, {args.buckets} buckets, "
        f"{args.repeats} repeats, {device.type}, {args.threads} thread(s)"
    )
    print(
        f"{'batching':10s} {'pad tokens':>11s} {'padding':>8s} {'wall s (mean ± std)':>22s} "
        f"{'CPU s (mean ± std)':>22s}"
    )
    for arm, res in results.items():
        pads = statistics.mean(res["pads"])
        print(
            f"{arm:10s} {pads:11.0f} {pads / (pads + real_tokens):8.1%} "
            f"{statistics.mean(res['wall']):13.3f} ± {statistics.stdev(res['wall']):.3f} "
            f"{statistics.mean(res['cpu']):13.3f} ± {statistics.stdev(res['cpu']):.3f}"
        )
    saved_wall = [
        1 - b / r
        for b, r in zip(results["bucketed"]["wall"], results["random"]["wall"], strict=True)
    ]
    saved_cpu = [
        1 - b / r for b, r in zip(results["bucketed"]["cpu"], results["random"]["cpu"], strict=True)
    ]
    padding_removed = 1 - statistics.mean(results["bucketed"]["pads"]) / statistics.mean(
        results["random"]["pads"]
    )
    print(
        f"time saved per epoch (paired): wall median {statistics.median(saved_wall):.1%} "
        f"(mean {statistics.mean(saved_wall):.1%} ± {statistics.stdev(saved_wall):.1%}), "
        f"CPU median {statistics.median(saved_cpu):.1%} "
        f"(mean {statistics.mean(saved_cpu):.1%} ± {statistics.stdev(saved_cpu):.1%}); "
        "the notes claim 10-15 %"
    )
    print(f"padding_removed={padding_removed:.3f} time_saved={statistics.median(saved_wall):.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
