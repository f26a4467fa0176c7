"""A small progress display on stderr: which step runs, how long it took, and loop counters.

A build takes seconds to many minutes; a silent Job log makes people kill it. Steps also record
their start time and duration, which the manifest keeps.
"""

from __future__ import annotations

import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import IO, Iterator


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


@dataclass
class StepRecord:
    name: str
    started: str
    seconds: float = 0.0
    ok: bool = True


class Counter:
    """A counter bar for a loop: redrawn in place on a terminal, printed once at the end in a log."""

    def __init__(self, progress: "Progress", title: str, total: int):
        self.progress, self.title, self.total, self.done = progress, title, max(total, 1), 0
        self._last_draw = 0.0

    def advance(self, n: int = 1) -> None:
        self.done = min(self.done + n, self.total)
        now = time.monotonic()
        # A terminal gets a live bar, at most ten redraws a second; a log file only the final line.
        if self.progress.live and (now - self._last_draw > 0.1 or self.done == self.total):
            self._last_draw = now
            self.progress.write("\r" + self._line(), end="")

    def close(self) -> None:
        if self.progress.live:
            self.progress.write("\r" + self._line())
        else:
            self.progress.write(self._line())

    def _line(self, width: int = 24) -> str:
        filled = int(width * self.done / self.total)
        return f"    {self.title} [{'#' * filled}{'.' * (width - filled)}] {self.done}/{self.total}"


class Progress:
    """Prints `-> step` / `ok step (1.2s)` lines; quiet=True prints nothing but still records timings."""

    def __init__(self, quiet: bool = False, stream: IO[str] | None = None):
        self.quiet = quiet
        self.stream = stream if stream is not None else sys.stderr
        self.live = not quiet and hasattr(self.stream, "isatty") and self.stream.isatty()
        self.steps: list[StepRecord] = []

    def write(self, text: str, end: str = "\n") -> None:
        if not self.quiet:
            print(text, end=end, file=self.stream, flush=True)

    def note(self, text: str) -> None:
        self.write(f"    {text}")

    @contextmanager
    def step(self, name: str) -> Iterator[StepRecord]:
        record = StepRecord(name=name, started=utc_now())
        self.steps.append(record)
        self.write(f"-> {name}")
        start = time.monotonic()
        try:
            yield record
        except BaseException:
            record.ok = False
            raise
        finally:
            record.seconds = round(time.monotonic() - start, 3)
            self.write(f"{'ok' if record.ok else 'FAILED'} {name} ({record.seconds:.1f}s)")

    @contextmanager
    def counter(self, title: str, total: int) -> Iterator[Counter]:
        bar = Counter(self, title, total)
        try:
            yield bar
        finally:
            bar.close()

    def timings(self) -> list[dict]:
        return [{"step": s.name, "started": s.started, "seconds": s.seconds, "ok": s.ok} for s in self.steps]
