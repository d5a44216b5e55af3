"""Operator progress on stderr, and the statistics of the final line of a run.

On a terminal, one line redrawn in place with '\\r' (at most ten times a second); otherwise a
plain line every ``interval`` seconds, which reads well in a log file or a CI job. ``quiet``
silences progress but not notes: a note is a warning (paused, retrying a lock) and a run that
stays silent while it waits looks hung. Progress output never fails a run: if the stream
breaks (closed pipe), progress goes quiet and the work goes on.
"""

from __future__ import annotations

import io
import os
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TextIO

REDRAW_EVERY = 0.1  # seconds between redraws of the terminal bar
BAR_WIDTH = 20


class Progress:
    """Items and users done out of the planned totals; safe to call from several threads."""

    def __init__(
        self,
        total_items: int,
        total_users: int,
        *,
        stream: TextIO | None = None,
        quiet: bool = False,
        is_tty: bool | None = None,
        interval: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
        width: int | None = None,
    ) -> None:
        self.total_items = max(total_items, 0)
        self.total_users = max(total_users, 0)
        self.stream = stream if stream is not None else sys.stderr
        self.quiet = quiet
        self.is_tty = _isatty(self.stream) if is_tty is None else is_tty
        self.interval = interval
        self.clock = clock
        self.width = width if width is not None else terminal_width(self.stream)
        self.items_done = 0
        self.users_done = 0
        self.started = clock()
        self._current: tuple[str, str] | None = None  # (user, kind) of the last chunk
        self._user_items: dict[str, int] = {}
        self._last_output: float | None = None  # last redraw (tty) or last line (not a tty)
        self._bar_len = 0  # characters of the bar now on screen; 0 = none
        self._closed = False
        self._broken = False
        self._lock = threading.Lock()

    # --- what the run reports ---------------------------------------------------------------

    def item_done(self, user: str, kind: str, items: int) -> None:
        """A chunk of ``items`` of ``user``'s ``kind`` was committed (a dry run: would be)."""
        with self._lock:
            self.items_done += items
            self._current = (user, kind)
            self._user_items[user] = self._user_items.get(user, 0) + items
            self._update()

    def user_done(self, user: str, status: str) -> None:
        """``user`` is finished (ok, failed, already-locked, ...)."""
        with self._lock:
            self.users_done += 1
            self._user_items.pop(user, None)
            if self._current and self._current[0] == user:
                self._current = None
            self._update()

    def note(self, message: str) -> None:
        """A line of its own (shown even when quiet); the bar is redrawn below it."""
        with self._lock:
            if self._bar_len:
                self._write("\r" + " " * self._bar_len + "\r")
                self._bar_len = 0
            self._write(message + "\n")
            if self.is_tty and not self.quiet and self._last_output is not None \
                    and not self._closed:
                self._draw_bar()

    def close(self) -> None:
        """Leave the final state of the bar on its own line (terminal); idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            if self.is_tty and not self.quiet and self._last_output is not None:
                self._draw_bar()
                self._write("\n")
                self._bar_len = 0

    # --- figures ----------------------------------------------------------------------------

    def percent(self) -> int:
        """Items done as a whole percentage, 100 when there is nothing to do, never above 100.

        More items than planned can be done: the site keeps writing while the run goes on.
        """
        if self.total_items <= 0:
            return 100
        return min(100, self.items_done * 100 // self.total_items)

    def rate(self) -> float | None:
        """Items per second since the start; None before anything measurable."""
        elapsed = self.clock() - self.started
        return self.items_done / elapsed if elapsed > 0 and self.items_done else None

    def eta(self) -> float | None:
        """Seconds left at the current rate; None when unknown."""
        rate = self.rate()
        if rate is None:
            return None
        return max(self.total_items - self.items_done, 0) / rate

    def plain_line(self) -> str:
        """The periodic line for logs: 'progress: 1,200/5,000 items (24%), 3/10 users, ...'."""
        rate, eta = self.rate(), self.eta()
        text = (f"progress: {self.items_done:,}/{self.total_items:,} items ({self.percent()}%), "
                f"{self.users_done:,}/{self.total_users:,} users")
        if rate is not None:
            text += f", {rate:,.0f} items/s, ETA {format_clock(eta or 0)}"
        return text

    def bar_line(self) -> str:
        """The one-line terminal bar, cut to the terminal width so it never wraps."""
        filled = self.percent() * BAR_WIDTH // 100
        rate, eta = self.rate(), self.eta()
        parts = [
            f"[{'#' * filled}{'-' * (BAR_WIDTH - filled)}] {self.percent():3d}%",
            f"{self.items_done:,}/{self.total_items:,} items",
            f"{self.users_done:,}/{self.total_users:,} users",
            f"{rate:,.0f} items/s" if rate is not None else "-- items/s",
            f"ETA {format_clock(eta)}" if eta is not None else "ETA --:--",
        ]
        if self._current:
            user, kind = self._current
            parts.append(f"now {user} {kind} ({self._user_items.get(user, 0):,})")
        return "  ".join(parts)[: max(self.width - 1, 10)]

    # --- output -----------------------------------------------------------------------------

    def _update(self) -> None:
        if self.quiet or self._closed:
            return
        now = self.clock()
        if self.is_tty:
            if self._last_output is None or now - self._last_output >= REDRAW_EVERY:
                self._last_output = now
                self._draw_bar()
        elif now - (self._last_output if self._last_output is not None else self.started) \
                >= self.interval:
            self._last_output = now
            self._write(self.plain_line() + "\n")

    def _draw_bar(self) -> None:
        line = self.bar_line()
        # pad over the rest of a longer previous bar: plain spaces work on every terminal
        self._write("\r" + line + " " * max(self._bar_len - len(line), 0))
        self._bar_len = len(line)

    def _write(self, text: str) -> None:
        if self._broken:
            return
        try:
            self.stream.write(text)
            self.stream.flush()
        except (OSError, ValueError):
            self._broken = True


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def terminal_width(stream: TextIO) -> int:
    """The width of the terminal ``stream`` (the progress line's own, stderr) is on.

    ``shutil.get_terminal_size`` measures stdout (after $COLUMNS): with ``> out.csv`` it
    fell back to 80 and cut the bar at 80 columns on a wide terminal. $COLUMNS still wins, as
    it does there; a stream that is no terminal gets 80."""
    env = os.environ.get("COLUMNS", "")
    if env.isdigit() and int(env) > 0:
        return int(env)
    try:
        return os.get_terminal_size(stream.fileno()).columns
    except (AttributeError, ValueError, OSError, io.UnsupportedOperation):
        return 80


def format_clock(seconds: float) -> str:
    """'0:07', '12:34', '1:02:03'."""
    total = int(round(seconds))
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def format_duration(seconds: float) -> str:
    """'3.2 s', '4 min 05 s', '1 h 02 min'."""
    if seconds < 60:
        return f"{seconds:.1f} s"
    total = int(round(seconds))
    if total < 3600:
        return f"{total // 60} min {total % 60:02d} s"
    return f"{total // 3600} h {total % 3600 // 60:02d} min"


def _count(n: int, singular: str, plural: str | None = None) -> str:
    return f"{n:,} {singular if n == 1 else plural or singular + 's'}"


@dataclass
class RunStats:
    """What the final statistics line of a run says; the run adds to it as it goes."""

    action: str = "hidden"  # "hidden" (apply), "restored" (revert), "would be hidden" (dry run)
    users: int = 0
    failed: int = 0
    items: dict[str, int] = field(default_factory=dict)  # changed items per kind, in seen order
    conflicts: int = 0
    gone: int = 0
    chunks: int = 0
    retries: int = 0
    elapsed: float = 0.0

    def add_items(self, kind: str, items: int) -> None:
        """``items`` items of ``kind`` changed (a chunk of several users reports each)."""
        self.items[kind] = self.items.get(kind, 0) + items

    def add_user(self, *, failed: bool = False, conflicts: int = 0, gone: int = 0) -> None:
        """One user finished (failed or not), with the conflicts and gone items it found."""
        self.users += 1
        self.failed += int(failed)
        self.conflicts += conflicts
        self.gone += gone

    def add_retry(self) -> None:
        self.retries += 1

    @property
    def total_items(self) -> int:
        return sum(self.items.values())

    def summary_line(self, outcome: str = "done") -> str:
        """E.g. 'done: 12 users, 4,210 items hidden (diary 3,000, photo 1,210), 0 conflicts,
        14 chunks, 0 retries in 3.2 s (1,316 items/s)'; ``outcome`` may be 'interrupted' etc."""
        users = _count(self.users, "user") + (f" ({self.failed:,} failed)" if self.failed else "")
        items = f"{_count(self.total_items, 'item')} {self.action}"
        per_kind = ", ".join(f"{kind} {n:,}" for kind, n in self.items.items() if n)
        if per_kind:
            items += f" ({per_kind})"
        parts = [users, items, _count(self.conflicts, "conflict")]
        if self.gone:
            parts.append(f"{self.gone:,} gone")
        dry_run = self.action.startswith("would")
        if not dry_run:  # a dry run writes no chunk and waits for no row
            parts += [_count(self.chunks, "chunk"), _count(self.retries, "retry", "retries")]
        line = f"{outcome}: {', '.join(parts)} in {format_duration(self.elapsed)}"
        if self.elapsed > 0 and not dry_run:
            line += f" ({self.total_items / self.elapsed:,.0f} items/s)"
        return line
