"""``torchrun`` from a notebook or a test: the command line, one checked run, several "nodes".

- :func:`torchrun_command`: ``python -m torch.distributed.run ...`` for a script, one node
  (``--standalone``) or several (a c10d rendezvous endpoint, the same on every node);
- :func:`run_checked`: run a command, return its stdout, fail with the end of its stderr;
- :func:`run_nodes`: start several commands at once (one torchrun per "node"), stop the others
  as soon as one fails, leave no process behind.

Scripts started this way call :func:`helpers.parallel.launch.setup_from_env` first and
:func:`helpers.parallel.launch.cleanup` last.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from helpers.parallel.launch import DEFAULT_TIMEOUT_S, POLL_S, stop_process_groups


def torchrun_command(
    script: str | Path,
    nproc_per_node: int,
    *script_args: str,
    nnodes: int = 1,
    rdzv_endpoint: str | None = None,
    rdzv_id: str = "course",
) -> list[str]:
    """``python -m torch.distributed.run ...`` for ``script`` (never a bare ``torchrun``).

    One node: ``--standalone`` (a private rendezvous on a free port). Several nodes: the c10d
    rendezvous at ``rdzv_endpoint`` (``host:port`` of any one node), the same on every node.
    """
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc-per-node={nproc_per_node}"]
    if nnodes == 1 and rdzv_endpoint is None:
        cmd.append("--standalone")
    else:
        if rdzv_endpoint is None:
            raise ValueError(
                "Several nodes need rdzv_endpoint='host:port' (the same on every node)."
            )
        cmd += [
            f"--nnodes={nnodes}",
            "--rdzv-backend=c10d",
            f"--rdzv-endpoint={rdzv_endpoint}",
            f"--rdzv-id={rdzv_id}",
        ]
    return [*cmd, str(script), *map(str, script_args)]


def run_checked(cmd: Sequence[str], timeout_s: float = DEFAULT_TIMEOUT_S, **kwargs: Any) -> str:
    """Run ``cmd``, return its stdout; raise with the end of its stderr if it fails."""
    done = subprocess.run(list(cmd), capture_output=True, text=True, timeout=timeout_s, **kwargs)
    if done.returncode != 0:
        raise RuntimeError(
            f"{Path(cmd[0]).name} {' '.join(cmd[1:3])} ... failed with exit code "
            f"{done.returncode}. Its stderr ends with:\n{done.stderr[-3000:]}"
        )
    return done.stdout


def run_nodes(
    commands: Sequence[Sequence[str]], timeout_s: float = DEFAULT_TIMEOUT_S, **kwargs: Any
) -> list[str]:
    """Start several commands at once (e.g. one torchrun per "node"), wait for all, stdout each.

    If one fails, the others are stopped and the error names it with the end of its stderr.
    """
    procs = [
        subprocess.Popen(
            list(cmd),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
            **kwargs,
        )
        for cmd in commands
    ]
    outputs: list[tuple[str, str]] = [("", "")] * len(procs)
    try:
        readers = []
        for index, proc in enumerate(procs):

            def read(i: int = index, p: subprocess.Popen = proc) -> None:
                outputs[i] = p.communicate()

            thread = threading.Thread(target=read, daemon=True)
            thread.start()
            readers.append(thread)
        deadline = time.monotonic() + timeout_s
        timed_out, first_failed = False, None
        while any(p.poll() is None for p in procs):
            failed = [i for i, p in enumerate(procs) if p.poll() not in (None, 0)]
            if failed:
                first_failed = failed[0]
                break
            if time.monotonic() > deadline:
                timed_out = True
                break
            time.sleep(POLL_S)
        stop_process_groups(procs)
        for thread in readers:
            thread.join(timeout=5)
        if timed_out:
            raise TimeoutError(f"The node commands did not finish within {timeout_s:g} s.")
        if first_failed is None:
            first_failed = next((i for i, p in enumerate(procs) if p.returncode != 0), None)
        if first_failed is not None:
            raise RuntimeError(
                f"node command {first_failed} failed (exit code {procs[first_failed].returncode})."
                f" Its stderr ends with:\n{outputs[first_failed][1][-3000:]}"
            )
        return [out for out, _ in outputs]
    finally:
        stop_process_groups(procs)
