"""Progress for people and for logs: a live bar on a terminal, plain timed lines everywhere else.

On a terminal (`stream.isatty()`) the bar is redrawn in place (a carriage return and the line, no colour
codes), at most 10 times a second. Anywhere else (a pipe, a file, CI, nohup, a job scheduler) there are
no control characters at all: one plain line every `interval` seconds (default 10) and on `finish`, e.g.

    oipgraph: 15/16 maps, 12:41 elapsed, ETA 2:05 (precursor screen 4096/19683 patterns)

The ETA is the caller's when it gives one (`update(..., eta=...)`: it knows what is planned), else the
rate so far: elapsed / (done - done at start) x (total - done).

Example:
    progress = Progress(total=128, unit="map", label="oipgraph")
    for done in range(1, 129):
        progress.update(done, stage="random")
    progress.finish()
"""

from __future__ import annotations

import math
import sys
import time
from typing import TextIO

BAR_WIDTH = 24
LIVE_REDRAW_SECONDS = 0.1
DEFAULT_LINE_SECONDS = 10.0


def format_seconds(seconds: float) -> str:
    """H:MM:SS or M:SS."""
    seconds = max(0, int(round(seconds)))
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{seconds:02d}" if hours else f"{minutes}:{seconds:02d}"


class Progress:
    """A progress report of `total` units of work: live on a terminal, plain timed lines otherwise.

    Attributes:
        live: Whether the bar is redrawn in place (the stream is a terminal).
    """

    def __init__(
        self,
        total: float,
        unit: str = "step",
        label: str = "",
        stream: TextIO | None = None,
        interval: float = DEFAULT_LINE_SECONDS,
        live: bool | None = None,
        enabled: bool = True,
    ):
        """Starts the clock.

        Args:
            total: Units of work in all (> 0).
            unit: What a unit is, singular ("map", "step", "chunk").
            label: Put before every plain line ("oipgraph").
            stream: Where to write; None for sys.stdout at each write.
            interval: Seconds between plain lines.
            live: Force the live bar (True) or plain lines (False); None: live on a terminal.
            enabled: False writes nothing (`verbose=False`).
        """
        self.total = max(float(total), 1e-9)
        self.unit, self.label, self._stream = unit, label, stream
        self.interval, self.enabled = float(interval), enabled
        self.live = self._is_terminal() if live is None else live
        self.started = time.monotonic()
        self.done = self.start_done = 0.0
        self._first_update = True
        self._last_write = -math.inf
        self._width = 0
        self.stage, self.eta = "", None

    @property
    def stream(self) -> TextIO:
        return self._stream if self._stream is not None else sys.stdout

    def _is_terminal(self) -> bool:
        try:
            return bool(self.stream.isatty())
        except (AttributeError, ValueError):
            return False

    def update(self, done: float, stage: str | None = None, eta: float | None = None, force: bool = False) -> None:
        """Reports `done` units (of `total`), what runs now (`stage`) and, if known, the seconds left (`eta`).

        The first call sets where the run started (a resumed run counts its rate from there).
        """
        if self._first_update:
            self.start_done, self._first_update = float(done), False
        self.done = min(float(done), self.total)
        if stage is not None:
            self.stage = stage
        self.eta = eta
        now = time.monotonic()
        wait = LIVE_REDRAW_SECONDS if self.live else self.interval
        if self.enabled and (force or now - self._last_write >= wait):
            self._last_write = now
            self._write(self.line(now))

    def estimate(self, now: float | None = None) -> float | None:
        """Seconds left: the caller's ETA, else from the rate since the first update; None while unknown."""
        if self.eta is not None:
            return self.eta
        elapsed = (time.monotonic() if now is None else now) - self.started
        progressed = self.done - self.start_done
        if progressed <= 0 or elapsed <= 0:
            return None
        return elapsed / progressed * (self.total - self.done)

    def line(self, now: float | None = None) -> str:
        """The report as one line of plain text."""
        now = time.monotonic() if now is None else now
        done = int(self.done) if float(self.done).is_integer() else round(self.done, 1)
        total = int(self.total) if float(self.total).is_integer() else round(self.total, 1)
        eta = self.estimate(now)
        parts = [f"{done}/{total} {self.unit}s", f"{format_seconds(now - self.started)} elapsed"]
        if eta is not None and self.done < self.total:
            parts.append(f"ETA {format_seconds(eta)}")
        text = ", ".join(parts) + (f" ({self.stage})" if self.stage else "")
        if self.live:
            filled = int(BAR_WIDTH * self.done / self.total)
            return f"[{'=' * filled}{'.' * (BAR_WIDTH - filled)}] {text}"
        return f"{self.label}: {text}" if self.label else text

    def _write(self, text: str) -> None:
        stream = self.stream
        if self.live:
            padding = " " * max(0, self._width - len(text))
            self._width = len(text)
            stream.write(f"\r{text}{padding}")
        else:
            stream.write(text + "\n")
        stream.flush()

    def write(self, text: str) -> None:
        """A line of its own (the live bar is ended first and redrawn at the next update)."""
        if not self.enabled:
            return
        if self.live and self._width:
            self.stream.write("\n")
            self._width = 0
        self.stream.write((f"{self.label}: {text}" if self.label else text) + "\n")
        self.stream.flush()
        self._last_write = -math.inf

    def finish(self, summary: str | None = None) -> None:
        """Writes the final state (and ends the live line); then `summary` on a line of its own, if given."""
        if self.enabled:
            self._write(self.line())
            if self.live:
                self.stream.write("\n")
            if summary:
                self.stream.write(summary + "\n")
            self.stream.flush()
        self.enabled = False
