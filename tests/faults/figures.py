"""The fault suite's figures, one key per fault, merged into benchmarks/results/faults.json so that the
note and BENCHMARKS.md quote what the last run measured."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from integration.cluster import ROOT

FIGURES = ROOT / "benchmarks" / "results" / "faults.json"


def record(key: str, figures: dict[str, Any]) -> None:
    data = json.loads(FIGURES.read_text()) if FIGURES.exists() else {}
    data[key] = {**figures, "recorded": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
                 "command": "make test-faults"}
    FIGURES.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
