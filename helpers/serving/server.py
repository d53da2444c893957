"""A real uvicorn server in a child process: started on a free loopback port, waited for until
``/health`` answers, and always stopped — by the context manager, by a finalizer when the
object is garbage-collected or the interpreter exits, and by the child itself when its parent
dies (it polls its parent's pid). Only loopback addresses are ever bound.

Run as ``python -m helpers.serving.server --artifact PATH --port N [--style def|async|batched]
[--lab-routes]``.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import signal
import subprocess
import sys
import threading
import time
import weakref
from pathlib import Path

import httpx

from helpers import BUILD_DIR
from helpers.parallel.launch import free_port

LOOPBACK = "127.0.0.1"
LOG_DIR = BUILD_DIR / "13_serving"


def require_loopback(host: str) -> str:
    """``host`` if it is a loopback address, else a ``ValueError`` (we never bind anything else)."""
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise ValueError(f"Refusing host {host!r}: the course only binds loopback (127.0.0.1).")
    return host


def _terminate(process: subprocess.Popen, timeout_s: float = 5.0) -> None:
    """SIGTERM, then SIGKILL if it has not exited after ``timeout_s`` (a finalizer: no ``self``)."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout_s)


class ServerProcess:
    """``with ServerProcess(artifact) as server: httpx.get(server.url + "/health")``."""

    def __init__(
        self,
        artifact: str | Path,
        style: str = "def",
        threads: int = 1,
        max_batch_size: int = 32,
        max_wait_ms: float = 5.0,
        lab_routes: bool = False,
        device: str = "cpu",
        startup_timeout_s: float = 90.0,
        log_dir: Path = LOG_DIR,
    ):
        self.port = free_port()
        self.url = f"http://{LOOPBACK}:{self.port}"
        log_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = log_dir / f"server_{style}_{self.port}.log"
        command = [
            sys.executable,
            "-m",
            "helpers.serving.server",
            "--artifact",
            str(artifact),
            "--port",
            str(self.port),
            "--style",
            style,
            "--threads",
            str(threads),
            "--max-batch-size",
            str(max_batch_size),
            "--max-wait-ms",
            str(max_wait_ms),
            "--parent-pid",
            str(os.getpid()),
            "--device",
            device,
        ] + (["--lab-routes"] if lab_routes else [])
        with self.log_path.open("w") as log:
            self.process = subprocess.Popen(
                command,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        self._finalizer = weakref.finalize(self, _terminate, self.process)  # also runs at exit
        try:
            self._wait_healthy(startup_timeout_s)
        except BaseException:
            self.stop()
            raise

    def _wait_healthy(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"The server exited with code {self.process.returncode}; "
                    f"log:\n{self.log_path.read_text()[-2000:]}"
                )
            try:
                if httpx.get(self.url + "/health", timeout=1.0).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        raise TimeoutError(
            f"No answer from {self.url}/health within {timeout_s} s; see {self.log_path}."
        )

    @property
    def running(self) -> bool:
        return self.process.poll() is None

    def stop(self) -> int | None:
        """Stop the server (idempotent); returns its exit code."""
        self._finalizer()
        return self.process.returncode

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def watch_parent(parent_pid: int, interval_s: float = 0.5) -> threading.Thread:
    """In the child: a daemon thread that ends this process when ``parent_pid`` is gone."""

    def watch() -> None:
        while True:
            if os.getppid() != parent_pid:  # re-parented: the parent died
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(5)
                os._exit(1)
            time.sleep(interval_s)

    thread = threading.Thread(target=watch, name="parent-watch", daemon=True)
    thread.start()
    return thread


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--artifact", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--host", default=LOOPBACK)
    parser.add_argument("--style", default="def")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--max-batch-size", type=int, default=32)
    parser.add_argument("--max-wait-ms", type=float, default=5.0)
    parser.add_argument("--parent-pid", type=int, default=None)
    parser.add_argument("--lab-routes", action="store_true")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    host = require_loopback(args.host)
    if args.parent_pid is not None:
        watch_parent(args.parent_pid)

    import torch
    import uvicorn

    from helpers.serving.app import BatchingConfig, create_app
    from helpers.serving.artifact import load_predictor

    torch.set_num_threads(args.threads)
    app = create_app(
        load_predictor(args.artifact, args.device),
        args.style,
        BatchingConfig(args.max_batch_size, args.max_wait_ms / 1000),
        args.lab_routes,
    )
    uvicorn.run(app, host=host, port=args.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
