"""Why a build stops: one exception type with a machine-readable reason.

Every reason here is deterministic: the same spec, model and data fail the same way again,
so the build Job exits with `exit_code` and the operator does not retry it. Anything else
that escapes the build is a crash (exit 1), which a retry might cure.
"""

from __future__ import annotations

# One CamelCase word each; they end up in status.build.reason.
REASONS = (
    "InvalidSpec",              # the spec cannot be built as written
    "InvalidModel",             # the model file is missing, corrupt, or cannot be loaded
    "SignatureMismatch",        # the model's or data's tensors differ from spec.model.inputs/outputs
    "MissingCalibrationData",   # int8Static needs real calibration data; we never invent it
    "MissingEvaluationData",    # the gates need held-out data (and labels for a ranker)
    "DestinationUnwritable",    # the artifact store cannot be written
    "ExportMismatch",           # the fp32 ONNX export disagrees with torch beyond exportTolerance
    "GateFailed",               # no candidate passed and fp32 fallback is not allowed
)


class BuildError(Exception):
    """A build failure that retrying cannot fix. `reason` is one CamelCase word from REASONS."""

    exit_code = 3

    def __init__(self, reason: str, message: str, *, details: dict | None = None):
        if reason not in REASONS:
            raise ValueError(f"unknown build failure reason {reason!r}")
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.details = details or {}  # per-candidate figures when the gates decided (for the summary table)

    def __str__(self) -> str:
        return f"{self.reason}: {self.message}"
