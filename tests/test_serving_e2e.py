"""End to end: a real uvicorn process on a loopback port, real concurrent HTTP requests, every
answer checked against the in-process predictor, and no process left behind — also when the
parent dies without cleaning up."""

import os
import subprocess
import sys
import time

import psutil
import pytest

from helpers.data import load_surnames
from helpers.serving.artifact import load_predictor, untrained_artifact
from helpers.serving.load import interleaved_sweep, measure_load, server_cpu_s
from helpers.serving.server import ServerProcess

pytestmark = pytest.mark.multiprocess


@pytest.fixture(scope="module")
def artifact(tmp_path_factory):
    names = load_surnames()["surname"].tolist()
    return untrained_artifact(tmp_path_factory.mktemp("e2e") / "model.pt", names, ("A", "B", "C"))


@pytest.mark.multiprocess
def test_concurrent_requests_all_answered_correctly(artifact):
    predictor = load_predictor(artifact)
    texts = load_surnames()["surname"].tolist()[:96]
    expected = predictor.predict(texts, 2)
    bodies = [{"text": t, "top_k": 2} for t in texts]
    with ServerProcess(artifact, style="def", lab_routes=True, log_dir=artifact.parent) as server:
        pid = server.process.pid
        results = {
            path: measure_load(server.url + path, bodies, concurrency=16, keep_responses=True)
            for path in ("/predict", "/lab/async/predict", "/lab/batched/predict")
        }
        bad = measure_load(server.url + "/predict", [{"text": ""}] * 8, concurrency=4)
    assert bad.status_counts == {422: 8}
    for path, result in results.items():
        assert result.status_counts == {200: len(texts)}, path
        for text, response, top in zip(texts, result.responses, expected, strict=True):
            assert response["text"] == text
            assert [c["label"] for c in response["top"]] == [c for c, _ in top]
            assert [c["probability"] for c in response["top"]] == pytest.approx(
                [p for _, p in top], abs=1e-5
            )
    assert not server.running and not psutil.pid_exists(pid)


@pytest.mark.multiprocess
def test_interleaved_sweep_and_the_servers_cpu_clock(artifact):
    """One row per (path, level), all answered; /lab/cpu agrees with the OS's count (psutil) of
    the server's CPU time, and a request with a model costs the server more CPU than the echo."""
    texts = load_surnames()["surname"].tolist()[:24]
    bodies = [{"text": t} for t in texts]
    paths = ["/lab/echo/predict", "/lab/def/predict", "/lab/batched/predict"]
    with ServerProcess(artifact, style="def", lab_routes=True, log_dir=artifact.parent) as server:
        process = psutil.Process(server.process.pid)
        os_before, lab_before = sum(process.cpu_times()[:2]), server_cpu_s(server.url)
        measure_load(server.url + "/lab/def/predict", bodies * 4, concurrency=4)
        os_spent = sum(process.cpu_times()[:2]) - os_before
        lab_spent = server_cpu_s(server.url) - lab_before
        rows = interleaved_sweep(server.url, paths, bodies, [1, 4], rounds=2, warmup=4)
    assert lab_spent == pytest.approx(os_spent, rel=0.25, abs=0.05)
    assert [(r["path"], r["concurrency"]) for r in rows] == [(p, c) for c in (1, 4) for p in paths]
    for row in rows:
        assert row["non_2xx"] == 0 and row["requests"] == len(bodies) and row["rounds"] == 2
        assert len(row["rounds_requests_per_s"]) == 2 and row["requests_per_s"] > 0
        assert row["p50_ms"] <= row["p95_ms"] <= row["p99_ms"]
        assert row["server_cpu_ms"] > 0 and row["client_cpu_ms"] > 0
    by = {(r["path"], r["concurrency"]): r for r in rows}
    assert (
        by[("/lab/def/predict", 1)]["server_cpu_ms"] > by[("/lab/echo/predict", 1)]["server_cpu_ms"]
    )
    with pytest.raises(ValueError, match="loopback"):
        server_cpu_s("http://10.0.0.1:80")


@pytest.mark.multiprocess
def test_server_stops_when_its_parent_dies(artifact, tmp_path):
    """The parent starts a server, prints its pid and dies with os._exit (no cleanup at all)."""
    script = (
        "import os, sys; from helpers.serving.server import ServerProcess\n"
        f"s = ServerProcess({str(artifact)!r}, log_dir=__import__('pathlib').Path({str(tmp_path)!r}))\n"
        "print(s.process.pid, flush=True); os._exit(0)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=180, cwd=os.getcwd()
    )
    pid = int(out.stdout.split()[0])
    deadline = time.monotonic() + 10
    while psutil.pid_exists(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not psutil.pid_exists(pid), "the orphaned server is still running"
