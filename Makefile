# The verbs users type. Variables: PRESET (smoke|cpu|full; empty = full with CUDA/MPS, else cpu),
# DATA (data folder or hub id), RUN (run folder, default runs/<preset>), NPROC (processes for DDP),
# STUDY (make study: a name in kd/studies/ or a YAML file), SEEDS (make train-all: the students at that many
# training seeds, paired; default 1).
PRESET ?=
STUDY ?= study-cpu
EXECUTOR ?= local
ADDRESS ?=
SHARD ?=
RAY ?=
DATA ?=
RUN ?=
NPROC ?= 1
SEEDS ?= 1
BENCH_ARGS ?=
REPEAT ?= 3
PYTHON ?= python3

VENV ?= .venv
BIN := $(VENV)/bin
# Inside the images (KD_IMAGE set) the environment was installed at build time: there is nothing to set up.
STAMP := $(if $(KD_IMAGE),,$(VENV)/.installed)
# Ray (make study EXECUTOR=ray, and the tests of it): installed by `make setup RAY=1` and by the test verbs.
RAY_STAMP := $(if $(KD_IMAGE),,$(VENV)/.ray-installed)
# DATA is quoted: a path with spaces or '#' reaches kd as one argument, which kd takes as written.
KD_ARGS := $(if $(PRESET),--preset $(PRESET)) $(if $(DATA),--data '$(DATA)') $(if $(RUN),--run-dir $(RUN))
# NPROC > 1: kd checks the config, then runs itself under torchrun (one node, DDP; batch sizes stay global).
NPROC_ARG := $(if $(filter-out 1,$(NPROC)),--nproc $(NPROC))
SEEDS_ARG := $(if $(filter-out 1,$(SEEDS)),--seeds $(SEEDS))

# Containers. The engine: docker where a docker daemon answers, else podman (CONTAINER_ENGINE= overrides).
# IMAGE picks the image the docker-* verbs run (cpu|cuda); HOST_RUNS is mounted at /app/runs, HOST_DATA
# (a folder holding ag_news/; default: the folder above $KD_DATA, else data/) at /data, read-only. BUILD_FLAGS / RUN_FLAGS go to the engine's build / run.
# GPUS (auto|all|none): whether the container gets the GPUs; auto: the CUDA image, where the host has one.
CONTAINER_ENGINE ?= $(shell if docker info >/dev/null 2>&1; then echo docker; \
	elif command -v podman >/dev/null; then echo podman; else echo docker; fi)
IMAGE ?= cpu
IMAGE_NAME ?= kd-bench
HOST_RUNS ?= $(CURDIR)/runs
HOST_DATA ?= $(if $(KD_DATA),$(dir $(abspath $(KD_DATA))),$(wildcard $(CURDIR)/data))
BUILD_FLAGS ?=
RUN_FLAGS ?=
GPUS ?= auto
CONTAINER_VERBS := train-all report export export-check bench bench-check gpu-check
VERB_ARGS = $(if $(PRESET),PRESET=$(PRESET)) $(if $(DATA),DATA=$(DATA)) $(if $(RUN),RUN=$(RUN)) \
	$(if $(filter-out 1,$(NPROC)),NPROC=$(NPROC)) $(if $(filter-out 1,$(SEEDS)),SEEDS=$(SEEDS)) \
	$(if $(BENCH_ARGS),'BENCH_ARGS=$(BENCH_ARGS)')

.PHONY: help setup train-all bench-train report study export export-check optimum-check bench bench-check \
	bench-baseline gpu-check test test-all lint clean image-cpu image-cuda docker-shell \
	$(addprefix docker-,$(CONTAINER_VERBS))

help:
	@echo "kd-bench verbs (README.md and docs/ have the details):"
	@echo "  make setup | train-all | export | export-check | bench | bench-check | bench-baseline | report"
	@echo "  make optimum-check (the exports loaded by optimum, in its own environment under .venv/optimum/)"
	@echo "  make study STUDY=study-smoke|study-cpu|study-full (or a YAML file)"
	@echo "  make test (fast tier) | test-all | lint | gpu-check | bench-train"
	@echo "  make image-cpu | image-cuda; make docker-<verb> IMAGE=cpu|cuda for <verb> in: $(CONTAINER_VERBS)"
	@echo "variables: PRESET=smoke|cpu|full DATA=<folder or hub id> RUN=<run folder> BENCH_ARGS=..."

setup: $(STAMP) $(if $(RAY),$(RAY_STAMP))

ifndef KD_IMAGE
$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): requirements.txt requirements-dev.txt pyproject.toml | $(BIN)/python
	$(BIN)/pip install -r requirements-dev.txt
	$(BIN)/pip install --no-deps -e .
	touch $@

$(RAY_STAMP): requirements-ray.txt $(STAMP)
	$(BIN)/pip install -r requirements-ray.txt
	touch $@
endif

train-all: $(STAMP)
	$(BIN)/kd train-all $(KD_ARGS) $(NPROC_ARG) $(SEEDS_ARG)

report: $(STAMP)
	$(BIN)/kd report $(KD_ARGS)

# A study (kd/studies/<STUDY>.yaml or a YAML file): one run per label budget x seed x student depth under
# runs/<study>/cells/, then study.md, study.json, study.png. Finished cells are skipped; a stopped study resumes.
# EXECUTOR=ray [ADDRESS=host:port]: each cell a Ray task (Ray installed first); SHARD=i/N: only that share.
study: $(STAMP) $(if $(filter ray,$(EXECUTOR)),$(RAY_STAMP))
	$(BIN)/kd study $(STUDY) $(if $(DATA),--data '$(DATA)') $(if $(RUN),--run-dir $(RUN)) \
		$(if $(filter-out local,$(EXECUTOR)),--executor $(EXECUTOR)) $(if $(ADDRESS),--address $(ADDRESS)) \
		$(if $(SHARD),--shard $(SHARD))

# ONNX fp32 + int8 for every trained model of the run, each checked against PyTorch (runs/<preset>/onnx/).
export: $(STAMP)
	$(BIN)/kd export $(KD_ARGS)

# Every export, loaded with a plain onnxruntime.InferenceSession, on the whole test split vs PyTorch's predictions.
export-check: $(STAMP)
	$(BIN)/kd export-check $(KD_ARGS)

# Every export folder loaded by optimum as its users load it (ORTModelForSequenceClassification, and that in
# transformers.pipeline) predicts what kd's ONNX Runtime run predicts, on the whole test split, fp32 and int8
# (runs/<preset>/onnx/optimum-check/result.{md,json}). optimum-onnx needs transformers<4.58 and kd needs 5, so
# optimum runs in its own environment, rebuilt from scratch when requirements-optimum.txt changes.
OPTIMUM_VENV := $(VENV)/optimum
$(OPTIMUM_VENV)/.installed: requirements-optimum.txt | $(BIN)/python
	rm -rf $(OPTIMUM_VENV)
	$(PYTHON) -m venv $(OPTIMUM_VENV)
	$(OPTIMUM_VENV)/bin/pip install -r requirements-optimum.txt
	touch $@

# kd's side (main environment) prints the folder it wrote; the optimum side reads it.
optimum-check: $(STAMP) $(OPTIMUM_VENV)/.installed
	ref=$$($(BIN)/python -m export.optimum_reference $(KD_ARGS)) && \
		$(OPTIMUM_VENV)/bin/python scripts/optimum_check.py "$$ref"

# pytest-benchmark over every model x backend x device of the run: runs/<preset>/bench/summary.md, .json,
# pareto.png, pytest-benchmark.json. BENCH_ARGS passes options, e.g. BENCH_ARGS="--bench-samples 1000".
bench: $(STAMP)
	$(BIN)/kd bench $(KD_ARGS) $(BENCH_ARGS)

# The regression gate: accuracy/F1, and within-run speed ratios against this CPU's baseline
# (bench/baselines/<preset>-<device>-<cpu>.json; another CPU's baseline gates accuracy only).
bench-check: $(STAMP)
	$(BIN)/kd bench-check $(KD_ARGS)

# Record that baseline: the lowest of REPEAT fresh bench runs (REPEAT=0: the run's last bench as it is).
bench-baseline: $(STAMP)
	$(BIN)/kd bench-baseline $(KD_ARGS) --repeat $(REPEAT) $(BENCH_ARGS)

# For a short loan of an NVIDIA machine: smoke preset trained on CUDA, exported, CUDA rows benched, all in
# runs/gpu-check/ (≤ 8 minutes after make setup).
gpu-check: $(STAMP)
	PATH=$(abspath $(BIN)):$$PATH scripts/gpu-check.sh $(or $(RUN),runs/gpu-check)

# Training speed: one epoch of baseline vs distillation from cached logits vs the teacher run online, on a trained run.
bench-train: $(STAMP)
	$(BIN)/kd bench-train $(KD_ARGS)

# The fast tier (everything not marked slow: unit tests, stand-in exports, gates on recorded summaries, the
# bad-input catalogue on one shared smoke run), and everything (end-to-end runs, kill -9, DDP, the smoke
# export and bench), which CI runs.
# Two pytest-xdist workers, a test file each at a time (a file's module fixtures are made once), each on its own
# share of the CPUs, the longest files first (tests/conftest.py; xdist's own reorder by test count is turned
# off); the session's smoke run, export and bench are made once and shared.
PYTEST := $(BIN)/python -m pytest -q -n 2 --dist loadfile --no-loadscope-reorder
test: $(STAMP) $(RAY_STAMP)
	$(PYTEST) -m "not slow" tests

test-all: $(STAMP) $(RAY_STAMP)
	$(PYTEST) --durations=20 tests  # CI's log names the slowest tests

lint: $(STAMP)
	$(BIN)/ruff check .

clean:
	rm -rf runs .pytest_cache

# The images (Dockerfile.cpu / Dockerfile.cuda), and the verbs above run inside them with runs/ mounted.
image-cpu image-cuda: image-%:
	$(CONTAINER_ENGINE) build $(BUILD_FLAGS) --build-arg GIT_COMMIT=$$(git rev-parse HEAD 2>/dev/null) \
		-f Dockerfile.$* -t $(IMAGE_NAME):$* .

CONTAINER_RUN = CONTAINER_ENGINE="$(CONTAINER_ENGINE)" HOST_RUNS="$(HOST_RUNS)" HOST_DATA="$(HOST_DATA)" \
	GPUS="$(GPUS)" scripts/container-run.sh $(IMAGE_NAME):$(IMAGE)

$(addprefix docker-,$(CONTAINER_VERBS)): docker-%:
	RUN_FLAGS="$(RUN_FLAGS)" $(CONTAINER_RUN) make $* $(strip $(VERB_ARGS))

docker-shell:
	RUN_FLAGS="-it $(RUN_FLAGS)" $(CONTAINER_RUN) bash
