"""``gpu-audio front``: nginx, the one public listener, in front of every service.

gunicorn's gthread worker gives a connection a thread from its first byte and reads
the request head with no timeout: a few dozen clients that send one byte and wait
starve a server (gunicorn's deployment guide: run it behind a buffering proxy). nginx
reads heads and bodies with timeouts, buffers the whole request before a gunicorn
thread is used and the whole answer before a slow reader is served, and speaks TLS,
so the API key never crosses the network in clear text.

The configuration is rendered from the services table: one ``location`` per service
prefix, passed to ``http://127.0.0.1:<port>`` with the prefix kept in the path (every
server serves its routes under its prefix too: PrefixMiddleware). There is no plain
HTTP listener at all: a client that forgets ``https://`` gets a refused connection,
not a redirect its key would already have crossed in clear text.

nginx runs in the foreground as this user, with its pid, temp folders and
certificate in a private runtime folder. With the deployment CA (TLS_CA_CERT,
TLS_CA_KEY) the front issues itself a short-lived host certificate for every name
it has (an EC2 instance gets new addresses at each start) and re-issues it daily,
reloading nginx with SIGHUP.
"""

from __future__ import annotations

import logging
import os
import pwd
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path
from types import FrameType

from gpu_audio import services
from gpu_audio.config import FrontSettings, ServerSettings, max_body_bytes
from gpu_audio.server.auth import KEY_QUERY_NAMES
from gpu_audio.settings_env import read_setting

from . import supervise
from .front_cert import Certificate, FrontError, certificate

log = logging.getLogger(__name__)

NGINX_PACKAGE = "nginx"  # Debian's package name
NGINX_FALLBACKS = ("/usr/sbin/nginx", "/usr/local/sbin/nginx", "/usr/local/nginx/sbin/nginx")
RENEW_S = 24 * 3600  # the host certificate is re-issued (and nginx reloaded) this often
READ_MARGIN_S = 120.0  # past REQUEST_DEADLINE_S: one engine call already running may finish
# An answer larger than nginx's memory buffers goes to a temp file up to this size, so a
# slow reader never holds a gunicorn thread (beyond it nginx would relay at the reader's pace).
MAX_TEMP_FILE = "8192m"
RETRY_AFTER_S = 5  # on nginx's own 502/503/504
WORKER_CONNECTIONS = 4096
TEMP_PATHS = ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
UPSTREAM_HOST = services.DEFAULT_HOST  # the servers listen on loopback behind the front

# nginx's own errors, in the contract's shape (status, message).
ERRORS: dict[int, str] = {
    400: "Bad request: the request could not be read.",
    404: "Not found.",
    405: "Method not allowed.",
    408: "The request took too long to arrive.",
    413: "The request body is larger than the configured limit (MAX_BODY_MB).",
    414: "The request URL is too long.",
    494: "The request headers are too large.",
    497: "This port speaks HTTPS only: use https://.",
    500: "The front door failed on this request.",
    502: "The server behind the front door is not answering (starting, stopping or down); retry.",
    503: "Too many connections from this address, or the front door is busy; retry.",
    504: "The server behind the front door took too long to answer.",
}
SHOWN_AS = {494: 400, 497: 400}  # nginx's own codes, sent as the standard one
RETRIED = (502, 503, 504)  # answered with Retry-After


def find_nginx() -> str:
    """The nginx binary, or FrontError naming the package to install."""
    found = shutil.which("nginx") or next((p for p in NGINX_FALLBACKS if os.access(p, os.X_OK)), None)
    if not found:
        raise FrontError(
            f"the front door needs nginx, which is not installed: apt-get install {NGINX_PACKAGE}"
        )
    return found


def read_timeout_s(settings: FrontSettings, env: Mapping[str, str]) -> float:
    """How long nginx waits for an answer: FRONT_READ_TIMEOUT_S, else REQUEST_DEADLINE_S
    plus a margin (clients wait 30 minutes and more; nginx's default is 60 s)."""
    if settings.read_timeout_s is not None:
        return settings.read_timeout_s
    deadline: float = read_setting(ServerSettings, "request_deadline_s", env)
    return deadline + READ_MARGIN_S


def _json(status: int) -> str:
    """The contract's error body as an nginx string (no quote or backslash inside)."""
    return '\'{"success": false, "error": "' + ERRORS[status] + "\"}'"


KEY_IN_URL_MESSAGE = "API keys are not accepted in the URL (it ends up in logs); send it as X-API-Key or Authorization: Bearer."


def key_in_url_pattern() -> str:
    """nginx's regex for a query string naming a key (the servers' own list): such a
    request is answered by nginx itself, so its request line never reaches a log line."""
    names = "|".join(re.escape(name) for name in sorted(KEY_QUERY_NAMES))
    return f"~*(^|&)({names})="


def _listen(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def locations(env: Mapping[str, str]) -> str:
    """One location per service of the table (read now), the prefix kept."""
    blocks = []
    for service in services.SERVICES:
        prefix = "/" + service.prefix.strip("/")
        upstream = f"http://{UPSTREAM_HOST}:{service.port(env)}"
        blocks.append(
            f"        # {service.title or service.name}\n"
            f"        location {prefix}/ {{ proxy_pass {upstream}; }}\n"
            f"        location = {prefix} {{ proxy_pass {upstream}; }}\n"
        )
    return "".join(blocks)


# nginx's 404 under /v1/, in OpenAI's error shape (gpu_audio/server/errors.py).
OPENAI_404 = (
    '\'{"error": {"message": "There is no such route.", "type": "not_found_error", '
    '"param": null, "code": "not_found"}}\''
)
OPENAI_MODELS = "/v1/models"


def openai_locations(env: Mapping[str, str]) -> str:
    """An exact location per OpenAI-compatible path of the table (read now) to its
    service, path kept; ``/v1/models`` to the first service (each server lists all)."""
    routes = [(path, service) for service in services.SERVICES for path in service.openai_paths]
    if services.SERVICES:
        routes.append((OPENAI_MODELS, services.SERVICES[0]))
    return "".join(
        f"        location = {path} {{ proxy_pass http://{UPSTREAM_HOST}:{service.port(env)}; }}\n"
        for path, service in routes
    )


def render(settings: FrontSettings, env: Mapping[str, str], folder: Path, cert: Path, key: Path) -> str:
    """nginx's whole configuration (``daemon off`` comes from the command line)."""
    timeout = settings.client_timeout_s
    user = f"user {pwd.getpwuid(os.getuid()).pw_name};\n" if os.geteuid() == 0 else ""
    temp = "".join(f"    {name}_temp_path {folder / name};\n" for name in TEMP_PATHS)
    error_pages = "".join(f"        error_page {status} @e{status};\n" for status in ERRORS)
    named = "".join(
        f"        location @e{status} {{\n"
        + (f"            add_header Retry-After {RETRY_AFTER_S} always;\n" if status in RETRIED else "")
        + f"            return {SHOWN_AS.get(status, status)} {_json(status)};\n"
        "        }\n"
        for status in ERRORS
    )
    return f"""\
# Rendered by gpu-audio front (gpu_audio/host/front.py) from the services table and the
# settings (FRONT_*, TLS_*, MAX_BODY_MB, REQUEST_DEADLINE_S); edit those, not this file.
{user}worker_processes auto;
worker_rlimit_nofile {2 * WORKER_CONNECTIONS};
pid {folder / "nginx.pid"};
error_log stderr warn;

events {{
    worker_connections {WORKER_CONNECTIONS};
}}

http {{
    server_tokens off;
    default_type application/json;
    # No query string, no headers: a key never reaches the log.
    log_format front '$remote_addr [$time_local] "$request_method $uri $server_protocol" '
                     '$status $body_bytes_sent $request_time $upstream_response_time';
    access_log /dev/stdout front;
    # nginx's error log writes a failed request's line, query string included: a request
    # with a key in its URL is refused here and never reaches a server or a log line.
    map $args $key_in_url {{
        default 0;
        "{key_in_url_pattern()}" 1;
    }}
{temp}
    # Slow and hostile clients: the head and the body must keep arriving, and the
    # answer must keep being read; the whole request is buffered (memory, then disk)
    # before a gunicorn thread is used.
    client_header_timeout {settings.header_timeout_s:g}s;
    client_body_timeout {timeout:g}s;
    send_timeout {timeout:g}s;
    reset_timedout_connection on;
    client_max_body_size {max_body_bytes(env)};
    client_body_buffer_size 1m;
    limit_conn_zone $binary_remote_addr zone=per_address:10m;
    limit_conn per_address {settings.conn_per_ip};
    limit_conn_status 503;

    proxy_http_version 1.1;
    proxy_set_header Connection close;
    proxy_set_header Host $host;
    # Set, never appended to what a client sent.
    proxy_set_header X-Forwarded-For $remote_addr;
    proxy_set_header X-Forwarded-Proto $scheme;
    proxy_set_header X-Forwarded-Host $host;
    proxy_request_buffering on;
    proxy_buffering on;
    proxy_buffer_size 64k;
    proxy_buffers 64 64k;
    proxy_busy_buffers_size 256k;
    proxy_max_temp_file_size {MAX_TEMP_FILE};
    proxy_temp_file_write_size 1m;
    proxy_connect_timeout 10s;
    proxy_send_timeout {read_timeout_s(settings, env):g}s;
    proxy_read_timeout {read_timeout_s(settings, env):g}s;
    proxy_next_upstream off;

    server {{
        listen {_listen(settings.host, settings.port)} ssl;
        server_name _;
        ssl_certificate {cert};
        ssl_certificate_key {key};
        ssl_protocols TLSv1.2 TLSv1.3;
        ssl_session_cache shared:tls:10m;
        ssl_session_timeout 1h;

{error_pages}
        if ($key_in_url) {{ return 400 '{{"success": false, "error": "{KEY_IN_URL_MESSAGE}"}}'; }}

        # The services (gpu_audio/services.py): the prefix stays in the path.
{locations(env)}
        # The OpenAI-compatible routes (one base URL for both servers); any other /v1 path
        # is a 404 in OpenAI's shape.
{openai_locations(env)}        location /v1/ {{ return 404 {OPENAI_404}; }}

        location / {{ return 404 {_json(404)}; }}

{named}    }}
}}
"""


def prepare(env: Mapping[str, str]) -> tuple[Path, Certificate]:
    """The runtime folder (private, one per port) with the certificate and the
    configuration written in it; returns (the configuration's path, the certificate)."""
    settings = FrontSettings.from_env(env)
    folder = supervise.runtime_dir(env) / f"front-{settings.port}"
    folder.mkdir(mode=0o700, exist_ok=True)
    for name in TEMP_PATHS:
        (folder / name).mkdir(mode=0o700, exist_ok=True)
    cert = certificate(settings, env, folder)
    conf = folder / "nginx.conf"
    tmp = conf.with_name("nginx.conf.tmp")
    tmp.write_text(render(settings, env, folder, cert.cert, cert.key), encoding="utf-8")
    os.replace(tmp, conf)
    return conf, cert


def command(nginx: str, conf: Path) -> list[str]:
    """nginx in the foreground, its error log on stderr from the first line (before the
    configuration is read, Debian's default would be a root-owned file)."""
    return [nginx, "-p", str(conf.parent), "-e", "stderr", "-c", str(conf), "-g", "daemon off;"]


def urls(env: Mapping[str, str]) -> dict[str, str]:
    """The public URL of each service through the front door, as a client on this host
    writes it."""
    settings = FrontSettings.from_env(env)
    host = services.DEFAULT_HOST if settings.host in ("0.0.0.0", "::", "") else settings.host
    shown = f"[{host}]" if ":" in host else host
    return {s.name: f"https://{shown}:{settings.port}/{s.prefix.strip('/')}" for s in services.SERVICES}


def run(env: Mapping[str, str]) -> int:
    """nginx in the foreground until it exits. TERM, INT and QUIT stop it gracefully
    (nginx's QUIT: in-flight requests finish); a second one stops it at once. With the
    CA, the host certificate is re-issued every RENEW_S and nginx reloaded (HUP)."""
    nginx = find_nginx()
    conf, cert = prepare(env)
    check = subprocess.run([*command(nginx, conf), "-t", "-q"], capture_output=True, text=True)
    if check.returncode != 0:
        raise FrontError(f"nginx refuses the configuration {conf}: {check.stderr.strip()}")
    proc = subprocess.Popen(command(nginx, conf))
    stopping: list[int] = []

    def on_signal(signum: int, frame: FrameType | None) -> None:
        proc.send_signal(signal.SIGQUIT if not stopping else signal.SIGTERM)
        stopping.append(signum)

    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT):
        signal.signal(signum, on_signal)
    log.info("front door: %s (nginx, %s)", "  ".join(urls(env).values()), conf)
    renew_at = time.monotonic() + RENEW_S
    while True:
        try:
            return proc.wait(timeout=max(1.0, renew_at - time.monotonic()))
        except subprocess.TimeoutExpired:
            pass
        renew_at = time.monotonic() + RENEW_S
        if stopping:
            continue
        try:
            prepare(env)
        except FrontError as exc:  # keep serving with the certificate it has
            log.error("front door: the certificate was not renewed: %s", exc)
            continue
        proc.send_signal(signal.SIGHUP)
        log.info(
            "front door: %s, nginx reloaded",
            "certificate re-issued" if cert.issued else "certificate re-read",
        )


def main(env: Mapping[str, str], supervised: bool = False) -> int:
    """The command: off under supervisord unless FRONT=1 (exit 0 at once)."""
    if supervised and env.get("FRONT", "0") != "1":
        log.info("front door is off (FRONT is not 1)")
        return 0
    return run(env)  # a FrontError is the command's to show (cli.cmd_front)


def render_for_print(env: Mapping[str, str]) -> str:
    """The configuration as it would be run, with the certificate's place named but
    nothing issued or written (``gpu-audio front --print``)."""
    folder = supervise.runtime_dir(env) / f"front-{FrontSettings.from_env(env).port}"
    return render(FrontSettings.from_env(env), env, folder, folder / "host.crt", folder / "host.key")
