"""Helpers shared by the course notebooks: small, typed, tested modules.

The top level is the small core every notebook uses — ``data``, ``devices``, ``seed``,
``training`` (``fit``), ``tracking`` (its TensorBoard logger), ``checkpoints``, ``models``,
``plots``, ``progress``, ``report``, ``stats``, ``timing`` and ``source`` (show the taught code).
Each topic has its own sub-package, mirroring the notebooks: ``workflow`` (00), ``parallel``
(02, 03, 12), ``tuning`` (04), ``schedules`` (05), ``imbalance`` (06), ``generative`` (07),
``evolution`` (08), ``precision`` (09), ``sequences`` (10), ``finetune`` (11), ``scale`` (12),
``serving`` (13). Course tooling (the runner, learner copies, exercise checks, the prose
checker, the GPU check, slides, guides and site) lives apart, in ``course/``.
"""

from pathlib import Path

REPO_ROOT: Path = Path(__file__).resolve().parent.parent
BUILD_DIR: Path = REPO_ROOT / "build"
