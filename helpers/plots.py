"""One seaborn theme and small figures, so every notebook looks the same and stays light."""

from __future__ import annotations

from typing import Any

import matplotlib
import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns

FIGSIZE_PER_PANEL = (4.2, 3.0)


def set_theme() -> None:
    """The course's plotting theme: seaborn ``whitegrid``, compact fonts, modest resolution."""
    sns.set_theme(style="whitegrid", context="notebook", palette="colorblind", font_scale=0.9)
    matplotlib.rcParams.update({"figure.dpi": 90, "savefig.dpi": 90, "figure.autolayout": True})


def small_figure(ncols: int = 1, nrows: int = 1, **kwargs: Any) -> tuple[plt.Figure, Any]:
    """A figure with ``nrows x ncols`` panels sized for a notebook page."""
    width, height = FIGSIZE_PER_PANEL
    return plt.subplots(nrows, ncols, figsize=(width * ncols, height * nrows), **kwargs)


def plot_history(history: pd.DataFrame, metrics: list[str], hue: str | None = None) -> plt.Figure:
    """One panel per metric against ``epoch`` (``hue`` splits runs, e.g. by setting or seed)."""
    fig, axes = small_figure(ncols=len(metrics), squeeze=False)
    for ax, metric in zip(axes[0], metrics, strict=True):
        sns.lineplot(data=history, x="epoch", y=metric, hue=hue, marker="o", ax=ax)
        ax.set_title(metric)
    return fig
