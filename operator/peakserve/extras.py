"""Optional extras: the commands that need them import them only when run, and say which one is missing.

The operator image installs peakserve without extras, so `run`, `render`, `crd`, `crds` and `docs`
import none of these modules. pyproject.toml's optional-dependencies list the same extras
(tests/unit/test_extras.py keeps the two in step).
"""

from __future__ import annotations

import importlib.util

# extra -> the top-level modules its commands import
EXTRAS: dict[str, tuple[str, ...]] = {
    "build": ("torch", "onnx", "onnxruntime", "onnxscript", "numpy"),
    "client": ("tritonclient", "numpy"),
    "plan": ("matplotlib", "numpy"),
}


class MissingExtra(Exception):
    def __init__(self, command: str, extra: str, module: str):
        super().__init__(f"peakserve {command} needs the '{extra}' extra ({module} is not installed): "
                         f"pip install 'peakserve[{extra}]'")


def missing_module(extra: str) -> str | None:
    """The first module of `extra` that cannot be imported here, or None."""
    return next((m for m in EXTRAS[extra] if importlib.util.find_spec(m) is None), None)


def require(command: str, extra: str) -> None:
    module = missing_module(extra)
    if module:
        raise MissingExtra(command, extra, module)
