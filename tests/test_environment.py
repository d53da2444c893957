"""pyproject.toml holds the ranges, requirements.lock the exact versions; the rest must agree."""

import re
import sys

import tomllib
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from helpers import REPO_ROOT

REQUIRED_RUNTIME = {
    "torch",
    "numpy",
    "pandas",
    "matplotlib",
    "seaborn",
    "scikit-learn",
    "tqdm",
    "jupyterlab",
    "ipykernel",
    "papermill",
}
REQUIRED_DEV = {
    "pytest",
    "nbval",
    "pytest-xdist",
    "pytest-timeout",
    "nbstripout",
    "ruff",
    "mypy",
    "uv",
}
GONE = {"hpbandster", "configspace", "netifaces"}  # unmaintained: BOHB runs without them


def project() -> dict:
    return tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]


def names(requirements: list[str]) -> set[str]:
    return {canonicalize_name(Requirement(r).name) for r in requirements}


def locked() -> dict[str, str]:
    """Package -> version of every line of requirements.lock."""
    pins = re.findall(
        r"^([A-Za-z0-9_.\-]+)==([^\s;\\]+)",
        (REPO_ROOT / "requirements.lock").read_text(),
        flags=re.MULTILINE,
    )
    return {canonicalize_name(name): version for name, version in pins}


def test_pyproject_lists_every_required_package():
    assert REQUIRED_RUNTIME <= names(project()["dependencies"])
    assert REQUIRED_DEV <= names(project()["optional-dependencies"]["dev"])


def test_the_lock_pins_every_requirement_within_its_range():
    pins = locked()
    requirements = [
        Requirement(r)
        for r in project()["dependencies"] + project()["optional-dependencies"]["dev"]
    ]
    for requirement in requirements:
        name = canonicalize_name(requirement.name)
        if name == "torch":  # installed apart: the CPU wheel, or a CUDA build the machine has
            assert name not in pins
            continue
        assert name in pins, f"{name} is missing from requirements.lock: run make lock"
        assert requirement.specifier.contains(pins[name], prereleases=True), (
            f"requirements.lock pins {name}=={pins[name]} outside {requirement.specifier}: run make lock"
        )


def test_fragile_dependencies_are_gone_from_the_tree():
    assert not GONE & set(locked())
    assert not GONE & names(project()["dependencies"])


def test_requires_python_is_true_of_the_code():
    requires = Requirement("python" + project()["requires-python"]).specifier
    assert not requires.contains("3.10.0"), "the tests import tomllib (3.11+)"
    assert requires.contains(f"{sys.version_info.major}.{sys.version_info.minor}.0")


def test_environment_yml_installs_the_same_package_and_nothing_else():
    env = yaml.safe_load((REPO_ROOT / "environment.yml").read_text())
    conda_packages = [d for d in env["dependencies"] if isinstance(d, str)]
    pip_sections = [d["pip"] for d in env["dependencies"] if isinstance(d, dict)]
    assert {re.split(r"[=<>]", d)[0] for d in conda_packages} == {"python", "pip"}
    assert pip_sections == [["-r requirements.lock", "-e .[dev]"]]
    python_pin = next(d for d in conda_packages if d.startswith("python"))
    assert Requirement("python" + project()["requires-python"]).specifier.contains(
        python_pin.split("=")[1] + ".0"
    )


def test_makefile_cpu_torch_satisfies_the_pyproject_range():
    makefile = (REPO_ROOT / "Makefile").read_text()
    pinned = re.search(r"TORCH_VERSION := ([\d.]+)", makefile).group(1)
    torch_req = next(Requirement(r) for r in project()["dependencies"] if r.startswith("torch"))
    assert torch_req.specifier.contains(pinned), "installing the package must not replace torch"
    assert "+cpu" in makefile, (
        "the CPU wheel is asked for exactly, so no installer falls back to CUDA"
    )


def test_makefile_install_cannot_swallow_a_failure():
    makefile = (REPO_ROOT / "Makefile").read_text()
    assert ".SHELLFLAGS := -eu -o pipefail -c" in makefile
    recipe = makefile.split("$(STAMP): pyproject.toml $(LOCK)")[1].split("\n\n")[0]
    assert "|| true" not in recipe and "grep -v" not in recipe
    assert recipe.strip().endswith("@touch $@"), (
        "the stamp is written last, after every step passed"
    )
    assert "rm -f $(VENV)/.installed-*" in recipe.splitlines()[1], (
        "a failed install leaves no stamp"
    )
    commands = [line for line in makefile.splitlines() if not line.lstrip().startswith("#")]
    assert not any("sha256sum" in line for line in commands), "macOS has no sha256sum"


def test_ci_runs_make_targets_and_nothing_smarter():
    lines = [
        line
        for line in (REPO_ROOT / ".ci" / "run").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert "make test" in lines
    assert not any(re.search(r"\b(pytest|pip|papermill|uv)\b", line) for line in lines)
