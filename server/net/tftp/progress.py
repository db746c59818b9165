"""A one-line progress bar with a transfer rate, for a person watching a terminal.

The client calls ``update`` after every step of a transfer; the bar redraws at most ten times a second so that
a fast transfer spends its time moving data, not painting. It draws only on a terminal: redirected to a file
or a pipe, stderr stays clean for the error message that matters.
"""

from __future__ import annotations

import time
from typing import TextIO

_WIDTH = 30


def format_size(count: float) -> str:
    """Bytes in binary units, for humans: 512 B, 1.5 MiB."""
    if count < 1024:
        return f"{count:.0f} B"
    for unit in ("KiB", "MiB", "GiB"):
        count /= 1024
        if count < 1024 or unit == "GiB":
            break
    return f"{count:.1f} {unit}"


class ProgressBar:
    """Draws ``[#####-----]  45%  1.2 MiB  3.4 MiB/s`` on ``stream`` (without the bar if the size is unknown)."""

    def __init__(self, stream: TextIO, total: int | None = None, interval: float = 0.1) -> None:
        self.stream = stream
        self.total = total
        self.interval = interval
        self.enabled = stream.isatty()
        self._started = time.monotonic()
        self._drawn = 0.0

    def update(self, done: int, *, force: bool = False) -> None:
        now = time.monotonic()
        if not self.enabled or (not force and now - self._drawn < self.interval):
            return
        self._drawn = now
        rate = done / max(now - self._started, 1e-6)
        line = f"{format_size(done)}  {format_size(rate)}/s"
        if self.total:
            fraction = min(done / self.total, 1.0)
            filled = int(fraction * _WIDTH)
            line = f"[{'#' * filled}{'-' * (_WIDTH - filled)}] {fraction:4.0%}  {line}"
        self.stream.write(f"\r{line}\033[K")
        self.stream.flush()

    def finish(self, done: int) -> None:
        """Draw the final state and end the line."""
        self.update(done, force=True)
        self.end_line()

    def end_line(self) -> None:
        """End the bar's line if one was drawn, so that what follows (a result, an error) has its own line."""
        if self.enabled and self._drawn:
            self.stream.write("\n")
            self.stream.flush()
            self._drawn = 0.0
