"""Operator progress on stderr and the final statistics line, with a fake clock."""

from __future__ import annotations

import io

import pytest

from privacy_lock.cli import progress_factory
from privacy_lock.progress import Progress, RunStats, format_clock, format_duration


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def make(total_items: int = 1000, total_users: int = 4, **kwargs):
    clock = FakeClock()
    out = io.StringIO()
    kwargs.setdefault("is_tty", True)
    kwargs.setdefault("width", 200)
    progress = Progress(total_items, total_users, stream=out, clock=clock, **kwargs)
    return progress, clock, out


def screen(text: str) -> list[str]:
    """What a terminal shows: every '\\r' returns to the start of the line and overwrites."""
    lines: list[str] = []
    for physical in text.split("\n"):
        shown = ""
        for part in physical.split("\r"):
            shown = part + shown[len(part):]
        lines.append(shown.rstrip())
    return lines


# --- terminal ------------------------------------------------------------------------------------


def test_tty_bar_is_redrawn_in_place(tmp_path):
    progress, clock, out = make()
    clock.advance(1)
    progress.item_done("42", "diary", 250)
    first = out.getvalue()
    assert first.startswith("\r[#####---------------]  25%  250/1,000 items  0/4 users")
    assert "250 items/s" in first and "ETA 0:03" in first and "now 42 diary (250)" in first
    assert "\n" not in first
    clock.advance(1)
    progress.user_done("42", "ok")
    assert screen(out.getvalue()) == [
        "[#####---------------]  25%  250/1,000 items  1/4 users  125 items/s  ETA 0:06"
    ]


def test_tty_redraws_are_throttled_to_ten_a_second():
    progress, clock, out = make()
    for _ in range(100):  # 100 chunks in 0.5 s
        clock.advance(0.005)
        progress.item_done("7", "photo", 1)
    assert out.getvalue().count("\r") == 5  # at 0.005, ~0.105, ~0.205, ~0.305, ~0.405 s
    progress.close()
    final = screen(out.getvalue())
    assert final[0].startswith("[##------------------]  10%  100/1,000 items")
    assert final[1:] == [""]


def test_a_shorter_bar_overwrites_the_end_of_a_longer_one():
    progress, clock, out = make()
    clock.advance(1)
    progress.item_done("a-very-long-user-name", "diary", 10)
    clock.advance(1)
    progress.user_done("a-very-long-user-name", "ok")
    assert "a-very-long-user-name" not in screen(out.getvalue())[0]


def test_bar_is_cut_to_the_terminal_width():
    progress, clock, out = make(width=40)
    clock.advance(1)
    progress.item_done("42", "diary", 1)
    assert len(screen(out.getvalue())[0]) <= 39


def test_note_gets_its_own_line_and_the_bar_comes_back_below_it():
    progress, clock, out = make()
    clock.advance(1)
    progress.item_done("42", "diary", 100)
    progress.note("paused: pause file /tmp/pause exists")
    shown = screen(out.getvalue())
    assert shown[0] == "paused: pause file /tmp/pause exists"
    assert shown[1].startswith("[##------------------]  10%  100/1,000 items")
    progress.close()
    assert out.getvalue().endswith("\n")


def test_note_before_any_bar_is_just_a_line():
    progress, clock, out = make()
    progress.note("lock timeout, retry 2/5")
    assert out.getvalue() == "lock timeout, retry 2/5\n"


def test_close_is_idempotent_and_silent_when_nothing_was_drawn():
    progress, clock, out = make()
    progress.close()
    progress.close()
    assert out.getvalue() == ""
    progress.item_done("1", "diary", 5)  # late calls after close draw nothing
    assert out.getvalue() == ""


# --- not a terminal ------------------------------------------------------------------------------


def test_plain_lines_every_interval():
    progress, clock, out = make(5000, 10, is_tty=False, interval=5.0)
    for _ in range(12):  # one 100-item chunk a second for 12 s
        clock.advance(1)
        progress.item_done("3", "diary", 100)
    progress.user_done("3", "ok")
    progress.close()
    assert out.getvalue().splitlines() == [
        "progress: 500/5,000 items (10%), 0/10 users, 100 items/s, ETA 0:45",
        "progress: 1,000/5,000 items (20%), 0/10 users, 100 items/s, ETA 0:40",
    ]
    assert "\r" not in out.getvalue()


def test_plain_notes_are_lines():
    progress, clock, out = make(is_tty=False)
    progress.note("paused: pause file /x exists")
    assert out.getvalue() == "paused: pause file /x exists\n"


def test_tty_is_detected_from_the_stream():
    assert Progress(1, 1, stream=io.StringIO()).is_tty is False


# --- quiet, zeros, broken streams ----------------------------------------------------------------


@pytest.mark.parametrize("tty", [True, False])
def test_quiet_prints_no_progress_but_notes_go_through(tty):
    progress, clock, out = make(quiet=True, is_tty=tty)
    for _ in range(20):
        clock.advance(1)
        progress.item_done("1", "diary", 10)
    progress.user_done("1", "ok")
    progress.note("lock timeout, retry 1/5")
    progress.close()
    assert out.getvalue() == "lock timeout, retry 1/5\n"


@pytest.mark.parametrize("tty", [True, False])
def test_totals_of_zero_divide_by_nothing(tty):
    progress, clock, out = make(0, 0, is_tty=tty, interval=1.0)
    progress.item_done("1", "diary", 0)  # at time 0: no rate yet
    clock.advance(2)
    progress.item_done("1", "diary", 0)
    progress.user_done("1", "already-locked")
    progress.close()
    assert progress.percent() == 100 and progress.rate() is None and progress.eta() is None
    assert "0/0 items" in out.getvalue()


def test_more_items_than_planned_stay_at_100_percent():
    progress, clock, out = make(10, 1)
    clock.advance(1)
    progress.item_done("1", "diary", 25)
    assert progress.percent() == 100 and progress.eta() == 0
    assert "[####################] 100%  25/10 items" in out.getvalue()


class BrokenStream(io.StringIO):
    def write(self, text: str) -> int:
        raise BrokenPipeError


def test_a_broken_stream_never_fails_the_run():
    progress = Progress(10, 1, stream=BrokenStream(), is_tty=True, clock=FakeClock())
    progress.item_done("1", "diary", 5)
    progress.note("x")
    progress.close()


# --- final statistics ----------------------------------------------------------------------------


def test_summary_line():
    stats = RunStats()
    for kind, items in [("diary", 1000), ("diary", 1000), ("photo", 1210), ("diary", 1000)]:
        stats.add_items(kind, items)
    stats.chunks = 4
    for _ in range(12):
        stats.add_user()
    stats.elapsed = 3.2
    assert stats.total_items == 4210
    assert stats.summary_line() == (
        "done: 12 users, 4,210 items hidden (diary 3,000, photo 1,210), 0 conflicts, "
        "4 chunks, 0 retries in 3.2 s (1,316 items/s)"
    )


def test_summary_line_of_a_revert_with_failures_conflicts_and_gone():
    stats = RunStats(action="restored")
    stats.add_items("photo", 1)
    stats.chunks = 1
    stats.add_user(conflicts=1, gone=2)
    stats.add_user(failed=True)
    stats.add_retry()
    stats.elapsed = 125
    assert stats.summary_line("interrupted") == (
        "interrupted: 2 users (1 failed), 1 item restored (photo 1), 1 conflict, 2 gone, "
        "1 chunk, 1 retry in 2 min 05 s (0 items/s)"
    )


def test_summary_line_of_a_dry_run_names_no_chunks_and_no_speed():
    stats = RunStats(action="would be restored")
    stats.add_items("diary", 8)
    stats.add_user(conflicts=1)
    stats.elapsed = 1.2
    assert stats.summary_line("dry run, nothing was changed") == (
        "dry run, nothing was changed: 1 user, 8 items would be restored (diary 8), "
        "1 conflict in 1.2 s"
    )


def test_summary_line_of_nothing_at_all():
    assert RunStats().summary_line() == (
        "done: 0 users, 0 items hidden, 0 conflicts, 0 chunks, 0 retries in 0.0 s"
    )


@pytest.mark.parametrize(("seconds", "clock", "duration"), [
    (0, "0:00", "0.0 s"),
    (7.4, "0:07", "7.4 s"),
    (754, "12:34", "12 min 34 s"),
    (3723, "1:02:03", "1 h 02 min"),
])
def test_time_formats(seconds, clock, duration):
    assert format_clock(seconds) == clock
    assert format_duration(seconds) == duration


def test_the_bar_measures_stderr_not_stdout(monkeypatch, capsys):
    """`apply ... > out.csv` cut the bar at 80 columns on a 200-column terminal: the width was
    stdout's (a file), not that of stderr, where the bar is drawn."""
    import fcntl
    import os
    import struct
    import termios

    monkeypatch.delenv("COLUMNS", raising=False)
    main, side = os.openpty()
    fcntl.ioctl(side, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 200, 0, 0))
    with os.fdopen(side, "w", closefd=True) as terminal:
        # stdout is pytest's capture here, as it is a file under `> out.csv`
        assert Progress(10, 1, stream=terminal).width == 200
    os.close(main)
    assert Progress(10, 1, stream=io.StringIO()).width == 80  # no terminal at all
    monkeypatch.setenv("COLUMNS", "132")
    assert Progress(10, 1, stream=io.StringIO()).width == 132  # as the shell says


def test_a_quiet_run_does_not_count_its_items():
    """--quiet shows no progress, so the read that counts the planned items (every named
    user's items, a second time) is not made; a run that shows progress counts them once."""
    counted: list[int] = []

    def count_items() -> int:
        counted.append(1)
        return 5000

    assert progress_factory(True)(count_items, 10).quiet and counted == []
    shown = progress_factory(False)(count_items, 10)
    assert not shown.quiet and shown.total_items == 5000 and counted == [1]
