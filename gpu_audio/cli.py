"""``gpu-audio``: the command line entry point (also ``python -m gpu_audio``)."""
from __future__ import annotations

import argparse
import importlib.util
import logging
import os
import sys

from gpu_audio import __version__

log = logging.getLogger("gpu_audio")


def gpu_stack_installed() -> bool:
    """True when torch and qwen-tts are importable (without importing them)."""
    return all(importlib.util.find_spec(name) is not None for name in ("torch", "qwen_tts"))


def pick_tts_engine(requested: str | None, env) -> tuple[str, str | None]:
    """The engine to serve with and, when chosen for the user, the line saying why."""
    if requested:
        return requested, None
    if env.get("TTS_ENGINE"):
        return env["TTS_ENGINE"], None
    if gpu_stack_installed():
        return "qwen", None
    return "espeak", ("No GPU stack installed (pip install '.[gpu]'): serving the embedded "
                      "eSpeak NG engine instead of Qwen3-TTS.")


def cmd_serve(args) -> int:
    """Run the TTS server under gunicorn in the foreground with the shared config."""
    env = dict(os.environ)
    engine, notice = pick_tts_engine(args.engine, env)
    if notice:
        print(f"gpu-audio: {notice}", file=sys.stderr)
    env["TTS_ENGINE"] = engine
    host = args.host or env.get("BIND_HOST", "127.0.0.1")
    port = args.port or int(env.get("TTS_PORT", 5000))
    command = [sys.executable, "-m", "gunicorn", "-c", "python:gpu_audio.gunicorn_conf",
               "--bind", f"{host}:{port}", "tts.app:create_app()"]
    print(f"gpu-audio: TTS server ({engine}) on http://{host}:{port}  (Ctrl-C stops it)",
          file=sys.stderr)
    os.execvpe(command[0], command, env)
    return 0  # not reached


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gpu-audio", description=__doc__)
    parser.add_argument("--version", action="version", version=f"gpu-audio {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the TTS server locally under gunicorn")
    serve.add_argument("--engine", choices=["qwen", "espeak"],
                       help="TTS engine (default: qwen if the GPU stack is installed, else espeak)")
    serve.add_argument("--host", help="bind address (default BIND_HOST or 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port (default TTS_PORT or 5000)")
    serve.set_defaults(func=cmd_serve)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)
