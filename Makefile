# Everything goes through one virtual environment in .venv; constraints.txt pins every
# transitive dependency to versions that were installed and tested together.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Every recipe, and every command it starts, finds the project's interpreter first: dvc.yaml's stage
# commands say `python`, which the shell resolves from PATH, whatever python a user has there.
export PATH := $(CURDIR)/$(BIN):$(PATH)

.PHONY: install pipeline test test-fast clean server deploy worker mlflow-server serve-model gpu-check

# TORCH_INDEX: where torch comes from, installed first (the project's install then keeps it). Empty: pip's own
# indexes, where PyPI's Linux torch is the CUDA build (≈ 3.5 GB more); the CPU build:
# TORCH_INDEX=https://download.pytorch.org/whl/cpu, a CUDA one: …/whl/cu128. Its version is constraints.txt's.
TORCH_INDEX ?=
TORCH_VERSION := $(shell sed -n 's/^torch==//p' constraints.txt)
# --no-compile: pip would byte-compile every installed module (torch, mlflow, prefect, dvc: 58 s of the 103 s
# this install takes on 2 cores; docs/benchmarks.md, "`dvc repro` with the default params.yaml"). Python compiles
# the ones a command imports on first use instead, and keeps them (the first `demoire` or stage starts about 6 s
# slower, once).
$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(if $(TORCH_INDEX),$(BIN)/pip install --quiet torch==$(TORCH_VERSION) --index-url $(TORCH_INDEX))
	$(BIN)/pip install --quiet --no-compile -c constraints.txt -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

pipeline: $(STAMP)
	$(BIN)/dvc repro

# Three test processes on two cores: the slow tests mostly wait on the subprocesses and servers they start.
# Each test module runs whole in one process (--dist loadfile): several modules' tests build on one
# module-scoped fixture's state. The longest modules go first (tests/conftest.py; --no-loadscope-reorder keeps
# that order, where xdist would start the modules with the most tests first), so the minutes-long ones run side
# by side and the short ones fill the gaps. (Not --dist loadgroup: with pytest 9.2 the group suffix xdist 3.8
# writes into each test's id is ignored, and grouped tests were spread.)
TEST_WORKERS ?= 3
test: $(STAMP)
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow"

# Orchestration against a running Prefect server (PREFECT_API_URL): `make server` starts one here.
POOL ?= cpu
# A PREFECT_HOME set by the user is kept, as the stage commands keep it: the server then shows their runs.
PREFECT_ENV := PREFECT_HOME=$${PREFECT_HOME:-$(CURDIR)/.prefect}

# Prefect's usage telemetry off unless asked for (PREFECT_SERVER_ANALYTICS_ENABLED=true make server):
# a server without internet access logs an error each time it fails to send it.
PREFECT_SERVER_ANALYTICS_ENABLED ?= false
PREFECT_PORT ?= 4200
server: $(STAMP)
	PREFECT_SERVER_ANALYTICS_ENABLED=$(PREFECT_SERVER_ANALYTICS_ENABLED) $(PREFECT_ENV) \
		$(BIN)/prefect server start --host 127.0.0.1 --port $(PREFECT_PORT)

# Pools are created only where missing: `--overwrite` would turn a pool set up by hand (the README's Kubernetes
# gpu pool) back into a process pool's job template, silently dropping its GPU request.
deploy: $(STAMP)
	@$(BIN)/python -m flows.server_check
	$(PREFECT_ENV) $(BIN)/prefect work-pool inspect cpu >/dev/null 2>&1 || \
		$(PREFECT_ENV) $(BIN)/prefect work-pool create cpu --type process
	$(PREFECT_ENV) $(BIN)/prefect work-pool inspect gpu >/dev/null 2>&1 || \
		$(PREFECT_ENV) $(BIN)/prefect work-pool create gpu --type process
	@# DEMOIRE_PROJECT_DIR must stay a placeholder here: each worker resolves it to its own checkout
	env -u DEMOIRE_PROJECT_DIR $(PREFECT_ENV) $(BIN)/prefect --no-prompt deploy --all
	$(PREFECT_ENV) $(BIN)/python -m flows.automations

worker: $(STAMP)
	@test -n "$$PREFECT_API_URL" || { echo "error: set PREFECT_API_URL to the Prefect server"; exit 2; }
	@$(BIN)/python -m flows.server_check --pool $(POOL)
	DEMOIRE_PROJECT_DIR=$(CURDIR) $(PREFECT_ENV) $(BIN)/prefect worker start --pool $(POOL) --limit 1

# A team MLflow tracking server on PostgreSQL (a cluster of its own in .mlflow-server/ unless
# MLFLOW_BACKEND_STORE_URI names a database), artifacts served; clients set MLFLOW_TRACKING_URI.
# Clients reaching it by a host name or a public IP need MLFLOW_ALLOWED_HOSTS=name,name:5000 (MLflow
# refuses other Host headers than localhost and private IPs); MLFLOW_PG_PORT moves the cluster's port.
MLFLOW_PORT ?= 5000
MLFLOW_PG_PORT ?= 5433
mlflow-server: $(STAMP)
	$(BIN)/python deploy/mlflow_server.py --home .mlflow-server --host 0.0.0.0 --port $(MLFLOW_PORT) \
		--pg-port $(MLFLOW_PG_PORT) \
		$(if $(MLFLOW_ALLOWED_HOSTS),--allowed-hosts '$(MLFLOW_ALLOWED_HOSTS)') \
		$(if $(MLFLOW_BACKEND_STORE_URI),--backend-store-uri $(MLFLOW_BACKEND_STORE_URI))

# The champion over HTTP with bounds (pipeline/serving/bounded.py): body limit, one request at a time, time limit.
SERVE_PORT ?= 5001
serve-model: $(STAMP)
	$(BIN)/python -m pipeline.serving -m models:/demoire@champion -p $(SERVE_PORT)

# On a CUDA machine, no .venv needed: prepares its own interpreter (benchmarks/gpu_check.sh says how), runs the
# GPU tests and benchmarks within 8 minutes, writes reports/gpu_check.json (GPU_CHECK_ARGS='--out FILE' elsewhere).
gpu-check:
	benchmarks/gpu_check.sh $(GPU_CHECK_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache
