"""Where the harness caches what it builds or installs: outside the repository, keyed by version."""

from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    return Path(os.environ.get("PEAKSERVE_CACHE", Path.home() / ".cache" / "peakserve"))
