"""The commands' one progress line: rewritten in place on a terminal, plain lines in a log."""

import io

from gpu_audio.client.progress import ProgressLine


class Terminal(io.StringIO):
    def isatty(self):
        return True


def test_on_a_terminal_the_line_rewrites_itself_and_ends_once():
    out = Terminal()
    line = ProgressLine(out)
    line("instance pending · 1 s")
    line("instance pending · 1 s")  # unchanged: not written again
    line("instance running · 9 s")
    line.done()
    line.done()
    assert out.getvalue() == "\r\033[Kinstance pending · 1 s\r\033[Kinstance running · 9 s\n"


def test_in_a_log_every_step_is_a_line_and_quiet_is_silent():
    out = io.StringIO()
    update = ProgressLine(out).counter("lines")
    for done in (1, 2, 4):
        update(done, 4)
    assert out.getvalue().splitlines() == [
        "[#####---------------] 1/4 lines",
        "[##########----------] 2/4 lines",
        "[####################] 4/4 lines",
    ]
    quiet = io.StringIO()
    ProgressLine(quiet, quiet=True).counter("lines")(1, 1)
    assert quiet.getvalue() == ""


def test_a_counter_ends_its_line_on_a_terminal_when_done():
    out = Terminal()
    update = ProgressLine(out).counter("lines spoken")
    update(1, 2)
    update(2, 2)
    assert out.getvalue().endswith("2/2 lines spoken\n") and out.getvalue().count("\n") == 1
