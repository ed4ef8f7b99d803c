# make demo | make test | make data | make bench | make lint
# Each target creates .venv on first use (python3 -m venv .venv && pip install -e '.[dev]'); as root on
# Debian it installs python3-venv when venv needs it. `make data` / `make demo` also install Debian's
# dataset-fashion-mnist when run as root with apt-get (DEMO_APT=0 turns that off), else fall back to digits.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TORCH_PIN := torch==2.14.1 torchvision==0.29.1

.PHONY: demo test test-all data bench lint venv

venv: $(STAMP)

PIP := $(BIN)/python -m pip install -q --progress-bar off

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV) 2>/dev/null || { \
	    rm -rf $(VENV); \
	    if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	        echo "$(PYTHON) -m venv needs Debian's python3-venv: installing it with apt-get"; \
	        export DEBIAN_FRONTEND=noninteractive; \
	        { apt-get update -qq && apt-get install -y -qq python3-venv; } >/dev/null && $(PYTHON) -m venv $(VENV); \
	    else \
	        echo "error: $(PYTHON) -m venv failed; install python3-venv (sudo apt-get install python3-venv)" >&2; exit 1; \
	    fi; }
	$(PIP) --upgrade pip
	@# torch and torchvision first, pinned to the builds this machine keeps on local disk when it has them
	$(PIP) $(TORCH_PIN) || $(PIP) torch torchvision
	$(PIP) -e '.[dev,minatar]'
	@touch $(STAMP)

data: $(STAMP)
	@bash scripts/demo.sh data

test: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow" --timeout=600

test-all: $(STAMP)
	$(BIN)/python -m pytest -q --timeout=3600

bench: $(STAMP)
	$(BIN)/workbench bench

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

demo: $(STAMP)
	@bash scripts/demo.sh
