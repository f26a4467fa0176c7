# peakserve: `make demo` shows the operator on a local control plane; `make test` runs every test.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PEAKSERVE := $(VENV)/bin/peakserve
STAMP := $(VENV)/.installed-stamp

.PHONY: help install tools test unit integration crds docs golden demo dev-up dev-down bench clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml harness/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]' -e ./harness
	touch $@

install: $(STAMP) ## create .venv and install peakserve with its test dependencies

tools: install ## build etcd, kube-* and KWOK from Go modules and fetch kubectl/helm (cached in ~/.cache/peakserve)
	$(PY) -m peakserve_harness.controlplane.binaries
	$(PY) -m peakserve_harness.controlplane.tools
	$(PY) -m peakserve_harness.metrics.prometheus install
	$(PY) -m peakserve_harness.triton.install

test: tools ## run the tests: unit, then integration against a real control plane (all but test-rollouts' and test-autoscaling's)
	$(PY) -m pytest -q -m "not real_pods and not autoscaling_loop and not faults and not real_node"

.PHONY: test-autoscaling
test-autoscaling: tools keda ## the closed loops: HPA (queue time vs request rate, side by side) and KEDA, on real tritonservers
	$(PY) -m pytest -q -m autoscaling_loop

.PHONY: test-faults
test-faults: tools ## the fault suite: operator kills, control-plane restarts, HA failover, upgrade with live objects, fuzzed specs
	$(PY) -m pytest -q -m faults tests/faults

.PHONY: test-real-node
test-real-node: tools ## a real worker node (kubelet, containerd, runc; root): host packages, its binaries, the images, then its tests
	$(PY) -m peakserve_harness.realnode.host_packages
	$(PY) -m peakserve_harness.realnode.binaries
	$(PY) -m peakserve_harness.images build all --out .dev/images
	$(PY) -m pytest -q -rA -m real_node tests/realnode

.PHONY: keda
keda: install ## build KEDA (operator, metrics server) from its Go module into ~/.cache/peakserve (cold: long)
	$(PY) -m peakserve_harness.controlplane.keda_binaries

.PHONY: test-rollouts
test-rollouts: tools ## the real-Triton suites: rollout scenarios under load, the probed-node pod agent (~8 min)
	$(PY) -m pytest -q -m real_pods

unit: install ## pure tests only: spec, rendering, decide tables, conditions, planner (no processes)
	$(PY) -m pytest -q tests/unit

integration: tools ## integration tests against the real control plane
	$(PY) -m pytest -q tests/integration

crds: install ## regenerate crds/ (and the chart's copy) from the spec models
	$(PEAKSERVE) crd --write crds/peakserve.io_modeldeployments.yaml
	cp crds/peakserve.io_modeldeployments.yaml charts/peakserve/crds/peakserve.io_modeldeployments.yaml

docs: install ## regenerate the README's CRD reference from the spec models
	$(PEAKSERVE) docs --readme README.md

golden: install ## regenerate the golden files (rendering, decide plans) after a deliberate change
	PEAKSERVE_UPDATE_GOLDEN=1 $(PY) -m pytest -q tests/unit/test_golden.py tests/unit/test_decide.py

dev-up: tools ## start the local control plane with simulated GPU nodes and install the CRD
	$(VENV)/bin/peakserve-dev up
	eval "$$($(VENV)/bin/peakserve-dev env)" && kubectl apply --server-side -f crds/ >/dev/null
	@echo 'Use it with: eval "$$($(VENV)/bin/peakserve-dev env)"'

dev-down: install ## stop the local control plane (and the demo operator)
	$(VENV)/bin/peakserve-dev down

demo: tools ## control plane + operator + build runner; build the sample ranker, roll it out, send a real request
	bash scripts/demo.sh

bench: tools ## reconcile benchmark: benchmarks/results/reconcile.{json,png} (figures go into BENCHMARKS.md)
	$(PY) -m pip install -q -e '.[test,bench]'
	$(PY) benchmarks/bench_reconcile.py

.PHONY: bench-build
bench-build: tools samples ## model build benchmark: fp32 vs int8 on CPU, Triton batching: benchmarks/results/build.{json,png}
	$(PY) -m pip install -q -e '.[test,bench]'
	$(PY) benchmarks/bench_build.py

.PHONY: samples
samples: install model_repo/ranker/inputs/train_report.json model_repo/encoder/inputs/train_report.json ## train the two sample models into model_repo/*/inputs (deterministic, < 1 min)

# train_report.json is written last: an interrupted training runs again.
model_repo/ranker/inputs/train_report.json: model_repo/ranker/train.py model_repo/ranker/model.py | $(STAMP)
	$(PY) model_repo/ranker/train.py --out model_repo/ranker/inputs

model_repo/encoder/inputs/train_report.json: model_repo/encoder/train.py model_repo/encoder/model.py | $(STAMP)
	$(PY) model_repo/encoder/train.py --out model_repo/encoder/inputs

.PHONY: bench-rollouts
bench-rollouts: tools ## rollout scenarios on real Triton pods: time to rollback, lowest Ready, failed requests
	PEAKSERVE_ROLLOUT_FIGURES=benchmarks/results/rollouts.json $(PY) -m pytest -q -s tests/integration/test_rollouts.py

.PHONY: plan
plan: install ## the policy comparison on both shipped traces: benchmarks/results/plan*/plan.{json,png}
	mkdir -p benchmarks/results/plan benchmarks/results/plan-service-days
	$(PEAKSERVE) plan --out benchmarks/results/plan | tee benchmarks/results/plan/plan.txt
	$(PEAKSERVE) plan --trace traces/service-days.csv --dt 5 --out benchmarks/results/plan-service-days \
		| tee benchmarks/results/plan-service-days/plan.txt

.PHONY: images
images: install ## operator and Triton images as OCI archives for `ctr images import` (root; debootstrap, buildah): .dev/images
	$(PY) -m peakserve_harness.images build all --out .dev/images

clean: ## remove the virtualenv (the binary cache in ~/.cache/peakserve stays)
	rm -rf $(VENV)
