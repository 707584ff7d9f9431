"""Real round trip, no mocks: eSpeak NG speaks, pocketsphinx aligns, and eSpeak's
own WORD events are the ground truth for every token's start."""

import numpy as np

from .helpers import check_promise, spoken

SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "In 2026, we shipped 3 new servers to 12 customers.",  # digits
    "Hello, World! This is NASA calling from Houston.",  # punctuation, capitals
    "Qwen speaks the narration while pocketsphinx aligns it.",  # words absent from the dictionary
    "Please open slide 42 & read the notes aloud.",  # a symbol
    "Captions follow every word; markers follow the captions.",
    "Dr. Smith arrived at 9 o'clock, exactly on time.",
    "The GPU host stops itself when it has been idle for fifteen minutes.",
    "Zürich, Köln and São Paulo — three cities, one narrator.",  # accents, a dash token
]


def test_oov_words_are_really_absent_from_the_dictionary(shared_sphinx):
    for word in ("qwen", "pocketsphinx"):
        assert shared_sphinx._aligner.lookup_word(word) is None or word in shared_sphinx._added


def test_alignment_matches_espeak_word_events(wx):
    errors = []
    for text in SENTENCES:
        b64, audio, truth = spoken(text)
        body = wx.post("/align", json={"audio": b64, "text": text, "language": "en"}).get_json()
        words = body["words"]
        check_promise(words, text, audio.size / 22050)
        for index, start in truth.items():
            errors.append(abs(words[index]["start"] - start))
    errors = np.array(errors)
    print(
        f"\nalignment vs eSpeak: {errors.size} words, mean {errors.mean() * 1000:.1f} ms, "
        f"max {errors.max() * 1000:.1f} ms"
    )
    assert errors.size >= 70
    assert errors.mean() <= 0.050
    assert errors.max() <= 0.150


def test_every_token_timed_even_when_unspeakable(wx):
    text = "Slide 7 — ### :) 100% done... ok"
    b64, audio, _ = spoken(text)
    words = wx.post("/align", json={"audio": b64, "text": text}).get_json()["words"]
    check_promise(words, text, audio.size / 22050)
    by_word = {w["word"]: w for w in words}
    assert by_word["—"].get("estimated") is True and by_word["—"]["score"] == 0.0
    assert "estimated" not in by_word["Slide"] and by_word["Slide"]["score"] > 0


def test_alignment_with_wrong_text_still_keeps_the_promise(wx):
    b64, audio, _ = spoken("Something completely different is said here.")
    text = "Banana republic 1999 oranges."
    words = wx.post("/align", json={"audio": b64, "text": text}).get_json()["words"]
    check_promise(words, text, audio.size / 22050)
