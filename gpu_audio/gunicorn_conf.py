"""gunicorn settings shared by the TTS server, the WhisperX server and the proxy.

One worker process per server (one copy of the model in GPU memory), gthread so
``/health`` answers while a long batch runs, no preload (CUDA does not survive
a fork: the model loads inside the worker). The bind is the served app's, from
the services table (``on_starting``); ``--bind`` on the command line wins.
"""

import os
import signal

from gunicorn.config import Bind

from gpu_audio import services
from gpu_audio.config import ServerSettings, request_threads
from gpu_audio.host.supervise import STOPWAITSECS
from gpu_audio.server.auth import check_bind_allowed
from gpu_audio.server.factory import server_of
from proxy.settings import ProxySettings, check_proxy_bind

workers = 1
worker_class = "gthread"
# Request threads: they wait on the GPU lane, so more threads means more
# requests queued (bounded by MAX_QUEUE), not more GPU work at once. The lane
# lets all but two of them wait (lane.py), so /health always finds a free one.
threads = request_threads(os.environ)
preload_app = False
# The worker's heartbeat comes from its main loop, not from request threads, so
# a 30-minute batch does not trip it; this only catches a wedged worker. It is
# generous because the first request may wait on a model still loading.
timeout = int(os.environ.get("GUNICORN_TIMEOUT", "300"))
# On SIGTERM: stop accepting, let in-flight requests finish for this long. It is
# longer than the longest request we allow (REQUEST_DEADLINE_S, 1 h) and shorter
# than supervisord's stopwaitsecs (3720), so a stop drains instead of cutting.
graceful_timeout = int(os.environ.get("GUNICORN_GRACEFUL_TIMEOUT", "3660"))
# supervisord's stopwaitsecs (host/supervise.py); on_starting checks the order.
SUPERVISORD_STOPWAITSECS = STOPWAITSECS
# Longer than a cloud load balancer's idle timeout (60 s), so it closes first.
keepalive = 75
limit_request_line = 8190
# gunicorn >= 25 opens a control socket at one fixed path per user; the servers
# on a host would fight over it, and nothing here uses gunicornc.
control_socket_disable = True

accesslog = "-"
# %(U)s is the path without the query string: a key wrongly put in a URL never
# reaches the log. Headers are never logged.
access_log_format = '%(h)s "%(m)s %(U)s %(H)s" %(s)s %(B)s %(M)sms'
errorlog = "-"
loglevel = os.environ.get("LOG_LEVEL", "info")
logconfig_dict = {
    "version": 1,
    "disable_existing_loggers": False,
    "root": {"level": loglevel.upper(), "handlers": ["console"]},
    "loggers": {
        "gunicorn.error": {"level": loglevel.upper(), "handlers": ["console"], "propagate": False},
        "gunicorn.access": {"level": "INFO", "handlers": ["access"], "propagate": False},
    },
    "handlers": {
        "console": {"class": "logging.StreamHandler", "formatter": "plain", "stream": "ext://sys.stderr"},
        "access": {"class": "logging.StreamHandler", "formatter": "access", "stream": "ext://sys.stdout"},
    },
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s [%(process)d] %(name)s: %(message)s"},
        "access": {"format": "%(message)s"},
    },
}


def on_starting(server) -> None:
    """Bind the served app's address from the services table unless ``--bind`` (or a
    config) chose one; then refuse a keyless server, or a proxy, on a non-loopback
    address (auth.check_bind_allowed, proxy.settings.check_proxy_bind). Runs before
    gunicorn creates its listeners."""
    app = services.app_for(getattr(server.app, "app_uri", None))
    if app is not None and list(server.cfg.bind or []) == list(Bind.default):
        server.cfg.set("bind", [app.bind(os.environ)])
        # A SIGHUP reload reads the settings afresh (this module's names, then the
        # command line) without calling on_starting: it finds the bind here.
        globals()["bind"] = list(server.cfg.bind)
    if app is services.PROXY:
        check_proxy_bind(server.cfg.bind or [], ProxySettings.from_env())
        return
    settings = ServerSettings.from_env(os.environ)
    check_bind_allowed(server.cfg.bind or [], settings)
    graceful = server.cfg.graceful_timeout
    if not settings.request_deadline_s < graceful < SUPERVISORD_STOPWAITSECS:
        server.log.warning(
            "stop order broken: REQUEST_DEADLINE_S %.0f < GUNICORN_GRACEFUL_TIMEOUT %d < "
            "supervisord stopwaitsecs %d does not hold, so a stop may cut requests in flight",
            settings.request_deadline_s,
            graceful,
            SUPERVISORD_STOPWAITSECS,
        )


def post_worker_init(worker):
    """On SIGTERM, mark this worker's server draining (``/ready`` → 503) before
    gunicorn stops accepting and finishes the requests in flight. The server is
    found through the app gunicorn loaded (``worker.wsgi``, our Flask app)."""
    server = server_of(worker.wsgi)
    if server is None:  # the proxy: nothing to drain
        return
    original = worker.handle_exit

    def handle_exit(sig, frame):
        server.drain()
        original(sig, frame)

    signal.signal(signal.SIGTERM, handle_exit)
    signal.siginterrupt(signal.SIGTERM, False)


def worker_exit(server, worker):
    """Send what the CloudWatch publisher still holds (when it is on)."""
    ours = server_of(getattr(worker, "wsgi", None))
    if ours is not None:
        ours.stop()
