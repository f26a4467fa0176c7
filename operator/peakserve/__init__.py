"""peakserve: a Kubernetes operator that serves models on Triton Inference Server."""

__version__ = "0.1.0"
