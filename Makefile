# The two commands of the README. Each does all of its own set-up.
VENV ?= $(or $(SPLITSWEEP_VENV),.venv)
export SPLITSWEEP_VENV := $(VENV)

.PHONY: demo test test-all lint bootstrap
demo:
	scripts/bootstrap.sh
	$(VENV)/bin/splitsweep demo

test:
	scripts/bootstrap.sh --dev
	$(VENV)/bin/python -m pytest $(PYTEST_ARGS)

test-all:
	scripts/bootstrap.sh --dev
	$(VENV)/bin/python -m pytest -m "" $(PYTEST_ARGS)

lint:
	scripts/bootstrap.sh --dev
	$(VENV)/bin/python -m ruff check .
