"""helpers.parallel.launch, ranks, worker, torchrun: launch, fail-fast, rendezvous isolation,
world-size errors, torchrun; the DDP proof and the scaling summary.

The worker functions below live in this module so that the spawned workers can import them
(``launch`` hands the parent's ``sys.path`` to its workers).
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pandas as pd
import psutil
import pytest
import torch
import torch.distributed as dist

from helpers.parallel import ddp_examples, ranks
from helpers.parallel import launch as launch_module
from helpers.parallel.launch import (
    WorkerError,
    available_cores,
    gather_object,
    gpu_count,
    launch,
    mean_metrics,
    print0,
    resolve_world_size,
)
from helpers.parallel.torchrun import run_checked, run_nodes, torchrun_command

pytestmark = pytest.mark.timeout(90)


# ---------------------------------------------------------------- workers (imported by children)


def sum_ranks(rank: int, world_size: int, offset: float) -> dict[str, object]:
    value = torch.tensor([rank + offset])
    dist.all_reduce(value)
    print0(f"job with offset {offset} done")
    if rank == 1:
        print("rank 1 speaks too")
    return {
        "rank": rank,
        "sum": value,
        "threads": torch.get_num_threads(),
        "env_rank": int(os.environ["RANK"]),
        "gathered": gather_object(rank * 10),
        "mean": mean_metrics({"loss": float(rank)}, weight=rank + 1)["loss"],
    }


def crash_while_peer_waits(rank: int, world_size: int, pid_file: str) -> None:
    """Rank 0 starts a grandchild and stays busy; rank 1 raises once that is set up.

    Rank 0 is busy outside any collective (as in a long forward or data loading), so it does
    not notice rank 1's death by itself: only ``launch`` can stop it, and must do so at once.
    """
    if rank == 0:
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
        Path(pid_file).write_text(str(child.pid))
        time.sleep(120)
    else:
        deadline = time.monotonic() + 30
        while not Path(pid_file).exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        raise ValueError("rank 1 exploded on purpose")


def die_silently(rank: int, world_size: int) -> None:
    if rank == 1:
        os._exit(7)
    dist.barrier()


def hang(rank: int, world_size: int) -> None:
    time.sleep(120)


def _live_children() -> set[int]:
    alive = set()
    for proc in psutil.Process().children(recursive=True):
        try:
            if proc.status() != psutil.STATUS_ZOMBIE:
                alive.add(proc.pid)
        except psutil.NoSuchProcess:
            pass
    return alive


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


# ---------------------------------------------------------------------------------------- tests


@pytest.mark.multiprocess
def test_launch_returns_each_ranks_value_and_echoes_rank0_output(capsys) -> None:
    results = launch(sum_ranks, 2, 0.5)
    assert [r["rank"] for r in results] == [0, 1]
    assert [r["env_rank"] for r in results] == [0, 1]
    assert all(torch.equal(r["sum"], torch.tensor([2.0])) for r in results)  # 0.5 + 1.5
    assert all(r["gathered"] == [0, 10] for r in results)
    assert all(r["mean"] == pytest.approx(2 / 3) for r in results)  # (0*1 + 1*2) / (1 + 2)
    assert all(r["threads"] == max(1, available_cores() // 2) for r in results)
    out = capsys.readouterr().out
    assert out.count("job with offset 0.5 done") == 1  # print0: rank 0 only
    assert "[rank 1] rank 1 speaks too" in out


@pytest.mark.multiprocess
def test_ddp_equals_one_process_with_the_big_batch_and_needs_the_allreduce() -> None:
    result = launch(ddp_examples.ddp_equivalence, 2, 32, 6)[0]
    assert result["ddp_max_abs_diff"] <= 1e-6
    assert result["ddp_accumulation_max_abs_diff"] <= 1e-6
    assert result["ddp_allreduces_per_step"] == 1.0
    assert result["ddp_accumulation_allreduces_per_step"] == 1.0  # no_sync skipped the others
    assert result["no_allreduce_allreduces_per_step"] == 0.0
    assert result["no_allreduce_max_abs_diff"] > 1e-3
    assert result["no_allreduce_rank_spread"] > 1e-3


@pytest.mark.multiprocess
def test_dividing_the_loss_by_world_size_shrinks_the_update_by_world_size() -> None:
    ratios = launch(ddp_examples.double_averaging_ratio, 2)
    assert ratios == pytest.approx([0.5, 0.5], abs=1e-6)


@pytest.mark.multiprocess
def test_crashed_rank_fails_fast_with_its_traceback_and_leaves_no_process(tmp_path) -> None:
    before = _live_children()
    pid_file = tmp_path / "grandchild.pid"
    started = time.monotonic()
    with pytest.raises(WorkerError) as caught:
        launch(crash_while_peer_waits, 2, str(pid_file), timeout_s=120)
    elapsed = time.monotonic() - started
    assert elapsed < 30, f"took {elapsed:.1f} s: launch waited instead of failing fast"
    error = caught.value
    assert error.rank == 1 and error.exitcode == 1
    assert "ValueError: rank 1 exploded on purpose" in str(error)
    assert "crash_while_peer_waits" in str(error)  # the worker's own traceback
    grandchild = int(pid_file.read_text())
    deadline = time.monotonic() + 5
    while not _gone(grandchild) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _gone(grandchild), "rank 0's child process outlived the job"
    assert _live_children() == before


@pytest.mark.multiprocess
def test_rank_dying_without_traceback_is_reported_with_its_exit_code() -> None:
    with pytest.raises(WorkerError, match="exited with code 7") as caught:
        launch(die_silently, 2, timeout_s=120)
    assert caught.value.rank == 1


@pytest.mark.multiprocess
def test_timeout_stops_a_hanging_job() -> None:
    before = _live_children()
    started = time.monotonic()
    with pytest.raises(TimeoutError, match="ranks still running"):
        launch(hang, 2, timeout_s=4)
    assert time.monotonic() - started < 20
    assert _live_children() == before


@pytest.mark.slow
@pytest.mark.multiprocess
def test_two_jobs_launched_at_the_same_time_both_succeed() -> None:
    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = [
            pool.submit(launch, sum_ranks, 2, offset, threads_per_worker=1, echo=False)
            for offset in (0.0, 100.0)
        ]
        first, second = (f.result(timeout=80) for f in futures)
    assert first[0]["sum"].item() == 1.0  # 0 + 1
    assert second[0]["sum"].item() == 201.0  # 100 + 101


@pytest.mark.multiprocess
def test_world_size_the_machine_cannot_give_is_a_clear_error_before_anything_starts() -> None:
    before = _live_children()
    with pytest.raises(ValueError, match="GPU"):
        launch(sum_ranks, gpu_count() + 1, 0.0, device="cuda")
    with pytest.raises(ValueError, match="oversubscribe"):
        launch(sum_ranks, max(available_cores(), 2) + 1, 0.0, device="cpu")
    with pytest.raises(ValueError, match="world_size must be"):
        launch(sum_ranks, -1, 0.0)
    assert _live_children() == before
    assert resolve_world_size(0, "cpu") == 2
    assert resolve_world_size(3, "cpu", oversubscribe=True) == 3


@pytest.mark.multiprocess
def test_functions_workers_cannot_import_are_refused() -> None:
    def local(rank: int, world_size: int) -> None:
        return None

    with pytest.raises(ValueError, match="importable|import it"):
        launch(local, 2)
    with pytest.raises(ValueError, match="import it"):
        launch(lambda rank, world_size: None, 2)


@pytest.mark.multiprocess
def test_torchrun_script_with_setup_from_env(tmp_path) -> None:
    script = tmp_path / "job.py"
    script.write_text(
        textwrap.dedent("""
        import torch
        import torch.distributed as dist
        from helpers.parallel.launch import cleanup, print0, setup_from_env

        device = setup_from_env("cpu")
        value = torch.tensor([float(dist.get_rank() + 1)])
        dist.all_reduce(value)
        print0(f"world={dist.get_world_size()} sum={value.item():g} device={device}")
        cleanup()
    """)
    )
    cmd = torchrun_command(script, 2)
    assert cmd[:3] == [sys.executable, "-m", "torch.distributed.run"] and "--standalone" in cmd
    out = run_checked(cmd, timeout_s=80)
    assert "world=2 sum=3 device=cpu" in out
    assert out.count("world=2") == 1
    two_nodes = torchrun_command(script, 1, nnodes=2, rdzv_endpoint="localhost:29400")
    assert "--nnodes=2" in two_nodes and "--rdzv-endpoint=localhost:29400" in two_nodes


@pytest.mark.multiprocess
def test_run_nodes_stops_the_others_when_one_fails() -> None:
    before = _live_children()
    started = time.monotonic()
    sleeper = [sys.executable, "-c", "import time; time.sleep(60)"]
    failing = [sys.executable, "-c", "import sys; sys.stderr.write('node down'); sys.exit(3)"]
    with pytest.raises(RuntimeError, match="(?s)node command 1 failed .*exit code 3.*node down"):
        run_nodes([sleeper, failing], timeout_s=60)
    assert time.monotonic() - started < 15
    assert _live_children() == before
    assert run_nodes([[sys.executable, "-c", "print('ok')"]] * 2) == ["ok\n", "ok\n"]


def test_launch_keeps_every_public_name_other_modules_import() -> None:
    # helpers/scale (notebook 12) imports these from helpers.parallel.launch
    names = [
        "launch",
        "free_port",
        "setup_from_env",
        "cleanup",
        "get_rank",
        "get_world_size",
        "is_main_process",
        "print0",
        "current_device",
        "gather_object",
        "mean_metrics",
        "WorkerError",
        "resolve_world_size",
        "available_cores",
        "DEFAULT_TIMEOUT_S",
    ]
    assert all(hasattr(launch_module, name) for name in names)
    assert launch_module.current_device is ranks.current_device
    assert ranks.get_rank() == 0 and ranks.get_world_size() == 1  # outside a job
    assert 1024 <= launch_module.free_port() <= 65535


def test_summarize_scaling_counts_all_ranks_samples_and_splits_the_step() -> None:
    def row(
        world_size: int, rank: int, compute: float, step: float, plain: float | None = None
    ) -> dict[str, object]:
        return {
            "model": "m",
            "world_size": world_size,
            "rank": rank,
            "per_rank_batch": 8,
            "params": 10,
            "compute_s": compute,
            "step_s": step,
            "allreduce_s": 0.05,
            "buckets": 1,
            "plain_s": plain,
        }

    rows = [row(1, 0, 0.10, 0.11, 0.09), row(2, 0, 0.12, 0.16), row(2, 1, 0.08, 0.14)]
    table = ddp_examples.summarize_scaling(rows).set_index("world_size")
    assert table.loc[1, "samples_per_s"] == pytest.approx(8 / 0.11)
    assert table.loc[2, "samples_per_s"] == pytest.approx(16 / 0.15)  # 2 ranks x 8 / mean step
    # world size 1 has nothing to send: its 0.01 s over no_sync is DDP's own bookkeeping
    assert table.loc[1, "ddp_extra_s"] == pytest.approx(0.01)
    assert pd.isna(table.loc[1, "exposed_comm_s"])
    assert table.loc[2, "exposed_comm_s"] == pytest.approx(0.05 - 0.01)
    assert table.loc[2, "hidden"] == pytest.approx(1 - 0.04 / 0.05)
    # the speed-up is over the plain (no DDP) single-process step, not over DDP at world size 1
    assert table.loc[2, "speedup"] == pytest.approx((16 / 0.15) / (8 / 0.09))
    assert table.loc[2, "speedup_vs_ddp1"] == pytest.approx((16 / 0.15) / (8 / 0.11))
    assert table.loc[1, "speedup"] == pytest.approx(0.09 / 0.11)  # DDP at W=1 is slower than plain
    assert table.loc[2, "compute_speedup"] == pytest.approx(2 * 0.10 / 0.10)  # ranks' mean no_sync


@pytest.mark.multiprocess
def test_ddp_puts_small_buckets_apart_and_one_large_bucket_together() -> None:
    # the wide MLP's 12.6 MB of gradients: one 25 MB bucket, or one bucket per layer at 1 MB
    specs = [
        ddp_examples.ScalingSpec("one", "mlp", 1024, 2),
        ddp_examples.ScalingSpec("per layer", "mlp", 1024, 2, bucket_cap_mb=1.0),
    ]
    rows = launch(ddp_examples.measure_scaling, 1, specs, 2, 1, threads_per_worker=1)[0]
    assert [r["buckets"] for r in rows] == [1, 3]
    assert all(r["plain_s"] > 0 for r in rows)  # world size 1 also times the unwrapped model


@pytest.mark.multiprocess
def test_measure_scaling_times_both_model_kinds_on_every_rank() -> None:
    specs = [
        ddp_examples.ScalingSpec("mlp", "mlp", 32, 4),
        ddp_examples.ScalingSpec("cnn", "cnn", 4, 2),
    ]
    per_rank = launch(ddp_examples.measure_scaling, 2, specs, 2, 1, threads_per_worker=1)
    rows = [row for rank_rows in per_rank for row in rank_rows]
    assert sorted((r["model"], r["rank"]) for r in rows) == [
        ("cnn", 0),
        ("cnn", 1),
        ("mlp", 0),
        ("mlp", 1),
    ]
    assert all(r["step_s"] > 0 and r["compute_s"] > 0 and r["allreduce_s"] > 0 for r in rows)
    assert all(
        r["plain_s"] is None for r in rows
    )  # the plain baseline is timed at world size 1 only
    assert {r["bucket_cap_mb"] for r in rows} == {25.0}
    assert all(r["buckets"] >= 1 for r in rows)
    assert {r["params"] for r in rows if r["model"] == "mlp"} == {3 * (32 * 32 + 32) + 32 * 10 + 10}
