"""Bad audio is a clear 400 (single routes) or that item's error (batches); never a 500."""

import base64
import io

import numpy as np
import pytest
import soundfile as sf

from .helpers import check_promise, spoken


def _file(audio, rate, fmt="WAV", subtype=None):
    buf = io.BytesIO()
    sf.write(buf, audio, rate, format=fmt, subtype=subtype)
    return buf.getvalue()


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


@pytest.fixture(scope="module")
def speech():
    _, audio, _ = spoken("Testing the audio input formats of the server.")
    return audio  # float32 at 22050 Hz


GOOD_WAV = None


def bad_cases(speech):
    wav = _file(speech, 22050)
    return {
        "not base64": "this is not base64!!",
        "base64 of text": _b64(b"just some text, not audio at all"),
        "truncated header": _b64(wav[:30]),
        "zero samples": _b64(_file(np.zeros(0, np.float32), 16000)),
        "one sample": _b64(_file(np.zeros(1, np.float32), 16000)),
        "NaN samples": _b64(_file(np.full(16000, np.nan, np.float32), 16000, subtype="FLOAT")),
        "an infinite sample": _b64(
            _file(np.where(np.arange(16000) == 5, np.inf, 0.1).astype(np.float32), 16000, subtype="FLOAT")
        ),
        "empty string": "",
        "not a string": 12345,
        "missing": None,
    }


def good_cases(speech):
    stereo48 = np.stack([speech, speech * 0.5], axis=1)
    import soxr

    stereo48 = soxr.resample(stereo48, 22050, 48000).astype(np.float32)
    return {
        "8-bit WAV": _b64(_file(speech, 22050, subtype="PCM_U8")),
        "48 kHz stereo float WAV": _b64(_file(stereo48, 48000, subtype="FLOAT")),
        "24-bit WAV 8 kHz": _b64(_file(soxr.resample(speech, 22050, 8000), 8000, subtype="PCM_24")),
        "FLAC": _b64(_file(speech, 22050, fmt="FLAC")),
        "OGG": _b64(_file(speech, 22050, fmt="OGG")),
        "MP3": _b64(_file(speech, 22050, fmt="MP3")),
        "data URL": "data:audio/wav;base64," + _b64(_file(speech, 22050)),
    }


TEXT = "Testing the audio input formats of the server."


def test_bad_audio_single_routes_are_400(wx, speech):
    for name, audio in bad_cases(speech).items():
        for path, body in (("/align", {"audio": audio, "text": TEXT}), ("/transcribe", {"audio": audio})):
            if audio is None:
                body.pop("audio")
            r = wx.post(path, json=body)
            assert r.status_code == 400, (name, path, r.get_json())
            assert r.get_json()["success"] is False and r.get_json()["error"], name
    assert wx.get("/health").status_code == 200


def test_good_formats_decode_and_align(wx, speech):
    for name, audio in good_cases(speech).items():
        r = wx.post("/align", json={"audio": audio, "text": TEXT})
        assert r.status_code == 200, (name, r.get_json())
        body = r.get_json()
        check_promise(body["words"], TEXT, body["duration_seconds"])
        assert body["duration_seconds"] == pytest.approx(speech.size / 22050, abs=0.06), name
        assert sum(w.get("estimated", False) for w in body["words"]) == 0, name


def test_mixed_batch_keeps_order_and_aligns_the_good(wx, speech):
    bad = bad_cases(speech)
    good = _b64(_file(speech, 22050))
    items = [
        {"audio": good, "text": TEXT},
        {"audio": bad["truncated header"], "text": TEXT},
        {"audio": good, "text": ""},
        "not an object",
        {"text": TEXT},
        {"audio": good, "text": TEXT},
        {"audio": good, "text": 7},
    ]
    body = wx.post("/align_batch", json={"items": items, "language": "en"}).get_json()
    assert body["count"] == len(items) and body["success"] is True
    errors = [a.get("error") for a in body["alignments"]]
    assert [e is None for e in errors] == [True, False, False, False, False, True, False]
    for i in (0, 5):
        check_promise(body["alignments"][i]["words"], TEXT, body["alignments"][i]["duration_seconds"])
    for i in (1, 2, 3, 4, 6):
        assert body["alignments"][i]["words"] == [] and f"items[{i}]" in errors[i]

    audios = [good, bad["base64 of text"], good, None]
    body = wx.post("/transcribe_batch", json={"audios": audios}).get_json()
    assert body["count"] == 4
    flags = [("error" in t) for t in body["transcriptions"]]
    assert flags == [False, True, False, True]
    assert all(t["text"] == "" for t in body["transcriptions"] if "error" in t)


@pytest.mark.parametrize(
    "body,expected",
    [
        ({"items": "nope"}, "'items' must be a list"),
        ({"items": []}, "'items' is empty"),
        ({}, "'items' is required"),
        ({"items": [{}], "language": 5}, "'language' must be a string"),
    ],
)
def test_bad_batch_shapes(wx, body, expected):
    r = wx.post("/align_batch", json=body)
    assert r.status_code == 400 and expected in r.get_json()["error"]


def test_too_many_items_and_too_long_audio(make_wx_client, shared_sphinx, speech):
    c = make_wx_client(shared_sphinx, max_items=2, max_audio_seconds=1.0)
    r = c.post("/transcribe_batch", json={"audios": ["a", "b", "c"]})
    assert r.status_code == 400 and "MAX_ITEMS" in r.get_json()["error"]
    r = c.post("/align", json={"audio": _b64(_file(speech, 22050)), "text": TEXT})
    assert r.status_code == 400 and "limit is 1 s" in r.get_json()["error"]


def test_five_minutes_of_silence(wx):
    silence = _b64(_file(np.zeros(16000 * 300, np.int16), 16000, subtype="PCM_16"))
    body = wx.post("/align", json={"audio": silence, "text": TEXT}).get_json()
    check_promise(body["words"], TEXT, 300.0)
    assert all(w.get("estimated") for w in body["words"])
    body = wx.post("/transcribe", json={"audio": silence}).get_json()
    assert body["success"] is True and body["text"] == "" and body["duration_seconds"] == 300.0


def test_an_absurdly_long_number_in_the_text_is_still_timed(wx):
    b64, audio, _ = spoken("Call me at seven seven seven.")
    text = "Call me at " + "7" * 400
    r = wx.post("/align", json={"audio": b64, "text": text})
    assert r.status_code == 200, r.get_json()
    check_promise(r.get_json()["words"], text, audio.size / 22050)
