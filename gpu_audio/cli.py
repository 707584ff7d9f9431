"""``gpu-audio``: the command line entry point (also ``python -m gpu_audio``)."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from pathlib import Path

from gpu_audio import __version__, cli_cloudwatch, cli_deploy, cli_host, cli_tls, readiness, services
from gpu_audio.client.cli import register as register_client
from gpu_audio.host import front, models, supervise
from gpu_audio.host.serve import serve as serve_here
from gpu_audio.settings_env import ConfigError


def say(line: str) -> None:
    """A line for the person at the terminal (stderr, so stdout stays data)."""
    print(f"gpu-audio: {line}", file=sys.stderr, flush=True)


def cmd_serve(args: argparse.Namespace) -> int:
    try:
        return serve_here(say, args.engine, args.host, front=args.front)
    except front.FrontError as exc:
        say(str(exc))
        return 2


def cmd_supervise(args: argparse.Namespace) -> int:
    """supervisord in the foreground with every service (the Docker image's main process)."""
    if args.print:
        print(supervise.render(supervise.base_conf()), end="")
        return 0
    supervise.exec_supervisord(os.environ)
    return 0


def cmd_download_models(args, env=None) -> int:
    """Fetch what the configured engines need into MODELS_DIR, one line per step."""
    env = dict(os.environ if env is None else env)
    models_dir = args.models_dir or env.get("MODELS_DIR")
    if not models_dir:
        say("set MODELS_DIR (or --models-dir): where the models are kept")
        return 2
    Path(models_dir).mkdir(parents=True, exist_ok=True)
    try:
        steps = models.plan(env, args.only)
    except ConfigError as exc:
        say(str(exc))
        return 2
    if not steps:
        say("the configured engines need no download")
        return 0
    for number, (kind, what, target) in enumerate(steps, 1):
        began = time.monotonic()
        prefix = f"[{number}/{len(steps)}] {kind}: {what}"
        print(f"{prefix} ...", file=sys.stderr, flush=True)
        try:
            if kind == "align":
                models.fetch_align_model(target, models_dir, env)
                print(f"{prefix}: ready ({time.monotonic() - began:.0f} s)", file=sys.stderr)
                continue
            repo = target if kind == "tts" else models.whisper_repo(target)
            path, state = models.fetch_snapshot(repo, models_dir)
        except models.Unreachable as exc:
            say(str(exc))
            return models.EXIT_UNREACHABLE
        except ConfigError as exc:
            say(str(exc))
            return models.EXIT_MISSING_STACK
        print(
            f"{prefix}: {state} ({models.size_mb(path):.0f} MB in {path}, {time.monotonic() - began:.0f} s)",
            file=sys.stderr,
            flush=True,
        )
    return 0


def cmd_healthcheck(args: argparse.Namespace) -> int:
    """Exit 0 only when every local server answers /ready with 200 (Docker HEALTHCHECK)."""
    host = os.environ.get("HEALTHCHECK_HOST", services.DEFAULT_HOST)
    urls = {s.name: s.url(os.environ, host) for s in services.SERVICES}
    pending = readiness.check(urls, timeout=args.timeout)
    if pending:
        print(f"not ready: {', '.join(f'{name} {status}' for name, status in pending.items())}")
        return 1
    print("ready")
    return 0


def cmd_front(args: argparse.Namespace) -> int:
    """nginx, the one public listener (TLS), in front of every service, in the foreground."""
    if args.print:
        print(front.render_for_print(os.environ), end="")
        return 0
    try:
        return front.main(os.environ, supervised=args.supervised)
    except front.FrontError as exc:
        say(str(exc))
        return 2


def cmd_proxy(args) -> int:
    """The auth proxy under gunicorn, in the foreground (loopback unless told)."""
    if args.supervised and os.environ.get("PROXY", "0") != "1":
        logging.getLogger("gpu_audio").info("proxy is off (PROXY is not 1)")
        return 0
    host = args.host or os.environ.get("PROXY_HOST", "127.0.0.1")
    os.environ["PROXY_HOST"] = host  # the proxy answers to the name it binds (settings.default_hosts)
    port = args.port or int(os.environ.get("PROXY_PORT", 8080))
    command = [
        sys.executable,
        "-m",
        "gunicorn",
        "-c",
        "python:gpu_audio.gunicorn_conf",
        "--bind",
        f"{host}:{port}",
        "proxy.app:create_app()",
    ]
    say(f"proxy on http://{host}:{port}  (playground at /, Ctrl-C stops it)")
    os.execvp(command[0], command)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gpu-audio", description=__doc__)
    parser.add_argument("--version", action="version", version=f"gpu-audio {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run every server under supervisord, in the foreground")
    serve.add_argument(
        "--engine",
        choices=["gpu", "embedded"],
        help="gpu = Qwen3-TTS + WhisperX, embedded = eSpeak NG + pocketsphinx "
        "(default: gpu if the GPU stack is installed; TTS_ENGINE and "
        "WHISPERX_ENGINE win)",
    )
    serve.add_argument("--host", help="bind address (default BIND_HOST or 127.0.0.1)")
    serve.add_argument(
        "--front",
        action="store_true",
        help="the front door too: nginx with TLS on FRONT_PORT (8443), with TLS_CA_CERT/TLS_CA_KEY "
        "or TLS_CERT/TLS_KEY",
    )
    serve.set_defaults(func=cmd_serve)

    run = sub.add_parser(
        "supervise",
        help="supervisord in the foreground with every server, the "
        "watchdog and the proxy (the Docker image's command)",
    )
    run.add_argument("--print", action="store_true", help="print the configuration, start nothing")
    run.set_defaults(func=cmd_supervise)

    download = sub.add_parser("download-models", help="fetch the configured models into MODELS_DIR (once)")
    download.add_argument("--models-dir", help="default MODELS_DIR")
    download.add_argument(
        "--only", choices=["tts", "whisper", "align"], action="append", help="fetch only these (repeatable)"
    )
    download.set_defaults(func=cmd_download_models)

    health = sub.add_parser("healthcheck", help="exit 0 when every local server is ready")
    health.add_argument("--timeout", type=float, default=5.0)
    health.set_defaults(func=cmd_healthcheck)

    proxy = sub.add_parser("proxy", help="run the browser auth proxy (and its playground page)")
    proxy.add_argument("--host", help="bind address (default PROXY_HOST or 127.0.0.1)")
    proxy.add_argument("--port", type=int, help="port (default PROXY_PORT or 8080)")
    proxy.add_argument(
        "--supervised", action="store_true", help="as a supervisord program: do nothing unless PROXY=1"
    )
    proxy.set_defaults(func=cmd_proxy)

    door = sub.add_parser(
        "front", help="run the front door (nginx with TLS, the one public listener) in the foreground"
    )
    door.add_argument(
        "--supervised", action="store_true", help="as a supervisord program: do nothing unless FRONT=1"
    )
    door.add_argument("--print", action="store_true", help="print nginx's configuration, start nothing")
    door.set_defaults(func=cmd_front)

    cli_host.register(sub)
    register_client(sub)
    cli_cloudwatch.register_cloudwatch(sub)
    cli_deploy.register_deploy(sub)
    cli_tls.register(sub)
    return parser


def main(argv=None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    for noisy in ("botocore", "boto3", "urllib3", "huggingface_hub"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    args = build_parser().parse_args(argv)
    return args.func(args)
