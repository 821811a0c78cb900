# The two commands of the README: `make demo` (the main job, `experiments/iwrm_digits`) and
# `make test` (the whole suite and the documentation build, which is also what CI runs). Each
# does its own set-up: a `.venv` with the pinned dev requirements and an editable install.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
EXPERIMENT_STAMP := $(VENV)/.installed-experiment

.PHONY: setup demo test lint format typecheck pytest docs clean

$(STAMP): requirements-dev.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt
	$(PY) -m pip install --quiet --no-deps -e .
	touch $(STAMP)

setup: $(STAMP)

# The main job's optional dependencies (scikit-learn, matplotlib, tqdm), over the dev set-up.
$(EXPERIMENT_STAMP): $(STAMP)
	$(PY) -m pip install --quiet -e ".[experiment]"
	touch $(EXPERIMENT_STAMP)

# The main job: IWRM on scikit-learn's digits, default settings (about 5 minutes on 2 CPU cores);
# writes results/table.md, results/loss.png and results/cosine.png.
demo: $(EXPERIMENT_STAMP)
	$(PY) -m experiments.iwrm_digits --out results

lint: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

typecheck: $(STAMP)
	$(PY) -m mypy

pytest: $(STAMP)
	$(PY) -m pytest

# The documentation, with warnings as errors (a few seconds, so `make test` and CI build it too).
docs: $(STAMP)
	$(PY) -m sphinx -W --keep-going -q -b html docs/source docs/_build/html

test: lint typecheck pytest docs

format: $(STAMP)
	$(PY) -m ruff check --fix .
	$(PY) -m ruff format .

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache docs/_build results
