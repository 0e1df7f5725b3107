# kmsportal: `make run` serves the portal, `make test` runs every check. Python 3.11 only.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin

.PHONY: run test bench lint format clean venv dist docs apicheck

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# Reinstall only when a requirements file changes.
$(VENV)/.runtime-installed: requirements.txt | $(BIN)/python
	$(BIN)/pip install --quiet -r requirements.txt
	touch $@

$(VENV)/.dev-installed: requirements.txt requirements-dev.txt | $(BIN)/python
	$(BIN)/pip install --quiet -r requirements-dev.txt
	touch $@ $(VENV)/.runtime-installed

venv: $(VENV)/.runtime-installed

# A local trial: kmsportal.trial writes .kms/trial.env (DEBUG off, a development keyring and
# secret, KMS_PUBLIC_URL from GUNICORN_BIND unless set), which manage.py reads in any shell.
run: $(VENV)/.runtime-installed
	$(BIN)/python -m kmsportal.trial
	$(BIN)/python manage.py migrate --noinput
	$(BIN)/python manage.py bootstrap
	$(BIN)/python manage.py collectstatic --noinput --verbosity 0
	@echo "Serving kmsportal on http://$${GUNICORN_BIND:-127.0.0.1:8000}/ (Ctrl-C stops it)"
	$(BIN)/gunicorn -c kmsportal/gunicorn.conf.py

# Tests run with DEBUG off (production settings); conftest.py supplies test secrets. mypy's
# django-stubs plugin loads the settings too: a throw-away SECRET_KEY is all it needs.
test: $(VENV)/.dev-installed
	$(BIN)/ruff check .
	$(BIN)/lint-imports
	DEBUG=false SECRET_KEY=type-checking-only $(BIN)/mypy
	DEBUG=false $(BIN)/python -m pytest $(PYTEST_ARGS)

# schemathesis against the admin API on a running server (fresh SQLite database, gunicorn on
# a free port): no 5xx, no response outside the schema. MAX_EXAMPLES per operation (20).
apicheck: $(VENV)/.dev-installed
	tests/adminapi/schemathesis_run.sh

# Benchmarks on SQLite and PostgreSQL; QUICK=1 for the small sizes CI runs. Prints the table
# and writes bench/results.md; fails only if a benchmark crashes, never on a missed target.
# BENCH_ARGS passes more options, e.g. BENCH_ARGS="--only revocation --database postgres".
bench: $(VENV)/.dev-installed
	$(BIN)/python bench/run.py $(if $(QUICK),--quick) $(BENCH_ARGS)

# The kmsclient wheel and sdist for service machines (pip install dist/kmsclient-*.whl): they
# depend on cryptography and requests only (kmsclient/pyproject.toml says how they are built).
dist: $(VENV)/.runtime-installed
	rm -rf dist
	$(BIN)/python -m pip wheel --quiet --no-deps --wheel-dir dist ./kmsclient
	@ls dist

# The documentation site (MkDocs with Material, mkdocs.yml) from docs/ into site/. --strict:
# a broken link, a missing page or anchor fails the build (CI runs it).
docs: $(VENV)/.dev-installed
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --site-dir site

lint: $(VENV)/.dev-installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(VENV)/.dev-installed
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf $(VENV) staticfiles .pytest_cache .ruff_cache .mypy_cache .import_linter_cache dist site
