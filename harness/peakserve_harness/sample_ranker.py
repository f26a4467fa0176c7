"""The sample ranker (model_repo/ranker) as tests build it: its trained build source, cached by the code that
trains it, and examples/ranker-build.yaml's spec built fp32 only and served by one CPU instance."""

from __future__ import annotations

import copy
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

from peakserve.api.validation import parse_spec

from .cache import cache_root

REPO_ROOT = Path(__file__).resolve().parents[2]
SAMPLE = REPO_ROOT / "model_repo" / "ranker"


def _digest() -> str:
    h = hashlib.sha256()
    for name in ("train.py", "model.py"):
        h.update((SAMPLE / name).read_bytes())
    return h.hexdigest()[:16]


def trained_source(*args: str) -> Path:
    """A trained build source of train.py with ``args``: `make samples`' output when current (no args), else
    cached by the digest of train.py and model.py, trained once (atomically) if missing (about 2 minutes on
    2 cores)."""
    if not args:
        made = SAMPLE / "inputs" / "train_report.json"
        newest_code = max((SAMPLE / n).stat().st_mtime for n in ("train.py", "model.py"))
        if made.is_file() and made.stat().st_mtime >= newest_code:
            return made.parent
    name = "-".join(["ranker", *(a.lstrip("-") for a in args), _digest()])
    final = cache_root() / "samples" / name
    if (final / "train_report.json").is_file():
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=final.parent))
    try:
        subprocess.run([sys.executable, str(SAMPLE / "train.py"), "--out", str(staging), *args], check=True,
                       capture_output=True, timeout=600)
        try:
            os.rename(staging, final)
        except OSError:  # trained by someone else meanwhile
            if not (final / "train_report.json").is_file():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return final


def fp32_build_spec():
    """examples/ranker-build.yaml, built fp32 only (no candidates: no speed gate) and served by one CPU instance."""
    body = copy.deepcopy(yaml.safe_load((REPO_ROOT / "examples" / "ranker-build.yaml").read_text())["spec"])
    body["build"]["candidates"] = []
    body["serving"]["instanceGroups"] = [{"kind": "CPU", "count": 1}]
    return parse_spec(body)
