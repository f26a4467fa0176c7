"""Traffic traces: request rate over time, as CSV, and a synthetic Singles' Day generator.

CSV format (what `traces/*.csv` hold):

    # name: singles-day
    # start: 2025-11-10T16:00:00+08:00       when offset 0 is (ISO 8601, optional)
    # announced: 2025-11-11T00:00:00+08:00   the announced promotion start (optional)
    # <any key>: <value>                     more metadata, kept as strings
    minute,requests_per_second
    0,612.4
    1,615.0

The first column is the offset from `start` in minutes (header `minute`) or seconds (header
`second`); rows are in increasing order. `requests_per_second` is the arrival rate at that
instant; between rows the rate is interpolated linearly, and the last row's rate holds for
one more row spacing (so a 1440-row minute trace lasts 24 hours).
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np

RATE_COLUMN = "requests_per_second"
UNITS = {"minute": 60.0, "second": 1.0}


@dataclass
class Trace:
    """Arrival rate `rps[i]` at `t[i]` seconds after `start`."""

    t: np.ndarray
    rps: np.ndarray
    start: datetime | None = None
    announced_s: float | None = None
    meta: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.t = np.asarray(self.t, dtype=float)
        self.rps = np.asarray(self.rps, dtype=float)
        if self.t.ndim != 1 or self.t.shape != self.rps.shape or len(self.t) < 2:
            raise ValueError("a trace needs at least two (time, rate) rows")
        if np.any(np.diff(self.t) <= 0):
            raise ValueError("trace times must increase")
        if np.any(self.rps < 0) or not np.all(np.isfinite(self.rps)):
            raise ValueError("request rates must be finite and >= 0")

    @property
    def duration_s(self) -> float:
        return float(self.t[-1] + (self.t[-1] - self.t[-2]))

    def rate_at(self, seconds) -> np.ndarray:
        """Rate at these offsets (linear between rows, last row held)."""
        return np.interp(seconds, self.t, self.rps)

    def resample(self, dt: float) -> tuple[np.ndarray, np.ndarray]:
        """(times, rates) every dt seconds over the whole trace."""
        times = np.arange(0.0, self.duration_s, dt)
        return times, self.rate_at(times)

    def peak_rps(self) -> float:
        return float(self.rps.max())

    def at(self, seconds: float) -> datetime | None:
        return self.start + timedelta(seconds=seconds) if self.start else None

    def offset_of(self, when: str) -> float:
        """Seconds from start to `when`: an ISO 8601 time (a naive one is taken in start's
        zone), HH:MM (its first occurrence at or after start) or a bare number of minutes."""
        when = when.strip()
        try:
            return float(when) * 60.0
        except ValueError:
            pass
        if self.start is None:
            raise ValueError(f"{when!r}: the trace has no start time; give the offset in minutes")
        if len(when) <= 8 and ":" in when:  # HH:MM[:SS]
            clock = datetime.strptime(when, "%H:%M:%S" if when.count(":") == 2 else "%H:%M").time()
            candidate = datetime.combine(self.start.date(), clock, tzinfo=self.start.tzinfo)
            if candidate < self.start:
                candidate += timedelta(days=1)
            return (candidate - self.start).total_seconds()
        return self.offset_at(datetime.fromisoformat(when))

    def offset_at(self, moment: datetime) -> float:
        """Seconds from start to `moment` (a naive one is taken in start's zone)."""
        if self.start is None:
            raise ValueError("the trace has no start time")
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=self.start.tzinfo)
        return (moment - self.start).total_seconds()


def _parse_time(value: str) -> datetime:
    moment = datetime.fromisoformat(value.strip())
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def loads(text: str) -> Trace:
    meta: dict[str, str] = {}
    rows: list[str] = []
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped:
            continue
        if stripped.startswith("#"):
            key, sep, value = stripped[1:].partition(":")
            if sep and key.strip() and " " not in key.strip():
                meta[key.strip()] = value.strip()
            continue
        rows.append(stripped)
    reader = csv.reader(io.StringIO("\n".join(rows)))
    header = [h.strip().lower() for h in next(reader, [])]
    if len(header) < 2 or header[0] not in UNITS or header[1] != RATE_COLUMN:
        raise ValueError(f"trace header must be 'minute,{RATE_COLUMN}' or 'second,{RATE_COLUMN}', got {header}")
    unit = UNITS[header[0]]
    t, rps = [], []
    for number, row in enumerate(reader, start=2):
        try:
            t.append(float(row[0]) * unit)
            rps.append(float(row[1]))
        except (IndexError, ValueError):
            raise ValueError(f"trace row {number}: expected two numbers, got {row}") from None
    start = _parse_time(meta["start"]) if "start" in meta else None
    trace = Trace(np.array(t), np.array(rps), start=start, meta=meta)
    if "announced" in meta:
        trace.announced_s = trace.offset_of(meta["announced"])
    return trace


def load(path: str | Path) -> Trace:
    return loads(Path(path).read_text())


def dumps(trace: Trace, unit: str = "minute", comment: str | None = None) -> str:
    scale = UNITS[unit]
    out = io.StringIO()
    if comment:
        for line in comment.strip().splitlines():
            out.write(f"# {line}\n")
    meta = dict(trace.meta)
    if trace.start is not None:
        meta["start"] = trace.start.isoformat()
    if trace.announced_s is not None and trace.start is not None:
        meta["announced"] = (trace.start + timedelta(seconds=trace.announced_s)).isoformat()
    for key, value in meta.items():
        out.write(f"# {key}: {value}\n")
    out.write(f"{unit},{RATE_COLUMN}\n")
    for t, r in zip(trace.t, trace.rps):
        offset = t / scale
        out.write(f"{int(offset) if float(offset).is_integer() else round(offset, 3)},{r:.1f}\n")
    return out.getvalue()


def save(trace: Trace, path: str | Path, unit: str = "minute", comment: str | None = None) -> None:
    Path(path).write_text(dumps(trace, unit, comment))


# --- the synthetic Singles' Day trace --------------------------------------------------------

CST = timezone(timedelta(hours=8), "CST")
# Share of the daily peak by local hour: night trough around 04:00-05:00, lunch bump,
# evening peak around 21:30. Interpolated linearly, then smoothed.
DAILY_SHAPE = ((0, 0.72), (2, 0.45), (4, 0.26), (5, 0.25), (7, 0.38), (9, 0.62), (11, 0.78),
               (12.5, 0.85), (14, 0.76), (16, 0.74), (18, 0.80), (20, 0.93), (21.5, 1.0),
               (23, 0.88), (24, 0.72))


def daily_shape(hour_of_day: np.ndarray) -> np.ndarray:
    hours, levels = zip(*DAILY_SHAPE)
    return np.interp(np.mod(hour_of_day, 24.0), hours, levels)


def singles_day(*, seed: int = 1111, start: datetime = datetime(2025, 11, 10, 16, 0, tzinfo=CST),
                hours: int = 24, daily_peak_rps: float = 1000.0,
                announced: datetime = datetime(2025, 11, 11, 0, 0, tzinfo=CST),
                step_factor: float = 10.0, ramp_minutes: int = 2, decay_minutes: float = 150.0,
                flash_at: datetime = datetime(2025, 11, 11, 11, 0, tzinfo=CST),
                flash_factor: float = 3.0, flash_minutes: int = 5, noise: float = 0.02) -> Trace:
    """A deterministic minute-by-minute Singles'-Day-like trace.

    * Baseline: DAILY_SHAPE x daily_peak_rps, with multiplicative noise (seeded).
    * Announced step: at `announced` the rate ramps linearly over `ramp_minutes` to
      step_factor x the baseline, then the uplift decays: 1 + (factor - 1) * exp(-m / decay).
    * Unannounced flash spike at `flash_at`: one minute up to flash_factor x, held
      `flash_minutes - 1` minutes, then back down over two minutes.
    """
    minutes = np.arange(hours * 60, dtype=float)
    local_hour = (start.hour + start.minute / 60.0) + minutes / 60.0
    base = daily_shape(local_hour)
    kernel = np.ones(31) / 31.0  # half-hour smoothing of the interpolated shape
    base = np.convolve(np.pad(base, 15, mode="edge"), kernel, mode="valid") * daily_peak_rps

    step_minute = (announced - start).total_seconds() / 60.0
    since = minutes - step_minute
    uplift = np.ones_like(minutes)
    ramping = (since >= 0) & (since < ramp_minutes)
    uplift[ramping] = 1.0 + (step_factor - 1.0) * since[ramping] / ramp_minutes
    after = since >= ramp_minutes
    uplift[after] = 1.0 + (step_factor - 1.0) * np.exp(-(since[after] - ramp_minutes) / decay_minutes)

    flash_minute = (flash_at - start).total_seconds() / 60.0
    profile = {0: 1.0, 1: flash_factor}
    profile.update({k: flash_factor for k in range(2, flash_minutes + 1)})
    profile.update({flash_minutes + 1: 1.0 + (flash_factor - 1.0) / 2.0, flash_minutes + 2: 1.0})
    spike = np.ones_like(minutes)
    for k, factor in profile.items():
        index = int(round(flash_minute)) + k
        if 0 <= index < len(minutes):
            spike[index] = factor

    rng = np.random.default_rng(seed)
    wiggle = np.clip(1.0 + noise * rng.standard_normal(len(minutes)), 0.9, 1.1)
    rps = np.round(base * uplift * spike * wiggle, 1)
    meta = {"name": "singles-day", "unannounced": flash_at.isoformat(), "seed": str(seed)}
    trace = Trace(minutes * 60.0, rps, start=start, meta=meta)
    trace.announced_s = step_minute * 60.0
    return trace


SINGLES_DAY_COMMENT = """\
peakserve traffic trace: a synthetic Singles' Day (11.11), generated by
peakserve.planner.trace.singles_day(); to regenerate see traces/README.md.
Daily-shaped baseline (peak 1000 rps at 21:30), a tenfold step at the announced midnight start
(2-minute ramp, decaying over hours) and an unannounced threefold flash spike at 11:00."""


def write_singles_day(path: str | Path) -> Trace:
    trace = singles_day()
    save(trace, path, comment=SINGLES_DAY_COMMENT)
    return trace



# --- a synthetic multi-day service trace ---------------------------------------------------------

def service_days(*, seed: int = 7, days: int = 8, start: datetime = datetime(2025, 11, 3, 0, 0, tzinfo=CST),
                 daily_peak_rps: float = 1000.0, weekend_factor: float = 0.8, growth_per_day: float = 0.01,
                 noise: float = 0.08, noise_minutes: float = 10.0, daily_spikes: int = 3,
                 spike_factor: tuple[float, float] = (1.5, 3.0), spike_minutes: tuple[int, int] = (5, 30),
                 bursts_per_day: float = 0.25, burst_factor: tuple[float, float] = (1.3, 2.0),
                 burst_minutes: tuple[int, int] = (2, 10)) -> Trace:
    """A deterministic minute-by-minute multi-day trace with what real service traffic has and the Singles'
    Day trace lacks: days that repeat but not exactly (weekends lower, slow growth), correlated noise
    (log-AR(1), `noise` standard deviation, `noise_minutes` correlation time), `daily_spikes` that recur at
    the same minute every day (a push campaign, a batch job; each a factor and a length drawn once, the
    factor varying +-10% from day to day) and rare unannounced bursts (Poisson, `bursts_per_day`).
    No announced step."""
    rng = np.random.default_rng(seed)
    minutes = np.arange(days * 1440, dtype=float)
    moment_hours = start.hour + start.minute / 60.0 + minutes / 60.0
    base = daily_shape(moment_hours)
    weekday = (start.weekday() + np.floor(moment_hours / 24.0)) % 7
    base = base * np.where(weekday >= 5, weekend_factor, 1.0) * (1.0 + growth_per_day * minutes / 1440.0)
    phi = math.exp(-1.0 / noise_minutes)
    shocks = rng.standard_normal(len(minutes)) * noise * math.sqrt(1 - phi * phi)
    log_noise = np.zeros(len(minutes))
    for i in range(1, len(minutes)):
        log_noise[i] = phi * log_noise[i - 1] + shocks[i]
    factor = np.exp(log_noise)
    for _ in range(daily_spikes):
        at = int(rng.integers(0, 1440))
        length = int(rng.integers(spike_minutes[0], spike_minutes[1] + 1))
        height = rng.uniform(*spike_factor)
        for day in range(days):
            begin = day * 1440 + at
            factor[begin:begin + length] *= height * rng.uniform(0.9, 1.1)
    for _ in range(rng.poisson(bursts_per_day * days)):
        at = int(rng.integers(0, len(minutes)))
        length = int(rng.integers(burst_minutes[0], burst_minutes[1] + 1))
        factor[at:at + length] *= rng.uniform(*burst_factor)
    rps = np.round(base * factor * daily_peak_rps, 1)
    meta = {"name": "service-days", "seed": str(seed)}
    return Trace(minutes * 60.0, rps, start=start, meta=meta)
