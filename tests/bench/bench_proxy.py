"""Benchmark (not a test): the auth proxy's cost.

1. Latency: a small TTS request (eSpeak NG, real gunicorn) sent direct vs through
   the proxy (real gunicorn), median over --repeats, side by side in one run.
2. Memory: the proxy worker's peak RSS while it relays a large body (--mb, default
   100 MB) from a local upstream stub: a GET of raw bytes, a /generate_batch-shaped
   JSON answer, and a large upload (an /align-shaped request) the other way. Each
   case gets a fresh proxy so the worker's VmHWM (peak RSS) belongs to that case.

    python tests/bench/bench_proxy.py [--repeats 30] [--mb 100]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.helpers import Gunicorn  # noqa: E402

KEY = "bench-proxy-key"
LINE = "Welcome back. In this section we look at how the captions follow the narration."
CHUNK = 1 << 20
MiB = 1 << 20


# ---- upstream stub ----------------------------------------------------------------------------


def start_stub(size: int):
    """A threaded werkzeug server: GET /big streams ``size`` bytes, POST /generate_batch
    streams a JSON answer with one ``size``-byte base64 string, POST /align reads the
    whole body and says how much it got. It holds nothing whole either way."""
    from werkzeug.serving import WSGIRequestHandler, make_server
    from werkzeug.wrappers import Request, Response

    block = b"A" * CHUNK

    def body(n):
        while n > 0:
            yield block[: min(n, CHUNK)]
            n -= CHUNK

    @Request.application
    def app(request):
        path = request.path.removeprefix("/tts").removeprefix(
            "/whisperx"
        )  # direct calls use the prefixes too
        if path == "/ready":
            return Response('{"status": "ok"}', content_type="application/json")
        if path == "/big":
            return Response(
                body(size), content_type="application/octet-stream", headers={"Content-Length": str(size)}
            )
        if path == "/generate_batch":
            head, tail = b'{"audios": ["', b'"], "sample_rate": 24000, "count": 1, "success": true}'

            def answer():
                yield head
                yield from body(size)
                yield tail

            return Response(
                answer(),
                content_type="application/json",
                headers={"Content-Length": str(len(head) + size + len(tail))},
            )
        if path == "/align":
            got = 0
            while data := request.stream.read(CHUNK):
                got += len(data)
            return Response(
                f'{{"received": {got}, "words": [], "success": true}}', content_type="application/json"
            )
        return Response(
            '{"success": false, "error": "no such route"}', status=404, content_type="application/json"
        )

    class Quiet(WSGIRequestHandler):
        def log_request(self, *args, **kwargs):
            pass

    server = make_server("127.0.0.1", 0, app, threaded=True, request_handler=Quiet)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_port}"


# ---- process memory ---------------------------------------------------------------------------


def worker_pid(master: int, timeout=10.0) -> int:
    """The gunicorn worker: the master's (only) child."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        children = Path(f"/proc/{master}/task/{master}/children").read_text().split()
        if children:
            return int(children[0])
        time.sleep(0.05)
    raise RuntimeError(f"gunicorn master {master} has no worker")


def status_kb(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


class RssSampler:
    """Samples VmRSS every 10 ms (VmHWM is the kernel's own peak; this is a cross-check)."""

    def __init__(self, pid):
        self.pid, self.peak_kb, self._stop = pid, 0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            self.peak_kb = max(self.peak_kb, status_kb(self.pid, "VmRSS"))
            time.sleep(0.01)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def upload(size):
    """An /align-shaped JSON body of about ``size`` bytes, streamed from a generator
    with a known length (so it goes with Content-Length, as a browser sends it)."""
    head, tail = b'{"audio": "', b'", "text": "hello", "language": "en"}'
    block = b"A" * CHUNK

    class Body:
        def __len__(self):
            return len(head) + size + len(tail)

        def __iter__(self):
            yield head
            n = size
            while n > 0:
                yield block[: min(n, CHUNK)]
                n -= CHUNK
            yield tail

    return Body()


def relay_case(tmp: Path, name: str, upstream: str, size: int, send):
    """A fresh proxy in front of ``upstream``; ``send(base_url)`` moves the body and
    returns the bytes moved. Returns the row of figures (with the direct throughput)."""
    began = time.perf_counter()
    send(upstream)
    direct_mb_s = size / MiB / (time.perf_counter() - began)
    config = tmp / "server_config.json"
    config.write_text("{}")
    proxy = Gunicorn(
        "proxy.app:create_app()",
        {
            "TTS_SERVER_URL": upstream,
            "TTS_WHISPER_URL": upstream,
            "TTS_API_KEY": KEY,
            "GPU_AUDIO_CONFIG": str(config),
            "PROXY_ACCESS_KEY": "",
            "LOG_LEVEL": "warning",
        },
        tmp / f"proxy-{len(list(tmp.glob('proxy-*.log')))}.log",
    ).wait_ready()
    try:
        pid = worker_pid(proxy.proc.pid)
        send(proxy.url, small=True)  # warm up: imports, the upstream session, a first relay
        before_kb = status_kb(pid, "VmRSS")
        hwm_before_kb = status_kb(pid, "VmHWM")
        with RssSampler(pid) as sampler:
            began = time.perf_counter()
            moved = send(proxy.url)
            seconds = time.perf_counter() - began
        peak_kb = max(status_kb(pid, "VmHWM"), sampler.peak_kb)
    finally:
        proxy.stop()
    growth_mb = (peak_kb - max(before_kb, 0)) / 1024
    return {
        "case": name,
        "body_mb": moved / MiB,
        "rss_before": before_kb / 1024,
        "hwm_before": hwm_before_kb / 1024,
        "peak": peak_kb / 1024,
        "growth": growth_mb,
        "ratio": growth_mb / (moved / MiB),
        "mb_s": moved / MiB / seconds,
        "direct_mb_s": direct_mb_s,
    }


# ---- latency ----------------------------------------------------------------------------------


def median_ms(fns, repeats):
    """Median ms of each of ``fns``, run interleaved so drift hits them alike."""
    for fn in fns:
        fn()  # warm up
    times = [[] for _ in fns]
    for _ in range(repeats):
        for fn, spent in zip(fns, times):
            began = time.perf_counter()
            fn()
            spent.append((time.perf_counter() - began) * 1000)
    return [statistics.median(spent) for spent in times]


def latency(tmp: Path, repeats: int):
    common = {"TTS_API_KEY": KEY, "ACTIVITY_DIR": str(tmp / "activity"), "LOG_LEVEL": "warning"}
    tts = Gunicorn("tts.app:create_app()", {**common, "TTS_ENGINE": "espeak"}, tmp / "tts.log")
    config = tmp / "server_config.json"
    config.write_text("{}")
    proxy = Gunicorn(
        "proxy.app:create_app()",
        {
            "TTS_SERVER_URL": tts.url,
            "TTS_WHISPER_URL": tts.url,
            "TTS_API_KEY": KEY,
            "GPU_AUDIO_CONFIG": str(config),
            "PROXY_ACCESS_KEY": "",
            "LOG_LEVEL": "warning",
        },
        tmp / "proxy.log",
    )
    rows = []
    try:
        tts.wait_ready()
        proxy.wait_ready()
        direct, via = requests.Session(), requests.Session()
        direct.headers["X-API-Key"] = KEY  # the proxy adds its own; the browser sends none
        cases = [
            ("/generate", "generate", {"text": LINE}),
            ("/generate_batch x10", "generate_batch", {"texts": [f"{LINE} Line {i}." for i in range(10)]}),
            ("/health", "health", None),
        ]
        for label, path, body in cases:

            def call(session, base):
                def run():
                    if body is None:
                        r = session.get(f"{base}/{path}", timeout=120)
                    else:
                        r = session.post(f"{base}/{path}", json=body, timeout=120)
                    r.raise_for_status()
                    run.size = len(r.content)

                return run

            d_call, p_call = call(direct, tts.url), call(via, proxy.url + "/tts")
            d_ms, p_ms = median_ms([d_call, p_call], repeats)
            rows.append((label, d_call.size / 1024, d_ms, p_ms, p_ms - d_ms, p_ms / d_ms))
    finally:
        proxy.stop()
        tts.stop()
    return rows


def main():
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--mb", type=int, default=100, help="size of the relayed body in MiB")
    args = parser.parse_args()
    size = args.mb * MiB

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        print(f"latency, median of {args.repeats} (eSpeak NG TTS server, one gunicorn each)")
        print(
            f"{'request':<20} {'resp KiB':>9} {'direct ms':>10} {'proxy ms':>9} {'added ms':>9} {'ratio':>6}"
        )
        for label, kib, d_ms, p_ms, added, ratio in latency(tmp, args.repeats):
            print(f"{label:<20} {kib:>9.1f} {d_ms:>10.2f} {p_ms:>9.2f} {added:>9.2f} {ratio:>6.2f}")

        stub, upstream = start_stub(size)

        def download(path, method="GET"):
            def send(base, small=False):
                if small:
                    return len(requests.get(base + "/health", timeout=30).content)
                moved = 0
                with requests.request(
                    method,
                    f"{base}/tts/{path}",
                    json={} if method == "POST" else None,
                    stream=True,
                    timeout=300,
                ) as r:
                    r.raise_for_status()
                    for chunk in r.iter_content(CHUNK):
                        moved += len(chunk)
                return moved

            return send

        def send_upload(base, small=False):
            n = 1024 if small else size
            r = requests.post(
                base + "/whisperx/align",
                data=upload(n),
                headers={"Content-Type": "application/json"},
                timeout=300,
            )
            r.raise_for_status()
            return r.json()["received"]

        try:
            rows = [
                relay_case(tmp, "GET /big", upstream, size, download("big")),
                relay_case(tmp, "POST /generate_batch", upstream, size, download("generate_batch", "POST")),
                relay_case(tmp, "upload POST /align", upstream, size, send_upload),
            ]
        finally:
            stub.shutdown()
        print()
        print("proxy worker memory while relaying a large body (fresh proxy per case; MiB)")
        print(
            f"{'case':<22} {'body':>7} {'RSS before':>11} {'peak RSS':>9} {'growth':>7} "
            f"{'growth/body':>12} {'MiB/s direct':>13} {'MiB/s proxy':>12}"
        )
        for r in rows:
            print(
                f"{r['case']:<22} {r['body_mb']:>7.1f} {r['rss_before']:>11.1f} {r['peak']:>9.1f} "
                f"{r['growth']:>7.1f} {r['ratio']:>12.3f} {r['direct_mb_s']:>13.0f} {r['mb_s']:>12.0f}"
            )


if __name__ == "__main__":
    main()
