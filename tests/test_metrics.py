"""/metrics: Prometheus text that prometheus-client's own parser reads, with numbers
that move as requests are made."""

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from gpu_audio.settings_env import hash_key

from .fakes import FakeASR, RecordingEngine
from .helpers import Gunicorn, spoken, wait_until

KEY = "metrics-key"


def samples(text):
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(metrics, name, **labels):
    return metrics.get((name, tuple(sorted(labels.items()))), 0.0)


def buffered(client):
    """Requests whose responses are closed, as a WSGI server closes them (that is when
    the metrics middleware records them)."""

    class Buffered:
        def __getattr__(self, method):
            return lambda *a, **kw: getattr(client, method)(*a, buffered=True, **kw)

    return Buffered()


def scrape(client):
    r = client.get("/metrics", headers={"X-API-Key": KEY})
    assert r.status_code == 200 and r.content_type.startswith("text/plain")
    return samples(r.get_data(as_text=True))


def test_metrics_need_the_key(make_client):
    c = make_client(api_key_hashes=(hash_key(KEY),))
    assert c.get("/metrics").status_code == 401
    assert c.get("/tts/metrics", headers={"Authorization": f"Bearer {KEY}"}).status_code == 200


def test_tts_numbers_move(make_client):
    c = buffered(make_client(api_key_hashes=(hash_key(KEY),), max_queue=2))
    before = scrape(c)
    h = {"X-API-Key": KEY}
    r = c.post("/generate_batch", json={"texts": ["Hello there.", "Second line."]}, headers=h)
    produced = sum(r.get_json()["durations"])
    c.post("/generate", json={"text": "x" * 6000}, headers=h)  # 400
    c.post("/generate", json={"text": "Hi."})  # 401
    c.post("/generate_batch", json={"texts": ["a", "b", "c"]}, headers=h)  # 503: MAX_QUEUE=2
    after = scrape(c)
    assert value(after, "gpu_audio_requests_total", route="/generate_batch", status="200") == 1
    assert value(after, "gpu_audio_requests_total", route="/generate", status="400") == 1
    assert value(after, "gpu_audio_requests_total", route="/generate", status="401") == 1
    assert value(after, "gpu_audio_rejected_total", route="/generate_batch") == 1
    assert value(after, "gpu_audio_audio_seconds_total", direction="produced") == pytest.approx(
        produced, abs=0.01
    )
    assert (
        value(after, "gpu_audio_engine_call_items_count") - value(before, "gpu_audio_engine_call_items_count")
        == 1
    )
    assert value(after, "gpu_audio_engine_call_items_sum") == 2
    assert value(after, "gpu_audio_request_seconds_count", route="/generate_batch") == 2  # 200 and 503
    assert value(after, "gpu_audio_build_info", version="0.1.0", engine="espeak-ng", model="espeak-ng") == 1
    assert value(after, "gpu_audio_uptime_seconds") > 0 and value(after, "gpu_audio_queue_depth") == 0


def test_engine_errors_by_kind(make_client):
    class OutOfMemoryError(RuntimeError):
        pass

    engine = RecordingEngine(fail_with=OutOfMemoryError("CUDA out of memory"))
    c = make_client(engine, api_key_hashes=(hash_key(KEY),))
    assert c.post("/generate", json={"text": "Hi."}, headers={"X-API-Key": KEY}).status_code == 507
    assert value(scrape(c), "gpu_audio_engine_errors_total", kind="out_of_memory") == 1


def test_ctranslate2_out_of_memory_counts_as_out_of_memory(make_wx_client):
    """faster-whisper (CTranslate2) raises a plain RuntimeError on CUDA OOM."""

    class Exhausted(FakeASR):
        def transcribe(self, audios, language):
            raise RuntimeError("CUDA failed with error out of memory")

    engine = Exhausted()
    c = make_wx_client(engine, api_key_hashes=(hash_key(KEY),))
    b64, _, _ = spoken("Hello.")
    r = c.post("/transcribe", json={"audio": b64}, headers={"X-API-Key": KEY})
    assert r.status_code == 507 and "out of memory" in r.get_json()["error"]
    assert value(scrape(c), "gpu_audio_engine_errors_total", kind="out_of_memory") == 1


def test_whisperx_audio_processed_and_unknown_routes(make_wx_client, shared_sphinx):
    c = buffered(make_wx_client(shared_sphinx, api_key_hashes=(hash_key(KEY),)))
    b64, audio, _ = spoken("Counting the audio the server processed.")
    c.post(
        "/align",
        json={"audio": b64, "text": "Counting the audio the server processed."},
        headers={"X-API-Key": KEY},
    )
    c.get("/no/such/route/12345", headers={"X-API-Key": KEY})
    m = scrape(c)
    assert value(m, "gpu_audio_audio_seconds_total", direction="processed") == pytest.approx(
        audio.size / 22050, abs=0.01
    )
    assert value(m, "gpu_audio_requests_total", route="other", status="404") == 1  # no label per path


@pytest.mark.integration
def test_metrics_through_gunicorn(tmp_path):
    g = Gunicorn(
        "tts.app:create_app()",
        {"TTS_ENGINE": "espeak", "TTS_API_KEY": KEY, "ACTIVITY_DIR": str(tmp_path)},
        tmp_path / "g.log",
    ).wait_ready()
    try:
        for _ in range(3):
            requests.post(
                g.url + "/generate", json={"text": "Hello."}, headers={"X-API-Key": KEY}, timeout=30
            )

        def counted():  # a request is recorded when gunicorn closes it, just after the reply
            text = requests.get(g.url + "/metrics", headers={"X-API-Key": KEY}, timeout=10).text
            return value(samples(text), "gpu_audio_requests_total", route="/generate", status="200") == 3

        wait_until(counted, timeout=10)
    finally:
        g.stop()
