"""Why an analysis could not run: a side unreachable, the probe file missing, inputs that do not fit.

Not a verdict on the canary: `peakserve analyze` writes phase Failed, reason AnalysisError and
exits 3, and the operator decides what an analysis that could not run means for the rollout.
"""

from __future__ import annotations


class AnalysisError(Exception):
    """The analysis could not run; the message says why, for people."""
