"""The client commands of ``gpu-audio``: tts, transcribe, align, narrate, health."""

from __future__ import annotations

import dataclasses
import json
import logging
import sys
import time
from dataclasses import asdict
from pathlib import Path

import soundfile as sf

from gpu_audio import services
from gpu_audio.captions import Cue, cues_from_words, render
from gpu_audio.client_config import load_client_config
from gpu_audio.host import HostError, ensure_gpu_ready
from gpu_audio.settings_env import ConfigError

from . import narrate as narration
from .api import Client, ClientError
from .progress import ProgressLine


def _client(args) -> Client:
    config = load_client_config(args.config, accept_whisper_url=True)
    if getattr(args, "start_gpu", False):
        line = ProgressLine(quiet=getattr(args, "quiet", False))
        urls = ensure_gpu_ready(config, progress=line)["urls"]
        line.done()
        config = dataclasses.replace(config, **{s.url_field: urls[s.name] for s in services.SERVICES})
    return Client(
        config.server_url,
        config.whisper_url,
        config.api_key,
        batch_size=getattr(args, "batch_size", None) or 16,
        ca_cert=config.ca_cert,
    )


def _run(fn, args) -> int:
    logging.getLogger().setLevel(logging.DEBUG if args.verbose else logging.WARNING)
    try:
        return fn(args)
    except (ClientError, ConfigError, HostError) as exc:
        print(f"gpu-audio: {exc}", file=sys.stderr)
        return getattr(exc, "exit_code", 1)
    except OSError as exc:  # a file that cannot be read or written
        where = f": {exc.filename}" if exc.filename else ""
        print(f"gpu-audio: {exc.strerror or exc}{where}", file=sys.stderr)
        return 1


def _settings(client: Client, args) -> dict:
    """What makes a line's audio what it is: the cache key besides the text."""
    health = client.health().get(services.TTS.name, {})
    # The server's defaults count too: a line spoken without --speaker changes when they do.
    return {
        "instruct": args.instruct,
        "language": args.language,
        "speaker": args.speaker,
        "engine": health.get("engine"),
        "model": health.get("model"),
        "default_speaker": health.get("speaker"),
        "default_language": health.get("language"),
        "sample_rate": health.get("sample_rate"),
    }


def tts(args) -> int:
    lines = list(args.text)
    if args.file:
        lines += narration.script_lines(Path(args.file).read_text(encoding="utf-8"))
    if not lines:
        raise ClientError("nothing to speak: give TEXT or --file")
    client = _client(args)
    began = time.monotonic()
    paths = narration.synthesize_lines(
        client,
        lines,
        Path(args.out_dir),
        _settings(client, args),
        ProgressLine(quiet=args.quiet).counter("lines"),
    )
    seconds = sum(sf.info(p).duration for p in paths)
    summary = {
        "count": len(paths),
        "audio_seconds": round(seconds, 2),
        "wall_seconds": round(time.monotonic() - began, 2),
        "files": [str(p) for p in paths],
    }
    if args.json:
        print(json.dumps(summary))
    elif not args.quiet:
        print(
            f"{len(paths)} files, {seconds:.1f} s of audio, in {summary['wall_seconds']:.1f} s → {args.out_dir}"
        )
    return 0


def transcribe(args) -> int:
    client = _client(args)
    results = client.transcribe_batch(list(args.audio), language=args.language or "en")
    failed = 0
    for path, t in zip(args.audio, results, strict=True):
        failed += bool(t.error)
        if t.error:
            print(f"gpu-audio: {path}: {t.error}", file=sys.stderr)
        elif args.json or args.format == "json":
            print(json.dumps({"file": path, **asdict(t)}))
        elif args.format == "text":
            print(t.text)
        else:
            print(render([Cue(s["start"], s["end"], s["text"]) for s in t.segments], args.format), end="")
    return 1 if failed else 0


def align(args) -> int:
    text = args.text if args.text is not None else Path(args.text_file).read_text(encoding="utf-8")
    client = _client(args)
    result = client.align(args.audio, text, language=args.language or "en")
    if args.json or args.format == "json":
        print(json.dumps({"words": [asdict(w) for w in result.words], "duration": result.duration}))
    else:
        print(render(cues_from_words(result.words, width=args.width), args.format), end="")
    return 0


def narrate(args) -> int:
    lines = narration.script_lines(Path(args.script).read_text(encoding="utf-8"), args.paragraphs)
    if not lines:
        raise ClientError(f"{args.script} has no text")
    client = _client(args)
    settings = _settings(client, args)
    summary = narration.narrate(
        client,
        lines,
        Path(args.out_dir),
        settings,
        gap=args.gap,
        width=args.width,
        align_language=args.align_language,
        progress=ProgressLine(quiet=args.quiet).counter("lines spoken"),
    )
    if args.json:
        print(json.dumps(summary))
    elif not args.quiet:
        print(
            f"{summary['lines']} lines, {summary['words']} words, {summary['audio_seconds']} s → "
            f"{summary['out_dir']}/narration.wav, .srt, .vtt"
        )
    for fail in summary["failed"]:
        print(f"gpu-audio: line {fail['line']} not aligned: {fail['error']}", file=sys.stderr)
    return 1 if summary["failed"] else 0


def health(args) -> int:
    client = _client(args)
    report = client.health()
    if args.json:
        print(json.dumps(report))
        return 0
    print(f"{'server':<9} {'status':<12} {'engine':<14} {'model':<40} {'gpu':<16} in flight")
    for name, h in report.items():
        print(
            f"{name:<9} {h.get('status', '?'):<12} {str(h.get('engine') or '-'):<14} "
            f"{str(h.get('model') or h.get('model_size') or '-')[:40]:<40} {str(h.get('gpu_name') or '-'):<16} "
            f"{h.get('in_flight', '-')}"
        )
    return 0 if all(h.get("status") == "ok" for h in report.values()) else 1


def register(sub) -> None:
    def common(p, start=True):
        p.add_argument("--config", help="server_config.json (default: GPU_AUDIO_CONFIG, ./, ./tts/)")
        p.add_argument("--json", action="store_true", help="machine-readable output")
        p.add_argument("-q", "--quiet", action="store_true", help="no progress, no summary")
        p.add_argument("-v", "--verbose", action="store_true", help="log every request and retry")
        if start:
            p.add_argument(
                "--start-gpu", action="store_true", help="start the GPU host first and wait for it"
            )
        return p

    def voice(p):
        p.add_argument("--instruct", help="how to speak (Qwen3-TTS instruct)")
        p.add_argument("--language")
        p.add_argument("--speaker")
        p.add_argument("--out-dir", default="out", help="where the WAVs go (default ./out)")
        p.add_argument("--batch-size", type=int, default=16, help="texts per request (default 16)")

    p = common(sub.add_parser("tts", help="speak lines: one WAV per line"))
    p.add_argument("text", nargs="*", help="lines to speak")
    p.add_argument("--file", help="a file with one line per row")
    voice(p)
    p.set_defaults(func=lambda a: _run(tts, a))

    p = common(sub.add_parser("transcribe", help="audio files → text"))
    p.add_argument("audio", nargs="+")
    p.add_argument(
        "--format", choices=["text", "json", "srt", "vtt"], default="text", help="--json is --format json"
    )
    p.add_argument("--language", default="en")
    p.set_defaults(func=lambda a: _run(transcribe, a))

    p = common(sub.add_parser("align", help="time every word of a text in an audio file"))
    p.add_argument("audio")
    group = p.add_mutually_exclusive_group(required=True)
    group.add_argument("--text")
    group.add_argument("--text-file")
    p.add_argument("--format", choices=["json", "srt", "vtt"], default="json", help="--json is --format json")
    p.add_argument("--language", default="en")
    p.add_argument("--width", type=int, default=42, help="caption line width (characters)")
    p.set_defaults(func=lambda a: _run(align, a))

    p = common(sub.add_parser("narrate", help="script → speech → aligned captions, in one go"))
    p.add_argument("script")
    voice(p)
    p.add_argument("--gap", type=float, default=0.4, help="silence between lines, seconds")
    p.add_argument("--width", type=int, default=42, help="caption line width (characters)")
    p.add_argument("--paragraphs", action="store_true", help="one line per paragraph, not per row")
    p.add_argument("--align-language", default="en", help="ISO code the captions are aligned in (default en)")
    p.set_defaults(func=lambda a: _run(narrate, a))

    p = common(sub.add_parser("health", help="both servers' health, one table"), start=False)
    p.set_defaults(func=lambda a: _run(health, a))
