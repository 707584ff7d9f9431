"""Nothing is read at import (README, "Settings"): settings come from the app factory, so a
broken environment breaks ``create_app()`` with a sentence naming the variable, never
the import of a module."""

import subprocess
import sys

import pytest

from .helpers import ROOT

BROKEN = {
    "TTS_ENGINE": "nonsense",
    "WHISPERX_ENGINE": "nonsense",
    "MAX_QUEUE": "lots",
    "GUNICORN_THREADS": "many",
    "PROXY_READ_TIMEOUT": "forever",
    "TTS_API_KEY": "k",
}


@pytest.mark.parametrize("module", ["tts.app", "whisperx_server.app", "proxy.app"])
def test_import_reads_no_setting_and_the_factory_names_the_broken_one(module):
    import os

    env = {**os.environ, **BROKEN}
    imported = subprocess.run(
        [sys.executable, "-c", f"import {module}, gpu_audio.cli"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert imported.returncode == 0, imported.stderr
    made = subprocess.run(
        [sys.executable, "-c", f"import {module}; {module}.create_app()"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert made.returncode != 0
    last = made.stderr.strip().splitlines()[-1]
    assert "ConfigError" in last and any(name in last for name in BROKEN), last
