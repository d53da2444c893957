"""Serving benchmark: one uvicorn server, the same load on each endpoint style, batched or not.

Trains the course GRU on surnames (seconds), widens it to ``--hidden`` units (identical
predictions, the cost of a wider model, so that inference outweighs the per-request HTTP
overhead), serves it on a loopback port and sends ``--requests`` requests at ``--concurrency``
to each endpoint, interleaved over ``--rounds``. Prints the in-process inference times, the
server's per-request overhead (the no-model echo endpoint), a table, and a last line of
``key=value`` headline figures.

    .venv/bin/python benchmarks/serving.py [--hidden 1536] [--concurrency 32]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from helpers import BUILD_DIR
from helpers.data import load_surnames
from helpers.serving.artifact import load_predictor, save_artifact, train_surname_classifier, widen
from helpers.serving.load import interleaved_load
from helpers.serving.server import ServerProcess
from helpers.timing import compare_seconds

PATHS = {"echo (no model)": "/lab/echo/predict", "def (threadpool)": "/lab/def/predict",
         "async def (event loop)": "/lab/async/predict", "batched": "/lab/batched/predict"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hidden", type=int, default=1536)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--requests", type=int, default=384)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--max-batch-size", type=int, default=32)
    parser.add_argument("--max-wait-ms", type=float, default=2.0)
    args = parser.parse_args()
    torch.set_num_threads(1)

    started = time.perf_counter()
    trained = train_surname_classifier(hidden=64, epochs=3)
    print(f"trained GRU(hidden=64) in {time.perf_counter() - started:.1f} s, "
          f"val accuracy {trained.val_accuracy:.3f}")
    path = save_artifact(widen(trained, args.hidden), BUILD_DIR / "13_serving" / "bench_model.pt", "bench")
    predictor = load_predictor(path)
    texts = [t for t in load_surnames()["surname"] if not predictor.unknown_characters(t)]
    bodies = [{"text": t} for t in texts[: args.requests]]
    infer = compare_seconds({"1": lambda: predictor.predict(texts[:1]),
                             "32": lambda: predictor.predict(texts[:32])}, repeats=5, number=5)
    print(f"in-process inference, hidden={args.hidden}: batch 1 {1e3 * infer['1']:.2f} ms, "
          f"batch 32 {1e3 * infer['32']:.2f} ms ({1e3 * infer['32'] / 32:.2f} ms per text)")

    with ServerProcess(path, style="def", lab_routes=True, max_batch_size=args.max_batch_size,
                       max_wait_ms=args.max_wait_ms) as server:
        single = interleaved_load(server.url, [PATHS["echo (no model)"]], bodies[:100], 1, rounds=1)
        table = interleaved_load(server.url, list(PATHS.values()), bodies, args.concurrency, args.rounds)
    overhead_ms = 1e3 / table[PATHS["echo (no model)"]]["requests_per_s"]
    print(f"per-request HTTP overhead (echo, no model): {overhead_ms:.2f} ms at concurrency "
          f"{args.concurrency}; p50 {single[PATHS['echo (no model)']]['p50_ms']:.2f} ms alone")
    print(f"\n{'endpoint':<24}{'req/s':>9}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}{'non-2xx':>9}")
    for name, route in PATHS.items():
        row = table[route]
        print(f"{name:<24}{row['requests_per_s']:>9.1f}{row['p50_ms']:>9.1f}{row['p95_ms']:>9.1f}"
              f"{row['p99_ms']:>9.1f}{row['non_2xx']:>9d}")
    batched = table[PATHS["batched"]]
    rounds = zip(batched["rounds_requests_per_s"],
                 table[PATHS["def (threadpool)"]]["rounds_requests_per_s"],
                 table[PATHS["async def (event loop)"]]["rounds_requests_per_s"], strict=True)
    gains = [b / max(d, a) for b, d, a in rounds]  # paired by round: same spell of machine load
    gain = statistics.median(gains)
    print(f"\nbatching gain over the faster unbatched endpoint, per round: "
          f"{', '.join(f'{g:.2f}x' for g in gains)}; median {gain:.2f}x "
          f"(inference {1e3 * infer['1']:.2f} ms vs overhead {overhead_ms:.2f} ms per request)")
    print(f"batching_throughput_gain={gain:.2f} p95_ms_batched={batched['p95_ms']:.1f}")


if __name__ == "__main__":
    main()
