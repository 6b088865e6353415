"""Tests of myna_common.progress: in a log (not a terminal), progress is plain lines with counts, plurals and an ETA,
at most one line per interval and one at the end."""

import io

from myna_common.progress import LineProgress, format_seconds, progress_bar


def test_a_log_gets_plain_lines_with_plurals_and_an_eta():
    log = io.StringIO()
    bar = progress_bar(total=4, desc="myna embed", unit="file", file=log, interval=0)
    assert isinstance(bar, LineProgress)  # a StringIO is not a terminal
    bar.update(1)
    bar.update(3)
    bar.close()
    lines = log.getvalue().splitlines()
    assert len(lines) == 2  # the line at 4/4 is not repeated when the bar closes
    assert lines[0].startswith("myna embed: 1/4 files (25%), 0s elapsed, ETA ")
    assert lines[-1].startswith("myna embed: 4/4 files (100%)") and "\r" not in log.getvalue()

    for unit, total, shown in (("file", 1, "1/1 file "), ("audio s", 10, "10/10 audio s "), ("it", 3, "3/3 it ")):
        log = io.StringIO()
        with LineProgress(total=total, unit=unit, file=log, interval=3600) as bar:
            bar.update(total)
        assert len(log.getvalue().splitlines()) == 1 and shown in log.getvalue()  # the closing line only


def test_format_seconds():
    assert [format_seconds(s) for s in (0.4, 42, 185, 3720)] == ["0s", "42s", "3m05s", "1h02m"]
