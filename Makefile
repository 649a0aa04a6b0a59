# The two commands that matter: `make demo` and `make test`. Each sets itself up on a fresh machine.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
RECS := $(VENV)/bin/recs
DEMO_DIR ?= demo_out
export OMP_NUM_THREADS ?= 2
export OPENBLAS_NUM_THREADS ?= 1
export MKL_NUM_THREADS ?= 1
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: venv demo test lint unit integration bench lock clean

venv: $(VENV)/.installed

# torch first: 2.13.0 is a local CPU wheel; anything unpinned would pull a multi-GB CUDA build.
$(VENV)/.installed: requirements/lock.txt pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade "pip>=24"
	$(PY) -m pip install -q "torch==2.13.0"
	$(PY) -m pip install -q -r requirements/lock.txt
	$(PY) -m pip install -q --no-deps --no-build-isolation -e .
	@touch $@

demo: venv
	$(RECS) demo --workdir $(DEMO_DIR) $(DEMO_ARGS)

# The closed loop measured online (docs/online.md): synth -> pipeline -> serve with session logging ->
# simulated traffic -> pipeline again -> A/B v1 vs v2 -> recs monitor. SIZE, SESSIONS, AA=1, WORKDIR: see the script.
.PHONY: loop-demo
loop-demo: venv
	scripts/loop_demo.sh

lint: venv
	$(VENV)/bin/ruff check src components pipelines predictors tests benchmarks
	$(VENV)/bin/lint-imports --no-cache

test: venv tools lint
	$(PY) -m pytest -q --durations=15 tests

unit: venv
	$(PY) -m pytest -q tests/unit

integration: venv
	$(PY) -m pytest -q tests/integration

bench: venv
	$(PY) benchmarks/run_all.py

lock:
	rm -rf /tmp/recs-lock && $(PYTHON) -m venv /tmp/recs-lock
	/tmp/recs-lock/bin/pip install -q "torch==2.13.0" && /tmp/recs-lock/bin/pip install -q ".[kfp,serve,test]"
	/tmp/recs-lock/bin/pip uninstall -y -q startup-recs
	{ head -2 requirements/lock.txt; /tmp/recs-lock/bin/pip freeze | sed 's/+cpu$$//'; } > requirements/lock.new && mv requirements/lock.new requirements/lock.txt

clean:
	rm -rf $(VENV) $(DEMO_DIR) .pytest_cache

# --- images, manifests, local clusters (docs/cluster.md) ------------------------------------------
# Image names/tags come from startup_recs.core.images (the package version); the scripts ask it.
TOOLS_VENV ?= .venv-tools
.PHONY: tools images push kind-up kind-demo kind-down minikube-up minikube-down manifests-check

# Static-check tools (checkov, kubernetes-validate, hadolint, shellcheck) in their own venv: their
# pins conflict with the runtime lock.
tools: $(TOOLS_VENV)/.installed

$(TOOLS_VENV)/.installed: requirements/tools.txt
	@test -x $(TOOLS_VENV)/bin/python || $(PYTHON) -m venv $(TOOLS_VENV)
	$(TOOLS_VENV)/bin/python -m pip install -q -r requirements/tools.txt
	@touch $@

images:
	scripts/images.sh build

push:
	@test -n "$(REGISTRY)" || { echo "usage: make push REGISTRY=ghcr.io/you" >&2; exit 2; }
	scripts/images.sh push "$(REGISTRY)"

kind-up: venv
	scripts/cluster/kind-up.sh

kind-demo: venv
	scripts/cluster/kind-demo.sh

kind-down:
	scripts/cluster/kind-down.sh

minikube-up: venv
	scripts/cluster/minikube-up.sh

minikube-down:
	scripts/cluster/minikube-down.sh

manifests-check: venv tools
	scripts/cluster/manifests-check.sh

# --- the training pipeline (components/, pipelines/) ---------------------------------------------
.PHONY: compile
# IR YAML to upload in the Kubeflow UI (GPU pool settings: `recs pipeline compile --option KEY=VALUE`).
compile: venv
	$(RECS) pipeline compile -o reverse_recommendation_training.yaml
