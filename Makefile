# The course's commands. Each target installs what it needs into .venv on first use, from the
# lock file requirements.lock, with uv; the install is redone only when pyproject.toml or the lock
# changes (a stamp file keyed on both files' hash).
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
PROFILE ?= cpu
UV_VERSION := 0.13.9
# The CPU build of torch. "+cpu" is the local version of PyTorch's CPU wheels on Linux: asking for
# it exactly means an installer that cannot see a CPU wheel stops with an error instead of pulling
# the multi-GB CUDA build. macOS wheels are CPU builds without the suffix. A machine whose python3
# already has a CUDA build of torch keeps that one (venv with system site-packages).
TORCH_VERSION := 2.13.0
TORCH_CPU_SPEC ?= torch==$(TORCH_VERSION)$(if $(filter Darwin,$(shell uname -s)),,+cpu)
# Where the CPU wheel comes from: pip's own find-links setting when this machine has one (uv does
# not read pip's configuration), or PyTorch's wheel page https://download.pytorch.org/whl/torch/
# given as TORCH_FIND_LINKS (the GitHub workflows do that).
TORCH_FIND_LINKS ?= $(shell $(PYTHON) -m pip config get global.find-links 2>/dev/null)
# INSTALL_FROM=lock (default) installs exactly the locked versions; INSTALL_FROM=latest the newest
# versions pyproject.toml allows (the weekly scheduled workflow), to see version rot early.
INSTALL_FROM ?= lock
LOCK := requirements.lock
VENV := .venv
BIN := $(VENV)/bin
UV := $(BIN)/uv
# The stamp's name: a hash of pyproject.toml, the lock and the install mode (Python, not sha256sum,
# which macOS lacks).
HASH := $(shell $(PYTHON) -c "import hashlib, pathlib; print(hashlib.sha256(b''.join(pathlib.Path(f).read_bytes() for f in ('pyproject.toml', '$(LOCK)') if pathlib.Path(f).exists()) + b'$(INSTALL_FROM)').hexdigest()[:16])")
STAMP := $(VENV)/.installed-$(HASH)
NOTEBOOKS := $(sort $(wildcard notebooks/[0-9][0-9]_*.ipynb))
ROOT_FLAG := $(if $(filter 0,$(shell id -u)),--allow-root)

# Everything the course runs writes inside build/: caches, kernels' runtime files, temp files.
BUILD := $(CURDIR)/build
export XDG_CACHE_HOME := $(BUILD)/cache
export UV_CACHE_DIR := $(BUILD)/cache/uv
export MPLCONFIGDIR := $(BUILD)/cache/matplotlib
export IPYTHONDIR := $(BUILD)/ipython
export JUPYTER_RUNTIME_DIR := $(BUILD)/jupyter/runtime
export JUPYTER_CONFIG_DIR := $(BUILD)/jupyter/config
export JUPYTERLAB_WORKSPACES_DIR := $(BUILD)/jupyter/workspaces
export TMPDIR := $(BUILD)/tmp
export RAY_AUTH_MODE := disabled
export PYTHONWARNINGS := ignore::DeprecationWarning

.PHONY: help install lock lock-check run test quick lint format unit notebooks lab execute \
	gpu-check tensorboard slides site test-web browser student clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-11s %s\n", $$1, $$2}'

install: $(STAMP)  ## create .venv and install the locked versions (instant when already done)

# Any failing step stops make with the installer's own message, and no stamp is written.
$(UV):
	@mkdir -p $(TMPDIR) $(XDG_CACHE_HOME)
	@if [ ! -x $(BIN)/python ]; then \
	  if $(PYTHON) -c 'import torch, sys; sys.exit(0 if torch.version.cuda else 1)' 2>/dev/null; then \
	    echo "Found a CUDA build of torch in $(PYTHON): keeping it (venv with system site-packages)."; \
	    $(PYTHON) -m venv --system-site-packages $(VENV); \
	  else \
	    $(PYTHON) -m venv $(VENV); \
	  fi; \
	fi
	$(BIN)/python -m pip install -q --disable-pip-version-check uv==$(UV_VERSION)

$(STAMP): pyproject.toml $(LOCK) | $(UV)
	@rm -f $(VENV)/.installed-*
	@mkdir -p $(BUILD)
	@if grep -q 'include-system-site-packages = true' $(VENV)/pyvenv.cfg; then \
	  : > $(BUILD)/torch-requirement.txt; \
	else \
	  echo "$(TORCH_CPU_SPEC)" > $(BUILD)/torch-requirement.txt; \
	fi
ifeq ($(INSTALL_FROM),lock)
	@echo "Installing the locked versions ($(LOCK)) and $$(cat $(BUILD)/torch-requirement.txt) into $(VENV)"
	$(UV) pip sync -q --python $(BIN)/python $(LOCK) $(BUILD)/torch-requirement.txt \
	  $(if $(TORCH_FIND_LINKS),--find-links $(TORCH_FIND_LINKS))
else
	@echo "Installing the newest versions pyproject.toml allows into $(VENV) (not the lock)"
	$(UV) pip install -q --python $(BIN)/python --upgrade -r pyproject.toml --extra dev \
	  -r $(BUILD)/torch-requirement.txt $(if $(TORCH_FIND_LINKS),--find-links $(TORCH_FIND_LINKS))
endif
	$(UV) pip install -q --python $(BIN)/python -e '.[dev]' \
	  $(if $(TORCH_FIND_LINKS),--find-links $(TORCH_FIND_LINKS))
	@mkdir -p $(VENV)/etc/ipython && cp config/ipython_kernel_config.py $(VENV)/etc/ipython/
	@$(BIN)/python -c 'import helpers, course, papermill, nbval, torch; print("torch", torch.__version__)'
	@touch $@

lock: | $(UV)  ## regenerate requirements.lock from pyproject.toml (keeps pins that still fit)
	@mkdir -p $(BUILD)
	@echo "torch==$(TORCH_VERSION)+cpu" > $(BUILD)/torch-constraint.txt
	$(UV) pip compile -q pyproject.toml --extra dev --universal --python-version 3.11 \
	  --constraint $(BUILD)/torch-constraint.txt --no-emit-package torch --generate-hashes \
	  --no-emit-find-links --custom-compile-command "make lock" \
	  $(if $(TORCH_FIND_LINKS),--find-links $(TORCH_FIND_LINKS)) -o $(LOCK)

lock-check: | $(UV)  ## fail if `make lock` would change requirements.lock
	@cp $(LOCK) $(BUILD)/lock-before.txt
	@$(MAKE) -s lock
	@if ! diff -u $(BUILD)/lock-before.txt $(LOCK); then \
	  cp $(BUILD)/lock-before.txt $(LOCK); echo "requirements.lock is stale: run make lock"; exit 1; \
	fi
	@echo "requirements.lock round-trips"

run: $(STAMP)  ## execute every notebook (PROFILE=cpu|gpu, ONLY=NN_name for some) and write build/<profile>/report.md
	$(BIN)/python -m course.run --profile $(PROFILE) $(if $(ONLY),--only $(ONLY))

test: lint unit notebooks  ## ruff + mypy, pytest on tests/, nbval on notebooks/

quick: $(STAMP)  ## the inner loop: ruff and the fast tests only (no slow, multiprocess or kernel tests)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest tests -n 2 -m "not slow and not multiprocess and not kernel" -q

lint: $(STAMP)  ## ruff check, ruff format --check, mypy on helpers/ and course/
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: $(STAMP)  ## apply ruff format and the import order
	$(BIN)/ruff check --select I --fix .
	$(BIN)/ruff format .

unit: $(STAMP)  ## pytest on tests/ but the browser test (TESTS="tests/test_x.py" for some)
	$(BIN)/python -m pytest $(or $(TESTS),tests -n 2 -m "not web")

notebooks: $(STAMP)  ## nbval re-execution of every notebook (NB=notebooks/NN_x.ipynb for some)
	$(BIN)/python -m pytest --nbval-lax --nbval-current-env -n 2 --dist loadfile \
	  --nbval-sanitize-with tests/nbval_sanitize.cfg -p no:randomly $(or $(NB),notebooks)

LAB_ARGS ?=
lab: $(STAMP)  ## open the course in JupyterLab (on 127.0.0.1; as root too)
	$(BIN)/jupyter lab --notebook-dir=notebooks --ip=127.0.0.1 $(ROOT_FLAG) $(LAB_ARGS)

execute: export COURSE_QUIET := 1
execute: $(STAMP)  ## re-execute notebooks in place (CPU defaults) and strip run metadata
	@for nb in $(or $(NB),$(NOTEBOOKS)); do \
	  echo "executing $$nb"; \
	  $(BIN)/papermill "$$nb" "$$nb" --cwd notebooks -k python3 --no-progress-bar; \
	done
	$(BIN)/nbstripout --keep-output --keep-count $(or $(NB),$(NOTEBOOKS))
	$(BIN)/python -m course.notebooks strip $(or $(NB),$(NOTEBOOKS))

gpu-check: $(STAMP)  ## every CUDA path in <= 8 min on a GPU machine: build/gpu-check/report.md (exit 2: no GPU)
	$(BIN)/python -m course.gpu_check

tensorboard: $(STAMP)  ## TensorBoard on the logged runs (build/runs) at http://127.0.0.1:6006 (PORT=... to change)
	@mkdir -p $(BUILD)/runs
	$(BIN)/tensorboard --logdir $(BUILD)/runs --host 127.0.0.1 --port $(or $(PORT),6006)

slides: $(STAMP)  ## reveal.js decks (build/slides/) and facilitator's guides (build/guides/), offline
	$(BIN)/python -m course.slides

site: slides  ## the executed course as a static website in build/site/ (nothing re-executed)
	$(BIN)/python -m course.site

# Headless Chromium from Debian's packages: installed here when missing and we are root (CI);
# elsewhere the browser test skips and names the packages.
browser:
	@if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null; \
	  else \
	    echo "No chromium/chromedriver: install Debian's chromium and chromium-driver to run the browser test."; \
	  fi; \
	fi

test-web: $(STAMP) browser  ## build site + slides and check them in headless Chromium (screenshots: build/web-check/)
	$(BIN)/python -m pytest -m web tests/test_web.py

student: $(STAMP)  ## write learner copies (solutions stubbed) to build/student/
	$(BIN)/python -m course.notebooks student $(NOTEBOOKS) --out build/student

clean:  ## remove build outputs and the virtual environment
	rm -rf build $(VENV) *.egg-info
