# The verbs users type. Variables: PRESET (smoke|cpu|full; empty = full with CUDA/MPS, else cpu),
# DATA (data folder or hub id), RUN (run folder, default runs/<preset>), NPROC (processes for DDP).
PRESET ?=
DATA ?=
RUN ?=
NPROC ?= 1
PYTHON ?= python3

VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
KD_ARGS := $(if $(PRESET),--preset $(PRESET)) $(if $(DATA),--data $(DATA)) $(if $(RUN),--run-dir $(RUN))
ifeq ($(NPROC),1)
KD := $(BIN)/kd
else
KD := $(BIN)/torchrun --standalone --nproc_per_node=$(NPROC) -m kd
endif

.PHONY: setup train-all bench-train report test lint clean

setup: $(STAMP)

$(STAMP): requirements.txt requirements-dev.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -r requirements-dev.txt
	$(BIN)/pip install --no-deps -e .
	touch $@

train-all: $(STAMP)
	$(KD) train-all $(KD_ARGS)

report: $(STAMP)
	$(BIN)/kd report $(KD_ARGS)

# Training speed: one epoch of baseline vs distillation (cached logits) vs the seed's way, on a trained run.
bench-train: $(STAMP)
	$(BIN)/kd bench-train $(KD_ARGS)

test: $(STAMP)
	$(BIN)/python -m pytest -q tests

lint: $(STAMP)
	$(BIN)/ruff check .

clean:
	rm -rf runs .pytest_cache
