#!/usr/bin/env bash
# make demo: local control plane -> operator -> examples/ranker.yaml -> objects and status.
set -euo pipefail
cd "$(dirname "$0")/.."
PEAKSERVE=.venv/bin/peakserve
DEV=.venv/bin/peakserve-dev
PY=.venv/bin/python
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "Local control plane (etcd, kube-apiserver, kube-controller-manager, kube-scheduler, KWOK)"
$DEV up
eval "$($DEV env)"
state_dir=$(dirname "$KUBECONFIG")
kubectl get nodes -L nvidia.com/gpu.product -L nvidia.com/gpu.count

step "CRD"
kubectl apply --server-side -f crds/
kubectl wait --for condition=established crd/modeldeployments.peakserve.io >/dev/null

step "Operator (peakserve run, logs in $state_dir/operator.log)"
if [ -f "$state_dir/operator.pid" ] && kill -0 "$(cat "$state_dir/operator.pid")" 2>/dev/null; then
  echo "already running (pid $(cat "$state_dir/operator.pid"))"
else
  setsid $PEAKSERVE run --health-address 127.0.0.1:18080 --metrics-address 127.0.0.1:19090 \
    >"$state_dir/operator.log" 2>&1 < /dev/null &
  echo $! >"$state_dir/operator.pid"
  for _ in $(seq 1 50); do curl -fsS http://127.0.0.1:18080/healthz >/dev/null 2>&1 && break; sleep 0.2; done
  echo "running (pid $(cat "$state_dir/operator.pid")), liveness http://127.0.0.1:18080/healthz, metrics http://127.0.0.1:19090/metrics"
fi

step "Local build runner (runs build Jobs' pods on this host; KWOK runs no containers; logs in $state_dir/builds.log)"
if [ -f "$state_dir/builds.pid" ] && kill -0 "$(cat "$state_dir/builds.pid")" 2>/dev/null; then
  echo "already running (pid $(cat "$state_dir/builds.pid"))"
else
  setsid $DEV builds >"$state_dir/builds.log" 2>&1 < /dev/null &
  echo $! >"$state_dir/builds.pid"
  echo "running (pid $(cat "$state_dir/builds.pid"))"
fi

step "Train the sample ranker (make samples) and put it on the model store"
make --no-print-directory samples
store="$state_dir/model-store"
mkdir -p "$store/sources"
rm -rf "$store/sources/ranker" && cp -r model_repo/ranker/inputs "$store/sources/ranker"
# examples/model-store.yaml with its hostPath pointed at this cluster's own directory
sed "s#/var/lib/peakserve/models#$store#" examples/model-store.yaml | kubectl apply -f -

step "kubectl apply -f examples/ranker-build.yaml: build (torch -> ONNX -> int8, gated) before any rollout"
kubectl apply -f examples/ranker-build.yaml
kubectl wait --for=condition=BuildSucceeded modeldeployment/ranker --timeout=600s
kubectl wait --for=condition=Ready modeldeployment/ranker --timeout=120s

step "The ModelDeployment"
kubectl get modeldeployments -o wide

step "The build: chosen candidate, gate figures, rejected candidates (status.build)"
kubectl get modeldeployment ranker -o jsonpath='{.status.build}' | $PY -m json.tool

step "Its children (owned by the ModelDeployment, applied server-side by field manager 'peakserve')"
kubectl get job,deployment,replicaset,pods,service,poddisruptionbudget,configmap -l app.kubernetes.io/managed-by=peakserve -o wide

step "Status conditions"
kubectl get modeldeployment ranker -o jsonpath='{range .status.conditions[*]}{.type}={.status} ({.reason}): {.message}{"\n"}{end}'

step "A model that asks for more GPUs than any A10 node has (examples/ranker-xl.yaml)"
kubectl apply -f examples/ranker-xl.yaml
for _ in $(seq 1 60); do
  reason=$(kubectl get modeldeployment ranker-xl -o jsonpath='{.status.conditions[?(@.type=="Ready")].reason}')
  [ "$reason" = "InsufficientGPU" ] && break; sleep 0.5
done
kubectl get modeldeployments -o wide
kubectl get modeldeployment ranker-xl -o jsonpath='{.status.conditions[?(@.type=="Ready")].message}{"\n"}'

step "Events"
kubectl get events --field-selector involvedObject.kind=ModelDeployment --sort-by=.lastTimestamp

step "A real request: the real tritonserver serves the built artifact (python backend running the same model.onnx)"
artifact=$(kubectl get modeldeployment ranker -o jsonpath='{.status.build.hash}')
$PY scripts/demo_request.py --repository "$store/artifacts/$artifact" --evaluation "$store/sources/ranker/evaluation.npz"

step "Safe rollouts: a canary promoted through its steps, and one rolled back by the probe comparison"
echo "(a real tritonserver behind each pod on the probed nodes; analysis Jobs run by the local job runner)"
$PY scripts/demo_rollouts.py

printf '\nThe cluster and operator keep running. Explore with:\n  eval "$(%s env)"; kubectl get mdep\nStop everything with: make dev-down\n' "$DEV"
