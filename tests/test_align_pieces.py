"""Cutting long alignments at pauses (whisperx_server/pieces.py), on real eSpeak
speech: eSpeak's word events say where each token starts, so a cut can be checked
to fall between two words, in the pause, never inside one."""

import numpy as np
import pytest
import soxr

from gpu_audio.audio import frame_energy_db
from whisperx_server.pieces import NoPause, Piece, cut_points, plan

from .helpers import spoken

RATE = 16000
SENTENCES = [
    "The quarterly numbers are in.",
    "Revenue grew by twelve percent, mostly in Europe.",
    "Costs stayed flat for the third quarter in a row.",
    "Next, we look at the hiring plan for the spring.",
    "Finally, thank you all for listening.",
]


@pytest.fixture(scope="module")
def talk():
    """(tokens, audio at 16 kHz, {token: start s} for the tokens eSpeak reports (it runs
    some short words together), Whisper-like segments: one per sentence, each ending
    where the next begins, as VAD chunks often do)."""
    text = " ".join(SENTENCES)
    _, audio, truth = spoken(text)
    audio = soxr.resample(audio, 22050, RATE).astype(np.float32)
    tokens = text.split()
    starts = truth
    segments, first = [], 0
    for sentence in SENTENCES:
        stop = first + len(sentence.split())
        end = starts[stop] if stop < len(tokens) else audio.size / RATE
        segments.append({"start": starts[first], "end": end, "text": sentence})
        first = stop
    return tokens, audio, starts, segments


def started_before(starts, token):
    """When the last word before ``token`` that eSpeak reports began."""
    return starts[max(i for i in starts if i < token)]


def sentence_starts():
    firsts, first = [], 0
    for sentence in SENTENCES[:-1]:
        first += len(sentence.split())
        firsts.append(first)
    return firsts


def test_cuts_fall_in_the_pauses_between_sentences(talk):
    tokens, audio, starts, segments = talk
    cuts = cut_points(tokens, segments, audio, RATE)
    assert [token for _, token in cuts] == sentence_starts()
    energy = frame_energy_db(audio, RATE)
    for at, token in cuts:
        # after the previous word began, before this one began: and in silence, not speech
        assert started_before(starts, token) < at < starts[token]
        assert energy[int(at / 0.01)] < -40, (at, tokens[token])


def test_a_sloppy_transcript_still_gives_cuts_only_between_matching_words(talk):
    """Whisper hears numbers as digits, drops words, merges or hallucinates a segment:
    cuts survive where both neighbours still match, and nowhere else."""
    tokens, audio, starts, segments = talk
    heard = [dict(seg) for seg in segments]
    heard[1]["text"] = "Revenue grew by 12% mostly in Europe."
    heard[2]["text"] = "Costs stayed flat for the third quarter in a row"
    heard[3]["text"] = "next we look at the hiring"  # the end of the sentence went missing
    heard.insert(4, {"start": heard[3]["end"], "end": heard[3]["end"], "text": "Thanks for watching!"})
    cuts = cut_points(tokens, heard, audio, RATE)
    boundaries = sentence_starts()
    assert [token for _, token in cuts] == boundaries[:3]  # "spring." / "Finally," has no anchor left
    for at, token in cuts:
        assert started_before(starts, token) < at < starts[token]


def test_nothing_heard_means_nowhere_to_cut(talk):
    tokens, audio, _, _ = talk
    assert cut_points(tokens, [], audio, RATE) == []
    unrelated = [
        {"start": 0.0, "end": 5.0, "text": "completely different words"},
        {"start": 5.0, "end": 9.0, "text": "nothing in common"},
    ]
    assert cut_points(tokens, unrelated, audio, RATE) == []


def test_languages_without_spaces_match_by_character():
    rate = 100  # 10 ms frames: one sample each
    audio = np.ones(600, np.float32)
    audio[290:310] = 0.0  # a pause at 3 s
    tokens = ["こんにちは、", "世界。", "今日は", "晴れです。"]
    segments = [
        {"start": 0.0, "end": 2.8, "text": "こんにちは世界"},
        {"start": 3.2, "end": 6.0, "text": "今日は晴れです"},
    ]
    (cut,) = cut_points(tokens, segments, audio, rate, spaced=False)
    assert cut[1] == 2 and 2.9 <= cut[0] <= 3.1
    assert cut_points(tokens, segments, audio, rate, spaced=True) == []  # no word in common


def test_punctuation_of_its_own_does_not_hide_a_cut():
    """Characters as units (ja/zh): "。" matches nothing, yet the cut after it stands."""
    rate = 100
    audio = np.ones(600, np.float32)
    audio[290:310] = 0.0
    units = list("今日は晴れ。明日は雨。")
    segments = [
        {"start": 0.0, "end": 2.8, "text": "今日は晴れ"},
        {"start": 3.2, "end": 6.0, "text": "明日は雨"},
    ]
    (cut,) = cut_points(units, segments, audio, rate, spaced=False)
    assert cut[1] == units.index("明") and 2.9 <= cut[0] <= 3.1


def covers(pieces, tokens, duration):
    assert pieces[0].first == 0 and pieces[-1].stop == len(tokens)
    assert pieces[0].start == 0.0 and pieces[-1].end == duration
    for a, b in zip(pieces, pieces[1:]):
        assert a.stop == b.first and a.end == b.start and a.first < a.stop


def test_plan_takes_the_farthest_cut_within_the_target():
    tokens = [f"w{i}" for i in range(10)]
    cuts = [(10.0, 2), (20.0, 4), (30.0, 6), (40.0, 8)]
    pieces = plan(tokens, cuts, 50.0, target=25.0, limit=40.0)
    assert pieces == [Piece(0, 4, 0.0, 20.0), Piece(4, 8, 20.0, 40.0), Piece(8, 10, 40.0, 50.0)]
    covers(pieces, tokens, 50.0)
    assert plan(tokens, cuts, 20.0, target=25.0, limit=40.0) == [Piece(0, 10, 0.0, 20.0)]


def test_plan_stretches_to_the_limit_only_when_it_must():
    tokens = [f"w{i}" for i in range(6)]
    pieces = plan(tokens, [(35.0, 3)], 60.0, target=25.0, limit=40.0)
    assert pieces == [Piece(0, 3, 0.0, 35.0), Piece(3, 6, 35.0, 60.0)]
    # no cut after 35 s, but the rest fits within the limit: one longer last piece
    assert plan(tokens, [(20.0, 3)], 55.0, target=25.0, limit=40.0)[-1] == Piece(3, 6, 20.0, 55.0)


def test_plan_refuses_a_stretch_longer_than_the_limit_without_a_pause():
    tokens = [f"w{i}" for i in range(6)]
    with pytest.raises(NoPause, match="between 0 s and 40 s"):
        plan(tokens, [], 60.0, target=25.0, limit=40.0)
    with pytest.raises(NoPause, match="between 10 s and 50 s"):
        plan(tokens, [(10.0, 2), (55.0, 4)], 90.0, target=25.0, limit=40.0)


def test_plan_on_the_spoken_talk_keeps_every_token_once(talk):
    tokens, audio, starts, segments = talk
    duration = audio.size / RATE
    pieces = plan(tokens, cut_points(tokens, segments, audio, RATE), duration, target=4.0, limit=8.0)
    covers(pieces, tokens, duration)
    assert len(pieces) >= 3 and all(p.end - p.start <= 8.0 for p in pieces)
    for piece in pieces:  # each piece's words were spoken inside it
        assert all(
            piece.start <= starts[i] < piece.end for i in range(piece.first, piece.stop) if i in starts
        )
