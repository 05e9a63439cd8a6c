# Winnow: `make run` starts the whole service locally, `make test` runs the suite.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: setup run test bench starter-model screenshots clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	@# setuptools warns on every editable install of a flat layout (folders named like the packages may shadow them)
	PYTHONWARNINGS=ignore $(BIN)/python -m pip install --quiet -e '.[test]'
	@touch $(STAMP)

run: setup
	$(BIN)/python -m service.launcher

test: setup
	$(BIN)/python -m pytest $(PYTEST_ARGS)

bench: setup
	$(BIN)/python -m bench

starter-model: setup
	$(BIN)/python -m training.starter

screenshots: setup
	$(BIN)/python -m tests.browser.screenshots

clean:
	rm -rf $(VENV) var build *.egg-info
