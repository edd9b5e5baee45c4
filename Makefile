# Two commands: `make run` (set up, then launch on a bundled sample) and `make test`.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   ?= .venv
BIN    := $(VENV)/bin
# The CPU build of torch; set TORCH_SPEC for another build (see README, "GPU").
TORCH_SPEC ?= torch==2.13.0

.PHONY: run test setup bench gallery samples lint clean install-desktop

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "$(TORCH_SPEC)"
	$(BIN)/python -m pip install -q -e ".[dev,cluster]"
	touch $@

setup: $(VENV)/.installed

run: setup
	$(BIN)/python main.py $(ARGS)

test: setup
	QT_QPA_PLATFORM=offscreen $(BIN)/python -m pytest

bench: setup
	$(BIN)/python -m pip install -q matplotlib
	QT_QPA_PLATFORM=offscreen $(BIN)/python -m explorer.bench

gallery: setup
	QT_QPA_PLATFORM=offscreen $(BIN)/python -m explorer.gallery --out out/gallery

install-desktop: setup
	$(BIN)/python main.py --install-desktop

samples: setup
	$(BIN)/python -m assets.make_samples

lint: setup
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) .pytest_cache
