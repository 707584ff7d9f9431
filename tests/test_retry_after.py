"""Retry-After: every value is named once (gpu_audio/server/errors.py, or beside the
one place that uses it), and each refusal carries the one its reason names."""

import re

import pytest

from gpu_audio.server import errors
from gpu_audio.server.engine import EngineCrashed, EngineState
from gpu_audio.server.errors import ApiError
from gpu_audio.server.lane import ClientGone, DeadlinePassed, as_api_error

from .helpers import ROOT

# A header given a number written in place: "Retry-After": "5", ["Retry-After"] = "10", ...
LITERAL = re.compile(r"""["']Retry-After["']\]?\s*[:,=]\s*["']?\d""")


def test_no_retry_after_value_is_written_in_place():
    found = [
        f"{path.relative_to(ROOT)}:{n}: {line.strip()}"
        for folder in ("gpu_audio", "tts", "whisperx_server", "proxy")
        for path in sorted((ROOT / folder).rglob("*.py"))
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if LITERAL.search(line)
    ]
    assert not found, "name the value (gpu_audio/server/errors.py):\n" + "\n".join(found)


def test_each_refusal_carries_its_named_value():
    state = EngineState(engine=object())
    with pytest.raises(ApiError) as loading:
        state.require_ready()
    assert loading.value.headers == {"Retry-After": str(errors.RETRY_AFTER_LOADING_S)}
    state.engine_failed("it broke")
    with pytest.raises(ApiError) as failed:
        state.require_ready()
    assert failed.value.headers == {"Retry-After": str(errors.RETRY_AFTER_FAILED_S)}
    for dropped in (DeadlinePassed("passed its deadline"), ClientGone("client left")):
        assert as_api_error(dropped, "this item").headers == {
            "Retry-After": str(errors.RETRY_AFTER_DROPPED_S)
        }
    restarting = as_api_error(EngineCrashed("the engine died"), "this item")
    assert restarting.headers == {"Retry-After": str(errors.RETRY_AFTER_RESTART_S)}


def test_health_and_ready_say_when_to_look_again(make_client, recorder):
    import threading

    gate = threading.Event()
    recorder.load_gate = gate
    client = make_client(recorder, load_in_background=True)
    try:
        for path in ("/health", "/ready"):
            r = client.get(path)
            assert r.status_code == 503 and r.headers["Retry-After"] == str(errors.RETRY_AFTER_LOADING_S)
    finally:
        gate.set()
