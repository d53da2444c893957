"""Progress bars that show in JupyterLab and stay quiet under CI."""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import TypeVar

from tqdm.auto import tqdm

T = TypeVar("T")


def progress_disabled() -> bool:
    """True under CI (``CI`` set) or when ``COURSE_QUIET=1``: bars would only add noise."""
    return bool(os.environ.get("CI")) or os.environ.get("COURSE_QUIET") == "1"


def progress(
    iterable: Iterable[T], desc: str = "", total: int | None = None, enabled: bool = True, **kwargs
) -> tqdm:
    """``tqdm.auto`` over ``iterable``; off when ``enabled=False`` and always off under CI."""
    return tqdm(
        iterable, desc=desc, total=total, disable=not enabled or progress_disabled(), **kwargs
    )
