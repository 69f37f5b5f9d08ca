# The verbs users type. Variables: PRESET (smoke|cpu|full; empty = full with CUDA/MPS, else cpu),
# DATA (data folder or hub id), RUN (run folder, default runs/<preset>), NPROC (processes for DDP).
PRESET ?=
DATA ?=
RUN ?=
NPROC ?= 1
BENCH_ARGS ?=
REPEAT ?= 3
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

.PHONY: setup train-all bench-train report export export-check bench bench-check bench-baseline \
	gpu-check test lint clean

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

# ONNX fp32 + int8 for every trained model of the run, each checked against PyTorch (runs/<preset>/onnx/).
export: $(STAMP)
	$(BIN)/kd export $(KD_ARGS)

# Every export, loaded with a plain onnxruntime.InferenceSession, on the whole test split vs PyTorch's predictions.
export-check: $(STAMP)
	$(BIN)/kd export-check $(KD_ARGS)

# pytest-benchmark over every model x backend x device of the run: runs/<preset>/bench/summary.md, .json,
# pareto.png, pytest-benchmark.json. BENCH_ARGS passes options, e.g. BENCH_ARGS="--bench-samples 1000".
bench: $(STAMP)
	$(BIN)/kd bench $(KD_ARGS) $(BENCH_ARGS)

# The regression gate: accuracy/F1 and within-run speed ratios vs bench/baselines/<preset>-<device>.json.
bench-check: $(STAMP)
	$(BIN)/kd bench-check $(KD_ARGS)

# Record that baseline: the lowest of REPEAT fresh bench runs (REPEAT=0: the run's last bench as it is).
bench-baseline: $(STAMP)
	$(BIN)/kd bench-baseline $(KD_ARGS) --repeat $(REPEAT) $(BENCH_ARGS)

# For a short loan of an NVIDIA machine: smoke preset trained on CUDA, exported, CUDA rows benched, all in
# runs/gpu-check/ (≤ 8 minutes after make setup).
gpu-check: $(STAMP)
	PATH=$(CURDIR)/$(BIN):$$PATH scripts/gpu-check.sh $(or $(RUN),runs/gpu-check)

# Training speed: one epoch of baseline vs distillation (cached logits) vs the seed's way, on a trained run.
bench-train: $(STAMP)
	$(BIN)/kd bench-train $(KD_ARGS)

test: $(STAMP)
	$(BIN)/python -m pytest -q tests

lint: $(STAMP)
	$(BIN)/ruff check .

clean:
	rm -rf runs .pytest_cache
