"""`gpu-audio tts / transcribe / align / narrate / health` end to end against real
servers (embedded engines) on loopback."""

import json
import os
import re
import subprocess
import sys

import pytest
import soundfile as sf

from .helpers import Gunicorn, rms

pytestmark = pytest.mark.integration
KEY = "cli-test-key"


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cli")
    common = {"TTS_API_KEY": KEY, "ACTIVITY_DIR": str(tmp / "activity")}
    tts = Gunicorn("tts.app:create_app()", {**common, "TTS_ENGINE": "espeak"}, tmp / "tts.log")
    wx = Gunicorn(
        "whisperx_server.app:create_app()", {**common, "WHISPERX_ENGINE": "pocketsphinx"}, tmp / "wx.log"
    )
    short = Gunicorn(
        "whisperx_server.app:create_app()",
        {**common, "WHISPERX_ENGINE": "pocketsphinx", "MAX_AUDIO_SECONDS": "3"},
        tmp / "short.log",
    )
    for g in (tts, wx, short):
        g.wait_ready()
    try:
        yield tts, wx, short
    finally:
        for g in (tts, wx, short):
            g.stop()


def run(tmp_path, servers, *args, whisper=None, env=None):
    tts, wx, _ = servers
    config = tmp_path / "server_config.json"
    whisper_url = whisper if isinstance(whisper, str) else (whisper or wx).url
    config.write_text(json.dumps({"server_url": tts.url, "whisper_url": whisper_url, "api_key": KEY}))
    env = {
        **{
            k: v
            for k, v in os.environ.items()
            if k not in ("TTS_API_KEY", "TTS_SERVER_URL", "TTS_WHISPER_URL", "WHISPER_URL")
        },
        **(env or {}),
    }
    return subprocess.run(
        [sys.executable, "-m", "gpu_audio", *args, "--config", str(config)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def parse_srt(text):
    cues = []
    for block in text.strip().split("\n\n"):
        lines = block.splitlines()
        assert lines[0].isdigit()
        start, end = (_secs(t) for t in lines[1].split(" --> "))
        cues.append((start, end, " ".join(lines[2:])))
    return cues


def parse_vtt(text):
    assert text.startswith("WEBVTT\n\n")
    cues = []
    for block in text[8:].strip().split("\n\n"):
        lines = block.splitlines()
        start, end = (_secs(t) for t in lines[0].split(" --> "))
        cues.append((start, end, " ".join(lines[1:])))
    return cues


def _secs(stamp):
    h, m, s = re.split(r":", stamp.replace(",", "."))
    return int(h) * 3600 + int(m) * 60 + float(s)


def test_tts_writes_one_wav_per_line_and_caches(tmp_path, servers):
    out = run(
        tmp_path,
        servers,
        "tts",
        "Hello there.",
        "A second, longer line of narration.",
        "--out-dir",
        "voice",
        "--json",
    )
    assert out.returncode == 0, out.stderr
    summary = json.loads(out.stdout)
    assert summary["count"] == 2 and summary["audio_seconds"] > 1
    files = sorted((tmp_path / "voice").glob("*.wav"))
    assert [re.sub(r"-[0-9a-f]{8}\.wav$", "", f.name) for f in files] == [
        "001-hello-there",
        "002-a-second-longer-line-of",
    ]
    for f in files:
        audio, rate = sf.read(f, dtype="float32")
        assert rate == 24000 and rms(audio) > 0.01
    stamps = [f.stat().st_mtime_ns for f in files]
    again = run(
        tmp_path, servers, "tts", "Hello there.", "A changed second line.", "--out-dir", "voice", "-v"
    )
    assert again.returncode == 0
    assert files[0].stat().st_mtime_ns == stamps[0]  # unchanged line: reused, not regenerated
    assert list((tmp_path / "voice").glob("002-a-changed-second-line-*.wav"))
    assert "1 of 2 lines unchanged" in again.stderr


def test_voice_settings_are_part_of_the_cache_key_and_never_overwrite(tmp_path, servers):
    """The same line with and without an instruct are two files; going back and forth
    reuses each, never the other's audio."""

    def files(*extra):
        out = run(tmp_path, servers, "tts", "Hello there.", "--out-dir", "v", "--json", *extra)
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout)["files"]

    plain = files()
    whispered = files("--instruct", "whisper it")
    assert whispered != plain
    assert files() == plain and files("--instruct", "whisper it") == whispered
    assert files("--speaker", "m3") not in (plain, whispered)
    assert len(list((tmp_path / "v").glob("*.wav"))) == 3


def test_tts_from_file_with_progress_and_summary(tmp_path, servers):
    (tmp_path / "lines.txt").write_text("One.\n\nTwo.\nThree.\n")
    out = run(tmp_path, servers, "tts", "--file", "lines.txt", "--batch-size", "2")
    assert out.returncode == 0 and "3 files" in out.stdout
    assert "3/3 lines" in out.stderr


def test_transcribe_formats(tmp_path, servers):
    run(tmp_path, servers, "tts", "Good morning everyone, and welcome.", "--out-dir", ".")
    wav = str(next(tmp_path.glob("001-*.wav")))
    text = run(tmp_path, servers, "transcribe", wav)
    assert text.returncode == 0 and text.stdout.strip()
    as_json = json.loads(run(tmp_path, servers, "transcribe", wav, "--format", "json").stdout)
    assert as_json["file"] == wav and as_json["duration"] > 1
    assert json.loads(run(tmp_path, servers, "transcribe", wav, "--json").stdout)["file"] == wav
    duration = sf.info(wav).duration
    for fmt, parse in (("srt", parse_srt), ("vtt", parse_vtt)):
        cues = parse(run(tmp_path, servers, "transcribe", wav, "--format", fmt).stdout)
        assert cues and all(0 <= s <= e <= duration + 0.01 for s, e, _ in cues)


def test_align_formats(tmp_path, servers):
    text = "Every word of this line gets a start and an end."
    run(tmp_path, servers, "tts", text, "--out-dir", ".")
    wav = str(next(tmp_path.glob("001-*.wav")))
    words = json.loads(run(tmp_path, servers, "align", wav, "--text", text).stdout)["words"]
    assert [w["word"] for w in words] == text.split()
    assert all(a["start"] <= b["start"] for a, b in zip(words, words[1:]))
    as_json = run(tmp_path, servers, "align", wav, "--text", text, "--format", "srt", "--json").stdout
    assert [w["word"] for w in json.loads(as_json)["words"]] == text.split()  # --json wins
    (tmp_path / "t.txt").write_text(text)
    cues = parse_vtt(
        run(
            tmp_path, servers, "align", wav, "--text-file", "t.txt", "--format", "vtt", "--width", "20"
        ).stdout
    )
    assert " ".join(c[2] for c in cues).split() == text.split()
    assert all(0 <= s <= e <= sf.info(wav).duration + 0.01 for s, e, _ in cues)


SCRIPT = """Welcome to the quarterly review.
In 2026 we served 12 teams & 3 partners.

Qwen narrates; pocketsphinx aligns every word.
"""


def test_narrate_end_to_end(tmp_path, servers):
    (tmp_path / "script.txt").write_text(SCRIPT)
    out = run(
        tmp_path,
        servers,
        "narrate",
        "script.txt",
        "--out-dir",
        "narration",
        "--gap",
        "0.5",
        "--width",
        "30",
        "--json",
    )
    assert out.returncode == 0, out.stderr
    summary = json.loads(out.stdout)
    folder = tmp_path / "narration"
    lines = [line for line in SCRIPT.splitlines() if line.strip()]
    assert summary["lines"] == 3 and not summary["failed"]
    per_line = sorted(folder.glob("0*.wav"))
    assert len(per_line) == 3 and len(sorted(folder.glob("0*.words.json"))) == 3
    audio, rate = sf.read(folder / "narration.wav", dtype="float32")
    total = audio.size / rate
    expected = sum(sf.info(p).duration for p in per_line) + 2 * 0.5
    assert total == pytest.approx(expected, abs=0.01) and rms(audio) > 0.01
    words = json.loads((folder / "narration.words.json").read_text())
    assert [w["word"] for w in words] == " ".join(lines).split()  # every script word, in order
    starts = [w["start"] for w in words]
    assert starts == sorted(starts) and words[-1]["end"] <= total + 1e-3
    first_of_line3 = next(w for w in words if w["line"] == 3)
    offset = sf.info(per_line[0]).duration + sf.info(per_line[1]).duration + 1.0
    assert first_of_line3["start"] >= offset - 1e-3  # shifted into the combined timeline
    for fmt, parse in (("srt", parse_srt), ("vtt", parse_vtt)):
        cues = parse((folder / f"narration.{fmt}").read_text())
        assert all(0 <= s <= e <= total + 1e-3 for s, e, _ in cues)
        assert " ".join(c[2] for c in cues).split() == " ".join(lines).split()
        assert all(
            len(row) <= 30
            for c in (folder / f"narration.{fmt}").read_text().splitlines()
            for row in [c]
            if not re.match(r"^\d|WEBVTT", c)
        )


def test_narrate_reports_a_failed_line_and_finishes_the_rest(tmp_path, servers):
    (tmp_path / "script.txt").write_text(
        "Short one.\n" + "This line is far too long for the aligner "
        "that only takes three seconds of audio per item.\nAnother short.\n"
    )
    out = run(tmp_path, servers, "narrate", "script.txt", "--out-dir", "n", whisper=servers[2])
    assert out.returncode == 1
    assert "line 2 not aligned" in out.stderr and "limit is 3 s" in out.stderr
    words = json.loads((tmp_path / "n" / "narration.words.json").read_text())
    assert {w["line"] for w in words} == {1, 3}
    assert (tmp_path / "n" / "narration.wav").exists() and (tmp_path / "n" / "narration.srt").exists()


def test_narrate_aligns_in_the_language_asked(tmp_path, servers):
    """--align-language reaches the aligner: pocketsphinx has no German, and says so."""
    (tmp_path / "script.txt").write_text("Guten Morgen.\n")
    out = run(tmp_path, servers, "narrate", "script.txt", "--out-dir", "de", "--align-language", "de")
    assert out.returncode == 1 and "'de'" in out.stderr and "Traceback" not in out.stderr


def test_health_table_and_errors(tmp_path, servers):
    out = run(tmp_path, servers, "health")
    assert out.returncode == 0 and "espeak-ng" in out.stdout and "pocketsphinx" in out.stdout
    bad = run(tmp_path, servers, "tts", "--out-dir", ".")
    assert bad.returncode == 1 and bad.stderr.startswith("gpu-audio: nothing to speak")
    missing = run(tmp_path, servers, "align", "nope.wav", "--text", "hi")
    assert missing.returncode == 1 and "nope.wav" in missing.stderr and "Traceback" not in missing.stderr


def test_whisper_url_the_users_scripts_set_is_read(tmp_path, servers):
    """Their scripts export WHISPER_URL; TTS_WHISPER_URL wins when both are set."""
    _, wx, _ = servers
    dead = "http://127.0.0.1:9"
    out = run(tmp_path, servers, "health", "--json", whisper=dead, env={"WHISPER_URL": wx.url})
    assert out.returncode == 0 and json.loads(out.stdout)["whisperx"]["engine"] == "pocketsphinx"
    out = run(
        tmp_path,
        servers,
        "health",
        "--json",
        whisper=wx,
        env={"WHISPER_URL": wx.url, "TTS_WHISPER_URL": dead},
    )
    assert json.loads(out.stdout)["whisperx"]["status"] == "unreachable"
