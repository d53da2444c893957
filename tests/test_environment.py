"""pyproject.toml is the one source of truth; environment.yml and the Makefile must agree with it."""

import re

import tomllib
import yaml
from packaging.requirements import Requirement

from helpers import REPO_ROOT

REQUIRED_RUNTIME = {"torch", "numpy", "pandas", "matplotlib", "seaborn", "scikit-learn", "tqdm",
                    "jupyterlab", "ipykernel", "papermill"}
REQUIRED_DEV = {"pytest", "nbval", "pytest-xdist", "pytest-timeout", "nbstripout", "ruff"}


def project() -> dict:
    return tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]


def names(requirements: list[str]) -> set[str]:
    return {Requirement(r).name.lower() for r in requirements}


def test_pyproject_lists_every_required_package():
    assert REQUIRED_RUNTIME <= names(project()["dependencies"])
    assert REQUIRED_DEV <= names(project()["optional-dependencies"]["dev"])


def test_environment_yml_installs_the_same_package_and_nothing_else():
    env = yaml.safe_load((REPO_ROOT / "environment.yml").read_text())
    conda_packages = [d for d in env["dependencies"] if isinstance(d, str)]
    pip_sections = [d["pip"] for d in env["dependencies"] if isinstance(d, dict)]
    assert {re.split(r"[=<>]", d)[0] for d in conda_packages} == {"python", "pip"}
    assert pip_sections == [["-e .[dev]"]]
    python_pin = next(d for d in conda_packages if d.startswith("python"))
    assert Requirement("python" + project()["requires-python"]).specifier.contains(
        python_pin.split("=")[1] + ".0"
    )


def test_makefile_cpu_torch_satisfies_the_pyproject_range():
    makefile = (REPO_ROOT / "Makefile").read_text()
    pinned = re.search(r"TORCH_CPU_SPEC \?= torch==([\d.]+)", makefile).group(1)
    torch_req = next(Requirement(r) for r in project()["dependencies"] if r.startswith("torch"))
    assert torch_req.specifier.contains(pinned), "installing the package must not replace torch"


def test_ci_runs_make_test_and_nothing_else():
    lines = [line for line in (REPO_ROOT / ".ci" / "run").read_text().splitlines()
             if line.strip() and not line.startswith("#")]
    assert lines[-1] == "make test"
    assert not any(re.search(r"\b(pytest|pip|papermill)\b", line) for line in lines)
