"""A progress line for long builds, and subprocesses whose output feeds it and a log file.

On a terminal the line is rewritten in place; otherwise (CI, a pipe) a line is printed at most every
``interval`` seconds, so a log shows the build moving without one line per file.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Sequence


class Progress:
    def __init__(self, what: str, stream=None, interval: float = 5.0):
        self.what, self.stream, self.interval = what, stream or sys.stderr, interval
        self.t0 = time.monotonic()
        self._last = 0.0
        self._tty = hasattr(self.stream, "isatty") and self.stream.isatty()

    def elapsed(self) -> float:
        return time.monotonic() - self.t0

    def _line(self, msg: str) -> str:
        s = int(self.elapsed())
        return f"[images {s // 60}:{s % 60:02d}] {self.what}: {msg}"

    def update(self, msg: str, force: bool = False) -> None:
        """A transient status (rate-limited when not on a terminal)."""
        now = time.monotonic()
        if self._tty:
            self.stream.write("\r\033[K" + self._line(msg)[:160])
            self.stream.flush()
        elif force or now - self._last >= self.interval:
            self._last = now
            print(self._line(msg)[:200], file=self.stream, flush=True)

    def step(self, msg: str) -> None:
        """A milestone: always printed on a line of its own."""
        if self._tty:
            self.stream.write("\r\033[K")
        print(self._line(msg), file=self.stream, flush=True)
        self._last = time.monotonic()


class CommandFailed(RuntimeError):
    """A build command failed; the message has the command and the tail of its output."""


def run(cmd: Sequence[str], progress: Progress, log: Path, *, timeout: float = 1800,
        label: str = "", env: dict[str, str] | None = None, cwd: Path | None = None) -> str:
    """Run ``cmd``, appending its output to ``log`` and showing its latest line; return its output."""
    log.parent.mkdir(parents=True, exist_ok=True)
    label = label or Path(cmd[0]).name
    progress.step(f"$ {' '.join(map(str, cmd))}"[:400])
    lines: list[str] = []
    deadline = time.monotonic() + timeout
    with open(log, "a") as fh:
        fh.write(f"\n$ {' '.join(map(str, cmd))}\n")
        proc = subprocess.Popen([str(c) for c in cmd], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, text=True, errors="replace", env=env, cwd=cwd)
        assert proc.stdout is not None
        for line in proc.stdout:
            fh.write(line)
            lines.append(line)
            if line.strip():
                progress.update(f"{label}: {line.strip()}")
            if time.monotonic() > deadline:
                proc.kill()
                break
        code = proc.wait()
    if code != 0:
        tail = "".join(lines[-40:])
        raise CommandFailed(f"{' '.join(map(str, cmd))} exited with {code} (log {log}):\n{tail}")
    return "".join(lines)
