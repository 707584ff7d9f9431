"""Captions from timed words: readable cues, whole words, exact stamps."""

from gpu_audio.captions import Cue, cue_for_text, cues_from_words, render
from gpu_audio.client import Word


def words(text, step=0.4):
    return [
        Word(w, round(i * step, 3), round(i * step + step * 0.8, 3), 1.0, False)
        for i, w in enumerate(text.split())
    ]


def test_cues_hold_at_most_two_lines_of_the_width_and_every_word_once():
    text = "In this section we look at how captions follow the narration and how markers follow them"
    cues = cues_from_words(words(text), width=20)
    assert " ".join(c.text.replace("\n", " ") for c in cues) == text
    for cue in cues:
        lines = cue.text.split("\n")
        assert len(lines) <= 2 and all(len(line) <= 20 for line in lines)
    assert all(a.end <= b.start for a, b in zip(cues, cues[1:]))


def test_a_cue_never_lasts_longer_than_max_seconds():
    cues = cues_from_words(
        words("one two three four five six seven eight", step=2.0), width=80, max_seconds=5.0
    )
    assert len(cues) > 1 and all(c.end - c.start <= 5.0 for c in cues)


def test_a_long_word_or_url_stays_whole():
    url = "https://example.com/a/very/long/path/to/the-slides"
    (cue,) = cues_from_words(words(f"See {url}"), width=20)
    assert url in cue.text.split("\n")
    assert cue_for_text(f"Visit well-known {url}", 0, 1, width=12).text.split("\n") == [
        "Visit",
        "well-known",
        url,
    ]


def test_srt_and_vtt_stamps():
    cues = [Cue(0.0, 1.2345, "Hello"), Cue(3661.5, 3662.0, "two\nlines")]
    assert render(cues, "srt") == (
        "1\n00:00:00,000 --> 00:00:01,234\nHello\n\n2\n01:01:01,500 --> 01:01:02,000\ntwo\nlines\n\n"
    )
    assert render(cues, "vtt") == (
        "WEBVTT\n\n00:00:00.000 --> 00:00:01.234\nHello\n\n01:01:01.500 --> 01:01:02.000\ntwo\nlines\n\n"
    )
