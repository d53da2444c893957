"""`make lab` opens JupyterLab, also as root (every Docker container), on loopback only."""

import os
import secrets
import signal
import subprocess
import time
import urllib.request

import pytest

from helpers import REPO_ROOT
from helpers.parallel.launch import free_port


@pytest.mark.multiprocess
@pytest.mark.kernel
@pytest.mark.slow
def test_make_lab_serves_the_api_on_loopback():
    port, token = free_port(), secrets.token_hex(8)
    args = f"--no-browser --port={port} --IdentityProvider.token={token}"
    proc = subprocess.Popen(
        ["make", "-s", "lab", f"LAB_ARGS={args}"],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        deadline, status = time.monotonic() + 90, None
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                url = f"http://127.0.0.1:{port}/api/status?token={token}"
                with urllib.request.urlopen(url, timeout=2) as response:
                    status = response.status
                    break
            except OSError:
                time.sleep(0.5)
        if status is None:
            proc.terminate()
            output = proc.communicate(timeout=10)[0]
            pytest.fail(
                f"JupyterLab never answered on port {port} (uid {os.getuid()}):\n{output[-3000:]}"
            )
        assert status == 200
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    assert proc.poll() is not None, "the server outlived the test"
