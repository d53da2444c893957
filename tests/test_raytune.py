"""Tests for helpers.tuning.raytune: a real local Ray in a subprocess with its own HOME and TMPDIR."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import pytest

from helpers import BUILD_DIR, REPO_ROOT

SCRIPT = textwrap.dedent(
    """
    import json, os, sys
    from pathlib import Path
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler
    from helpers.tuning.objective import digits_split
    from helpers.tuning.raytune import digits_trainable, failed_trials, results_frame, start_ray, stop_ray, tune_search

    build = Path(sys.argv[1])
    session = start_ray(num_cpus=2)  # the default temp dir, build/ray, as in the notebook
    data = digits_split()
    trainable = tune.with_parameters(digits_trainable, data=data, max_epochs=2, seed=0)
    bad = tune_search(trainable, {"lr": tune.grid_search([1e-2, "boom", 3e-2])}, 1, "bad",
                      storage_dir=build / "results", log_errors=False)
    asha = tune_search(
        tune.with_parameters(digits_trainable, data=data, max_epochs=4, seed=0),
        {"lr": tune.loguniform(1e-5, 1e-1)}, 8, "asha", storage_dir=build / "results",
        scheduler=ASHAScheduler(time_attr="epoch", max_t=4, grace_period=1, reduction_factor=2),
    )
    try:
        tune_search(trainable, {"lr": 1e-2}, 1, "gpu", resources={"cpu": 1, "gpu": 1}, storage_dir=build / "results")
        too_big = ""
    except ValueError as error:
        too_big = str(error)
    stop_ray(session)

    # A clone path too long for Ray's sockets below build/ray: a short per-run folder instead.
    long_build = build / ("p" * 100)
    long_session = start_ray(num_cpus=1, build_dir=long_build)
    during = {"dir": str(long_session.temp_dir), "owned": long_session.owns_temp_dir,
              "sessions": sorted(p.name[:8] for p in long_session.temp_dir.iterdir() if p.name.startswith("session_2"))}
    tiny = tune_search(tune.with_parameters(digits_trainable, data=data, max_epochs=1, seed=0), {"lr": 1e-2}, 1,
                       "long", storage_dir=long_build / "results")
    during["epochs"] = results_frame(tiny)["epochs"].tolist()
    stop_ray(long_session)
    during["exists_after"] = long_session.temp_dir.exists()
    print(json.dumps({
        "pid": os.getpid(),
        "long": during,
        "too_big": too_big,
        "failed": failed_trials(bad),
        "bad": results_frame(bad).astype({"lr": str}).to_dict("records"),
        "asha_epochs": results_frame(asha)["epochs"].tolist(),
        "asha_best": float(results_frame(asha)["best"].max()),
    }))
    """
)


def run_script_isolated(root: Path) -> tuple[dict, set[str]]:
    """Run SCRIPT with its own HOME and TMPDIR under ``root``; its JSON output and the Ray
    sessions it added to build/ray."""
    home, tmp, build = root / "home", root / "tmp", root / "build"
    for folder in (home, tmp, build):
        folder.mkdir()
    sessions_before = set(os.listdir(BUILD_DIR / "ray")) if (BUILD_DIR / "ray").is_dir() else set()
    env = {**os.environ, "HOME": str(home), "TMPDIR": str(tmp), "PYTHONPATH": str(REPO_ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(build)],
        env=env,
        cwd=root,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    # log_errors=False: errors only in the results.
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    new_sessions = {
        p for p in os.listdir(BUILD_DIR / "ray") if p.startswith("session_2")
    } - sessions_before
    return json.loads(done.stdout.strip().splitlines()[-1]), new_sessions


@pytest.mark.multiprocess
def test_ray_tune_searches_failures_and_files(tmp_path: Path) -> None:
    """One Ray start (slow), several properties: checked in one test so it starts once."""
    pytest.importorskip("ray.tune")
    out, new_sessions = run_script_isolated(tmp_path)

    # A failing trial is reported (config and error), the others finish; nothing hangs.
    assert len(out["failed"]) == 1 and "boom" in out["failed"][0]
    by_lr = {row["lr"]: row for row in out["bad"]}
    assert by_lr["boom"]["error"] and by_lr["boom"]["epochs"] == 0
    assert (
        by_lr["0.01"]["epochs"] == 2 and by_lr["0.01"]["best"] > 0.8 and not by_lr["0.01"]["error"]
    )

    # ASHAScheduler stops weak trials before max_t.
    epochs = out["asha_epochs"]
    assert len(epochs) == 8 and max(epochs) == 4 and min(epochs) < 4 and sum(epochs) < 8 * 4
    assert out["asha_best"] > 0.8

    # A resource request the cluster cannot meet fails at once instead of pending forever.
    assert "wait forever" in out["too_big"] and "'gpu': 1" in out["too_big"]

    # Files: nothing in HOME; TMPDIR (which the Makefile points into build/) holds at most torch's
    # compile cache; Ray's session went to build/ray and the results to the given folder.
    assert list((tmp_path / "home").iterdir()) == []
    assert [
        p.name for p in (tmp_path / "tmp").iterdir() if not p.name.startswith("torchinductor_")
    ] == []
    # (a start that timed out on a loaded machine and was retried leaves a second one)
    assert {name for name in new_sessions if name.endswith(f"_{out['pid']}")}
    assert any((tmp_path / "build" / "results").iterdir())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["build", "home", "tmp"]

    # Long build path: Ray ran from a short folder under /tmp that existed during the run (with
    # Ray's session in it) and was removed afterwards; the results still went below the build path.
    long = out["long"]
    assert long["owned"] and long["dir"].startswith("/tmp/ray") and len(long["dir"]) <= 42
    assert set(long["sessions"]) == {"session_"} and long["epochs"] == [1]
    assert long["exists_after"] is False
    assert any((tmp_path / "build" / ("p" * 100) / "results").iterdir())


def test_ray_temp_dir_is_build_ray_when_short_and_a_short_system_folder_when_not(
    tmp_path: Path,
) -> None:
    from helpers.tuning.raytune import MAX_TEMP_DIR_CHARS, ray_temp_dir

    short_build = Path("/tmp") / f"b{os.getpid()}"
    try:
        chosen, owned = ray_temp_dir(short_build)
        assert chosen == short_build.resolve() / "ray" and not owned and chosen.is_dir()
    finally:
        shutil.rmtree(short_build, ignore_errors=True)
    long_build = tmp_path / ("x" * 100)
    chosen, owned = ray_temp_dir(long_build)
    try:
        assert (
            owned
            and chosen.is_dir()
            and chosen.parent == Path("/tmp")
            and chosen.name.startswith("ray")
        )
        assert len(str(chosen)) <= MAX_TEMP_DIR_CHARS < len(str(long_build / "ray"))
        assert not long_build.exists()  # nothing made at the long path
    finally:
        shutil.rmtree(chosen, ignore_errors=True)


@pytest.mark.multiprocess
def test_start_ray_removes_its_short_folder_when_ray_fails_to_start(
    tmp_path: Path, monkeypatch
) -> None:
    ray = pytest.importorskip("ray")
    from helpers.tuning import raytune

    made: list[str] = []
    real_mkdtemp = tempfile.mkdtemp

    def recording_mkdtemp(**kwargs: object) -> str:
        made.append(real_mkdtemp(**kwargs))
        return made[-1]

    def failing_init(**kwargs: object) -> None:
        assert Path(kwargs["_temp_dir"]).is_dir()  # the folder exists while Ray starts
        raise RuntimeError("raylet failed to start")

    monkeypatch.setattr(raytune.tempfile, "mkdtemp", recording_mkdtemp)
    monkeypatch.setattr(ray, "init", failing_init)
    monkeypatch.setattr(raytune, "FAILED_START_SETTLE_S", 0.5)
    with pytest.raises(RuntimeError, match="raylet"):
        raytune.start_ray(1, build_dir=tmp_path / ("x" * 100))
    assert len(made) == 1 and not Path(made[0]).exists()


@pytest.mark.multiprocess
def test_start_ray_retries_once_when_the_node_start_up_times_out(
    tmp_path: Path, monkeypatch
) -> None:
    ray = pytest.importorskip("ray")
    from helpers.tuning import raytune

    calls: list[str] = []

    def flaky_init(**kwargs: object) -> None:
        calls.append(str(kwargs["_temp_dir"]))
        if len(calls) == 1:
            raise Exception(
                "The current node timed out during startup. This could happen because ..."
            )

    monkeypatch.setattr(ray, "init", flaky_init)
    monkeypatch.setattr(ray, "cluster_resources", lambda: {"CPU": 1.0, "memory": 1e9})
    session = raytune.start_ray(1, build_dir=tmp_path / ("x" * 100))
    try:
        assert len(calls) == 2 and calls[0] == calls[1] == str(session.temp_dir)
        assert session.resources == {"CPU": 1.0} and session.temp_dir.is_dir()
    finally:
        raytune.stop_ray(session)
    assert not session.temp_dir.exists()

    def broken_init(**kwargs: object) -> None:
        calls.append("broken")
        raise ValueError("Resource quantities must be nonnegative.")

    monkeypatch.setattr(ray, "init", broken_init)
    calls.clear()
    with pytest.raises(ValueError, match="nonnegative"):
        raytune.start_ray(1, build_dir=tmp_path / ("x" * 100))
    assert calls == ["broken"]  # any other error is not retried
