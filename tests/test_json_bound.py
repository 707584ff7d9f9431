"""JSON bodies are refused for their number of values before they are parsed."""

import pytest

from gpu_audio.server.errors import _JSON_TOKEN, _too_many_values


def test_strings_count_once_whatever_they_hold():
    body = b'{"texts": ["a, [b] {c}", "d\\", e"], "x": [1, {}]}'
    tokens = [m.group() for m in _JSON_TOKEN.finditer(body)]
    assert tokens == [
        b"{",
        b'"texts"',
        b"[",
        b'"a, [b] {c}"',
        b",",
        b'"d\\", e"',
        b",",
        b'"x"',
        b"[",
        b",",
        b"{",
    ]


@pytest.mark.parametrize("body", [b'"' + b'\\"' * 1000, b'"abc\\', b'"' + b"\\" * 999])
def test_an_unterminated_string_matches_to_the_end(body):
    """Else every later quote starts a new scan to the end: quadratic on 256 MB."""
    assert _JSON_TOKEN.match(body).end() == len(body)


def test_counting_stops_past_the_limit():
    assert _too_many_values(b"[" + b"{}," * 100 + b"{}]", 50)
    assert not _too_many_values(b'{"texts": ["a", "b"]}', 50)


def test_a_body_of_many_objects_is_a_400(client):
    r = client.post(
        "/generate_batch", data=b'{"texts": [' + b"{}," * 5000 + b"{}]}", content_type="application/json"
    )
    assert r.status_code == 400
    assert "JSON values" in r.get_json()["error"]
