# The README's commands; each creates the virtual environment when it is missing.
# `make` alone lists the targets: the text after `## ` on a target's line is its help.
.DEFAULT_GOAL := help
PY      ?= python3
VENV    := .venv
PYTHON  := $(VENV)/bin/python
STAMP   := $(VENV)/.installed
# TORCH_INDEX=cpu: torch and torchvision from PyTorch's CPU-only index (a few hundred MB) instead
# of PyPI's CUDA build (gigabytes, also runs on CPU). Applies when .venv is created.
TORCH_INDEX ?=
CPU_INDEX := https://download.pytorch.org/whl/cpu

.PHONY: help train test lab notebooks bench constraints clean-venv

help: ## list the targets (the default)
	@awk 'BEGIN {FS = ":.*## "} /^[a-z-]+:.*## / {printf "  make %-12s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

train: $(STAMP) ## main job: dense ResNet-20 (trained or reused), pruned with DPM to 0.5x MACs (mini profile, seed 0); fetches the CIFAR-10 slice if missing
	$(PYTHON) -m dpm_lab main-job --profile mini --seed 0

test: $(STAMP) ## whole test suite: unit tests and every notebook (nbval), in the smoke profile
	DPM_LAB_PROFILE=smoke MPLBACKEND=Agg $(PYTHON) -m pytest tests notebooks --nbval-lax -q \
		--durations=10

lab: $(STAMP) ## JupyterLab on notebooks/, DPM_LAB_HOME = this folder (notebooks and CLI share runs)
	DPM_LAB_HOME="$(CURDIR)" $(PYTHON) -m jupyter lab --notebook-dir=notebooks

# PROFILE for `make notebooks`: smoke (the default) takes minutes; mini trains for hours.
PROFILE ?= smoke
notebooks: $(STAMP) ## execute every notebook in place (papermill, outputs kept, to commit); PROFILE=smoke|mini
	$(PYTHON) tools/execute_notebooks.py --profile $(PROFILE)

bench: $(STAMP) ## throughput and DPM-overhead benchmarks
	$(PYTHON) benchmarks/throughput.py
	$(PYTHON) benchmarks/dpm_overhead.py

# constraints.txt pins every package to the version the tests passed with.
$(STAMP): pyproject.toml constraints.txt
	test -x $(PYTHON) || $(PY) -m venv $(VENV)
	$(PYTHON) -m pip install -q --upgrade pip
	$(if $(filter cpu,$(TORCH_INDEX)),$(PYTHON) -m pip install -q --no-deps -c constraints.txt \
		torch torchvision --index-url $(CPU_INDEX))
	$(PYTHON) -m pip install -q -c constraints.txt -e ".[dev]"
	touch $(STAMP)

constraints: $(STAMP) ## rewrite constraints.txt from .venv (after `make test` passed in it)
	{ sed -n '/^#/p' constraints.txt; $(PYTHON) -m pip freeze --exclude-editable; } > constraints.txt.tmp
	mv constraints.txt.tmp constraints.txt

clean-venv: ## delete .venv
	rm -rf $(VENV)
