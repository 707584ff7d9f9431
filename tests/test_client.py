"""The Python client: retries, errors, config discovery."""

import base64
import inspect
import json
import threading
import time

import numpy as np
import pytest
from werkzeug.serving import make_server
from werkzeug.wrappers import Request, Response

from gpu_audio import services
from gpu_audio.audio import encode_wav
from gpu_audio.client import Client, ClientError
from gpu_audio.client_config import load_client_config

from .helpers import wsgi_on_loopback


class Stub:
    """A local server answering from a script of (status, headers, body)."""

    def __init__(self, script):
        self.script, self.hits = list(script), 0

        @Request.application
        def app(request):
            self.hits += 1
            self.last_headers = dict(request.headers)
            status, headers, body = self.script.pop(0) if self.script else (200, {}, {"ok": True})
            if status == "sleep":
                time.sleep(headers)
                status, headers = 200, {}
            return Response(json.dumps(body), status=status, headers=headers, content_type="application/json")

        self.server = make_server("127.0.0.1", 0, app, threaded=True)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_port}"

    def close(self):
        self.server.shutdown()


@pytest.fixture
def stub():
    made = []

    def make(script):
        made.append(Stub(script))
        return made[-1]

    yield make
    for s in made:
        s.close()


def client_for(url, **kw):
    sleeps = []
    return Client(url, url, "client-key", sleep=sleeps.append, **kw), sleeps


def test_503_with_retry_after_is_retried_then_succeeds(stub):
    s = stub(
        [
            (503, {"Retry-After": "7"}, {"error": "loading"}),
            (503, {"Retry-After": "3"}, {"error": "busy"}),
            (200, {}, {"transcriptions": [{"text": "hi"}], "count": 1, "success": True}),
        ]
    )
    client, sleeps = client_for(s.url)
    (t,) = client.transcribe_batch([b"RIFF"])
    assert t.text == "hi" and s.hits == 3 and sleeps == [7.0, 3.0]
    assert s.last_headers["X-Api-Key"] == "client-key"


def test_4xx_is_not_retried(stub):
    s = stub([(400, {}, {"success": False, "error": "'texts' is empty"})])
    client, sleeps = client_for(s.url)
    with pytest.raises(ClientError, match="400: 'texts' is empty") as caught:
        client.generate_batch(["x"])
    assert caught.value.status == 400 and s.hits == 1 and sleeps == []


def test_retries_are_bounded(stub):
    s = stub([(503, {}, {"error": "busy"})] * 10)
    client, sleeps = client_for(s.url, retries=3, backoff=2, max_backoff=5)
    with pytest.raises(ClientError, match="503: busy"):
        client.generate_batch(["x"])
    assert s.hits == 4 and sleeps == [2, 4, 5]


def test_unreachable_server_is_retried_then_one_sentence():
    from .helpers import free_port

    url = f"http://127.0.0.1:{free_port()}"
    client, sleeps = client_for(url, retries=2)
    with pytest.raises(ClientError, match="cannot reach the tts server"):
        client.generate_batch(["x"])
    assert len(sleeps) == 2


def test_read_timeout_is_an_error_not_a_retry(stub):
    s = stub([("sleep", 2, None)])
    client, sleeps = client_for(s.url, read_timeout=0.5)
    with pytest.raises(ClientError, match="did not answer"):
        client.generate_batch(["x"])
    assert sleeps == []


def test_a_url_without_scheme_or_a_page_that_is_not_json_is_one_sentence(stub, tmp_path, capsys):
    client, _ = client_for("gpu.example.com/tts")
    with pytest.raises(ClientError, match="cannot call the tts server at gpu.example.com/tts/generate_batch"):
        client.generate_batch(["x"])
    s = stub([])

    @Request.application
    def html(request):
        return Response("<html>a login page</html>", content_type="text/html")

    s.server.app = html
    client, _ = client_for(s.url)
    with pytest.raises(ClientError, match="not JSON: is tts in server_config.json the gpu-audio server"):
        client.generate_batch(["x"])
    # and the CLI prints that one sentence, not "None: None"
    from gpu_audio.cli import main

    config = tmp_path / "server_config.json"
    config.write_text(json.dumps({"server_url": "gpu.example.com/tts", "whisper_url": "gpu.example.com/wx"}))
    (tmp_path / "a.wav").write_bytes(b"RIFF")
    assert main(["align", str(tmp_path / "a.wav"), "--text", "hi", "--config", str(config)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("gpu-audio: cannot call the whisperx server") and "None" not in err


def test_a_key_with_a_line_break_is_named_never_printed(stub):
    s = stub([])
    client = Client(s.url, s.url, "secret-part\nsecond-line", sleep=lambda _: None)
    with pytest.raises(ClientError) as caught:
        client.generate_batch(["x"])
    assert "check api_key" in str(caught.value) and "secret-part" not in str(caught.value)


def test_large_jobs_are_split_into_server_sized_batches(stub):
    import base64
    import io

    import numpy as np
    import soundfile as sf

    buf = io.BytesIO()
    sf.write(buf, np.zeros(240, np.float32), 24000, format="WAV")
    wav = base64.b64encode(buf.getvalue()).decode()
    s = stub(
        [(200, {}, {"audios": [wav] * 4}), (200, {}, {"audios": [wav] * 4}), (200, {}, {"audios": [wav] * 2})]
    )
    client, _ = client_for(s.url, batch_size=4)
    progress = []
    audios = client.generate_batch([f"t{i}" for i in range(10)], progress=lambda d, t: progress.append(d))
    assert len(audios) == 10 and s.hits == 3 and progress == [4, 8, 10]
    assert audios[0][1] == 24000


def test_config_discovery_order_and_overrides(tmp_path, monkeypatch):
    def write(path, url):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"server_url": url, "whisper_url": url + "/wx", "api_key": "file-key"}))

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    for var in ("GPU_AUDIO_CONFIG", "TTS_SERVER_URL", "TTS_WHISPER_URL", "WHISPER_URL", "TTS_API_KEY"):
        monkeypatch.delenv(var, raising=False)
    assert load_client_config().server_url == "http://127.0.0.1:5000"  # nothing found: defaults
    write(tmp_path / "home/.config/gpu-audio/server_config.json", "http://home")
    assert load_client_config().server_url == "http://home"
    write(tmp_path / "tts/server_config.json", "http://tts-dir")
    assert load_client_config().server_url == "http://tts-dir"
    write(tmp_path / "server_config.json", "http://cwd")
    assert load_client_config().server_url == "http://cwd"
    write(tmp_path / "env.json", "http://env")
    monkeypatch.setenv("GPU_AUDIO_CONFIG", str(tmp_path / "env.json"))
    assert load_client_config().server_url == "http://env"
    write(tmp_path / "explicit.json", "http://explicit")
    config = load_client_config(tmp_path / "explicit.json")
    assert config.server_url == "http://explicit" and config.api_key == "file-key"
    monkeypatch.setenv("TTS_SERVER_URL", "http://override/")
    monkeypatch.setenv("TTS_API_KEY", "env-key,older-key")
    config = load_client_config(tmp_path / "explicit.json")
    assert config.server_url == "http://override" and config.api_key == "env-key"
    assert config.whisper_url == "http://explicit/wx"
    assert "env-key" not in repr(config)


def test_whisper_url_of_the_users_scripts(tmp_path):
    """WHISPER_URL (their scripts' name) counts for the client and the CLI, after
    TTS_WHISPER_URL; the proxy ignores it (those scripts point it at the proxy itself)."""
    from proxy.settings import ProxySettings

    path = tmp_path / "c.json"
    path.write_text(json.dumps({"server_url": "http://file", "whisper_url": "http://file/wx"}))
    env = {"GPU_AUDIO_CONFIG": str(path), "WHISPER_URL": "http://scripts:5001/"}
    assert Client.from_config(env=env).urls["whisperx"] == "http://scripts:5001"
    assert load_client_config(env=env, accept_whisper_url=True).whisper_url == "http://scripts:5001"
    both = {**env, "TTS_WHISPER_URL": "http://ours:5001"}
    assert Client.from_config(env=both).urls["whisperx"] == "http://ours:5001"
    assert load_client_config(env=env).whisper_url == "http://file/wx"
    assert ProxySettings.from_env(env).client.whisper_url == "http://file/wx"


# -- 502/504 from a proxy or load balancer in front, against a real loopback server ---------


class Scripted:
    """A WSGI app answering ``status`` (with ``body``, ``content_type``) ``times`` times,
    then 200 with a TTS batch; counts the requests that reached it."""

    def __init__(self, status: int, times: int, body: bytes, content_type: str = "application/json"):
        self.status, self.times, self.body, self.content_type = status, times, body, content_type
        self.hits = 0

    @Request.application
    def __call__(self, request):
        self.hits += 1
        if self.hits <= self.times:
            return Response(self.body, status=self.status, content_type=self.content_type)
        return Response(
            json.dumps(
                {"success": True, "count": 1, "audios": [WAV_B64], "sample_rate": 24000, "durations": [0.1]}
            ),
            content_type="application/json",
        )


WAV_B64 = base64.b64encode(encode_wav(np.full(2400, 0.1, np.float32), 24000)).decode()
GATEWAY = {
    502: json.dumps({"success": False, "error": "The tts server cannot be reached"}).encode(),
    504: b"<html><body><h1>504 Gateway Time-out</h1></body></html>",
}  # a load balancer's page


@pytest.mark.parametrize("status", [502, 504])
def test_502_and_504_are_retried_with_backoff_then_succeed(status):
    app = Scripted(status, 2, GATEWAY[status], "application/json" if status == 502 else "text/html")
    with wsgi_on_loopback(app) as url:
        client, sleeps = client_for(url)
        (clip,) = client.generate_batch(["Hello."])
    assert app.hits == 3 and sleeps == [1.0, 2.0]  # the default backoff, doubling
    audio, rate = clip
    assert rate == 24000 and audio.size == 2400  # the answer after the retries, decoded


@pytest.mark.parametrize("status", [502, 504])
def test_the_default_retry_count_then_one_clear_error(status):
    app = Scripted(status, 100, GATEWAY[status], "application/json" if status == 502 else "text/html")
    with wsgi_on_loopback(app) as url:
        client, sleeps = client_for(url)  # no retries= given: the default
        with pytest.raises(ClientError) as caught:
            client.generate_batch(["Hello."])
    default = inspect.signature(Client).parameters["retries"].default
    assert default == 5 and app.hits == default + 1
    assert sleeps == [1.0, 2.0, 4.0, 8.0, 16.0]
    assert caught.value.status == status
    detail = "The tts server cannot be reached" if status == 502 else "GATEWAY TIMEOUT"
    assert str(caught.value) == f"{services.TTS.name} /generate_batch answered {status}: {detail}"


@pytest.mark.parametrize("status", [400, 401, 404, 413, 429, 500])
def test_other_errors_are_not_retried(status):
    app = Scripted(status, 100, json.dumps({"success": False, "error": f"refused {status}"}).encode())
    with wsgi_on_loopback(app) as url:
        client, sleeps = client_for(url)
        with pytest.raises(ClientError, match=f"answered {status}: refused {status}") as caught:
            client.generate_batch(["Hello."])
    assert app.hits == 1 and sleeps == [] and caught.value.status == status
