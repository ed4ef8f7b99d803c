# make demo | make test | make data | make bench | make lint
# Each target creates .venv on first use (python3 -m venv .venv && pip install -e '.[dev]').

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TORCH_PIN := torch==2.14.1 torchvision==0.29.1

.PHONY: demo test test-all data bench lint venv

venv: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	@# torch and torchvision first, pinned to the builds this machine keeps on local disk when it has them
	$(BIN)/python -m pip install -q $(TORCH_PIN) || $(BIN)/python -m pip install -q torch torchvision
	$(BIN)/python -m pip install -q -e '.[dev]'
	@touch $(STAMP)

data: $(STAMP)
	$(BIN)/workbench data prepare fashion-mnist digits || echo "Fashion-MNIST is not on this machine: sudo apt-get install dataset-fashion-mnist (or pass data_root=)"

test: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow" --timeout=600

test-all: $(STAMP)
	$(BIN)/python -m pytest -q --timeout=3600

bench: $(STAMP)
	$(BIN)/workbench bench

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

demo: $(STAMP) data
	@bash scripts/demo.sh
