"""The live site, as far as the benchmark needs it: a writer that keeps editing the workload's
items while the tool's CLI runs, and how long each of its writes waited.

Every ``interval`` seconds a thread with its own connection updates the ``touched`` column of a
random item of the workload's users in a short transaction of its own (on SQLite ``BEGIN
IMMEDIATE ... COMMIT``, as the tool's engine opens every transaction there), and times it from
``BEGIN`` to the end of the commit: on SQLite the wait is for the database's write lock, on
PostgreSQL and MariaDB for the row lock of an item the tool's chunk holds. ``touched`` is a
column of the very rows the tool changes, so the writes meet the tool's locks, and one no end
state compares (visibility, snapshots, locks), so they leave the floor comparison as it is.
"""

from __future__ import annotations

import random
import threading
import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, select, update

from bench.data import Shape
from privacy_lock.db import create_tool_engine

SITE_WRITE_INTERVAL = 0.02  # seconds between the site's writes
SITE_LOCK_TIMEOUT = 60.0  # the site waits this long for a lock (SQLite: its busy timeout)
SAMPLED_ITEMS = 5_000  # items the writer picks from, drawn from the workload's


@dataclass(frozen=True)
class SiteWrites:
    """What the site's writes waited during one run."""

    count: int
    longest_ms: float
    p99_ms: float

    @classmethod
    def of(cls, waits: list[float]) -> SiteWrites | None:
        if not waits:
            return None
        ordered = sorted(waits)
        p99 = ordered[min(len(ordered) - 1, max(0, round(0.99 * len(ordered)) - 1))]
        return cls(len(ordered), ordered[-1] * 1000, p99 * 1000)


def workload_items(
    engine: Engine, shape: Shape, owns: Any, seed: int = 15
) -> list[tuple[str, int]]:
    """(kind, id) of up to SAMPLED_ITEMS items of the workload's users, drawn at random."""
    items: list[tuple[str, int]] = []
    with engine.connect() as conn:
        for spec in shape.kinds:
            table = shape.content_tables[spec.name]
            query = select(table.c.id).where(owns(table.c[spec.owner]))
            items += [(spec.name, item_id) for item_id in conn.execute(query).scalars()]
    random.Random(seed).shuffle(items)
    return items[:SAMPLED_ITEMS]


class SiteWriter:
    """A thread that writes like the site until stopped; ``stop`` returns its waits."""

    def __init__(self, url: str, shape: Shape, items: list[tuple[str, int]],
                 interval: float = SITE_WRITE_INTERVAL) -> None:
        self.shape, self.items, self.interval = shape, items, interval
        self.engine = create_tool_engine(url, lock_timeout=SITE_LOCK_TIMEOUT)
        self.waits: list[float] = []
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="site-writer", daemon=True)

    def __enter__(self) -> SiteWriter:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.engine.dispose()

    @property
    def result(self) -> SiteWrites | None:
        """The writes' waits, once the writer has stopped; None when it wrote nothing."""
        if self.error is not None:
            raise RuntimeError(f"the site writer failed: {self.error}") from self.error
        return SiteWrites.of(self.waits)

    def _run(self) -> None:
        if not self.items:
            return
        pick = random.Random(20).choice
        try:
            with self.engine.connect() as conn:
                while not self._stop.is_set():
                    kind, item_id = pick(self.items)
                    table = self.shape.content_tables[kind]
                    started = time.perf_counter()
                    with conn.begin():
                        conn.execute(update(table).where(table.c.id == item_id)
                                     .values(touched=table.c.touched + 1))
                    self.waits.append(time.perf_counter() - started)
                    self._stop.wait(self.interval)
        except BaseException as exc:  # noqa: BLE001 - reported by result, in the main thread
            self.error = exc
