# rollguard — every target creates and uses the local virtualenv in .venv; nothing to install by hand.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.PHONY: demo test fuzz lint mutate bench bench-quick venv clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e '.[dev,mlflow]'
	touch $(STAMP)

venv: $(STAMP)

## make demo: the self-contained demo (sample models, proxy, traffic, live view) on loopback
demo: $(STAMP)
	$(VENV)/bin/rollguard demo $(ARGS)

## make test: the whole test suite (real loopback servers; a few minutes on 2 cores)
test: $(STAMP)
	$(PY) -m pytest $(ARGS)

## make fuzz: the fuzz tests at length (ROLLGUARD_FUZZ_EXAMPLES=2000; `make test` runs them short, fixed)
FUZZ_TESTS := tests/edge/test_wire_fuzz.py tests/admin/test_api_fuzz.py tests/content/test_pii_properties.py
fuzz: $(STAMP)
	ROLLGUARD_FUZZ_EXAMPLES=2000 $(PY) -m pytest $(FUZZ_TESTS) -p no:cacheprovider $(ARGS)

## make lint: ruff (lint and format) and mypy --strict on the package
lint: $(STAMP)
	$(VENV)/bin/ruff check proxy tests benchmarks
	$(VENV)/bin/ruff format --check proxy tests benchmarks
	$(VENV)/bin/mypy proxy

## make mutate: mutation testing (mutmut, [tool.mutmut] in pyproject.toml) of the state store, trip-wire,
## gates and step decision, PII masker and header hygiene, then the kill rate per module (MUTATE_JOBS=2
## workers: about 13 min on 2 cores; MODULE=rollout.gates, a dotted module under proxy/, runs one: ~9 min)
## Results and the equivalent survivors: benchmarks/results/mutation.md
MUTATE_JOBS ?= 2
mutate: $(STAMP)
	rm -rf mutants
	$(VENV)/bin/mutmut run --max-children $(MUTATE_JOBS) $(if $(MODULE),'proxy.$(MODULE).*')
	$(PY) benchmarks/mutation_report.py --survivors

## make bench: load benchmarks against nginx and minimal-proxy anchors (needs nginx, wrk, taskset)
bench: $(STAMP)
	$(PY) benchmarks/run.py $(ARGS)

bench-quick: $(STAMP)
	$(PY) benchmarks/run.py --quick $(ARGS)

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache rollguard-demo var mutants
