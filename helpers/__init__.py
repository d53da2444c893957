"""Helpers shared by the course notebooks: small, typed, tested modules.

Modules are named after what they hold: ``devices``, ``seed``, ``data``, ``training``,
``plots``, ``report``, ``notebooks`` (notebook tooling) and ``run_course`` (the papermill runner).
"""

from pathlib import Path

REPO_ROOT: Path = Path(__file__).resolve().parent.parent
BUILD_DIR: Path = REPO_ROOT / "build"
