"""Helpers shared by the course notebooks: small, typed, tested modules.

Modules are named after what they hold — ``devices``, ``seed``, ``data``, ``training``,
``checkpoints``, ``schedules``, ``losses``, ``distributed``, ``gan``, ``evolution`` and so on —
plus the course tooling: ``report`` (key results), ``notebooks`` (learner copies, exercise
checks) and ``run_course`` (the papermill runner behind ``make run``).
"""

from pathlib import Path

REPO_ROOT: Path = Path(__file__).resolve().parent.parent
BUILD_DIR: Path = REPO_ROOT / "build"
