"""The front door's cost and what it buys, on loopback with the embedded engines:
latency through nginx+TLS vs direct, nginx's memory while relaying a 100 MB answer
to a slow reader, and gunicorn connections held by slow clients with and without it.

    .venv/bin/python tests/bench/bench_front.py
"""

from __future__ import annotations

import socket
import sys
import tempfile
import threading
import time
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.bench.timing import spread, timed  # noqa: E402
from tests.front_helpers import Front, make_ca, service_ports  # noqa: E402
from tests.helpers import Gunicorn  # noqa: E402

KEY = "bench-front-key"
H = {"X-API-Key": KEY}
REPEATS = 10


def session_rss_mib(sid: int) -> float:
    """Resident memory of nginx's processes in the front's session."""
    total = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            if int(stat[3]) != sid or not (entry / "cmdline").read_bytes().startswith(b"nginx"):
                continue
            rss = next(
                line for line in (entry / "status").read_text().splitlines() if line.startswith("VmRSS")
            )
            total += int(rss.split()[1])
        except (OSError, StopIteration):
            continue
    return total / 1024


def established(port: int) -> int:
    """Established TCP connections whose local port is ``port`` (gunicorn's side)."""
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            if state == "01" and int(local.rsplit(":", 1)[1], 16) == port:
                count += 1
    return count


def main() -> None:
    tmp = Path(tempfile.mkdtemp(prefix="bench-front-"))
    ca = make_ca(tmp)
    tts = Gunicorn(
        "tts.app:create_app()",
        {"TTS_ENGINE": "espeak", "TTS_API_KEY": KEY, "ACTIVITY_DIR": str(tmp / "a")},
        tmp / "tts.log",
    )
    big = Gunicorn("tests.big_app:create_app()", {}, tmp / "big.log")
    door = Front(tmp, ca, service_ports(tts=tts.port, whisperx=big.port))
    try:
        tts.wait_ready(), big.wait_ready(), door.wait_up()
        direct, through = requests.Session(), requests.Session()
        through.verify, through.trust_env = door.ca, False
        texts = [f"Line {i} of the narration, about slides and captions." for i in range(10)]
        print(f"latency (s, min/median/max of {REPEATS})         direct        front door   ratio (median)")
        for name, path, body in (
            ("/generate", "/generate", {"text": "Hello there, and welcome."}),
            ("/generate_batch (10 texts)", "/generate_batch", {"texts": texts}),
        ):
            a = timed(
                lambda: direct.post(tts.url + path, json=body, headers=H, timeout=120).raise_for_status(),
                REPEATS,
            )
            b = timed(
                lambda: through.post(
                    door.url + "/tts" + path, json=body, headers=H, timeout=120
                ).raise_for_status(),
                REPEATS,
            )
            print(f"  {name:<28} {a:>16.3f} {b:>16.3f}   {b.median / a.median:.2f}")

        # 100 MB answer, read slowly (1 MiB every 20 ms): nginx spools it to disk.
        samples, done = [], threading.Event()

        def sample() -> None:
            while not done.is_set():
                samples.append(session_rss_mib(door.proc.pid))
                time.sleep(0.05)

        idle = session_rss_mib(door.proc.pid)
        t = threading.Thread(target=sample)
        t.start()
        got = 0
        with through.get(door.url + "/whisperx/big", stream=True, timeout=300) as r:
            for piece in r.iter_content(2**20):
                got += len(piece)
                time.sleep(0.02)
        done.set()
        t.join()
        print(
            f"nginx RSS relaying {got / 2**20:.0f} MiB to a slow reader: idle {idle:.1f} MiB, during {spread(samples):.1f} MiB (min/median/max)"
        )

        # Slow clients: 100 connections that send one byte of a request line.
        for label, connect, port in (
            ("front door", door.tls_socket, tts.port),
            (
                "bare gunicorn",
                lambda: socket.create_connection(("127.0.0.1", tts.port), timeout=10),
                tts.port,
            ),
        ):
            held = []
            for _ in range(100):
                s = connect()
                s.sendall(b"G")
                held.append(s)
            time.sleep(1)
            used = established(port)
            try:
                ok = (
                    requests.get(door.url + "/tts/health", verify=door.ca, timeout=5).ok
                    if label == "front door"
                    else requests.get(tts.url + "/health", timeout=5).ok
                )
            except requests.RequestException:
                ok = False
            print(
                f"slow clients via {label:<14}: 100 held, gunicorn connections in use {used} (threads 32), /health answered: {ok}"
            )
            for s in held:
                s.close()
            time.sleep(1)
    finally:
        door.stop()
        tts.stop()
        big.stop()


if __name__ == "__main__":
    main()
