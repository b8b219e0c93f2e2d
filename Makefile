# marsrover: `make` lists the targets. Everything runs inside .venv, created on first use.
PYTHON_BOOT ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PROFILE ?= full

.DEFAULT_GOAL := help
.PHONY: help install study estimate smoke test lab data clean-reports

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-14s %s\n", $$1, $$2}'

$(VENV)/.installed: pyproject.toml
	$(PYTHON_BOOT) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip
	$(PY) -m pip install -e ".[dev]"
	touch $@

install: $(VENV)/.installed ## create .venv and install the pinned dependencies and the package

data: install ## get, verify and extract the data set and build the index (data/)
	$(PY) -m marsrover data

study: install ## set up and run the whole study: PROFILE=full (default), smoke or gpu
	$(PY) run_all.py --profile $(PROFILE)

estimate: install ## how long the study's training would take on this machine: PROFILE=full (default), smoke or gpu
	$(PY) run_all.py --profile $(PROFILE) --estimate

smoke: install ## the study on CI-sized data (minutes), into reports/smoke/
	$(PY) run_all.py --profile smoke

test: install ## set up and run the tests (what CI runs)
	$(PY) -m pytest

lab: install ## open the notebooks in JupyterLab
	$(VENV)/bin/jupyter lab notebooks/

clean-reports: ## delete the smoke and gpu reports (reports/full is committed)
	rm -rf reports/smoke reports/gpu
