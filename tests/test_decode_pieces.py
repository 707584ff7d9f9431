"""Decoding in pieces: same samples as a one-shot decode, a length limit a header cannot
dodge, no object reprs in errors, and the lane forgetting finished items."""

import gc
import io
import threading
import weakref

import numpy as np
import pytest
import soundfile as sf
import soxr

from gpu_audio.audio import BLOCK_FRAMES, AudioError, _decode, audio_seconds, decode_audio
from gpu_audio.server.lane import Lane, LaneConfig
from gpu_audio.server.wire import shared_array, shared_memory_of


def _file(audio, rate, fmt):
    buf = io.BytesIO()
    sf.write(buf, audio, rate, format=fmt)
    return buf.getvalue()


@pytest.mark.parametrize("fmt", ["WAV", "FLAC", "OGG", "MP3"])
def test_blocks_give_the_one_shot_samples(fmt):
    rng = np.random.default_rng(1)
    stereo = (rng.standard_normal((3 * BLOCK_FRAMES + 777, 2)) * 0.1).astype(np.float32)
    data = _file(stereo, 48000, fmt)
    whole, _ = sf.read(io.BytesIO(data), dtype="float32")
    expected = soxr.resample(whole.mean(axis=1), 48000, 16000, quality="HQ")
    got = decode_audio(data, 16000)
    assert got.dtype == np.float32 and got.shape == expected.shape
    np.testing.assert_allclose(got, expected, atol=1e-6)


def test_decodes_into_the_given_allocator():
    data = _file(np.full(48000, 0.1, np.float32), 48000, "FLAC")
    audio = decode_audio(data, 16000, allocate=shared_array)
    assert shared_memory_of(audio) is not None and audio.size == 16000


class _LyingFile:
    """A decoder whose header says 1 s and which then keeps giving frames."""

    samplerate, channels, frames = 16000, 1, 16000

    def read(self, frames, dtype, always_2d, out):
        out[:] = 0.1
        return out


def test_a_header_that_lies_cannot_pass_the_limit():
    with pytest.raises(AudioError, match="longer than its header says"):
        _decode(_LyingFile(), 16000, 5.0, np.empty)


def test_the_header_is_checked_before_decoding():
    data = _file(np.zeros(16000 * 10, np.float32), 16000, "FLAC")
    assert audio_seconds(data) == 10.0
    with pytest.raises(AudioError, match="10 s long; the limit is 5 s"):
        audio_seconds(data, 5.0)
    with pytest.raises(AudioError, match="10 s long; the limit is 5 s"):
        decode_audio(data, 16000, 5.0)


def test_undecodable_audio_names_no_python_object():
    with pytest.raises(AudioError) as caught:
        decode_audio(b"not audio at all" * 20, 16000)
    message = str(caught.value)
    assert "cannot be decoded" in message
    assert "0x" not in message and "BytesIO" not in message and "<" not in message


def test_the_lane_keeps_no_item_after_its_call():
    class Item:
        pass

    lane = Lane(LaneConfig(max_queue=10))
    items = [Item(), Item()]
    refs = [weakref.ref(item) for item in items]
    results = lane.run(items, lambda batch: [len(batch)] * len(batch), mergeable=False)
    assert results == [1, 1]
    del items, results
    gc.collect()
    assert lane._worker.is_alive()  # idle, waiting for the next request
    assert [ref() for ref in refs] == [None, None]


def test_the_lane_keeps_no_result_after_its_request():
    class Result:
        pass

    lane = Lane(LaneConfig(max_queue=10))
    out = lane.run([1], lambda batch: [Result()], mergeable=False)
    ref = weakref.ref(out[0])
    del out
    gc.collect()
    assert threading.active_count() >= 1 and ref() is None


def _b64_flac(seconds: float) -> str:
    import base64

    return base64.b64encode(_file(np.zeros(int(16000 * seconds), np.float32), 16000, "FLAC")).decode()


def test_the_request_budget_holds_when_headers_understate(make_wx_client, shared_sphinx, monkeypatch):
    """Headers that claim nothing pass the check before the lane; decoding then stops
    at what is left of MAX_REQUEST_AUDIO_SECONDS, item by item, order and count kept."""
    import whisperx_server.requests as wx_requests

    monkeypatch.setattr(wx_requests, "audio_seconds", lambda data, max_seconds=None: 0.0)
    wx = make_wx_client(shared_sphinx, max_request_audio_seconds=5.0)
    r = wx.post("/transcribe_batch", json={"audios": [_b64_flac(3), _b64_flac(3), _b64_flac(1)]})
    body = r.get_json()
    assert r.status_code == 200 and body["count"] == 3 and body["failed"] == 1
    first, second, third = body["transcriptions"]
    assert "error" not in first and "error" not in third
    assert second["error"].startswith("audios[1]: audio is 3 s long; the limit is 2 s")


def test_the_request_budget_is_checked_on_the_headers_first(make_wx_client, shared_sphinx):
    wx = make_wx_client(shared_sphinx, max_request_audio_seconds=5.0)
    r = wx.post("/transcribe_batch", json={"audios": [_b64_flac(3), _b64_flac(3)]})
    assert r.status_code == 400
    assert r.get_json()["error"] == (
        "The request's audio is 6 s in all; the limit is 5 s per request (MAX_REQUEST_AUDIO_SECONDS)."
    )
