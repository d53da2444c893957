"""Several worker functions in one multi-process job: one process start instead of several.

Starting ranks costs seconds (a fresh Python, ``import torch``, a rendezvous); a notebook that
runs three small experiments on the same ranks pays it once with::

    launch(several, world, [(dh.hook_ddp_equivalence, (job,)), (cm.time_allreduce, (sizes,))])
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch.distributed as dist


def several(
    rank: int, world_size: int, calls: Sequence[tuple[Callable[..., Any], tuple[Any, ...]]]
) -> list[Any]:
    """Run ``fn(rank, world_size, *args)`` for each ``(fn, args)`` in turn; their results in order.

    A barrier separates the calls, so one experiment's stragglers never overlap the next.
    """
    results = []
    for fn, args in calls:
        results.append(fn(rank, world_size, *args))
        dist.barrier()
    return results
