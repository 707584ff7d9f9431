"""OpenAI's speech API on the TTS server, with the official ``openai`` SDK as the client:
formats, streaming, voices, speed, errors, /v1/models across servers, and one base URL
through the proxy."""

from __future__ import annotations

import base64
import io
import json
import threading

import av
import numpy as np
import openai
import pytest
import requests
import soundfile as sf
from werkzeug.wrappers import Request, Response

from gpu_audio import services
from gpu_audio.audio_formats import FORMATS, StreamEncoder, atempo_chain, change_speed, encode
from gpu_audio.server import openai_models
from gpu_audio.settings_env import hash_key
from tts.app import create_app
from tts.engines.espeak import VARIANTS
from tts.openai_routes import split_sentences
from tts.voices import ESPEAK, OPENAI_VOICES, QWEN

from .fakes import RecordingEngine
from .helpers import Gunicorn, decode_wav, free_port, wait_until, wsgi_on_loopback

KEY = "openai-speech-key-5c1e"
RATE = 24000
FIVE = "One little sentence. Two of them now! Is this the third? Here is four. And five is last."


def tone(seconds: float, rate: int = RATE) -> np.ndarray:
    return (0.3 * np.sin(2 * np.pi * 220 * np.arange(int(seconds * rate)) / rate)).astype(np.float32)


def decode(data: bytes, fmt: str, streamed: bool = False) -> tuple[np.ndarray, int, int]:
    """(samples, rate, channels) of an answer in ``fmt``, by an independent decoder
    (FFmpeg for a streamed FLAC: its header cannot say a length libsndfile would need)."""
    if fmt == "wav" or (fmt == "flac" and not streamed):
        audio, rate = sf.read(io.BytesIO(data), dtype="float32")
        return audio, rate, 1 if audio.ndim == 1 else audio.shape[1]
    if fmt == "pcm":
        return np.frombuffer(data, "<i2").astype(np.float32) / 32768, RATE, 1
    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.audio[0]
        frames = [f.to_ndarray().reshape(-1) for f in container.decode(stream)]
        return np.concatenate(frames), stream.codec_context.sample_rate, stream.codec_context.channels


# -- encoders and speed ----------------------------------------------------------------------


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_format_decodes_to_the_same_length(fmt):
    audio, rate, channels = decode(encode(tone(1.5), RATE, fmt), fmt)
    assert channels == 1
    # Opus always decodes at 48 kHz (RFC 7845); the stream was encoded from 24 kHz.
    assert rate == (48000 if fmt == "opus" else RATE)
    assert abs(audio.size / rate - 1.5) < 0.1


@pytest.mark.parametrize("fmt", ["pcm", "wav", "mp3", "opus", "aac", "flac"])
def test_a_streamed_file_is_one_valid_file(fmt):
    encoder = StreamEncoder(fmt, RATE)
    pieces = [encoder.feed(tone(0.5)) for _ in range(3)] + [encoder.finish()]
    assert sum(1 for p in pieces[:-1] if p) >= 2  # bytes leave as the pieces come
    audio, rate, _ = decode(b"".join(pieces), fmt, streamed=True)
    assert abs(audio.size / rate - 1.5) < 0.1


def test_a_streamed_wav_says_its_length_is_unknown():
    encoder = StreamEncoder("wav", RATE)
    head = encoder.feed(tone(0.1))
    assert head[:4] == b"RIFF" and head[4:8] == b"\xff\xff\xff\xff" and head[8:12] == b"WAVE"


@pytest.mark.parametrize("speed", [0.25, 0.5, 0.8, 2.0, 4.0])
def test_speed_scales_the_duration_by_its_inverse(speed):
    out = change_speed(tone(2.0), RATE, speed)
    assert abs(out.size / RATE - 2.0 / speed) < 0.05 * 2.0 / speed + 0.02


def test_atempo_is_chained_outside_its_range():
    assert atempo_chain(4.0) == [2.0, 2.0] and atempo_chain(0.25) == [0.5, 0.5]
    assert np.prod(atempo_chain(0.3)) == pytest.approx(0.3)


def test_sentences():
    assert split_sentences(FIVE) == [
        "One little sentence.",
        "Two of them now!",
        "Is this the third?",
        "Here is four.",
        "And five is last.",
    ]
    assert split_sentences("No end") == ["No end"] and split_sentences("a.b. c") == ["a.b.", "c"]


# -- the voice table -------------------------------------------------------------------------


def test_every_openai_voice_has_a_speaker_in_each_table():
    assert set(QWEN) == set(ESPEAK) == set(OPENAI_VOICES) and len(OPENAI_VOICES) == 13
    assert set(ESPEAK.values()) <= set(VARIANTS)
    assert set(QWEN.values()) <= {
        "Vivian",
        "Serena",
        "Uncle_Fu",
        "Dylan",
        "Eric",
        "Ryan",
        "Aiden",
        "Ono_Anna",
        "Sohee",
    }


# -- the app, through the test client (what reaches the engine) ----------------------------


@pytest.fixture
def rec_app(make_settings):
    def make(engine=None, **changes):
        engine = engine or RecordingEngine()
        return create_app(make_settings(**changes), engine), engine

    return make


def test_voice_forms_instructions_and_model_aliases_reach_the_engine(make_client):
    engine = RecordingEngine()
    client = make_client(engine)
    for voice, speaker in [("alloy", "Aiden"), ({"id": "nova"}, "Aiden"), ("AIDEN", "Aiden")]:
        r = client.post(
            "/v1/audio/speech",
            json={"model": "gpt-4o-mini-tts", "input": "Hi there.", "voice": voice, "instructions": "calm"},
        )
        assert r.status_code == 200, r.get_json()
        assert r.content_type == "audio/mpeg"
        item = engine.calls[-1][0]
        assert (item.text, item.speaker, item.instruct) == ("Hi there.", speaker, "calm")


def test_espeak_voices_map_by_the_table(client):
    r = client.post(
        "/v1/audio/speech",
        json={"model": "tts-1", "input": "Hi.", "voice": "coral", "response_format": "wav"},
    )
    assert r.status_code == 200 and r.content_type == "audio/wav"
    listed = client.get("/v1/audio/voices").get_json()
    by_id = {v["id"]: v["speaker"] for v in listed["data"]}
    assert by_id["coral"] == ESPEAK["coral"] and by_id["m3"] == "m3" and len(by_id) == 13 + len(VARIANTS)


@pytest.mark.parametrize(
    "change,param",
    [
        ({"voice": "nobody"}, "voice"),
        ({"voice": {"id": 3}}, "voice"),
        ({"response_format": "ogg"}, "response_format"),
        ({"speed": 4.5}, "speed"),
        ({"speed": "fast"}, "speed"),
        ({"stream_format": "chunks"}, "stream_format"),
        ({"model": "whisper-1"}, "model"),
        ({"input": ""}, "input"),
        ({"input": "x" * 5001}, "input"),
        ({"seed": -1}, "seed"),
        ({"ref_audio": "not base64!"}, "ref_audio"),
    ],
)
def test_each_bad_field_is_a_400_naming_it(rec_client, change, param):
    r = rec_client.post(
        "/v1/audio/speech", json={"model": "tts-1", "input": "Hi.", "voice": "alloy", **change}
    )
    assert r.status_code == 400
    assert (
        r.get_json()["error"]["param"] == param and r.get_json()["error"]["type"] == "invalid_request_error"
    )


def test_v1_and_generate_share_one_engine_call(rec_app):
    """Both queue behind a held call; the next engine call holds both texts."""
    gate = threading.Event()
    app, engine = rec_app(RecordingEngine(gate=gate))
    answers = {}

    def post(name, path, body):
        answers[name] = app.test_client().post(path, json=body)

    first = threading.Thread(target=post, args=("first", "/generate", {"text": "Hold the lane."}))
    first.start()
    assert engine.entered.wait(10)
    lane = app.extensions["gpu_audio"].lane
    others = [
        threading.Thread(
            target=post, args=("v1", "/v1/audio/speech", {"input": "From the SDK.", "voice": "Aiden"})
        ),
        threading.Thread(target=post, args=("compat", "/generate", {"text": "From compat."})),
    ]
    for t in others:
        t.start()
    wait_until(lambda: lane.queue_depth == 2, timeout=10)
    gate.set()
    for t in [first, *others]:
        t.join(20)
    assert all(a.status_code == 200 for a in answers.values())
    assert sorted(i.text for i in engine.calls[1]) == ["From compat.", "From the SDK."]


def test_v1_routes_are_counted_by_route_in_metrics(rec_client):
    rec_client.post("/v1/audio/speech", json={"input": "Hi.", "response_format": "pcm"}).close()
    text = rec_client.get("/metrics").get_data(as_text=True)
    assert 'route="/v1/audio/speech",status="200"' in text


# -- real HTTP: streaming against a held engine ----------------------------------------------


class HeldEngine(RecordingEngine):
    """Holds every sentence but the first until ``release`` is set: the first audio can
    only reach the client before the rest if the answer is streamed."""

    def __init__(self):
        super().__init__(rate=RATE)
        self.release = threading.Event()
        self.waited: list[bool] = []

    def synthesize(self, items):
        if self.calls:
            self.waited.append(self.release.wait(10))
        return super().synthesize(items)


@pytest.fixture
def held_server(make_settings):
    engine = HeldEngine()
    app = create_app(make_settings(api_key_hashes=(hash_key(KEY),)), engine)
    with wsgi_on_loopback(app) as url:
        yield url, engine


def sdk(url: str, **kwargs) -> openai.OpenAI:
    return openai.OpenAI(base_url=url + "/v1", api_key=kwargs.pop("api_key", KEY), max_retries=0, **kwargs)


def test_the_first_sentence_arrives_before_the_last_is_spoken(held_server):
    url, engine = held_server
    with sdk(url).audio.speech.with_streaming_response.create(
        model="tts-1", voice="alloy", input=FIVE, response_format="pcm", extra_body={"stream_format": "audio"}
    ) as response:
        chunks = response.iter_bytes()
        first = next(chunks)
        assert first and len(engine.calls) < 5  # the rest are not spoken yet
        engine.release.set()
        rest = list(chunks)
    assert all(engine.waited) and len(engine.calls) == 5  # one lane call per sentence
    assert len(first) + sum(map(len, rest)) == sum(
        2 * int(RATE * (0.1 + 0.01 * len(s))) for s in split_sentences(FIVE)
    )


def test_a_client_that_hangs_up_stops_the_remaining_sentences(held_server):
    url, engine = held_server
    text = " ".join(f"Sentence number {i}." for i in range(12))
    with requests.post(
        url + "/v1/audio/speech",
        json={"input": text, "response_format": "pcm", "stream_format": "audio"},
        headers={"X-API-Key": KEY},
        stream=True,
        timeout=30,
    ) as r:
        next(r.iter_content(1024))
    engine.release.set()
    settled = []
    wait_until(
        lambda: settled.append(len(engine.calls)) or settled[-3:] == [len(engine.calls)] * 3,
        timeout=20,
        interval=0.3,
    )
    assert len(engine.calls) < 12


def test_a_full_lane_is_a_503_with_retry_after(make_settings):
    gate = threading.Event()
    engine = RecordingEngine(gate=gate)
    app = create_app(make_settings(api_key_hashes=(hash_key(KEY),), request_threads=3), engine)
    with wsgi_on_loopback(app) as url:
        held = threading.Thread(
            target=sdk(url).audio.speech.create, kwargs=dict(model="tts-1", voice="alloy", input="Hold.")
        )
        held.start()
        assert engine.entered.wait(10)
        with pytest.raises(openai.InternalServerError) as refused:
            sdk(url).audio.speech.create(model="tts-1", voice="alloy", input="Refused.")
        gate.set()
        held.join(20)
    assert refused.value.status_code == 503 and refused.value.response.headers["Retry-After"]


# -- real gunicorn, the embedded eSpeak engine, the SDK ----------------------------------------


@Request.application
def peer_stub(request):
    """A WhisperX server's /v1/models, as the peer the TTS server asks."""
    keys = (request.headers.get("X-API-Key"), request.headers.get("Authorization"))
    if request.path == "/v1/models" and (KEY in keys or f"Bearer {KEY}" in keys):
        seen = request.headers.get(openai_models.PEER_HEADER)
        card = {"id": "whisper-stub", "object": "model", "created": 0, "owned_by": "gpu-audio", "peer": seen}
        return Response(json.dumps({"object": "list", "data": [card]}), content_type="application/json")
    return Response("{}", status=401, content_type="application/json")


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("openai")
    with wsgi_on_loopback(peer_stub) as peer:
        env = {
            "TTS_API_KEY": KEY,
            "ACTIVITY_DIR": str(tmp / "activity"),
            "TTS_ENGINE": "espeak",
            services.WHISPERX.port_variable: peer.rsplit(":", 1)[1],
        }
        tts = Gunicorn("tts.app:create_app()", env, tmp / "tts.log").wait_ready()
        (tmp / "empty.json").write_text("{}")
        proxy_env = {
            "TTS_SERVER_URL": tts.url,
            "TTS_WHISPER_URL": peer,
            "TTS_API_KEY": KEY,
            "GPU_AUDIO_CONFIG": str(tmp / "empty.json"),
        }
        proxy = Gunicorn("proxy.app:create_app()", proxy_env, tmp / "proxy.log").wait_ready()
        try:
            yield type("Stack", (), {"tts": tts, "proxy": proxy, "peer": peer})
        finally:
            proxy.stop()
            tts.stop()


LINE = "The quick brown fox jumps over the lazy dog."


def generate_seconds(stack, text: str) -> float:
    r = requests.post(
        stack.tts.url + "/generate", json={"text": text}, headers={"X-API-Key": KEY}, timeout=60
    )
    audio, info = decode_wav(r.json()["audio"])
    return audio.size / info.samplerate


@pytest.mark.parametrize("fmt", FORMATS)
def test_sdk_every_format_against_gunicorn(stack, fmt):
    answer = sdk(stack.tts.url).audio.speech.create(
        model="tts-1", voice="alloy", input=LINE, response_format=fmt
    )
    audio, rate, channels = decode(answer.content, fmt)
    assert channels == 1 and rate == (48000 if fmt == "opus" else RATE)
    assert abs(audio.size / rate - generate_seconds(stack, LINE)) < 0.15
    assert np.abs(audio).max() > 0.05  # speech, not silence


def test_sdk_speed_two_halves_the_duration(stack):
    client = sdk(stack.tts.url)
    normal = client.audio.speech.create(model="tts-1", voice="echo", input=LINE, response_format="wav")
    fast = client.audio.speech.create(
        model="tts-1", voice="echo", input=LINE, response_format="wav", speed=2.0
    )
    a, b = decode(normal.content, "wav")[0], decode(fast.content, "wav")[0]
    assert abs(b.size / a.size - 0.5) < 0.03


def test_sdk_streams_several_chunks_and_sse_events(stack):
    client = sdk(stack.tts.url)
    with client.audio.speech.with_streaming_response.create(
        model="tts-1", voice="alloy", input=FIVE, response_format="mp3", extra_body={"stream_format": "audio"}
    ) as response:
        assert response.headers["content-type"] == "audio/mpeg"
        chunks = [c for c in response.iter_bytes() if c]
    audio, rate, _ = decode(b"".join(chunks), "mp3")
    # Spoken one by one, the sentences lack the pauses eSpeak puts between them in one text.
    assert len(chunks) >= 2 and 0.6 < (audio.size / rate) / generate_seconds(stack, FIVE) < 1.1
    with client.audio.speech.with_streaming_response.create(
        model="tts-1", voice="alloy", input=FIVE, response_format="pcm", extra_body={"stream_format": "sse"}
    ) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        events = [json.loads(line[6:]) for line in response.iter_lines() if line.startswith("data: ")]
    deltas = [e for e in events if e["type"] == "speech.audio.delta"]
    assert len(deltas) >= 5 and events[-1]["type"] == "speech.audio.done"
    assert events[-1]["usage"]["input_tokens"] == len(FIVE)
    pcm = b"".join(base64.b64decode(e["audio"]) for e in deltas)
    assert len(pcm) > 2 * RATE


def test_sdk_errors_are_typed_with_our_message_and_param(stack):
    client = sdk(stack.tts.url)
    for kwargs, param in [
        (dict(voice="nobody"), "voice"),
        (dict(response_format="ogg"), "response_format"),
        (dict(speed=0.1), "speed"),
    ]:
        with pytest.raises(openai.BadRequestError) as refused:
            client.audio.speech.create(model="tts-1", input=LINE, **{"voice": "alloy", **kwargs})
        assert refused.value.body["param"] == param and param in refused.value.message
    with pytest.raises(openai.AuthenticationError):
        sdk(stack.tts.url, api_key="wrong").audio.speech.create(model="tts-1", voice="alloy", input=LINE)


def test_models_lists_this_server_and_its_peers(stack):
    ids = [m.id for m in sdk(stack.tts.url).models.list()]
    assert ids[:4] == ["espeak-ng", "tts-1", "tts-1-hd", "gpt-4o-mini-tts"] and "whisper-stub" in ids
    voices = requests.get(stack.tts.url + "/v1/audio/voices", headers={"X-API-Key": KEY}, timeout=10).json()
    assert {v["id"] for v in voices["data"]} >= set(OPENAI_VOICES)


def test_a_peer_down_is_left_out(monkeypatch, make_client):
    monkeypatch.setenv(services.WHISPERX.port_variable, str(free_port()))
    openai_models.CACHE.clear()
    ids = [m["id"] for m in make_client(RecordingEngine()).get("/v1/models").get_json()["data"]]
    assert ids == ["tone", "tts-1", "tts-1-hd", "gpt-4o-mini-tts"]


def test_one_base_url_through_the_proxy(stack):
    client = openai.OpenAI(base_url=stack.proxy.url + "/v1", api_key="the-proxy-holds-the-key", max_retries=0)
    answer = client.audio.speech.create(model="tts-1", voice="alloy", input=LINE, response_format="wav")
    audio, rate, _ = decode(answer.content, "wav")
    assert rate == RATE and abs(audio.size / rate - generate_seconds(stack, LINE)) < 0.15
    assert {"espeak-ng", "whisper-stub"} <= {m.id for m in client.models.list()}
    voices = requests.get(stack.proxy.url + "/v1/audio/voices", timeout=10)
    assert voices.status_code == 200 and len(voices.json()["data"]) >= 13
    with pytest.raises(openai.BadRequestError) as refused:
        client.audio.speech.create(model="tts-1", voice="nobody", input=LINE)
    assert refused.value.body["param"] == "voice"


def test_the_proxy_routes_openai_paths_from_the_table(monkeypatch):
    from proxy.app import openai_routes

    assert openai_routes() == {
        "/v1/audio/speech": services.TTS.name,
        "/v1/audio/voices": services.TTS.name,
        "/v1/audio/transcriptions": services.WHISPERX.name,
        "/v1/audio/translations": services.WHISPERX.name,
        "/v1/models": services.TTS.name,
    }
    monkeypatch.setattr(services, "SERVICES", (services.WHISPERX, services.TTS))
    assert openai_routes()["/v1/models"] == services.WHISPERX.name
