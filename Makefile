# The two commands: `make run` starts the exchange, `make test` runs the whole suite.
# Both create .venv and install the pinned dependencies on first use.

VENV := .venv
PY := $(VENV)/bin/python
# Two stamps: `make run` needs only the exchange's own dependencies; tests, lint and benches
# add the development ones (pytest, ruff, mypy, python-threatexchange, …).
RUNTIME := $(VENV)/.installed-runtime
STAMP := $(VENV)/.installed-dev

.PHONY: run test lint format typecheck manage bench clean

$(RUNTIME): pyproject.toml client/pyproject.toml
	@echo "== installing what the exchange needs into $(VENV) (first start, or pyproject.toml changed; a minute or two)"
	@test -x $(PY) || $$(scripts/find-python) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ./client -e .
	@touch $(RUNTIME)
	@echo "== installed; later starts skip this"

$(STAMP): $(RUNTIME)
	@echo "== installing the development tools (pytest, ruff, mypy, …) into $(VENV)"
	$(PY) -m pip install --quiet -e ".[dev]"
	@touch $(STAMP)

run: $(RUNTIME)
	$(PY) -m exchange.run

# Lint, type-check, then pytest beside embedded Postgres and Redis (under var/test) unless
# DATABASE_URL / REDIS_URL point at real ones. ARGS passes options to pytest.
test: $(STAMP) lint typecheck
	$(PY) -m exchange.embedded --var var/test -- $(VENV)/bin/pytest $(ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports --no-cache

# mypy's Django plugin imports the settings, which need service URLs; it never connects.
typecheck: $(STAMP)
	DATABASE_URL=postgres://mypy@localhost/mypy REDIS_URL=redis://localhost:6379/0 $(VENV)/bin/mypy

format: $(STAMP)
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

# Every bench/ script, beside its own embedded services under var/bench (figures, not asserts).
bench: $(STAMP)
	@for script in bench/[!_]*.py; do echo "== $$script"; \
	  $(PY) -m exchange.embedded --var var/bench -- $(PY) $$script || exit 1; done

# `make manage ARGS="createsuperuser"`: manage.py beside the embedded services of `make run`.
manage: $(RUNTIME)
	$(PY) manage.py $(ARGS)

clean:
	rm -rf var/test .pytest_cache .mypy_cache .ruff_cache
