"""A flood of 401s is logged as a rate, not line by line (issue 13).

The clock and the timer are fakes: the test decides when time passes and when
the summary timer fires, so the counts are exact.
"""

import heapq
import io
import itertools
import logging

import pytest

from gpu_audio.server.auth import ApiKeyMiddleware
from gpu_audio.server.drain import CountingInput, _Drain
from gpu_audio.server.ratelog import RateLog
from gpu_audio.settings_env import hash_key

KEY = "k-77aa1c7e0b5d4e2a9c8b7f6e5d4c3b2a"
WRONG = "k-wrong-" + "9" * 24


class FakeTime:
    """A clock plus a timer queue: ``advance`` moves the clock and fires what fell due."""

    def __init__(self):
        self.now = 1000.0
        self._due = []
        self._order = itertools.count()

    def clock(self):
        return self.now

    def timer(self, seconds, callback):
        heapq.heappush(self._due, (self.now + seconds, next(self._order), callback))

    def advance(self, seconds):
        end = self.now + seconds
        while self._due and self._due[0][0] <= end:
            when, _, callback = heapq.heappop(self._due)
            self.now = max(self.now, when)
            callback()
        self.now = end


@pytest.fixture
def fake():
    return FakeTime()


def refusing_app(fake):
    refusals = RateLog(
        logging.getLogger("gpu_audio.server.auth"), "requests refused", clock=fake.clock, timer=fake.timer
    )
    return ApiKeyMiddleware(lambda environ, start: [b"ok"], [hash_key(KEY)], refusals=refusals)


def refuse(app, i):
    environ = {
        "REQUEST_METHOD": "POST",
        "PATH_INFO": "/generate",
        "REMOTE_ADDR": "203.0.113.9",
        "QUERY_STRING": "",
    }
    if i % 2:
        environ["HTTP_X_API_KEY"] = WRONG
    statuses = []
    app(environ, lambda status, headers: statuses.append(status))
    assert statuses == ["401 UNAUTHORIZED"]


def auth_records(caplog):
    return [r.getMessage() for r in caplog.records if r.name == "gpu_audio.server.auth"]


def test_2000_refusals_in_a_second_make_two_lines(fake, caplog):
    caplog.set_level(logging.DEBUG)
    app = refusing_app(fake)
    for i in range(2000):  # 2 000 requests/s
        refuse(app, i)
        fake.advance(0.0005)
    assert len(auth_records(caplog)) == 1  # the first, in full
    assert "401 POST /generate from 203.0.113.9 (missing key)" in auth_records(caplog)[0]
    fake.advance(60)
    lines = auth_records(caplog)
    assert len(lines) == 2
    assert lines[1] == "1999 requests refused (missing key: 999, wrong key: 1000) in the last 60 s"
    assert KEY not in caplog.text and WRONG not in caplog.text


def test_a_long_flood_writes_one_line_a_minute(fake, caplog):
    caplog.set_level(logging.DEBUG)
    app = refusing_app(fake)
    for i in range(2000):  # 150 s of refusals
        refuse(app, i)
        fake.advance(0.075)
    fake.advance(60)
    lines = auth_records(caplog)
    assert len(lines) == 4  # the first, then at 60, 120 and 180 s
    counted = [int(line.split()[0]) for line in lines[1:]]
    assert sum(counted) == 1999 and all(line.endswith("in the last 60 s") for line in lines[1:])


def test_after_a_quiet_minute_the_next_refusal_is_logged_in_full(fake, caplog):
    caplog.set_level(logging.DEBUG)
    app = refusing_app(fake)
    refuse(app, 0)
    fake.advance(61)  # the timer finds nothing counted: the spell is over
    fake.advance(600)
    refuse(app, 1)
    lines = auth_records(caplog)
    assert len(lines) == 2 and "(wrong key)" in lines[1]


def test_without_a_timer_the_next_event_writes_the_summary(fake, caplog):
    caplog.set_level(logging.DEBUG)
    rate = RateLog(logging.getLogger("t.ratelog"), "things", interval=10, clock=fake.clock, timer=None)
    for _ in range(1000):
        rate.record("a", "first thing")
        fake.advance(0.1)  # 100 s
    lines = [r.getMessage() for r in caplog.records if r.name == "t.ratelog"]
    assert lines[0] == "first thing" and len(lines) == 10  # one summary per 10 s
    assert lines[1] == "100 things (a: 100) in the last 10 s"


def test_a_summary_written_by_an_event_is_not_repeated_by_the_timer(fake, caplog):
    caplog.set_level(logging.DEBUG)
    rate = RateLog(
        logging.getLogger("t.ratelog"),
        "things",
        interval=10,
        clock=fake.clock,
        timer=lambda seconds, cb: fake.timer(seconds + 5, cb),
    )  # a late timer
    rate.record("a", "first")
    for _ in range(30):
        fake.advance(1)
        rate.record("a", "first")
    lines = [r.getMessage() for r in caplog.records if r.name == "t.ratelog"]
    assert lines[1:] == [
        "10 things (a: 10) in the last 10 s",
        "10 things (a: 10) in the last 10 s",
        "10 things (a: 10) in the last 10 s",
    ]


class _Sock:
    def gettimeout(self):
        return None

    def settimeout(self, value):
        pass

    def shutdown(self, how):
        pass


def test_drain_closes_are_logged_as_a_rate(fake, caplog):
    """After an early 401 each unread body cut short wrote a second line."""
    caplog.set_level(logging.DEBUG)
    closes = RateLog(
        logging.getLogger("gpu_audio.server.drain"), "connections closed", clock=fake.clock, timer=fake.timer
    )
    for _ in range(2000):  # each client hangs up after 10 of its 1 000 bytes
        body = CountingInput(io.BytesIO(b"x" * 10), 1000)
        _Drain(body, _Sock(), lambda *a: None, 2**20, closes).run()
        fake.advance(0.0005)
    fake.advance(60)
    lines = [r.getMessage() for r in caplog.records if r.name == "gpu_audio.server.drain"]
    assert len(lines) == 2 and lines[0].startswith("closed a connection after dropping 10 bytes")
    assert lines[1] == "1999 connections closed (sender stopped: 1999) in the last 60 s"
