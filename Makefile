# Every target installs what it needs into .venv first, so each works on a fresh machine.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# torch/torchvision pinned to the builds this project is tested with; override on another machine if needed.
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
STAMP := $(VENV)/.installed

.PHONY: install demo test test-fast lint bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet $(TORCH_SPEC)
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(PY) examples/demo.py

lint: $(STAMP)
	$(PY) -m ruff check lightning_cv tests benchmarks examples
	$(PY) -m mypy lightning_cv

# Two pytest-xdist workers, one per core (tests/conftest.py gives each one torch thread). --dist loadfile keeps a
# file's tests on one worker, so a module-scoped trained model is trained once. `make test PYTEST_ARGS=` runs
# everything in one process.
PYTEST_WORKERS ?= 2
PYTEST_ARGS ?= -n $(PYTEST_WORKERS) --dist loadfile

test: lint
	$(PY) -m pytest -q $(PYTEST_ARGS)

# The inner loop: every test but the end-to-end ones marked `slow` (make test, which CI runs, runs those too).
test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not slow" $(PYTEST_ARGS)

# The Trainer's per-epoch overhead (about 1 minute), then `lightning-cv fit` end to end against a plain PyTorch loop
# on generated 28 px PNGs and 224 px JPEGs (about 4 minutes on 2 cores), then a multi-label epoch against a
# single-label one of the same model (about 1 minute).
bench: $(STAMP)
	$(PY) benchmarks/epoch_overhead.py
	$(PY) benchmarks/end_to_end.py
	$(PY) benchmarks/multilabel_epoch.py

clean:
	rm -rf $(VENV) lightning_logs runs .pytest_cache .mypy_cache .ruff_cache
