"""Pinned versions of the local control plane. Bump them here and nowhere else."""

KUBERNETES = "v1.34.4"
ETCD = "v3.6.16"
KWOK = "v0.7.0"
