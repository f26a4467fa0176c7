"""Pinned versions of the local control plane. Bump them here and nowhere else."""

KUBERNETES = "v1.34.4"
ETCD = "v3.6.16"
KWOK = "v0.7.0"
# The custom-metrics API server (custom.metrics.k8s.io) in front of Prometheus; v0.12.0 is the
# latest release on the module proxy and builds with Go 1.26.
PROMETHEUS_ADAPTER = "v0.12.0"
# Gateway API CRDs (standard channel), from the Go module's config/crd/standard; installed on request only.
GATEWAY_API = "v1.6.3"
# KEDA (operator, external.metrics.k8s.io server, webhooks) from github.com/kedacore/keda/v2; built on request
# (`make tools`, peakserve_harness.controlplane.keda_binaries) and run by controlplane/keda.py.
KEDA = "v2.21.0"
