"""A TTS app for tests/test_early_answers.py under a real gunicorn: its engine (a
test double) finishes loading only once the file named by ``EARLY_LOAD_FLAG``
exists, so a test can talk to a server that is still loading, then to a ready one.

Started as ``gunicorn -c gunicorn.conf.py 'tests.early_app:create_app()'``.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from .fakes import RecordingEngine


class FlagEngine(RecordingEngine):
    """Loads when the flag file appears; synthesizes tones (RecordingEngine)."""

    name = "flag"

    def __init__(self, flag: str):
        super().__init__()
        self.flag = Path(flag)

    def load(self):
        while not self.flag.exists():
            time.sleep(0.05)


def create_app():
    from tts.app import create_app as tts_app

    return tts_app(engine=FlagEngine(os.environ["EARLY_LOAD_FLAG"]))
