"""The progress line of the ``gpu-audio`` commands, on stderr.

The library code (host lifecycle, narration) reports progress through callbacks and
never writes to the terminal; the commands hand it this line.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import TextIO

BAR_WIDTH = 20


class ProgressLine:
    """One line that rewrites itself on a terminal; plain lines when not a terminal
    (a log file keeps every step). ``quiet`` shows nothing."""

    def __init__(self, stream: TextIO | None = None, quiet: bool = False):
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.quiet = quiet
        self.last = ""
        self.open = False  # a terminal line is written and not yet ended

    def __call__(self, text: str) -> None:
        if self.quiet or text == self.last:
            return
        self.last = text
        if self.tty:
            self.stream.write("\r\033[K" + text)
            self.open = True
        else:
            self.stream.write(text + "\n")
        self.stream.flush()

    def done(self) -> None:
        """End the line, so what is printed next starts on its own."""
        if self.open:
            self.stream.write("\n")
            self.stream.flush()
            self.open = False

    def counter(self, label: str) -> Callable[[int, int], None]:
        """A ``progress(done, total)`` callback: ``[#####-----] 12/40 lines``."""

        def update(done: int, total: int) -> None:
            filled = int(BAR_WIDTH * done / max(total, 1))
            self(f"[{'#' * filled}{'-' * (BAR_WIDTH - filled)}] {done}/{total} {label}")
            if done >= total:
                self.done()

        return update
