# PSI developer commands. Two are meant for people:
#   make run    the demo on http://127.0.0.1:8000 (SQLite, eager Celery, local files)
#   make test   the whole test suite (PostgreSQL when DATABASE_URL is set, else SQLite)

PYTHON ?= python3
VENV ?= .venv
HOST ?= 127.0.0.1
PORT ?= 8000

BIN := $(VENV)/bin
# Stamps: pip runs again only when pyproject.toml changes or the venv is new.
INSTALLED := $(VENV)/.psi-installed
INSTALLED_DEV := $(VENV)/.psi-installed-dev

.PHONY: run test install install-dev

# ASGI (uvicorn), not WSGI: chunked uploads (DICOMweb STOW-RS) must reach the views.
run: install
	$(BIN)/python manage.py migrate --noinput
	$(BIN)/python manage.py demo
	@# Copies only changed files; under DEBUG WhiteNoise also serves from the apps.
	$(BIN)/python manage.py collectstatic --noinput --verbosity 0
	@echo
	@echo "  Admin:    http://$(HOST):$(PORT)/admin/"
	@echo "  API docs: http://$(HOST):$(PORT)/api/docs/"
	@echo
	@# Django warns once that WhiteNoise's file responses are synchronous iterators
	@# under ASGI; harmless for the demo, so keep it out of the console.
	@PYTHONWARNINGS="ignore:StreamingHttpResponse must consume synchronous iterators" \
		exec $(BIN)/uvicorn psi.asgi:application --host $(HOST) --port $(PORT) \
		--lifespan off

test: install-dev
	@status=0; $(BIN)/python -m pytest $(PYTEST_ARGS) || status=$$?; \
	if [ $$status -eq 5 ]; then echo "make test: pytest collected no tests" >&2; fi; \
	exit $$status

# Helpers.
install: $(INSTALLED)
install-dev: $(INSTALLED_DEV)

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(INSTALLED): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	touch $@

# The dev install includes the plain one, so it marks both as done.
$(INSTALLED_DEV): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(INSTALLED) $@
