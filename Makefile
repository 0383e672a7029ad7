# The two commands of the README. Each creates the virtual environment when it is missing.
PY      ?= python3
VENV    := .venv
PYTHON  := $(VENV)/bin/python
STAMP   := $(VENV)/.installed

.PHONY: train test bench clean-venv

# Main job: train the default dense model (ResNet-20, CIFAR-10 slice, mini profile, seed 0);
# writes runs/ checkpoint, results/ record and figures/ training curve.
train: $(STAMP)
	$(PYTHON) -m dpm_lab train --profile mini --model resnet20 --data cifar10-slice --seed 0

# Whole test suite: unit tests + every notebook executed by nbval, in the smoke profile.
test: $(STAMP)
	DPM_LAB_PROFILE=smoke MPLBACKEND=Agg $(PYTHON) -m pytest tests notebooks --nbval-lax -q \
		--durations=10

bench: $(STAMP)
	$(PYTHON) benchmarks/throughput.py
	$(PYTHON) benchmarks/dpm_overhead.py

$(STAMP): pyproject.toml
	test -x $(PYTHON) || $(PY) -m venv $(VENV)
	$(PYTHON) -m pip install -q --upgrade pip
	$(PYTHON) -m pip install -q -e ".[dev]"
	touch $(STAMP)

clean-venv:
	rm -rf $(VENV)
