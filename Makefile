# landwatch — the two commands of the quick start:
#   make demo   set up .venv, build the synthetic sample if missing, run the whole pipeline on it
#   make test   set up .venv, lint, run the test suite
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
STAMP   = $(VENV)/.installed

.PHONY: demo test setup lint format sample clean bench

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

sample/.complete: $(STAMP)
	$(BIN)/landwatch sample --out sample

sample: sample/.complete

demo: $(STAMP) sample/.complete
	$(BIN)/landwatch run --config config.yaml

lint: $(STAMP)
	$(BIN)/ruff check pipeline tests benchmarks examples
	$(BIN)/ruff format --check pipeline tests benchmarks examples

format: $(STAMP)
	$(BIN)/ruff format pipeline tests benchmarks examples
	$(BIN)/ruff check --fix pipeline tests benchmarks examples

test: lint
	$(BIN)/python -m pytest -q

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_detect.py

clean:
	rm -rf out sample .pytest_cache
