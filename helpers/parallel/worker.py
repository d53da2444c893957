"""The child side of :func:`helpers.parallel.launch.launch`: what each spawned worker process runs.

:func:`worker_main` reads the job's spec from the job folder, sets the threads and the device,
joins the process group through the job's own file rendezvous, runs ``fn(rank, world_size,
*args)`` and writes its result (atomically) or its traceback for the parent to read. A thread
ends the worker if its launcher dies, so no worker outlives its job.
"""

from __future__ import annotations

import faulthandler
import json
import os
import pickle
import sys
import threading
import time
import traceback
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from helpers.parallel.ranks import cleanup


def _watch_parent(parent_pid: int) -> None:
    """Exit this worker if the process that launched it goes away (no orphans)."""
    while True:
        if os.getppid() != parent_pid:
            os._exit(3)
        time.sleep(1.0)


def _to_cpu(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu()
    if isinstance(value, dict):
        return {k: _to_cpu(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        converted = [_to_cpu(v) for v in value]
        return type(value)(converted) if not hasattr(value, "_fields") else type(value)(*converted)
    return value


def worker_main(job_dir_text: str, rank: int) -> None:
    """Entry point of one worker process (started by :func:`helpers.parallel.launch.launch`)."""
    job_dir = Path(job_dir_text)
    faulthandler.enable()  # a crash in native code still leaves a Python stack in stderr
    threading.Thread(target=_watch_parent, args=(os.getppid(),), daemon=True).start()
    try:
        spec = pickle.loads((job_dir / "spec.pkl").read_bytes())
        world_size = spec["world_size"]
        torch.set_num_threads(spec["threads"])
        try:
            torch.set_num_interop_threads(1)
        except RuntimeError:
            pass
        device_id = None
        if spec["device_type"] == "cuda":
            torch.cuda.set_device(rank)
            device_id = torch.device("cuda", rank)
        dist.init_process_group(
            spec["backend"],
            init_method=f"file://{job_dir / 'rendezvous'}",
            rank=rank,
            world_size=world_size,
            timeout=timedelta(seconds=spec["timeout_s"]),
            device_id=device_id,
        )
        result = _to_cpu(spec["fn"](rank, world_size, *spec["args"]))
        partial = job_dir / f".rank{rank}.result.pkl"
        partial.write_bytes(pickle.dumps(result))
        partial.replace(job_dir / f"rank{rank}.result.pkl")
    except BaseException:
        report = {"time": time.time(), "traceback": traceback.format_exc()}
        (job_dir / f"rank{rank}.error.json").write_text(json.dumps(report))
        sys.stdout.flush()
        sys.stderr.write(str(report["traceback"]))
        sys.stderr.flush()
        os._exit(1)  # skip process-group teardown: the peers may be gone or stuck
    sys.stdout.flush()
    cleanup()
