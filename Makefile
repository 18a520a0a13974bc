# Two commands do all set-up on a fresh clone: `make demo` and `make test`.
# Each bootstraps the project-local .venv (pinned by requirements/ci.txt) when it is missing or stale.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
export HF_HUB_OFFLINE ?= 1

.PHONY: install test lint pytest demo bench clean

$(STAMP): pyproject.toml requirements/ci.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -c requirements/ci.txt -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP)

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/ruff format --check src tests benchmarks

pytest: $(STAMP)
	$(PY) -m pytest -q

test: lint pytest

demo: $(STAMP)
	$(VENV)/bin/calprompt demo

bench: $(STAMP)
	@for script in benchmarks/bench_*.py; do echo "== $$script"; $(PY) $$script || exit 1; done

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
