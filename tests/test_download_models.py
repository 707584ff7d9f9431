"""`gpu-audio download-models`: skips what is complete, one clear sentence when the
hub cannot be reached (it never can be here: we point it at a closed loopback port)."""

import hashlib
import json
import os
import subprocess
import sys
import threading

import pytest
from werkzeug.serving import make_server
from werkzeug.wrappers import Request, Response

from .helpers import ROOT, free_port

REPO = "Qwen/Qwen3-TTS-Tiny-Test"
COMMIT = "0123456789abcdef0123456789abcdef01234567"


def run(tmp_path, hub=None, **env):
    full = {
        **os.environ,
        "HF_ENDPOINT": hub or f"http://127.0.0.1:{free_port()}",
        "HF_HUB_ETAG_TIMEOUT": "2",
        "HF_HUB_DOWNLOAD_TIMEOUT": "2",
        "MODELS_DIR": str(tmp_path / "models"),
        "HF_HUB_DISABLE_TELEMETRY": "1",
        **env,
    }
    full.pop("HF_HUB_OFFLINE", None)
    full.pop("TRANSFORMERS_OFFLINE", None)  # hub < 1.0 reads it as offline too
    return subprocess.run(
        [sys.executable, "-m", "gpu_audio", "download-models"],
        cwd=ROOT,
        env=full,
        capture_output=True,
        text=True,
        timeout=120,
    )


def prefill(models_dir, repo):
    folder = models_dir / f"models--{repo.replace('/', '--')}"
    (folder / "refs").mkdir(parents=True)
    (folder / "refs" / "main").write_text(COMMIT)
    snapshot = folder / "snapshots" / COMMIT
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text("{}")
    (snapshot / "model.safetensors").write_bytes(b"\0" * 2**20)


def test_unreachable_hub_is_one_clear_sentence(tmp_path):
    out = run(tmp_path, TTS_ENGINE="qwen", TTS_MODEL=REPO, WHISPERX_ENGINE="pocketsphinx")
    assert out.returncode == 3, out.stderr
    last = out.stderr.strip().splitlines()[-1]
    assert last.startswith("gpu-audio: cannot fetch Qwen/Qwen3-TTS-Tiny-Test from the Hugging Face hub")
    assert "MODELS_DIR" not in last or str(tmp_path) in last
    assert "Traceback" not in out.stderr


def test_present_models_are_skipped_without_the_hub(tmp_path):
    prefill(tmp_path / "models", REPO)
    prefill(tmp_path / "models", "Systran/faster-whisper-tiny")
    out = run(
        tmp_path,
        TTS_ENGINE="qwen",
        TTS_MODEL=REPO,
        WHISPERX_ENGINE="whisperx",
        WHISPERX_MODEL="Systran/faster-whisper-tiny",
    )
    lines = out.stderr
    assert "[1/3] tts: Qwen/Qwen3-TTS-Tiny-Test: already present, skipped (hub not reachable" in lines
    assert "[2/3] whisper: Systran/faster-whisper-tiny: already present, skipped" in lines
    assert "(1 MB in" in lines
    # The alignment model is fetched by whisperx itself: without the gpu extra that is a clear stop.
    import importlib.util

    if importlib.util.find_spec("whisperx") is None:
        assert out.returncode == 4 and "gpu extra" in lines.strip().splitlines()[-1]


def test_embedded_engines_need_nothing(tmp_path):
    out = run(tmp_path, TTS_ENGINE="espeak", WHISPERX_ENGINE="pocketsphinx")
    assert out.returncode == 0 and "need no download" in out.stderr


def test_models_dir_is_required(tmp_path):
    out = run(tmp_path, MODELS_DIR="", TTS_ENGINE="qwen")
    assert out.returncode == 2 and "MODELS_DIR" in out.stderr


FILES = {"config.json": b'{"model_type": "tiny"}', "model.safetensors": os.urandom(300_000)}


class FakeHub:
    """The few hub routes huggingface_hub uses to list and fetch a model repo, on loopback."""

    def __init__(self, repo, files, sha):
        self.repo, self.files, self.sha, self.fetched = repo, files, sha, []
        self.broken = set()  # files whose download fails half way

        @Request.application
        def app(request):
            path = request.path
            if path.startswith(f"/api/models/{repo}/tree/"):
                return Response(
                    json.dumps(
                        [
                            {"type": "file", "path": f, "size": len(b), "oid": hashlib.sha1(b).hexdigest()}
                            for f, b in files.items()
                        ]
                    ),
                    content_type="application/json",
                )
            if path.startswith(f"/api/models/{repo}"):
                return Response(
                    json.dumps(
                        {
                            "id": repo,
                            "modelId": repo,
                            "sha": sha,
                            "private": False,
                            "siblings": [{"rfilename": f} for f in files],
                        }
                    ),
                    content_type="application/json",
                )
            prefix = f"/{repo}/resolve/"
            if path.startswith(prefix):
                name = path[len(prefix) :].split("/", 1)[1]
                if name not in files:
                    return Response("", status=404, headers={"X-Error-Code": "EntryNotFound"})
                body = files[name]
                if request.method == "GET":
                    self.fetched.append(name)
                    if name in self.broken:
                        return Response(iter([body[:1000]]), headers={"Content-Length": str(len(body))})
                # a HEAD gets the same headers and no body (the server drops it)
                return Response(
                    body, headers={"X-Repo-Commit": sha, "ETag": f'"{hashlib.sha1(body).hexdigest()}"'}
                )
            return Response("not here", status=404)

        self.server = make_server("127.0.0.1", 0, app, threaded=True)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_port}"


@pytest.fixture
def hub():
    made = FakeHub(REPO, FILES, COMMIT)
    yield made
    made.server.shutdown()


def test_a_download_cut_short_is_completed_not_taken_for_whole(tmp_path, hub):
    """An interrupted first download leaves refs/main and a snapshot folder with some
    files; with the hub in reach the rest is fetched, and only the rest."""
    snapshot = tmp_path / "models" / f"models--{REPO.replace('/', '--')}" / "snapshots" / COMMIT
    snapshot.mkdir(parents=True)
    (snapshot.parent.parent / "refs").mkdir()
    (snapshot.parent.parent / "refs" / "main").write_text(COMMIT)
    (snapshot / "config.json").write_bytes(FILES["config.json"])
    out = run(tmp_path, hub=hub.url, TTS_ENGINE="qwen", TTS_MODEL=REPO, WHISPERX_ENGINE="pocketsphinx")
    assert out.returncode == 0, out.stderr
    assert "completed (an earlier download was cut short)" in out.stderr
    assert (snapshot / "model.safetensors").read_bytes() == FILES["model.safetensors"]
    assert "model.safetensors" in hub.fetched and "config.json" not in hub.fetched
    hub.fetched.clear()
    again = run(tmp_path, hub=hub.url, TTS_ENGINE="qwen", TTS_MODEL=REPO, WHISPERX_ENGINE="pocketsphinx")
    assert again.returncode == 0 and "already complete (checked with the hub), skipped" in again.stderr
    assert hub.fetched == []


def test_a_first_download_from_the_hub_is_usable_offline(tmp_path, hub):
    out = run(tmp_path, hub=hub.url, TTS_ENGINE="qwen", TTS_MODEL=REPO, WHISPERX_ENGINE="pocketsphinx")
    assert out.returncode == 0, out.stderr
    assert f"[1/1] tts: {REPO}: fetched" in out.stderr
    assert sorted(hub.fetched) == sorted(FILES)
    folder = tmp_path / "models" / f"models--{REPO.replace('/', '--')}"
    assert (folder / "refs" / "main").read_text() == COMMIT  # what an offline load resolves "main" by
    again = run(tmp_path, hub=hub.url, TTS_ENGINE="qwen", TTS_MODEL=REPO, WHISPERX_ENGINE="pocketsphinx")
    assert "already complete (checked with the hub), skipped" in again.stderr
    offline = run(tmp_path, TTS_ENGINE="qwen", TTS_MODEL=REPO, WHISPERX_ENGINE="pocketsphinx")
    assert offline.returncode == 0 and "checked against its file list" in offline.stderr


def test_a_download_cut_short_is_not_taken_for_whole_when_the_hub_is_gone(tmp_path, hub):
    hub.broken.add("model.safetensors")
    cut = run(tmp_path, hub=hub.url, TTS_ENGINE="qwen", TTS_MODEL=REPO, WHISPERX_ENGINE="pocketsphinx")
    assert cut.returncode == 3 and "run download-models again" in cut.stderr
    offline = run(tmp_path, TTS_ENGINE="qwen", TTS_MODEL=REPO, WHISPERX_ENGINE="pocketsphinx")
    assert offline.returncode == 3 and "already present" not in offline.stderr, offline.stderr
    hub.broken.clear()
    fixed = run(tmp_path, hub=hub.url, TTS_ENGINE="qwen", TTS_MODEL=REPO, WHISPERX_ENGINE="pocketsphinx")
    assert fixed.returncode == 0, fixed.stderr
