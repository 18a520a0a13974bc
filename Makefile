# Two commands do all set-up on a fresh clone: `make demo` and `make test`.
# Each bootstraps the project-local .venv (pinned by requirements/ci.txt) when it is missing or stale.
# `make docs` (the site, mkdocs --strict) and `make wheel-check` (sdist + wheel installed in a fresh environment, the
# quick demo run from it) add the `docs` extra to that .venv; .ci/run runs both after `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
DOCS_STAMP := $(VENV)/.docs-installed-stamp
export HF_HUB_OFFLINE ?= 1

.PHONY: install test lint pytest demo bench docs wheel-check clean

$(STAMP): pyproject.toml requirements/ci.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -c requirements/ci.txt -e '.[dev,hf]'
	@touch $(STAMP)

$(DOCS_STAMP): $(STAMP)
	$(PY) -m pip install --quiet --disable-pip-version-check -c requirements/ci.txt -e '.[dev,docs,hf]'
	@touch $(DOCS_STAMP)

install: $(STAMP)

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/ruff format --check src tests benchmarks

pytest: $(STAMP)
	$(PY) -m pytest -q

test: lint pytest

demo: $(STAMP)
	$(VENV)/bin/calprompt demo

# The documentation site in site/ (warnings are errors), then a check that the API reference names every public name.
docs: $(DOCS_STAMP)
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --site-dir site
	$(PY) scripts/check_api_docs.py --site site

wheel-check: $(DOCS_STAMP)
	scripts/wheel_check.sh $(PY)

bench: $(STAMP)
	@for script in benchmarks/bench_*.py; do echo "== $$script"; $(PY) $$script || exit 1; done

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache site
