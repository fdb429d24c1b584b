# Two commands on a fresh machine: `make demo` and `make test`.
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
# Nothing may download at run time: models load from local directories.
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: setup test test-slow test-all demo lint bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# The local CPU wheel; installed first so nothing pulls a CUDA build.
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[dev]"
	# WordNet for METEOR (Debian's wordnet-base -> NLTK's layout in ~/.cache/metarag).
	# Not fatal: without it only the METEOR tests skip, and they say how to fix it.
	$(PY) -m metarag.evaluation.wordnet --install || echo "warning: WordNet not set up; METEOR is unavailable (see the error above)"
	touch $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q

test-slow: $(STAMP)
	# exit 5 = no test carries the marker yet
	$(PY) -m pytest -q -m slow || [ $$? -eq 5 ]

test-all: $(STAMP)
	$(PY) -m pytest -q -m ""

demo: $(STAMP)
	$(VENV)/bin/metarag benchmark --config configs/benchmark-demo.yaml

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks experiments

bench: $(STAMP)
	# higher is the peer the meta-step benchmark compares with (the "bench" extra).
	$(PY) -c "import higher" 2>/dev/null || $(PY) -m pip install -q "higher>=0.2.1"
	$(PY) benchmarks/retrieval_speed.py
	$(PY) benchmarks/meta_step.py
	$(PY) benchmarks/adapt_latency.py

clean:
	rm -rf $(VENV) runs .pytest_cache
