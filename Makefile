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

# the demo's timeline: detection on 2017-06-01, two rounds of simulated field returns, the
# report of 2017-09-01 (two weeks before the configured deadline)
demo: $(STAMP) sample/.complete
	$(BIN)/landwatch run --config config.yaml --as-of 2017-06-01
	$(BIN)/landwatch sample returns --config config.yaml --round 1 --date 2017-06-20
	$(BIN)/landwatch run --config config.yaml --as-of 2017-06-30
	$(BIN)/landwatch sample returns --config config.yaml --round 2 --date 2017-08-25
	$(BIN)/landwatch run --config config.yaml --as-of 2017-09-01

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
