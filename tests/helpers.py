"""What the feature tests share: the chunk shapes a run can take, running the engine or the CLI
in one of them, reading the audit trail, and playing the live site (a writer thread, a row held
open by an uncommitted edit).

Chunk shapes (privacy_lock/engine.py): ``shared``, several small users in one transaction (the
default of a batch); ``alone``, each user its own whole transaction (``[database]
one_user_per_chunk = true``); ``ranged``, a user heavier than the chunk size done in slices
along its key walk, then a closing transaction. The test SNS (sns.py) gives a user 18 visible
items of 24: every user fits a chunk of 100, none fits a chunk of 4.
"""

from __future__ import annotations

import json
import random
import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, delete, event, insert, select, text, update
from sqlalchemy.pool import NullPool

from privacy_lock.engine import BatchResult, run_batch
from privacy_lock.pacing import Pacer
from privacy_lock.requests import Request
from privacy_lock.schema import audit_events, audit_head
from sns import IDENTITY, Sns, build_sns, tool_session


@dataclass(frozen=True)
class Shape:
    """How a run cuts its work into transactions."""

    name: str
    size: int  # the chunk size: 100 holds several test users, 4 none of them
    share: bool  # small users may share a chunk (else one_user_per_chunk)

    def __str__(self) -> str:
        return self.name

    def prepare(self, sns: Sns) -> Sns:
        """Configure ``sns`` for this shape (one_user_per_chunk for ``alone``)."""
        if not self.share:
            config = sns.config_path.read_text(encoding="utf-8")
            sns.config_path.write_text("[database]\none_user_per_chunk = true\n\n" + config,
                                       encoding="utf-8")
        return sns

    @property
    def args(self) -> tuple[str, ...]:
        return ("--chunk-size", str(self.size))

    def pacer(self, **options: Any) -> Pacer:
        return Pacer(size=self.size, **options)

    def shared_by(self, users: int) -> int:
        """``chunk_shared_by`` of the apply/revert event of a user of a run of ``users``
        small users."""
        return users if self.name == "shared" else 1

    def cli(self, sns: Sns, mode: str, *users: Any, extra: tuple[str, ...] = (),
            expect: int | None = 0) -> list[dict[str, Any]]:
        """Run ``apply USER...`` or ``revert --user USER...`` in this shape: the JSON outcomes."""
        names = [str(u) for u in users]
        if mode == "revert":
            names = [a for u in names for a in ("--user", u)]
        out = sns.run(mode, *names, *IDENTITY, *self.args, "--format", "json", *extra,
                      expect=expect)
        return json.loads(out.stdout)

    def run(self, sns: Sns, mode: str, *users: Any, pacer: Pacer | None = None,
            dry_run: bool = False) -> BatchResult:
        """Run ``mode`` for ``users`` through the engine (one batch) in this shape."""
        return run_engine(sns, mode, requests_for(*users), pacer or self.pacer(),
                          dry_run=dry_run, share_chunks=self.share)

    def assert_trail(self, sns: Sns, mode: str, user: Any, opened: bool = True) -> None:
        """The events ``user``'s last run wrote, as the audit shape says for this chunk shape
        (docs/AUDIT.md): one transaction: ``lock``, ``apply`` (or ``revert``); ranged: ``lock``,
        ``hide``..., ``apply`` (or ``restore``..., ``revert``)."""
        actions = [a for a, s, _d in events(sns) if s == str(user)]
        last = "apply" if mode == "apply" else "revert"
        start = len(actions) - 1 - actions[::-1].index(last)
        while start and actions[start - 1] in ("hide", "restore", "lock"):
            start -= 1
        trail = actions[start:]
        head = ["lock"] if mode == "apply" and opened else []
        if self.name == "ranged":
            step = "hide" if mode == "apply" else "restore"
            assert trail[:len(head)] == head and trail[-1] == last, trail
            assert set(trail[len(head):-1]) == {step}, trail  # at least one slice
        else:
            assert trail == [*head, last], trail


SHAPES = {shape.name: shape for shape in (Shape("shared", 100, True), Shape("alone", 100, False),
                                          Shape("ranged", 4, True))}


def requests_for(*users: Any) -> list[Request]:
    return [Request(line=0, user_id=str(u), lock_id=None, ticket="T-1", reason="test",
                    operator="tester", kinds=()) for u in users]


def run_engine(sns: Sns, mode: str, requests: list[Request], pacer: Pacer,
               dry_run: bool = False, share_chunks: bool = True) -> BatchResult:
    """One ``engine.run_batch`` on a session of the tool, as the CLI runs it."""
    engine, cmap = tool_session(sns)
    try:
        with engine.connect() as conn:
            return run_batch(conn, cmap, mode, requests, pacer, dry_run=dry_run,
                             share_chunks=share_chunks)
    finally:
        engine.dispose()


def stop_after(chunks: int, size: int = 3) -> Pacer:
    """Chunks of ``size`` that stop the run (as Ctrl-C does) after ``chunks`` committed ones."""
    def on_chunk(_user, _kind, _items):
        if pacer.chunks >= chunks:
            pacer._stop = True
    pacer = Pacer(size=size, on_chunk=on_chunk)
    return pacer


def half_reverted(sns: Sns, user: Any) -> int:
    """Lock ``user``, then revert one ranged chunk of 3 items and stop, as Ctrl-C does: the
    lock id, whose revert has begun and not finished."""
    sns.apply(user)
    [lock_id] = [lk["lock_id"] for lk in sns.lock_rows() if lk["subject"] == str(user)]
    assert run_engine(sns, "revert", requests_for(user), stop_after(1)).interrupted
    assert sum(1 for s in sns.snapshot_rows() if s["state"] != "locked") == 3
    return lock_id


def events(sns: Sns, action: str | None = None) -> list[tuple[str, str, dict[str, Any]]]:
    """(action, subject, details) of every event about a person's content, in chain order
    (not the tool's own, such as init's policy events)."""
    query = select(audit_events.c.action, audit_events.c.subject, audit_events.c.details).where(
        audit_events.c.subject.is_not(None))
    if action:
        query = query.where(audit_events.c.action == action)
    with sns.engine.connect() as conn:
        rows = conn.execute(query.order_by(audit_events.c.seq)).all()
    return [(a, s, json.loads(d)) for a, s, d in rows]


def snaps_of(sns: Sns, user: Any) -> list[dict[str, Any]]:
    """The snapshot rows of ``user``'s locks."""
    mine = {lk["lock_id"] for lk in sns.lock_rows() if lk["subject"] == str(user)}
    return [s for s in sns.snapshot_rows() if s["lock_id"] in mine]


def owned(everything: dict[str, dict[Any, tuple[Any, Any]]], *owners: Any) -> dict:
    """(kind, id) -> (owner, visibility) of the rows of ``owners`` in ``sns.everything()``."""
    return {(k, i): row for k, rows in everything.items() for i, row in rows.items()
            if row[0] in owners}


def assert_locked_with_originals(sns: Sns, before, users) -> None:
    """Every item of ``users`` is owner-only, and each one that was visible has exactly one
    snapshot, holding its original, in the lock of its own owner."""
    lock_subject = {r["lock_id"]: r["subject"] for r in sns.lock_rows()}
    snaps = {(s["kind"], s["item_id"]): s for s in sns.snapshot_rows()}
    for kind, rows in before.items():
        for item_id, (owner, vis) in rows.items():
            if owner not in users:
                assert (kind, str(item_id)) not in snaps
                continue
            assert sns.vis(kind, item_id) == sns.private
            if vis == sns.private:
                assert (kind, str(item_id)) not in snaps
            else:
                snap = snaps[(kind, str(item_id))]
                assert sns.original_of(snap) == vis
                assert lock_subject[snap["lock_id"]] == str(owner)
    assert len(snaps) == len(sns.snapshot_rows())


def add_users(sns: Sns, count: int) -> list[Any]:
    """``count`` more users with one diary and one photo of each value."""
    users: list[Any] = list(range(10, 10 + count))
    if sns.id_style == "uuid":
        users = [f"u-extra-{u}" for u in users]
    with sns.engine.begin() as conn:
        conn.execute(insert(sns.tables["diary"].metadata.tables["users"]),
                     [{"id": u, "name": f"user {u}"} for u in users])
        for kind, table in sns.tables.items():
            id_col, owner_col, vis_col = sns.columns[kind]
            rows = [{owner_col: user, vis_col: value} for user in users for value in sns.values]
            if sns.id_style == "uuid":
                for row in rows:
                    row[id_col] = sns.new_id()
            conn.execute(insert(table), rows)
    return users


def heavy_sns_read_in_small_pieces(db_url: str, tmp_path: Any, monkeypatch: Any,
                                   heavy: int, piece: int) -> Sns:
    """An SNS whose first user has ``heavy`` more visible diaries, with the seal check's and
    the plan's short reads made ``piece`` rows each, so a lock of that user spans many."""
    from privacy_lock import engine as tool_engine
    from privacy_lock import seal

    monkeypatch.setattr(seal, "SNAPSHOTS_PER_READ", piece)
    monkeypatch.setattr(tool_engine, "PLAN_PIECE", piece)
    sns = build_sns(db_url, tmp_path)
    with sns.engine.begin() as conn:
        conn.execute(insert(sns.tables["diary"]),
                     [{"user_id": sns.users[0], "visibility": sns.public}] * heavy)
    return sns


def seal_check_counting_held_rows(sns: Sns, monkeypatch: Any, lock_id: int):
    """(the seal check of ``lock_id``, how many snapshot rows it held after each row it read):
    what ``seal._Groups`` keeps of groups not yet complete."""
    from privacy_lock import seal

    held: list[int] = []
    add = seal._Groups.add

    def counting_add(self, at, row):
        add(self, at, row)
        held.append(sum(map(len, self.unfinished.values())))

    monkeypatch.setattr(seal._Groups, "add", counting_add)
    with sns.engine.connect() as conn:
        return seal.check_seals(conn, [lock_id]), held


def dry_run_every_shape(sns: Sns, mode: str, *users: Any) -> list[dict[str, Any]]:
    """The outcomes of a dry run of ``users``, checked the same in every chunk shape."""
    planned = [[o.as_dict() for o in shape.run(sns, mode, *users, dry_run=True).outcomes]
               for shape in SHAPES.values()]
    assert planned[0] == planned[1] == planned[2]
    return planned[0]


# --- the live site -------------------------------------------------------------------------------


class SiteWriter(threading.Thread):
    """Keeps setting random visible values on the given items, one short transaction each,
    and remembers the last value it committed per item."""

    def __init__(self, sns: Sns, keys, seed: int) -> None:
        super().__init__(daemon=True)
        self.sns, self.keys, self.rng = sns, keys, random.Random(seed)
        self.last: dict = {}
        self.stop = threading.Event()
        self.writes = 0
        self.error: BaseException | None = None
        connect_args = {"timeout": 30} if sns.url.startswith("sqlite") else {}
        self.engine = create_engine(sns.url, poolclass=NullPool, connect_args=connect_args)

    def run(self) -> None:
        try:
            while not self.stop.is_set():
                kind, item_id = self.rng.choice(self.keys)
                value = self.rng.choice([self.sns.public, self.sns.friends])
                table = self.sns.tables[kind]
                id_col, _, vis_col = self.sns.columns[kind]
                with self.engine.begin() as conn:
                    conn.execute(update(table).where(table.c[id_col] == item_id)
                                 .values({vis_col: value}))
                self.last[(kind, item_id)] = value
                self.writes += 1
        except BaseException as exc:  # noqa: BLE001 - surfaced by the test
            self.error = exc

    def finish(self) -> None:
        self.stop.set()
        self.join(timeout=60)
        self.engine.dispose()
        assert self.error is None, self.error
        assert self.writes > 0


def widen_race_window(engine, seconds: float = 0.02) -> None:
    """Test instrumentation: pause before each content UPDATE the tool sends, so a site edit
    would land between the tool reading a row and changing it, if the row were not locked."""
    @event.listens_for(engine, "before_cursor_execute")
    def _pause(conn, cursor, statement, parameters, context, executemany):
        if statement.lstrip().upper().startswith(("UPDATE DIARIES", "UPDATE PHOTOS")):
            time.sleep(seconds)


def pacer_letting_the_site_in(shape: Shape, writer: SiteWriter, min_writes: int = 3) -> Pacer:
    """The shape's chunks; after each chunk wait until the site got a few writes in."""
    def on_chunk(_user, _kind, _items):
        if pacer.chunks == waited[0]:
            return  # the same chunk reported another user or kind
        waited[0] = pacer.chunks
        target = writer.writes + min_writes
        for _ in range(200):
            if writer.writes >= target or writer.error:
                break
            threading.Event().wait(0.002)
    waited = [0]
    pacer = shape.pacer(on_chunk=on_chunk)
    return pacer


def run_while_the_site_writes(sns: Sns, shape: Shape, mode: str, users, seed: int):
    """Run ``mode`` for ``users`` in ``shape`` while a :class:`SiteWriter` edits their items:
    (the batch result, the writer)."""
    keys = sorted((key for u in users for key in sns.items_of(u)), key=str)
    engine, cmap = tool_session(sns)
    widen_race_window(engine)
    writer = SiteWriter(sns, keys, seed)
    writer.start()
    try:
        # The site's first writes land before the run starts, so a revert always meets edited
        # (conflicting) items: the writer's seeded keys make this the same on a loaded machine,
        # where it might otherwise only get in after the run has passed every item it edits.
        deadline = time.monotonic() + 30
        while writer.writes < 5 and writer.error is None and time.monotonic() < deadline:
            time.sleep(0.005)
        with engine.connect() as conn:
            result = run_batch(conn, cmap, mode, requests_for(*users),
                               pacer_letting_the_site_in(shape, writer),
                               share_chunks=shape.share)
    finally:
        writer.finish()
        engine.dispose()
    return result, writer


def assert_no_edit_lost(sns: Sns, writer: SiteWriter, initial, final) -> None:
    """Each item hidden after the site's last edit has a snapshot of exactly that value; each
    item the site edited after it was hidden still has the site's value."""
    snaps = {(s["kind"], s["item_id"]): sns.original_of(s) for s in sns.snapshot_rows()}
    for key, value in final.items():
        last = writer.last.get(key, initial[key])
        snap = snaps.get((key[0], str(key[1])), "none")
        if value == sns.private:
            # hidden after the last edit: the snapshot must hold exactly that last value
            expected = "none" if last == sns.private else last
            assert snap == expected, (key, value, last, snap)
        else:
            # edited after it was hidden: the edit stands
            assert value == last, (key, value, last)
            assert key in writer.last


def while_the_site_holds(sns: Sns, dialect: str, key, changes, work):
    """Run ``work()`` in a thread while the site holds item ``key`` = (kind, id) with
    ``changes`` (column: value) written and not yet committed; commit them once the tool waits
    for that row, and return what ``work`` returned. The tool must then see the site's edit."""
    kind, item_id = key
    table = sns.tables[kind]
    id_col = sns.columns[kind][0]
    site = create_engine(sns.url, poolclass=NullPool,
                         connect_args={"timeout": 30} if dialect == "sqlite" else {})
    outcome = {}

    def run():
        try:
            outcome["result"] = work()
        except BaseException as exc:  # noqa: BLE001 - surfaced below
            outcome["error"] = exc

    try:
        with site.connect() as conn:
            edit = conn.begin()
            conn.execute(update(table).where(table.c[id_col] == item_id).values(changes))
            tool = threading.Thread(target=run)
            tool.start()
            try:
                wait_until_blocked(sns, dialect)
            finally:
                edit.commit()
                tool.join(timeout=60)
    finally:
        site.dispose()
    assert "error" not in outcome, outcome.get("error")
    return outcome["result"]


def wait_until_blocked(sns: Sns, dialect: str, seconds: float = 10.0) -> None:
    """Until some transaction waits for a row lock (PostgreSQL, MariaDB); SQLite, whose writer
    waits inside sqlite3 unseen, gets a fixed pause."""
    probe = {
        "postgresql": "SELECT count(*) FROM pg_locks WHERE NOT granted",
        "mysql": "SELECT count(*) FROM information_schema.innodb_trx "
                 "WHERE trx_state = 'LOCK WAIT'",
    }.get(dialect)
    if probe is None:
        time.sleep(0.5)
        return
    deadline = time.monotonic() + seconds
    with sns.engine.connect() as conn:
        while conn.execute(text(probe)).scalar_one() == 0:
            if time.monotonic() > deadline:
                pytest.fail("the tool never waited for the site's row")
            time.sleep(0.15)  # InnoDB refreshes innodb_trx only when unread for 0.1 s
            conn.rollback()


# --- the audit trail as an operator with database access sees it ---------------------------


def trail_rows(sns) -> list[dict]:
    """Every audit event as a row, in chain order."""
    with sns.engine.connect() as conn:
        return [dict(r) for r in conn.execute(
            select(audit_events).order_by(audit_events.c.seq)).mappings()]


def head_of(sns) -> tuple[int, str]:
    with sns.engine.connect() as conn:
        row = conn.execute(select(audit_head)).one()
    return row.seq, row.hash


def tamper(sns, *statements) -> None:
    """Run statements against the trail as the owner; on PostgreSQL with the append-only
    triggers disabled for the duration (they would refuse every one of these)."""
    postgres = sns.engine.dialect.name == "postgresql"
    with sns.engine.begin() as conn:
        if postgres:
            for table in ("privacy_lock_audit", "privacy_lock_audit_head"):
                conn.execute(text(f"ALTER TABLE {table} DISABLE TRIGGER USER"))
        for statement in statements:
            conn.execute(statement)
        if postgres:
            for table in ("privacy_lock_audit", "privacy_lock_audit_head"):
                conn.execute(text(f"ALTER TABLE {table} ENABLE TRIGGER USER"))


def restore_trail(sns, saved: list[dict], saved_head: tuple[int, str]) -> None:
    tamper(sns, delete(audit_events), insert(audit_events).values(saved),
           update(audit_head).values(seq=saved_head[0], hash=saved_head[1]))


# --- the chunk-shape cases the apply/revert and dry-run tests share -------------------------

# (shape, id style, visibility style): each shape once with rotating styles, and the ranged
# shape with both, so the default run stays short.
CASES = [("shared", "int", "text"), ("alone", "uuid", "code"), ("ranged", "int", "text"),
         ("ranged", "uuid", "code")]


def case_id(case: tuple[str, str, str]) -> str:
    return f"{case[0]}-{case[1]}-ids-{case[2]}-visibility"


def shaped_sns(case: tuple[str, str, str], db_url: str, tmp_path: Any) -> Sns:
    """The test SNS in ``case``'s id and visibility styles, set up for its chunk shape."""
    return SHAPES[case[0]].prepare(build_sns(db_url, tmp_path, case[1], case[2]))


README = Path(__file__).resolve().parent.parent / "README.md"
# A run's duration and rate in its summary line ("in 0.0 s (1,171 items/s)": the rate has a
# thousands separator on a fast machine), which differ from run to run.
RUN_DURATION = (re.compile(r"in \d+\.\d s \([\d,]+ items/s\)"), "in T s (R items/s)")


def readme_transcript(after: str) -> list[tuple[str, list[str]]]:
    """(command, expected output lines) of the first ```console block after ``after`` in the
    README: a line starting ``$ `` is a command, the lines below it are its output."""
    text = README.read_text(encoding="utf-8")
    block = text.split(after, 1)[1].split("```console\n", 1)[1].split("```", 1)[0]
    steps: list[tuple[str, list[str]]] = []
    for line in block.splitlines():
        if line.startswith("$ "):
            steps.append((line[2:], []))
        else:
            steps[-1][1].append(line)
    return steps
