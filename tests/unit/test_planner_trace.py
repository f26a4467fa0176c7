"""plan.trace: the CSV format and the synthetic Singles' Day generator."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pytest

from peakserve.planner.trace import SINGLES_DAY_COMMENT, Trace, dumps, load, loads, singles_day

SHIPPED = Path(__file__).resolve().parents[2] / "traces" / "singles-day.csv"


def minute(trace: Trace, offset_min: float) -> float:
    return float(trace.rate_at(offset_min * 60.0))


def test_generator_is_deterministic_and_the_shipped_file_is_current():
    a, b = singles_day(), singles_day()
    assert np.array_equal(a.rps, b.rps) and np.array_equal(a.t, b.t)
    assert not np.array_equal(a.rps, singles_day(seed=7).rps)
    assert SHIPPED.read_text() == dumps(a, comment=SINGLES_DAY_COMMENT)


def test_tenfold_step_at_the_announced_minute():
    trace = load(SHIPPED)
    start = trace.announced_s / 60.0
    assert start == 8 * 60  # 2025-11-11 00:00 in a trace starting 2025-11-10 16:00
    before = minute(trace, start - 1)
    assert minute(trace, start) < 1.1 * before  # the step starts at the announced minute
    assert 9.0 <= minute(trace, start + 2) / before <= 11.0  # tenfold within two minutes
    assert minute(trace, start + 1) > 4 * before  # ramping
    assert np.argmax(trace.rps) in range(int(start), int(start) + 10)
    # ... and decays over hours, not minutes.
    assert minute(trace, start + 60) > 5 * before
    assert minute(trace, start + 360) < 2 * before


def test_unannounced_threefold_flash_spike_a_few_minutes_wide():
    trace = load(SHIPPED)
    spike = trace.offset_of(trace.meta["unannounced"]) / 60.0
    assert spike > trace.announced_s / 60.0 + 360  # well after the promotion step
    before = minute(trace, spike - 1)
    high = [m for m in range(int(spike) - 5, int(spike) + 15) if minute(trace, m) > 2.5 * before]
    assert 2.7 <= max(minute(trace, m) for m in high) / before <= 3.3
    assert 3 <= len(high) <= 8
    assert minute(trace, spike + 10) < 1.2 * before


def test_daily_shape_has_an_evening_peak_and_a_night_trough():
    trace = singles_day(step_factor=1.0, flash_factor=1.0, noise=0.0)
    rates = {h: minute(trace, (h - 16) % 24 * 60) for h in (21, 4, 12)}
    assert rates[21] > rates[12] > rates[4]
    assert rates[4] < 0.35 * rates[21]


def test_csv_round_trip_in_minutes_and_seconds(tmp_path):
    trace = singles_day(hours=2, announced=singles_day().start.replace(hour=17))
    for unit in ("minute", "second"):
        back = loads(dumps(trace, unit=unit))
        assert np.allclose(back.t, trace.t) and np.allclose(back.rps, trace.rps, atol=0.05)
        assert back.start == trace.start and back.announced_s == trace.announced_s
    text = "# note without a key\nsecond,requests_per_second\n0,10\n30,20\n"
    plain = loads(text)
    assert plain.start is None and plain.announced_s is None
    assert plain.rate_at(15.0) == pytest.approx(15.0)
    assert plain.duration_s == 60.0
    assert plain.offset_of("2") == 120.0


def test_offsets_from_iso_and_clock_times():
    trace = load(SHIPPED)
    assert trace.offset_of("2025-11-11T00:00:00+08:00") == trace.announced_s
    assert trace.offset_of("2025-11-10T16:00:00Z") == 8 * 3600.0  # 00:00 CST
    assert trace.offset_of("00:00") == trace.announced_s
    assert trace.offset_of("11:00") == trace.offset_of(trace.meta["unannounced"])


def test_offsets_of_moments():
    trace = load(SHIPPED)
    utc = datetime(2025, 11, 10, 16, 0, tzinfo=timezone.utc)
    assert trace.offset_at(utc) == trace.offset_at(datetime(2025, 11, 11, 0, 0)) == trace.announced_s
    assert trace.offset_at(utc - timedelta(hours=9)) == -3600.0  # before the trace
    with pytest.raises(ValueError, match="no start time"):
        loads("minute,requests_per_second\n0,1\n1,2\n").offset_at(utc)


@pytest.mark.parametrize("text", [
    "hour,requests_per_second\n0,1\n1,2\n",
    "minute,requests_per_second\n0,1\n",
    "minute,requests_per_second\n0,1\n0,2\n",
    "minute,requests_per_second\n0,1\n1,-2\n",
    "minute,requests_per_second\n0,1\n1,x\n",
])
def test_bad_traces_are_refused(text):
    with pytest.raises(ValueError):
        loads(text)
