"""With the GPU stack installed, importing the apps and engines still imports none of it."""

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.gpu


@pytest.mark.parametrize(
    "module", ["tts.app", "tts.engines.qwen", "whisperx_server.app", "whisperx_server.engines.whisperx"]
)
def test_import_is_light(module):
    code = (
        f"import sys, {module}; "
        "heavy = {'torch', 'qwen_tts', 'transformers', 'whisperx', 'nltk', 'faster_whisper'}"
        " & set(sys.modules); assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parents[2])
