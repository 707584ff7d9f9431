"""The alignment promise (words.py), token readings (textnorm.py) and G2P (g2p.py)."""

import math
import random

import numpy as np
import pytest

from whisperx_server.engines.base import TokenTiming
from whisperx_server.g2p import ipa_to_cmu, pronounce
from whisperx_server.textnorm import is_spoken_word, token_readings, token_words
from whisperx_server.words import complete_words, speech_span

from .helpers import check_promise


def test_gaps_are_shared_by_length_and_marked_estimated():
    words = complete_words(
        ["a", "bb", "c", "dddd", "e"], {1: TokenTiming(0.5, 0.8, 0.9), 4: TokenTiming(1.7, 2.0, 0.8)}, 2.0
    )
    assert [w["start"] for w in words] == [0.0, 0.5, 0.8, 0.98, 1.7]
    assert [bool(w.get("estimated")) for w in words] == [True, False, True, True, False]
    assert words[1]["score"] == 0.9 and words[0]["score"] == 0.0


def test_no_timings_spread_over_the_speech_span():
    words = complete_words(["x", "y"], {}, 2.0, (0.3, 1.5))
    assert (words[0]["start"], words[1]["end"]) == (0.3, 1.5)


def test_random_engine_output_always_keeps_the_promise():
    rng = random.Random(7)
    for _ in range(500):
        n = rng.randint(1, 12)
        duration = rng.uniform(0.05, 10)
        tokens = [rng.choice(["a", "word", "42", "—", "Hello,"]) for _ in range(n)]
        timings = {}
        for i in range(-1, n + 1):
            if rng.random() < 0.6:
                start, end = rng.uniform(-1, duration + 1), rng.uniform(-1, duration + 1)
                score = rng.choice([rng.uniform(-0.5, 1.5), math.nan, math.inf])
                timings[i] = TokenTiming(start, end, score)
        span = sorted([rng.uniform(0, duration), rng.uniform(0, duration)])
        words = complete_words(tokens, timings, duration, tuple(span))
        check_promise(words, " ".join(tokens), duration)


def test_speech_span_finds_the_sound():
    rate = 16000
    audio = np.zeros(rate * 2, np.float32)
    audio[8000:24000] = 0.5 * np.sin(np.arange(16000) / rate * 2 * np.pi * 300)
    start, end = speech_span(audio, rate)
    assert start == pytest.approx(0.5, abs=0.011) and end == pytest.approx(1.5, abs=0.011)
    assert speech_span(np.zeros(100, np.float32), rate) == (0.0, 100 / rate)


@pytest.mark.parametrize(
    "token,first_reading",
    [
        ("Hello,", ["hello"]),
        ("2026", ["twenty", "twenty", "six"]),
        ("COVID-19", ["covid", "nineteen"]),
        ("&", ["and"]),
        ("$5", ["five", "dollars"]),
        ("1st", ["first"]),
        ("3.14", ["three", "point", "one", "four"]),
        ("1,000,000", ["one", "million"]),
        ("don’t", ["don't"]),
        ("90s", ["nineties"]),
        ("Zürich", ["zurich"]),
        ("½", ["a", "half"]),
        ("NASA's", ["nasa's"]),
    ],
)
def test_token_readings(token, first_reading):
    assert token_readings(token)[0] == first_reading
    assert token_words(token) == first_reading


def test_alternative_readings_and_unspoken_tokens():
    assert ["two", "thousand", "twenty", "six"] in token_readings("2026")
    assert ["number"] in token_readings("###") and ["hash"] in token_readings("###")
    assert token_readings("—") == [] and token_readings("...") == []
    assert not is_spoken_word(":)") and is_spoken_word("a1")
    # runs of digits too long to be a number are read digit by digit (num2words overflows)
    assert token_readings("7" * 5000) == [["seven"] * 5000]
    assert token_readings("0123456789012345") == [
        ("zero one two three four five six seven eight nine zero one two three four five").split()
    ]
    assert token_readings("3.1415926535897932384") == [
        ["three", "point"]
        + [
            "one four one five nine two six five three five eight nine seven nine three two three eight four".split()
        ][0]
    ]
    assert token_readings("፩") == []  # a digit int() cannot read: not spoken, still timed
    for token in ("12345678901234567890", "x86_64", "1.2.3", "$$$", "''", "9" * 400 + ".5", "፩፪"):
        for reading in token_readings(token):
            assert reading and all(w.replace("'", "").isalpha() and w.islower() for w in reading)


def test_ipa_to_cmu():
    assert ipa_to_cmu("n_ˈɜː_s") == ["N", "ER", "S"]
    assert ipa_to_cmu("f_ˈaɪɚ") == ["F", "AY", "ER"]
    assert ipa_to_cmu("tʃ_ˈɜː_tʃ") == ["CH", "ER", "CH"]
    assert ipa_to_cmu("k_ˈɑːɹ") == ["K", "AA", "R"]
    assert pronounce("qwen") and set(pronounce("pocketsphinx")) >= {"P", "K", "S", "F", "NG"}
