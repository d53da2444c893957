"""Serving benchmark: one uvicorn server, the same load on each endpoint style, batched or not.

Trains the course GRU on surnames (seconds), widens it to ``--hidden`` units (identical
predictions, the cost of a wider model, so that inference outweighs the per-request HTTP
overhead), serves it on a loopback port and sends ``--requests`` requests at ``--concurrency``
to each endpoint, interleaved over ``--rounds``. Prints the in-process inference times, the
server's per-request overhead (its CPU time per request of the no-model echo endpoint, read from
``/lab/cpu``), a table, and a last line of ``key=value`` headline figures.

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
from helpers.serving.load import interleaved_sweep
from helpers.serving.server import ServerProcess
from helpers.timing import compare_seconds

PATHS = {
    "echo (no model)": "/lab/echo/predict",
    "def (threadpool)": "/lab/def/predict",
    "async def (event loop)": "/lab/async/predict",
    "batched": "/lab/batched/predict",
}


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
    print(
        f"trained GRU(hidden=64) in {time.perf_counter() - started:.1f} s, "
        f"val accuracy {trained.val_accuracy:.3f}"
    )
    path = save_artifact(
        widen(trained, args.hidden), BUILD_DIR / "13_serving" / "bench_model.pt", "bench"
    )
    predictor = load_predictor(path)
    texts = [t for t in load_surnames()["surname"] if not predictor.unknown_characters(t)]
    bodies = [{"text": t} for t in texts[: args.requests]]
    infer = compare_seconds(
        {"1": lambda: predictor.predict(texts[:1]), "32": lambda: predictor.predict(texts[:32])},
        repeats=5,
        number=5,
    )
    print(
        f"in-process inference, hidden={args.hidden}: batch 1 {1e3 * infer['1']:.2f} ms, "
        f"batch 32 {1e3 * infer['32']:.2f} ms ({1e3 * infer['32'] / 32:.2f} ms per text)"
    )

    with ServerProcess(
        path,
        style="def",
        lab_routes=True,
        max_batch_size=args.max_batch_size,
        max_wait_ms=args.max_wait_ms,
    ) as server:
        rows = interleaved_sweep(
            server.url, list(PATHS.values()), bodies, [args.concurrency], args.rounds
        )
    table = {row["path"]: row for row in rows}
    overhead_ms = table[PATHS["echo (no model)"]]["server_cpu_ms"]
    print(
        f"per-request HTTP overhead o (server CPU per echo request): {overhead_ms:.2f} ms; "
        f"HTTP ceiling 1/o = {1e3 / overhead_ms:.0f} req/s; load generator CPU per echo request: "
        f"{table[PATHS['echo (no model)']]['client_cpu_ms']:.2f} ms"
    )
    print(
        f"\n{'endpoint':<24}{'req/s':>9}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}{'srv CPU ms':>11}{'non-2xx':>9}"
    )
    for name, route in PATHS.items():
        row = table[route]
        print(
            f"{name:<24}{row['requests_per_s']:>9.1f}{row['p50_ms']:>9.1f}{row['p95_ms']:>9.1f}"
            f"{row['p99_ms']:>9.1f}{row['server_cpu_ms']:>11.2f}{row['non_2xx']:>9d}"
        )
    batched = table[PATHS["batched"]]
    rounds = zip(
        batched["rounds_requests_per_s"],
        table[PATHS["def (threadpool)"]]["rounds_requests_per_s"],
        table[PATHS["async def (event loop)"]]["rounds_requests_per_s"],
        strict=True,
    )
    gains = [b / max(d, a) for b, d, a in rounds]  # paired by round: same spell of machine load
    gain = statistics.median(gains)
    t1_ms = table[PATHS["def (threadpool)"]]["server_cpu_ms"] - overhead_ms
    print(
        f"\nbatching gain over the faster unbatched endpoint, per round: "
        f"{', '.join(f'{g:.2f}x' for g in gains)}; median {gain:.2f}x "
        f"(server CPU per request: inference t(1) {t1_ms:.2f} ms vs HTTP overhead {overhead_ms:.2f} ms; "
        f"single-core bound 1 + t(1)/o = {1 + t1_ms / overhead_ms:.1f}x)"
    )
    print(
        f"batching_throughput_gain={gain:.2f} p95_ms_batched={batched['p95_ms']:.1f} "
        f"http_overhead_ms={overhead_ms:.2f} inference_ms={t1_ms:.2f}"
    )


if __name__ == "__main__":
    main()
