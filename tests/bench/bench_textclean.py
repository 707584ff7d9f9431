"""Benchmark (not a test): compat text cleaning on runs of spaces, the old regex
(kept here for comparison) against tts/textclean.py today (issue 13).

The old ``(?:(\\.)\\s*|\\s+)Amazing\\.\\s*$`` retried ``\\s+`` from every space of a
run, so doubling the run quadrupled the time; the scan from the end doubles it.
Figures: ms per text for n and 2n spaces, and the ratio (2 = linear, 4 = quadratic).

    python tests/bench/bench_textclean.py [--n 5000] [--repeats 5]
"""

from __future__ import annotations

import argparse
import logging
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.bench.timing import median_seconds  # noqa: E402
from tts.textclean import clean_text  # noqa: E402

log = logging.getLogger("bench_textclean")

_OLD_SPEAKER = re.compile(r"^\s*Speaker\s+\d+\s*:\s*")
_OLD_AMAZING = re.compile(r"(?:(\.)\s*|\s+)Amazing\.\s*$")


def old_clean_text(text: str) -> str:
    text = _OLD_SPEAKER.sub("", text, count=1)
    return _OLD_AMAZING.sub(lambda m: m.group(1) or "", text, count=1).strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=5000, help="spaces in the shorter text")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    log.info("%-8s %10s %12s %12s %7s", "cleaner", "text", f"n={args.n}", f"2n={2 * args.n}", "ratio")
    for name, fn in (("old", old_clean_text), ("new", clean_text)):
        for label, tail in (("spaces", ""), ("spaces+x", "x")):
            small, large = (
                median_seconds(lambda k=k: fn(" " * k + tail), args.repeats) for k in (args.n, 2 * args.n)
            )
            log.info(
                "%-8s %10s %9.3f ms %9.3f ms %7.1f", name, label, small * 1e3, large * 1e3, large / small
            )


if __name__ == "__main__":
    main()
