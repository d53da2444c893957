"""Experiment tracking with TensorBoard: one folder per run, read back without a browser.

``TensorBoardLogger`` is what ``fit(..., logger=...)`` calls: it writes the run's config (as
text), every epoch's metrics, learning rate and gradient norm (as scalars), and at the end the
hyperparameters with the final metrics (TensorBoard's HPARAMS tab compares runs side by side).
The run's folder is named from its config and seed, under ``build/runs`` by default.
``read_scalars`` and ``read_hparams`` read the event files back into Python with TensorBoard's
own ``EventAccumulator``, so a notebook can compare runs in a table.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import pandas as pd

from helpers import BUILD_DIR

if TYPE_CHECKING:
    from torch.utils.tensorboard.writer import FileWriter

RUNS_DIR: Path = BUILD_DIR / "runs"
HParam = bool | int | float | str


def scalar_hparams(config: dict[str, Any]) -> dict[str, HParam]:
    """The entries of ``config`` TensorBoard can show as hyperparameters (bool, int, float,
    str); lists and other containers are left out (they stay in the logged config text)."""
    return {k: v for k, v in sorted(config.items()) if isinstance(v, bool | int | float | str)}


def run_name(config: dict[str, Any], seed: int, keys: list[str] | None = None) -> str:
    """A folder name from the config and the seed, e.g. ``lr=0.01_hidden=64_seed=0_3f2a9c1b``.

    ``keys`` picks the config entries shown in the name (default: every scalar one); the last
    part, a hash of the whole config, keeps runs that differ elsewhere apart.
    """
    hparams = scalar_hparams(config)
    missing = sorted(set(keys or []) - set(hparams))
    if missing:
        raise KeyError(f"run_name: keys {missing} are not scalar entries of the config.")
    shown = [f"{k}={hparams[k]}" for k in (keys if keys is not None else hparams)]
    digest = hashlib.sha1(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:8]
    name = "_".join([*shown, f"seed={seed}", digest])
    return re.sub(r"[^A-Za-z0-9=._+-]", "-", name)


class TensorBoardLogger:
    """Log one training run to ``root/<run_name(config, seed)>`` with a ``SummaryWriter``.

    A second run with the same config and seed replaces the first one's folder, so a notebook
    cell can be re-run. ``fit`` calls :meth:`log_epoch` after every epoch and :meth:`finish` at
    the end; :meth:`finish` closes the writer.
    """

    def __init__(
        self,
        config: dict[str, Any],
        seed: int,
        root: str | Path = RUNS_DIR,
        name_keys: list[str] | None = None,
    ) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.config = {**config, "seed": seed}
        self.run_dir = Path(root) / run_name(config, seed, name_keys)
        if self.run_dir.exists():
            shutil.rmtree(self.run_dir)
        self.writer = SummaryWriter(log_dir=str(self.run_dir))
        self.writer.add_text(
            "config", "```json\n" + json.dumps(self.config, indent=2, default=str) + "\n```"
        )

    def log_epoch(self, row: dict[str, float]) -> None:
        """One epoch's history row: every number except the epoch itself, at step = epoch."""
        epoch = int(row["epoch"])
        for name, value in row.items():
            if name != "epoch":
                self.writer.add_scalar(name, float(value), global_step=epoch)

    def finish(self, final_metrics: dict[str, float]) -> None:
        """Write the hyperparameters with ``final_metrics`` (under ``hparam/<name>``) and close."""
        from torch.utils.tensorboard.summary import hparams

        metrics = {f"hparam/{k}": float(v) for k, v in final_metrics.items()}
        experiment, start, end = hparams(scalar_hparams(self.config), metrics)
        # SummaryWriter sets file_writer to None and creates it lazily: torch infers None
        file_writer = cast("FileWriter", self.writer.file_writer)
        for summary in (experiment, start, end):
            file_writer.add_summary(summary)
        for name, value in metrics.items():
            self.writer.add_scalar(name, value)
        self.writer.close()


def _accumulator(run_dir: str | Path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run_dir = Path(run_dir)
    if not any(run_dir.glob("events.out.tfevents.*")):
        raise FileNotFoundError(f"No TensorBoard event file in {run_dir}.")
    accumulator = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    accumulator.Reload()
    return accumulator


def read_scalars(run_dir: str | Path) -> pd.DataFrame:
    """Every scalar of a run as a long table: ``tag``, ``step``, ``value``."""
    accumulator = _accumulator(run_dir)
    rows = [
        {"tag": tag, "step": event.step, "value": event.value}
        for tag in accumulator.Tags()["scalars"]
        for event in accumulator.Scalars(tag)
    ]
    return pd.DataFrame(rows, columns=["tag", "step", "value"])


def read_hparams(run_dir: str | Path) -> dict[str, HParam]:
    """The hyperparameters a run logged (from its HPARAMS session-start record)."""
    from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData

    content = _accumulator(run_dir).PluginTagToContent("hparams")
    for data in content.values():
        start = HParamsPluginData.FromString(data).session_start_info
        if start.hparams:
            return {
                name: getattr(value, value.WhichOneof("kind"))
                for name, value in start.hparams.items()
            }
    raise ValueError(f"{run_dir} holds no hyperparameters (was the logger's finish() called?).")
