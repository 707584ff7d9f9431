"""OpenAI's transcription API on the WhisperX server, with the official ``openai`` SDK
as the client, against the real app under gunicorn with the embedded pocketsphinx
engine and eSpeak speech. The recogniser often mishears eSpeak; what is checked is
the API: shapes, timing promises, errors as the SDK's typed exceptions. Timing
accuracy is /align's (tests/test_alignment_roundtrip.py)."""

from __future__ import annotations

import base64
import io
import re
import threading
import time

import openai
import pytest
import requests

from gpu_audio.client_config import ClientConfig
from gpu_audio.server.activity import read_activity
from gpu_audio.settings_env import hash_key
from proxy.app import create_app as create_proxy
from proxy.settings import ProxySettings
from whisperx_server.engines.base import Transcript
from whisperx_server.openai_routes import ALIASES, compression_ratio

from .fakes import FakeASR
from .helpers import Gunicorn, spoken, wait_until, wsgi_on_loopback

KEY = "openai-wx-key-5c1e"
TEXT = "Hello there, and welcome to the second slide."
SEGMENT_FIELDS = {
    "id",
    "seek",
    "start",
    "end",
    "text",
    "tokens",
    "temperature",
    "avg_logprob",
    "compression_ratio",
    "no_speech_prob",
}


@pytest.fixture(scope="module")
def wx(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("openai-wx")
    env = {
        "TTS_API_KEY": KEY,
        "ACTIVITY_DIR": str(tmp / "activity"),
        "WHISPERX_ENGINE": "pocketsphinx",
        "MAX_BODY_MB": "1",
    }
    server = Gunicorn("whisperx_server.app:create_app()", env, tmp / "wx.log").wait_ready()
    server.activity_dir = env["ACTIVITY_DIR"]
    yield server
    server.stop()


@pytest.fixture(scope="module")
def speech():
    b64, audio, _ = spoken(TEXT)
    return base64.b64decode(b64), audio.size / 22050


def sdk(url: str, key: str = KEY) -> openai.OpenAI:
    return openai.OpenAI(base_url=url + "/v1", api_key=key, max_retries=0, timeout=120)


def check_words(words, duration: float) -> None:
    """Every word timed, in order, within the audio."""
    assert words
    previous = 0.0
    for w in words:
        assert w.word.strip() == w.word and w.word
        assert 0.0 <= w.start <= w.end <= duration + 1e-3, w
        assert w.start >= previous, w
        previous = w.start


STAMP = r"(\d\d):(\d\d):(\d\d)[,.](\d\d\d)"


def seconds(stamp: str) -> float:
    h, m, s, ms = (int(x) for x in re.fullmatch(STAMP, stamp).groups())
    return h * 3600 + m * 60 + s + ms / 1000


def parse_srt(text: str) -> list[tuple[float, float, str]]:
    """SRT, strictly: numbered blocks from 1, ``HH:MM:SS,mmm --> HH:MM:SS,mmm``, text lines."""
    cues = []
    for number, block in enumerate(text.strip("\n").split("\n\n"), 1):
        index, times, *lines = block.split("\n")
        assert index == str(number), block
        start, end = times.split(" --> ")
        assert re.fullmatch(STAMP.replace("[,.]", ","), start) and re.fullmatch(
            STAMP.replace("[,.]", ","), end
        )
        assert lines and all(line.strip() for line in lines), block
        cues.append((seconds(start), seconds(end), " ".join(lines)))
    return cues


def parse_vtt(text: str) -> list[tuple[float, float, str]]:
    """WebVTT, strictly: the header line, a blank line, cues ``HH:MM:SS.mmm --> HH:MM:SS.mmm``."""
    assert text.startswith("WEBVTT\n\n")
    cues = []
    for block in text[len("WEBVTT\n\n") :].strip("\n").split("\n\n"):
        times, *lines = block.split("\n")
        start, end = times.split(" --> ")
        assert re.fullmatch(STAMP.replace("[,.]", r"\."), start) and re.fullmatch(
            STAMP.replace("[,.]", r"\."), end
        )
        assert lines and all(line.strip() for line in lines), block
        cues.append((seconds(start), seconds(end), " ".join(lines)))
    return cues


# -- against the real server, through the SDK -------------------------------------------------


def test_verbose_json_with_every_word_timed(wx, speech):
    data, duration = speech
    result = sdk(wx.url).audio.transcriptions.create(
        file=("slide.wav", data),
        model="whisper-1",
        response_format="verbose_json",
        timestamp_granularities=["word"],
    )
    assert result.duration == pytest.approx(duration, abs=1e-3)
    assert result.language == "en"
    check_words(result.words, duration)
    assert [w.word for w in result.words] == result.text.split()  # the transcript's own words
    assert not result.segments  # asked for words only, as OpenAI answers


def test_verbose_json_segments_have_openais_fields(wx, speech):
    data, duration = speech
    result = sdk(wx.url).audio.transcriptions.create(
        file=("slide.wav", data),
        model="gpt-4o-transcribe",
        response_format="verbose_json",
        timestamp_granularities=["word", "segment"],
    )
    assert result.segments and result.words
    for index, segment in enumerate(result.segments):
        assert set(segment.model_dump()) >= SEGMENT_FIELDS
        assert segment.id == index and 0 <= segment.start <= segment.end <= duration + 1e-3
        assert segment.compression_ratio == compression_ratio(segment.text)
        assert segment.avg_logprob == 0.0  # pocketsphinx gives no score: documented
    assert " ".join(s.text for s in result.segments) == result.text


def test_json_text_srt_and_vtt(wx, speech):
    data, duration = speech
    client = sdk(wx.url)

    def create(fmt):
        return client.audio.transcriptions.create(
            file=("a.wav", data), model="whisper-1", response_format=fmt
        )

    text = create("json").text
    assert text and text == text.strip()
    plain = create("text")
    assert isinstance(plain, str) and plain.strip() and plain.endswith("\n")
    for cues in (parse_srt(create("srt")), parse_vtt(create("vtt"))):
        assert cues
        for start, end, words in cues:
            assert 0 <= start <= end <= duration + 1e-3 and words


def test_stream_events_end_with_done(wx, speech):
    data, _ = speech
    stream = sdk(wx.url).audio.transcriptions.create(file=("a.wav", data), model="whisper-1", stream=True)
    events = list(stream)
    assert [e.type for e in events[:-1]] == ["transcript.text.delta"] * (len(events) - 1)
    assert len(events) >= 2 and events[-1].type == "transcript.text.done"
    assert "".join(e.delta for e in events[:-1]) == events[-1].text and events[-1].text


def test_translation_on_pocketsphinx_is_a_bad_request_naming_model(wx, speech):
    data, _ = speech
    with pytest.raises(openai.BadRequestError) as caught:
        sdk(wx.url).audio.translations.create(file=("a.wav", data), model="whisper-1")
    assert "cannot translate" in caught.value.message
    assert caught.value.param == "model"


def test_no_key_and_a_wrong_key_are_authentication_errors(wx, speech):
    data, _ = speech
    no_key = {"Authorization": openai.Omit()}  # the SDK sends no key at all
    for headers, key in ((no_key, KEY), (None, "not-the-key")):
        with pytest.raises(openai.AuthenticationError) as caught:
            sdk(wx.url, key).audio.transcriptions.create(
                file=("a.wav", data), model="whisper-1", extra_headers=headers
            )
        assert "API key" in caught.value.message
    with pytest.raises(openai.AuthenticationError):
        sdk(wx.url).models.list(extra_headers=no_key)


def test_a_bad_file_names_file(wx):
    with pytest.raises(openai.BadRequestError) as caught:
        sdk(wx.url).audio.transcriptions.create(file=("a.wav", b"not audio at all"), model="whisper-1")
    assert caught.value.param == "file" and "cannot be decoded" in caught.value.message


def test_unknown_model_and_language_name_their_param(wx, speech):
    data, _ = speech
    client = sdk(wx.url)
    with pytest.raises(openai.BadRequestError) as caught:
        client.audio.transcriptions.create(file=("a.wav", data), model="whisper-9")
    assert caught.value.param == "model" and caught.value.code == "model_not_found"
    with pytest.raises(openai.BadRequestError) as caught:
        client.audio.transcriptions.create(file=("a.wav", data), model="whisper-1", language="fr")
    assert caught.value.param == "language" and "'fr'" in caught.value.message


def test_a_file_over_max_body_mb_is_413(wx):
    with pytest.raises(openai.APIStatusError) as caught:
        sdk(wx.url).audio.transcriptions.create(file=("big.wav", b"\0" * (3 * 2**20 // 2)), model="whisper-1")
    assert caught.value.status_code == 413
    assert "MAX_BODY_MB" in caught.value.message


def test_models_lists_the_loaded_model_and_its_aliases(wx):
    listed = sdk(wx.url).models.list()
    ids = [m.id for m in listed.data]
    assert ids == ["pocketsphinx en-us", *ALIASES]
    assert all(m.owned_by == "gpu-audio" and m.object == "model" for m in listed.data)


def test_v1_routes_are_counted_by_route_and_keep_the_host_awake(wx, speech):
    data, _ = speech
    headers = {"X-API-Key": KEY}
    before = max((r["last_request_at"] or 0.0 for r in read_activity(wx.activity_dir)), default=0.0)
    sdk(wx.url).audio.transcriptions.create(file=("a.wav", data), model="whisper-1")
    counted = re.compile(r'gpu_audio_requests_total\{route="/v1/audio/transcriptions",status="200"\} [1-9]')
    # Both are noted when the response closes, which may be just after the client has it.
    wait_until(lambda: counted.search(requests.get(wx.url + "/metrics", headers=headers, timeout=10).text))
    wait_until(lambda: max(r["last_request_at"] or 0.0 for r in read_activity(wx.activity_dir)) > before)


def _proxy_relays_v1() -> bool:
    """Whether the proxy serves /v1/audio/transcriptions (the openai-tts branch adds it)."""
    settings = ProxySettings(client=ClientConfig("http://127.0.0.1:9", "http://127.0.0.1:9", KEY))
    adapter = create_proxy(settings).url_map.bind("localhost")
    try:
        adapter.match("/v1/audio/transcriptions", "POST")
    except Exception:  # noqa: BLE001 - NotFound / MethodNotAllowed: not routed yet
        return False
    return True


# AFTER MERGE: the proxy's /v1 routing comes from the openai-tts branch; until both
# branches are merged this test skips (it runs by itself once the proxy routes /v1).
@pytest.mark.skipif(
    not _proxy_relays_v1(), reason="the proxy routes /v1 once the openai-tts branch is merged"
)
def test_through_the_proxy_with_one_base_url(wx, speech, tmp_path):
    data, duration = speech
    settings = ProxySettings(
        client=ClientConfig("http://127.0.0.1:9", wx.url, KEY), activity_dir=str(tmp_path / "activity")
    )
    with wsgi_on_loopback(create_proxy(settings)) as url:
        result = sdk(url).audio.transcriptions.create(
            file=("a.wav", data),
            model="whisper-1",
            response_format="verbose_json",
            timestamp_granularities=["word"],
        )
        check_words(result.words, duration)
        with pytest.raises(openai.BadRequestError):
            sdk(url).audio.translations.create(file=("a.wav", data), model="whisper-1")


# -- the app with engine doubles: what reaches the engine, and the shared lane ----------------


class Recording(FakeASR):
    """Records each transcribe call's options; translates."""

    translates = True

    def __init__(self):
        self.calls: list[tuple] = []
        self.release = threading.Event()
        self.release.set()

    def transcribe(self, audios, language, **options):
        self.calls.append((language, options))
        self.release.wait(30)
        return [
            Transcript(
                text="one two",
                segments=[{"start": 0.1, "end": 0.4, "text": "one two"}],
                language=language or "de",
                logprobs=[-0.25],
            )
        ]


def _post(client, path: str, **fields):
    b64, _, _ = spoken("One two.")
    form = {"file": (io.BytesIO(base64.b64decode(b64)), "a.wav"), "model": "whisper-1", **fields}
    return client.post(path, data=form, headers={"X-API-Key": KEY})


def test_prompt_and_translate_reach_the_engine(make_wx_client):
    engine = Recording()
    client = make_wx_client(engine)
    answer = _post(client, "/v1/audio/transcriptions", prompt="Slides about caching.", temperature="0.4")
    assert answer.status_code == 200 and answer.get_json()["text"] == "one two"
    answer = _post(client, "/v1/audio/translations", response_format="verbose_json")
    body = answer.get_json()
    assert answer.status_code == 200 and body["task"] == "translate" and body["language"] == "de"
    assert body["segments"][0]["avg_logprob"] == -0.25
    assert engine.calls == [("en", {"prompt": "Slides about caching."}), (None, {"task": "translate"})]


def test_bad_fields_name_their_param(make_wx_client):
    client = make_wx_client(Recording())
    for fields, param in (
        ({"temperature": "2"}, "temperature"),
        ({"response_format": "xml"}, "response_format"),
        (
            {"response_format": "verbose_json", "timestamp_granularities[]": "char"},
            "timestamp_granularities[]",
        ),
        ({"stream": "true", "response_format": "srt"}, "stream"),
        ({"prompt": "x" * 5000}, "prompt"),
    ):
        answer = _post(client, "/v1/audio/transcriptions", **fields)
        assert answer.status_code == 400 and answer.get_json()["error"]["param"] == param, (
            fields,
            answer.json,
        )
    missing = client.post("/v1/audio/transcriptions", data={"model": "whisper-1"}, headers={"X-API-Key": KEY})
    assert missing.status_code == 400 and missing.get_json()["error"]["param"] == "file"


def test_v1_and_compat_requests_share_the_lane(make_wx_client, tmp_path):
    """While a compat /transcribe holds the lane's one request slot, a /v1 request is
    refused by the same lane: 503 with Retry-After, in OpenAI's shape."""
    engine = Recording()
    engine.release.clear()
    client = make_wx_client(
        engine, request_threads=3, api_key_hashes=(hash_key(KEY),)
    )  # one request at a time
    b64, _, _ = spoken("One two.")
    compat = threading.Thread(
        target=lambda: client.post("/transcribe", json={"audio": b64}, headers={"X-API-Key": KEY})
    )
    compat.start()
    try:
        deadline = time.monotonic() + 30
        while not engine.calls and time.monotonic() < deadline:
            time.sleep(0.01)
        assert engine.calls, "the compat request never reached the engine"
        refused = _post(client, "/v1/audio/transcriptions")
        assert refused.status_code == 503 and refused.headers["Retry-After"]
        assert refused.get_json()["error"]["type"] == "server_error"
    finally:
        engine.release.set()
        compat.join(30)
