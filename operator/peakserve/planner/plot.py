"""One PNG: traffic, replicas per policy, and latency against the SLO, on a shared time axis."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from .simulate import PolicyResult
from .trace import Trace

COLORS = {"static": "#7f7f7f", "reactive": "#d62728", "queue": "#9467bd", "signal": "#ff7f0e",
          "schedule": "#17becf", "predictive": "#1f77b4", "oracle": "#2ca02c"}
STYLES = {"static": "--", "signal": (0, (4, 1))}
LATENCY_CLIP_MS = 1e5


def plot(path: str | Path, trace: Trace, results: Sequence[PolicyResult], *, slo_ms: float,
         announced_s: float | None = None, title: str = "peakserve plan") -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.dates as mdates
    import matplotlib.pyplot as plt

    def x_of(seconds: np.ndarray):
        if trace.start is None:
            return np.asarray(seconds) / 3600.0
        base = np.datetime64(trace.start.replace(tzinfo=None).isoformat(timespec="seconds"))
        return base + (np.asarray(seconds) * 1000).astype("timedelta64[ms]")

    fig, (ax_rps, ax_rep, ax_lat) = plt.subplots(3, 1, sharex=True, figsize=(15, 10),
                                                  gridspec_kw={"height_ratios": [1, 1.3, 1.3]})
    ax_rps.plot(x_of(trace.t), trace.rps, color="black", linewidth=1, label="demand")
    for r in results:
        if r.forecasts:  # each forecast is the peak of the window it was made for
            times = np.array([t for t, _ in r.forecasts])
            ax_rps.step(x_of(times), [p for _, p in r.forecasts], where="post", color=COLORS.get(r.name, "blue"),
                        linewidth=1, alpha=0.8, label=f"forecast peak of the next {r.forecast_window_s / 60:g} min")
    ax_rps.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    ax_rps.set_ylabel("requests/s")
    ax_rps.set_title(title, loc="left")

    for r in results:
        minutes = r.per_minute()
        x = x_of(np.array(minutes["minute"]) * 60.0)
        color = COLORS.get(r.name)
        style = STYLES.get(r.name, "-")
        ax_rep.step(x, minutes["replicas"], where="post", color=color, linewidth=1.3, linestyle=style,
                    zorder=5 if r.name == "static" else 2,
                    label=f"{r.label}\n{r.gpu_hours:.0f} GPU-h, {r.violation_minutes} min over the SLO")
        lat = np.clip(minutes["latencyMs"], None, LATENCY_CLIP_MS)
        ax_lat.plot(x, lat, color=color, linewidth=1, linestyle=style)
    ax_rep.set_ylabel("replicas (pods, incl. starting)")
    ax_rep.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    ax_lat.axhline(slo_ms, color="black", linestyle="--", linewidth=1, label=f"SLO {slo_ms:g} ms")
    ax_lat.set_yscale("log")
    ax_lat.set_ylabel("latency, worst of each minute (ms)")
    ax_lat.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)

    marks = []
    if announced_s is not None:
        marks.append((announced_s, "announced start"))
    if trace.start is not None and "unannounced" in trace.meta:
        try:
            marks.append((trace.offset_of(trace.meta["unannounced"]), "unannounced spike"))
        except ValueError:
            pass
    for seconds, text in marks:
        for ax in (ax_rps, ax_rep, ax_lat):
            ax.axvline(x_of(np.array([seconds]))[0], color="purple", linestyle=":", linewidth=1)
        ax_rps.annotate(text, (x_of(np.array([seconds]))[0], ax_rps.get_ylim()[1]), fontsize=8,
                        color="purple", xytext=(3, -12), textcoords="offset points")
    for ax in (ax_rps, ax_rep, ax_lat):
        ax.grid(True, alpha=0.3)
    if trace.start is not None:
        ax_lat.xaxis.set_major_formatter(mdates.DateFormatter("%m-%d %H:%M"))
        ax_lat.set_xlabel(f"local time ({trace.start.tzname() or trace.start.utcoffset()})")
    else:
        ax_lat.set_xlabel("hours from trace start")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
