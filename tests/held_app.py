"""A TTS app for tests/test_sigterm_drain.py under a real gunicorn: each call to its
engine (a test double) is held until a file appears, so a test can stop the server
while a request is in flight, and then let that request finish.

Started as ``gunicorn -c gunicorn.conf.py 'tests.held_app:create_app()'`` with
``HELD_DIR`` set: a call writes ``HELD_DIR/entered`` as it starts and returns once
``HELD_DIR/release`` exists.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from tts.app import create_app as tts_app

from .fakes import RecordingEngine


class HeldEngine(RecordingEngine):
    """Synthesizes tones (RecordingEngine), each call held until the release file exists."""

    name = "held"

    def __init__(self, folder: str):
        super().__init__()
        self.folder = Path(folder)

    def synthesize(self, items):
        (self.folder / "entered").write_text(str(len(items)))
        while not (self.folder / "release").exists():
            time.sleep(0.02)
        return super().synthesize(items)


def create_app():
    return tts_app(engine=HeldEngine(os.environ["HELD_DIR"]))
