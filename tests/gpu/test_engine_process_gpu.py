"""The real engines (qwen-tts, whisperx on tiny offline models) in their engine
process, the way gunicorn runs them: the app built from the environment, the
model loaded in a child process, and the worker never importing torch."""

import base64
import io
import json
import os
import subprocess
import sys

import pytest
import soundfile as sf

from ..helpers import ROOT

pytestmark = [pytest.mark.gpu]

WORKER = """
import json, sys
from {module} import create_app
app = create_app()
server = app.extensions["gpu_audio"]
assert server.state.wait(300), "the engine did not load"
client = app.test_client()
out = {{"status": server.state.status, "error": server.state.error}}
for path, body in json.loads(sys.stdin.read()):
    answer = client.post(path, json=body)
    out[path + " " + str(body.get("language", ""))] = [answer.status_code, answer.get_json()]
out["engine_pid"] = server.engine.describe()["engine_pid"]
out["torch_in_worker"] = "torch" in sys.modules
print(json.dumps(out))
"""


def _run_worker(module, env, calls):
    full = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", **env}
    full.pop("ENGINE_PROCESS", None)  # the default: the engine in its own process
    done = subprocess.run(
        [sys.executable, "-c", WORKER.format(module=module)],
        cwd=ROOT,
        env=full,
        input=json.dumps(calls),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_qwen_in_its_engine_process(qwen_checkpoints, tmp_path):
    env = {
        "TTS_ENGINE": "qwen",
        "TTS_MODEL": str(qwen_checkpoints["custom_voice"]),
        "TTS_DEVICE": "cpu",
        "TTS_DTYPE": "float32",
        "TTS_MAX_NEW_TOKENS": "24",
        "ACTIVITY_DIR": str(tmp_path),
    }
    out = _run_worker(
        "tts.app", env, [["/generate_batch", {"texts": ["Hello there.", "Second line."], "seed": 7}]]
    )
    assert out["status"] == "ok", out["error"]
    status, body = out["/generate_batch "]
    assert status == 200 and body["count"] == 2 and body["engine"] == "qwen3-tts"
    for audio in body["audios"]:
        info = sf.info(io.BytesIO(base64.b64decode(audio)))
        assert info.samplerate == 24000 and info.channels == 1
    assert out["engine_pid"] and out["torch_in_worker"] is False


def test_whisperx_in_its_engine_process(whisper_models, speech, tmp_path):
    audio = speech("Hello world, this is a test.")
    buf = io.BytesIO()
    sf.write(buf, audio, 16000, format="WAV")
    b64 = base64.b64encode(buf.getvalue()).decode()
    env = {
        "WHISPERX_ENGINE": "whisperx",
        "WHISPERX_MODEL": whisper_models["whisper"],
        "WHISPERX_DEVICE": "cpu",
        "WHISPERX_COMPUTE_TYPE": "int8",
        "WHISPERX_BATCH_SIZE": "4",
        "WHISPERX_ALIGN_MODEL": whisper_models["aligner"],
        "NLTK_DATA": whisper_models["nltk_data"],
        "ACTIVITY_DIR": str(tmp_path),
    }
    out = _run_worker(
        "whisperx_server.app",
        env,
        [
            ["/align", {"audio": b64, "text": "Hello world, this is a test.", "language": "en"}],
            ["/transcribe", {"audio": b64, "language": "en"}],
            ["/align", {"audio": b64, "text": "Hello", "language": "xx"}],
        ],
    )
    assert out["status"] == "ok", out["error"]
    status, body = out["/align en"]
    assert status == 200 and [w["word"] for w in body["words"]] == "Hello world, this is a test.".split()
    status, body = out["/transcribe en"]
    assert status == 200 and "text" in body
    status, body = out["/align xx"]  # check_language answered by the engine process
    assert status == 400 and "'xx'" in body["error"]
    assert out["engine_pid"] and out["torch_in_worker"] is False
