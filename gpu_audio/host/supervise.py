"""The supervisord configuration: supervisord.conf plus one program per service.

supervisord.conf holds what is not a service (the daemon, the idle watchdog, the
proxy); the services' programs come from the services table, so a new server is
one entry there, not one more hand-copied section. The full configuration is
rendered into a private runtime folder and supervisord is started with it, by
``gpu-audio supervise`` (the Docker image) and ``gpu-audio serve`` alike.
"""

from __future__ import annotations

import hashlib
import os
import stat
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

from gpu_audio import services

ROOT = Path(__file__).resolve().parents[2]
BASE_NAME = "supervisord.conf"
GUNICORN_CONF = "gunicorn.conf.py"  # in the base file's folder (the repository, /app)

# supervisord waits this long after SIGTERM before SIGKILL; it must exceed gunicorn's
# graceful_timeout (3660 s), itself above REQUEST_DEADLINE_S (3600 s), so it is always
# gunicorn, never supervisord, that decides when work is done (gunicorn_conf checks).
STOPWAITSECS = 3720

# One gunicorn per service (gunicorn.conf.py: one worker, gthread, model loaded in the
# worker). autorestart=true: a crashed server is worth a retry. startsecs=5: "started"
# once gunicorn has been up 5 s (binding and forking take ~1 s; model loading happens
# after, in the worker, and is reported by /ready, not here). SIGTERM: gunicorn stops
# accepting, drains in-flight requests, then exits; stopasgroup/killasgroup signal
# gunicorn's whole process group so no worker is left orphaned. Logs go to stdout.
PROGRAM = """\
[program:{name}]
command=gunicorn -c {gunicorn_conf} "{factory}"
directory={directory}
autostart=true
autorestart=true
startsecs=5
startretries=5
stopsignal=TERM
stopwaitsecs={stopwaitsecs}
stopasgroup=true
killasgroup=true
stdout_logfile=/dev/stdout
stdout_logfile_maxbytes=0
redirect_stderr=true
"""


def _escape(value: str) -> str:
    """supervisord expands %(name)s in values: a literal % is written %%."""
    return value.replace("%", "%%")


def base_conf(cwd: Path | None = None) -> Path:
    """supervisord.conf of the current folder, else of the repository/install."""
    for candidate in ((cwd or Path.cwd()) / BASE_NAME, ROOT / BASE_NAME):
        if candidate.is_file():
            return candidate
    raise SystemExit(f"gpu-audio: {BASE_NAME} not found (run from the repository root)")


def program(service: services.App, directory: Path) -> str:
    """One service's [program:NAME] section."""
    return PROGRAM.format(
        name=service.name,
        gunicorn_conf=GUNICORN_CONF,
        factory=_escape(service.factory),
        directory=_escape(str(directory)),
        stopwaitsecs=STOPWAITSECS,
    )


def render(base: Path) -> str:
    """The whole configuration: the base file, its %(here)s made absolute (the
    rendered file lives elsewhere), then one program per service of the table."""
    directory = base.resolve().parent
    text = base.read_text(encoding="utf-8").replace("%(here)s", _escape(str(directory)))
    programs = "\n".join(program(service, directory) for service in services.SERVICES)
    return (
        f"; Rendered by gpu-audio from {base.resolve()} and the services table\n"
        f"; (gpu_audio/services.py); edit those, not this file.\n\n"
        f"{text.rstrip()}\n\n; The services (gpu_audio/host/supervise.py).\n{programs}"
    )


def runtime_dir(env: Mapping[str, str]) -> Path:
    """A folder only this user can write: what is rendered there is run."""
    parent = env.get("XDG_RUNTIME_DIR")
    if parent:
        folder = Path(parent) / "gpu-audio"
    else:
        folder = Path(tempfile.gettempdir()) / f"gpu-audio-{os.getuid()}"
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    info = folder.lstat()
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid() or info.st_mode & 0o022:
        raise SystemExit(f"gpu-audio: {folder} is not a private folder of this user; remove it")
    return folder


def write_conf(base: Path, folder: Path) -> Path:
    """Render into ``folder``; the name follows the content, so runs of different
    checkouts never share a file and a rewrite never changes one in use."""
    text = render(base)
    path = folder / f"supervisord-{hashlib.sha256(text.encode()).hexdigest()[:12]}.conf"
    if not (path.is_file() and path.read_text(encoding="utf-8") == text):
        with tempfile.NamedTemporaryFile(
            "w", dir=folder, delete=False, suffix=".tmp", encoding="utf-8"
        ) as tmp:
            tmp.write(text)
        os.replace(tmp.name, path)
    return path


def prepare(env: Mapping[str, str], base: Path | None = None) -> Path:
    """The rendered configuration for this run (base: supervisord.conf found as usual)."""
    return write_conf(base or base_conf(), runtime_dir(env))


def command(conf: Path) -> list[str]:
    """supervisord in the foreground (nodaemon), from this Python."""
    return [sys.executable, "-m", "supervisor.supervisord", "-c", str(conf)]


def environment(env: Mapping[str, str]) -> dict[str, str]:
    """Its environment: this Python's scripts (gunicorn, gpu-audio) first on PATH."""
    return {**env, "PATH": os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")}


def exec_supervisord(env: Mapping[str, str], argv: Sequence[str] = ()) -> None:
    """Become supervisord (the container's main process): never returns."""
    full = command(prepare(env)) + list(argv)
    os.execve(full[0], full, environment(env))
