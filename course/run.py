"""Execute the course's notebooks with papermill under a profile and write a report.

Usage (what ``make run`` calls)::

    python -m course.run --profile cpu            # every notebook, in order
    python -m course.run --profile gpu --only 02_data_parallel

Executed copies go to ``build/<profile>/notebooks/``, recorded results to
``build/<profile>/results/``, and the report to ``build/<profile>/report.md`` (+ ``report.png``).
The exit status is non-zero if any notebook failed; the failing notebook and cell are named.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from helpers import BUILD_DIR, REPO_ROOT
from helpers.report import RESULTS_ENV, Scalar, read_results

NOTEBOOK_DIR = REPO_ROOT / "notebooks"
PROFILE_DIR = REPO_ROOT / "profiles"


@dataclass
class NotebookRun:
    """The outcome of executing one notebook."""

    name: str
    status: str
    seconds: float
    budget_s: float | None = None
    error: str = ""
    results: dict[str, Scalar] = field(default_factory=dict)


def load_profile(name: str) -> dict[str, Any]:
    """Read ``profiles/<name>.yaml``; unknown names give a clear error listing the known ones."""
    path = PROFILE_DIR / f"{name}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in PROFILE_DIR.glob("*.yaml"))
        raise SystemExit(f"Unknown profile {name!r}; profiles are: {', '.join(known)}.")
    profile = yaml.safe_load(path.read_text()) or {}
    profile.setdefault("defaults", {})
    profile.setdefault("notebooks", {})
    return profile


def notebook_parameters(profile: dict[str, Any], notebook: Path) -> dict[str, Any]:
    """The profile's parameters for ``notebook``, limited to those its parameters cell declares."""
    import papermill

    declared = papermill.inspect_notebook(str(notebook))
    merged = {**profile["defaults"], **(profile["notebooks"].get(notebook.stem) or {})}
    merged.pop("time_budget_s", None)
    return {key: value for key, value in merged.items() if key in declared}


def execute(notebook: Path, profile: dict[str, Any], out_dir: Path) -> NotebookRun:
    """Run one notebook with papermill (cwd ``notebooks/``, kernel ``python3``)."""
    import papermill
    from papermill.exceptions import PapermillExecutionError

    results_file = out_dir / "results" / f"{notebook.stem}.jsonl"
    results_file.parent.mkdir(parents=True, exist_ok=True)
    results_file.unlink(missing_ok=True)
    output = out_dir / "notebooks" / notebook.name
    output.parent.mkdir(parents=True, exist_ok=True)
    os.environ[RESULTS_ENV] = str(results_file)
    budget = (profile["notebooks"].get(notebook.stem) or {}).get("time_budget_s")
    started = time.perf_counter()
    status, error = "passed", ""
    try:
        papermill.execute_notebook(
            str(notebook),
            str(output),
            parameters=notebook_parameters(profile, notebook),
            kernel_name="python3",
            cwd=str(NOTEBOOK_DIR),
            progress_bar=False,
            log_output=False,
        )
    except PapermillExecutionError as exc:
        status = "failed"
        error = (
            f"cell {exc.cell_index} (execution count {exc.exec_count}): {exc.ename}: {exc.evalue}"
        )
    finally:
        os.environ.pop(RESULTS_ENV, None)
    seconds = time.perf_counter() - started
    return NotebookRun(notebook.stem, status, seconds, budget, error, read_results(results_file))


def write_report(runs: list[NotebookRun], profile_name: str, out_dir: Path) -> Path:
    """Write ``report.md`` (a table per notebook) and ``report.png`` (wall time per notebook)."""
    import matplotlib

    matplotlib.use("Agg")
    import pandas as pd
    import seaborn as sns

    from helpers.devices import describe, pick_device
    from helpers.plots import set_theme, small_figure

    info = describe(pick_device("auto"))
    lines = [
        f"# Course report — profile `{profile_name}`",
        "",
        f"torch {info['torch']} · device {info['device']} · GPUs {info['gpus']} · "
        f"CPU cores {info['cpu_cores']} · {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}",
        "",
        "| notebook | status | wall time (s) | budget (s) | key results |",
        "|---|---|---:|---:|---|",
    ]
    for run in runs:
        over = run.budget_s is not None and run.seconds > run.budget_s
        status = run.status + (" (over budget)" if over else "")
        results = "; ".join(f"{k}={v}" for k, v in run.results.items()) or "—"
        if run.error:
            results = f"**{run.error}**"
        budget = f"{run.budget_s:.0f}" if run.budget_s is not None else "—"
        lines.append(f"| {run.name} | {status} | {run.seconds:.1f} | {budget} | {results} |")
    lines += ["", "![wall time per notebook](report.png)", ""]
    report = out_dir / "report.md"
    report.write_text("\n".join(lines))

    set_theme()
    frame = pd.DataFrame(
        {
            "notebook": [r.name for r in runs],
            "seconds": [r.seconds for r in runs],
            "status": [r.status for r in runs],
        }
    )
    fig, ax = small_figure()
    fig.set_size_inches(6, 0.45 * len(runs) + 1.2)
    sns.barplot(
        data=frame,
        y="notebook",
        x="seconds",
        hue="status",
        ax=ax,
        palette={"passed": "tab:green", "failed": "tab:red"},
    )
    ax.set_xlabel("wall time (s)")
    ax.set_ylabel("")
    fig.savefig(out_dir / "report.png")
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--profile", default="cpu")
    parser.add_argument("--only", nargs="*", default=None, help="notebook names (without .ipynb)")
    args = parser.parse_args(argv)

    profile = load_profile(args.profile)
    if profile.get("requires_gpu"):
        from helpers.devices import gpu_count

        if gpu_count() == 0:
            print(
                f"Profile {args.profile!r} needs a CUDA GPU and none is visible on this machine. "
                "Run `make run` (PROFILE=cpu) here, or use a GPU machine.",
                file=sys.stderr,
            )
            return 2
    notebooks = sorted(NOTEBOOK_DIR.glob("[0-9][0-9]_*.ipynb"))
    if args.only:
        known = {nb.stem: nb for nb in notebooks}
        unknown = [name for name in args.only if name not in known]
        if unknown:
            raise SystemExit(
                f"Unknown notebook(s): {', '.join(unknown)}; known: {', '.join(known)}."
            )
        notebooks = [known[name] for name in args.only]
    if not notebooks:
        raise SystemExit(f"No notebooks found in {NOTEBOOK_DIR}.")

    out_dir = BUILD_DIR / args.profile
    out_dir.mkdir(parents=True, exist_ok=True)
    runs = []
    for notebook in notebooks:
        print(f"▶ {notebook.stem} ...", flush=True)
        run = execute(notebook, profile, out_dir)
        print(f"  {run.status} in {run.seconds:.1f} s {run.error}", flush=True)
        runs.append(run)
    report = write_report(runs, args.profile, out_dir)
    print(f"Report: {report.relative_to(REPO_ROOT)}")
    failed = [run for run in runs if run.status != "passed"]
    for run in failed:
        print(f"FAILED {run.name}: {run.error}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
