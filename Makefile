# The course's commands. Each target installs what it needs into .venv on first use;
# the install is redone only when pyproject.toml changes (stamp file keyed on its hash).
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
PROFILE ?= cpu
# The CPU build of torch; a machine whose python3 already has a CUDA torch keeps that one.
TORCH_CPU_SPEC ?= torch==2.13.0
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell sha256sum pyproject.toml | cut -c1-16)
NOTEBOOKS := $(sort $(wildcard notebooks/[0-9][0-9]_*.ipynb))

# Everything the course runs writes inside build/: caches, kernels' runtime files, temp files.
BUILD := $(CURDIR)/build
export XDG_CACHE_HOME := $(BUILD)/cache
export MPLCONFIGDIR := $(BUILD)/cache/matplotlib
export IPYTHONDIR := $(BUILD)/ipython
export JUPYTER_RUNTIME_DIR := $(BUILD)/jupyter/runtime
export JUPYTER_CONFIG_DIR := $(BUILD)/jupyter/config
export JUPYTERLAB_WORKSPACES_DIR := $(BUILD)/jupyter/workspaces
export TMPDIR := $(BUILD)/tmp
export RAY_AUTH_MODE := disabled
export PYTHONWARNINGS := ignore::DeprecationWarning

.PHONY: help install run test lint unit notebooks lab execute student clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-9s %s\n", $$1, $$2}'

install: $(STAMP)  ## create .venv and install the course (instant when already done)

$(STAMP): pyproject.toml
	@mkdir -p $(TMPDIR) $(XDG_CACHE_HOME)
	@if [ ! -x $(BIN)/python ]; then \
	  if $(PYTHON) -c 'import torch, sys; sys.exit(0 if torch.version.cuda else 1)' 2>/dev/null; then \
	    echo "Found a CUDA build of torch in $(PYTHON): keeping it (venv with system site-packages)."; \
	    $(PYTHON) -m venv --system-site-packages $(VENV); \
	  else \
	    $(PYTHON) -m venv $(VENV); \
	  fi; \
	fi
	@if ! $(BIN)/python -c 'import torch' 2>/dev/null; then \
	  echo "Installing $(TORCH_CPU_SPEC) (CPU build)"; \
	  $(BIN)/pip install -q $(TORCH_CPU_SPEC) 2>&1 | grep -v 'is ignored' || true; \
	  $(BIN)/python -c 'import torch' 2>/dev/null; \
	fi
	@echo "Installing the course package and its dependencies into $(VENV)"
	@$(BIN)/pip install -q -e '.[dev]' 2>&1 | grep -v 'is ignored' || true
	@$(BIN)/python -c 'import helpers, papermill, nbval, torch; print("torch", torch.__version__)'
	@rm -f $(VENV)/.installed-*
	@touch $@

run: $(STAMP)  ## execute every notebook with papermill (PROFILE=cpu|gpu) and write build/<profile>/report.md
	$(BIN)/python -m course.run --profile $(PROFILE)

test: lint unit notebooks  ## ruff, pytest on tests/, nbval on notebooks/

lint: $(STAMP)
	$(BIN)/ruff check $(wildcard helpers tests benchmarks data notebooks)

unit: $(STAMP)  ## pytest on tests/ (TESTS="tests/test_x.py" for some)
	$(BIN)/python -m pytest $(or $(TESTS),tests -n 2)

notebooks: $(STAMP)  ## nbval re-execution of every notebook (NB=notebooks/NN_x.ipynb for some)
	$(BIN)/python -m pytest --nbval-lax --nbval-current-env \
	  --nbval-sanitize-with tests/nbval_sanitize.cfg -p no:randomly $(or $(NB),notebooks)

lab: $(STAMP)  ## open the course in JupyterLab
	$(BIN)/jupyter lab --notebook-dir=notebooks

execute: export COURSE_QUIET := 1
execute: $(STAMP)  ## re-execute notebooks in place (CPU defaults) and strip run metadata
	@for nb in $(or $(NB),$(NOTEBOOKS)); do \
	  echo "executing $$nb"; \
	  $(BIN)/papermill "$$nb" "$$nb" --cwd notebooks -k python3 --no-progress-bar; \
	done
	$(BIN)/nbstripout --keep-output --keep-count $(or $(NB),$(NOTEBOOKS))
	$(BIN)/python -m course.notebooks strip $(or $(NB),$(NOTEBOOKS))

student: $(STAMP)  ## write learner copies (solutions stubbed) to build/student/
	$(BIN)/python -m course.notebooks student $(NOTEBOOKS) --out build/student

clean:  ## remove build outputs and the virtual environment
	rm -rf build $(VENV) *.egg-info
