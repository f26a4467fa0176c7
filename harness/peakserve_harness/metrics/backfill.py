"""Recorded request-rate history in a real Prometheus, written before it starts.

The predictive floor reads a week and more of ``sum(rate(nv_inference_request_success{...}[5m]))``
from Prometheus. A test cannot wait a week, so this module writes that history as it would have been
scraped: Triton's counter ``nv_inference_request_success`` of fake pods (``namespace``, ``pod``
matching the Deployment's pod names, ``model``), one sample a minute, the counter growing by
rate x dt, in OpenMetrics text. Debian's ``promtool tsdb create-blocks-from openmetrics`` (beside
the ``prometheus`` binary the harness runs) turns it into TSDB blocks in the data directory of a
:class:`~.prometheus.PrometheusProcess` that has not started yet. Started with a retention longer than
the history (``retention="10d"``), Prometheus then answers range queries over it like any other data.

What works with Prometheus 2.42 (Debian bookworm): the history may end at "now". Overlapping
blocks are always allowed since 2.39 (no ``--storage.tsdb.allow-overlapping-blocks``), and a block
whose end is the present only moves the head's lower bound to its end, so nothing older may be
appended afterwards (nothing is: live scrapes are newer). The end must not lie in the future, or
live samples of the same time range would be rejected as out of bounds. Retention counts from the
newest block's end: with the harness default of 1 h, Prometheus would delete the history at start.

``python -m peakserve_harness.metrics.backfill --namespace NS --days 8 DIR`` writes a daily-peak
history into ``DIR/tsdb`` (the layout PrometheusProcess(workdir=DIR) uses).
"""

from __future__ import annotations

import math
import random
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Mapping, Sequence

from .prometheus import PROMETHEUS

METRIC = "nv_inference_request_success"
DAY = 86400.0
SAMPLE_SECONDS = 60             # one sample a minute: rate(...[5m]) always sees five

RateFn = Callable[[float], float]   # requests/s at epoch second t


class BackfillError(RuntimeError):
    pass


def promtool_path(prometheus_binary: Path = PROMETHEUS) -> Path:
    """``promtool`` beside the prometheus binary (Debian installs both into /usr/bin)."""
    beside = Path(prometheus_binary).with_name("promtool")
    if beside.exists():
        return beside
    found = shutil.which("promtool")
    if found:
        return Path(found)
    raise BackfillError(f"promtool is missing (looked beside {prometheus_binary} and on PATH): "
                        "install Debian's prometheus package (`make tools`)")


# ---------------------------------------------------------------------------- request-rate shapes
@dataclass(frozen=True)
class DailyPeak:
    """``base`` requests/s, and ``peak`` requests/s for ``half_width_s`` either side of one time of day
    (``center``, epoch seconds: its time of day repeats every day), linear ramps of ``ramp_s`` around
    it. ``noise`` multiplies each 5-minute bucket by a deterministic factor in [1 - noise, 1 + noise];
    ``daily_growth`` multiplies each day by (1 + growth) over the day before."""

    center: float
    base: float = 20.0
    peak: float = 90.0
    half_width_s: float = 5400.0
    ramp_s: float = 600.0
    noise: float = 0.05
    daily_growth: float = 0.0
    seed: int = 0

    def __call__(self, t: float) -> float:
        offset = (t - self.center) % DAY
        distance = min(offset, DAY - offset)            # seconds from the nearest daily center
        if distance <= self.half_width_s:
            level = self.peak
        elif distance >= self.half_width_s + self.ramp_s:
            level = self.base
        else:
            level = self.peak + (self.base - self.peak) * (distance - self.half_width_s) / self.ramp_s
        growth = (1.0 + self.daily_growth) ** ((t - self.center) / DAY)
        bucket = int(t // 300)
        jitter = 1.0 + self.noise * (2.0 * random.Random(bucket * 1_000_003 + self.seed).random() - 1.0)
        return max(0.0, level * growth * jitter)


# ---------------------------------------------------------------------------- OpenMetrics
def _labels(labels: Mapping[str, str]) -> str:
    def esc(v: str) -> str:
        return v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return "{" + ",".join(f'{k}="{esc(str(v))}"' for k, v in sorted(labels.items())) + "}"


def counter_samples(rate: RateFn, start: float, end: float, step: float = SAMPLE_SECONDS,
                    initial: float = 0.0) -> list[tuple[float, float]]:
    """``[(t, counter)]`` at start, start + step, ... <= end: the cumulative sum of rate x dt
    (the rate at the middle of each interval), whole requests as Triton counts them."""
    t, total, out = float(start), float(initial), []
    while t <= end + 1e-9:
        out.append((t, math.floor(total)))
        total += rate(t + step / 2) * step
        t += step
    return out


def write_openmetrics(path: Path, series: Sequence[tuple[Mapping[str, str], Iterable[tuple[float, float]]]],
                      metric: str = METRIC) -> int:
    """Write the series (labels, [(t, value)]) as one OpenMetrics counter family; the sample count.

    The family is typed ``unknown``: an OpenMetrics ``counter`` must carry the ``_total`` suffix,
    and Triton's counter has none; the TSDB stores no type anyway, and rate() does not need one."""
    count = 0
    with open(path, "w") as f:
        f.write(f"# HELP {metric} Number of successful inference requests, all batch sizes\n")
        f.write(f"# TYPE {metric} unknown\n")
        for labels, samples in series:
            lab = _labels(labels)
            for t, value in samples:
                f.write(f"{metric}{lab} {value:.17g} {t:.3f}\n")
                count += 1
        f.write("# EOF\n")
    return count


def create_blocks(openmetrics: Path, tsdb_dir: Path, promtool: Path | None = None,
                  timeout: float = 300) -> list[Path]:
    """``promtool tsdb create-blocks-from openmetrics FILE DIR``; the block directories it made.

    promtool 2.42 has no ``--max-block-duration`` (2.45 added it): it cuts two-hour blocks, ~100 for
    eight days, which Prometheus compacts into larger ones in the background after it starts."""
    tool = str(promtool or promtool_path())
    tsdb_dir = Path(tsdb_dir)
    tsdb_dir.mkdir(parents=True, exist_ok=True)
    before = {p.name for p in tsdb_dir.iterdir()}
    argv = [tool, "tsdb", "create-blocks-from", "openmetrics", "--quiet", str(openmetrics), str(tsdb_dir)]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise BackfillError(f"{' '.join(argv)} failed ({proc.returncode}): {proc.stderr.strip()[-2000:]}")
    made = sorted(p for p in tsdb_dir.iterdir() if p.name not in before and (p / "meta.json").exists())
    if not made:
        raise BackfillError(f"promtool made no block in {tsdb_dir}: {proc.stdout.strip()} {proc.stderr.strip()}")
    return made


@dataclass(frozen=True)
class Backfilled:
    start: float
    end: float
    samples: int
    blocks: list[Path]
    pods: list[str]


def backfill_request_history(tsdb_dir: Path, namespace: str, pods: Sequence[str], rate: RateFn, *,
                             days: float = 8.0, end: float | None = None, model: str = "ranker",
                             step: float = SAMPLE_SECONDS, workdir: Path | None = None,
                             promtool: Path | None = None) -> Backfilled:
    """``days`` of ``nv_inference_request_success`` up to ``end`` (default: now), the total ``rate``
    split evenly over ``pods``, as blocks in ``tsdb_dir`` (a Prometheus data dir, before it starts)."""
    now = time.time()
    end = min(now, end if end is not None else now)
    end = math.floor(end / step) * step
    start = end - days * DAY
    share = 1.0 / len(pods)
    series = [({"namespace": namespace, "pod": pod, "model": model, "version": "1", "job": "triton"},
               counter_samples(lambda t: rate(t) * share, start, end, step, initial=1000.0 * i))
              for i, pod in enumerate(pods)]
    workdir = Path(workdir) if workdir else Path(tsdb_dir).parent
    workdir.mkdir(parents=True, exist_ok=True)
    text = workdir / f"history-{namespace}.om"
    count = write_openmetrics(text, series)
    blocks = create_blocks(text, tsdb_dir, promtool)
    text.unlink(missing_ok=True)
    return Backfilled(start, end, count, blocks, list(pods))


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m peakserve_harness.metrics.backfill", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dir", type=Path, help="a PrometheusProcess workdir (blocks go into DIR/tsdb)")
    parser.add_argument("--namespace", required=True)
    parser.add_argument("--pod", action="append", default=None, help="fake pod name (repeatable)")
    parser.add_argument("--days", type=float, default=8.0)
    parser.add_argument("--base", type=float, default=20.0)
    parser.add_argument("--peak", type=float, default=90.0)
    args = parser.parse_args(argv)
    pods = args.pod or ["ranker-7d9f8c6b5-abcde"]
    done = backfill_request_history(args.dir / "tsdb", args.namespace, pods,
                                    DailyPeak(center=time.time(), base=args.base, peak=args.peak), days=args.days)
    print(f"{done.samples} samples, {len(done.blocks)} blocks, {done.start:.0f}..{done.end:.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
