"""Property-based fuzzing (issue 14): request files and config files, random and hostile.

The property, for every generated input: the command ends in exit 0 with exactly the result the
input asks for (the users it names are locked / reverted, nobody else's content moves), or in
exit 2 with nothing changed (every row of every table, content and the tool's own, is the same
before and after). Never a traceback, never an exception Click did not turn into an exit code,
never exit 1 (the fuzzed database has no concurrent writers: nothing may fail at run time),
never a partial change.

Each input is checked against an independent model of the documented rules (docs/OPERATORS.md
"A day's tickets", README "Config file"): the model says whether the input must be accepted and
what it must do, or that it must be refused. Inputs the model cannot decide (a user named
both by id and by lock, a config that maps the site differently) only have to keep the
property.

Generated: request files (CSV and JSON, for ``apply --from-file`` and ``revert --from-file``,
with and without ``--dry-run``): random bytes; random structure (JSON of any shape, CSV with
random columns, rows and quoting); one hostile value in an otherwise valid file. Config files
(TOML): random bytes; random structure; one hostile value in the valid config.

Every dialect runs a few examples per test by default, derandomized (the same examples every
run, so CI is reproducible). ``PRIVACY_LOCK_FUZZ_EXAMPLES=N`` runs N examples per test and
dialect with a random seed, keeping failures in hypothesis' example database (``.hypothesis/``)
so the next run replays them first.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import os
import re
import time
import tomllib
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from conftest import isolated_url
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from sqlalchemy import MetaData, delete, insert, select, text

from helpers import add_users
from privacy_lock.cli import cli
from sns import IDENTITY, Sns, build_sns

# --- how many examples ----------------------------------------------------------------------------

LONG = int(os.environ.get("PRIVACY_LOCK_FUZZ_EXAMPLES", "0") or 0)
# Per test and dialect in the default run: the servers reflect the schema more slowly.
DEFAULT_EXAMPLES = {"sqlite": 6, "postgresql": 3, "mysql": 3}


def fuzz_settings(dialect: str) -> settings:
    return settings(
        max_examples=LONG or DEFAULT_EXAMPLES[dialect],
        derandomize=not LONG,  # the default run is the same every time; a long run explores
        deadline=None,
        suppress_health_check=list(HealthCheck),
        print_blob=True,
    )


# --- the fuzzed database --------------------------------------------------------------------------

PRIVATE = "self"
KINDS = {"diary": ("diaries", "id", "user_id", "visibility"),
         "photo": ("photos", "id", "owner_id", "scope")}
TEXT_COLUMN_BYTES = 65_535  # MariaDB TEXT


@dataclass
class World:
    """One SNS per dialect, with users 1 and 10 locked (the baseline every example starts from),
    a copy of every table to put back after an example that changed something, and the files
    an example writes."""

    dialect: str
    sns: Sns
    tmp: Path
    pristine: dict[str, dict[Any, dict[str, Any]]]  # content before any lock
    baseline: dict[str, dict[Any, dict[str, Any]]] = field(default_factory=dict)
    saved: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    saved_sum: str = ""
    locks: dict[int, str] = field(default_factory=dict)  # baseline lock id -> subject
    meta: MetaData = field(default_factory=MetaData)
    restores: int = 0
    restore_seconds: float = 0.0
    outcomes: Counter[str] = field(default_factory=Counter)  # what the model said -> exit code

    def __repr__(self) -> str:
        return f"World({self.dialect})"

    @property
    def users(self) -> list[int]:
        return [int(u) for u in self.sns.users]

    @property
    def locked(self) -> list[int]:
        return sorted(int(s) for s in self.locks.values())

    @property
    def unlocked(self) -> list[int]:
        return [u for u in self.users if u not in self.locked]

    def content(self) -> dict[str, dict[Any, dict[str, Any]]]:
        with self.sns.engine.connect() as conn:
            return {name: {r[0]: dict(r._mapping) for r in conn.execute(
                select(self.meta.tables[name]).order_by(*self.meta.tables[name].primary_key))}
                for name in ("diaries", "photos", "users")}

    def tables(self) -> dict[str, list[dict[str, Any]]]:
        with self.sns.engine.connect() as conn:
            return {t.name: [dict(r._mapping) for r in conn.execute(
                select(t).order_by(*(t.primary_key or t.c)))] for t in self.meta.sorted_tables}

    @staticmethod
    def checksum(tables: dict[str, list[dict[str, Any]]]) -> str:
        return hashlib.sha256(repr(sorted(tables.items())).encode("utf-8", "replace")).hexdigest()

    def lock_rows(self) -> dict[int, dict[str, Any]]:
        return {r["lock_id"]: r for r in self.tables()["privacy_lock_locks"]}

    def save(self) -> None:
        self.saved = self.tables()
        self.saved_sum = self.checksum(self.saved)
        self.baseline = self.content()
        self.locks = {r["lock_id"]: r["subject"] for r in self.saved["privacy_lock_locks"]}

    def reset(self, now: dict[str, list[dict[str, Any]]]) -> None:
        """Put every table back as saved (only called when something changed)."""
        if self.checksum(now) == self.saved_sum:
            return
        self.restores += 1
        started = time.perf_counter()
        postgres = self.dialect == "postgresql"
        audit = ("privacy_lock_audit", "privacy_lock_audit_head")
        with self.sns.engine.begin() as conn:
            if postgres:  # the append-only triggers would refuse this
                for name in audit:
                    conn.execute(text(f"ALTER TABLE {name} DISABLE TRIGGER USER"))
            for table in reversed(self.meta.sorted_tables):
                conn.execute(delete(table))
            for table in self.meta.sorted_tables:
                if self.saved[table.name]:
                    conn.execute(insert(table), self.saved[table.name])
            if postgres:
                for name in audit:
                    conn.execute(text(f"ALTER TABLE {name} ENABLE TRIGGER USER"))
        self.restore_seconds += time.perf_counter() - started


def _world(dialect: str, tmp: Path) -> Iterator[World]:
    for url in isolated_url(dialect, tmp):
        sns = build_sns(url, tmp, items_per_value=1)
        add_users(sns, 3)  # users 1, 2, 3, 10, 11, 12; 4 diaries and 4 photos each
        sns.users = [1, 2, 3, 10, 11, 12]
        world = World(dialect, sns, tmp, pristine={})
        world.meta.reflect(sns.engine)
        world.pristine = world.content()
        sns.apply(1, 10)
        world.save()
        try:
            yield world
        finally:
            sns.engine.dispose()
            if LONG:  # the long run's tally, for docs/RELIABILITY.md (pytest -s shows it)
                each = world.restore_seconds / max(world.restores, 1) * 1000
                print(f"\nfuzz {dialect}: {world.restores} restores ({each:.0f} ms each); "
                      + "; ".join(f"{k} x{n}" for k, n in sorted(world.outcomes.items())))


@pytest.fixture(scope="module", params=("sqlite", "postgresql", "mysql"))
def world(request, tmp_path_factory) -> Iterator[World]:
    yield from _world(request.param, tmp_path_factory.mktemp(f"fuzz-{request.param}"))


# --- running one example and checking the property ----------------------------------------------


def invoke(world: World, args: list[str], config: Path | None = None):
    base = ["--config", str(config or world.sns.config_path), "--database-url", world.sns.url]
    # catch_exceptions=True: an exception the CLI did not turn into an exit code is a finding
    return CliRunner().invoke(cli, [*base, *args], catch_exceptions=True)


def check_run(world: World, result, expected: dict[str, Any] | None, must: str | None,
              what: str) -> None:
    """The property. ``expected`` is the content the model says an accepted input leaves
    (None: the model does not know what acceptance would mean, so exit 0 is not allowed);
    ``must`` is "accept", "refuse" or None (either is right)."""
    now = world.tables()
    event(f"must {must or 'either'}: exit {result.exit_code}")
    world.outcomes[f"{what.split()[0]} must {must or 'either'}: exit {result.exit_code}"] += 1
    try:
        assert "Traceback" not in result.output, result.output[-3000:]
        assert result.exception is None or isinstance(result.exception, SystemExit), \
            repr(result.exception)
        assert result.exit_code in (0, 2), (result.exit_code, result.output[-3000:])
        if result.exit_code == 2:
            assert must != "accept", ("refused a valid input", what, result.output[-2000:])
            assert world.checksum(now) == world.saved_sum, ("exit 2 changed something", what)
            errors = [line for line in result.stderr.splitlines()
                      if line.startswith(("privacy-lock: error:", "Error:"))]
            assert len(errors) == 1, result.stderr[-3000:]
        else:
            assert must != "refuse", ("accepted an input it must refuse", what,
                                      result.output[-2000:])
            assert expected is not None, ("exit 0 for an input with no meaning", what)
            assert world.content() == expected["content"], ("wrong result", what)
            check_locks(world, expected)
    finally:
        world.reset(now)


def check_locks(world: World, expected: dict[str, Any]) -> None:
    """Active locks: the baseline's, plus the users applied, less the users reverted; every
    item hidden by the run has one snapshot holding its baseline value."""
    rows = world.lock_rows()
    active = sorted(int(r["subject"]) for r in rows.values() if r["state"] == "active")
    assert active == sorted(expected["active"]), (active, expected["active"])
    snaps = world.tables()["privacy_lock_snapshots"]
    new = [s for s in snaps if s not in world.saved["privacy_lock_snapshots"]]
    hidden = {(kind, str(item_id)): before[vis]
              for kind, (table, vis, private) in expected["kinds"].items()
              for item_id, before in world.baseline[table].items()
              if expected["content"][table][item_id][vis] != before[vis]
              and expected["content"][table][item_id][vis] == private}
    stored = {(s["kind"], s["item_id"]): s["original_text"] if s["original_text"] is not None
              else s["original_int"] for s in new if s["state"] == "locked"}
    assert stored == hidden, (stored, hidden)


# --- the model of a request file ------------------------------------------------------------------


class Refuse(Exception):  # noqa: N818 - the model's verdict, not an error
    """The model says the input must be refused."""


class Unsure(Exception):  # noqa: N818
    """An input either outcome fits: exit 2, or exit 0 with ``expected`` (the lenient
    reading)."""

    def __init__(self, why: str, expected: dict[str, Any] | None = None) -> None:
        super().__init__(why)
        self.expected = expected


_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f-\x9f]")
_CONTROL_IN_REASON = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
COLUMNS = {"apply": ("user_id", "ticket", "reason", "kinds", "operator"),
           "revert": ("user_id", "lock_id", "ticket", "reason", "operator", "kinds")}


def has_surrogate(value: str) -> bool:
    return any(0xD800 <= ord(c) <= 0xDFFF for c in value)


def model_id(world: World, value: str, what: str, notes: list[str]) -> int:
    """An id by the one id rule (docs/OPERATORS.md): ASCII digits, spaces around ignored."""
    if has_surrogate(value):
        raise Refuse(f"{what} id with a surrogate")  # never an id, whatever else is fixed
    bare = value.strip(" \t")  # spaces and tabs only: "\x1c2" or "2\u3000" is no id
    pattern = r"-?[0-9]+" if what == "user" else r"[0-9]+"
    if not re.fullmatch(pattern, bare) or len(bare.lstrip("-0")) > 20:
        raise Refuse(f"{what} id {value[:50]!r}")
    number = int(bare)
    if what == "user":
        bits = 64 if world.dialect == "sqlite" else 32
        if not -(2 ** (bits - 1)) <= number < 2 ** (bits - 1) or number not in world.users:
            raise Refuse(f"unknown user {value[:50]!r}")
    elif number not in world.locks:
        raise Refuse(f"no lock {value[:50]!r}")
    return number


def model_text(world: World, name: str, value: str, default: str) -> None:
    """A ticket, reason or operator by the one rule for stored text (stored_text.py)."""
    if has_surrogate(value):
        raise Refuse(f"{name} is not valid Unicode")
    value = value.strip() or default
    pattern = _CONTROL_IN_REASON if name == "reason" else _CONTROL
    if pattern.search(value):
        raise Refuse(f"control character in {name}")
    if name != "reason" and len(value) > 191:
        raise Refuse(f"{name} too long")
    if (name == "reason" and world.dialect == "mysql"
            and len(value.encode("utf-8")) > TEXT_COLUMN_BYTES):
        raise Refuse("reason longer than MariaDB's TEXT holds")


def fresh(world: World) -> tuple[dict[str, dict[Any, dict[str, Any]]], set[int]]:
    """The model's copy of the baseline: content and active lock subjects."""
    content = {t: {i: dict(r) for i, r in rows.items()} for t, rows in world.baseline.items()}
    return content, set(world.locked)


def model_requests(world: World, mode: str, records: list[dict[str, str]]) -> dict[str, Any]:
    """What an accepted file of these records (column -> text, as read) must leave."""
    if not records:
        raise Refuse("no requests")
    content, active = fresh(world)
    seen_users: set[int] = set()
    seen_locks: set[int] = set()
    notes: list[str] = []
    problems: list[str] = []
    for record in records:
        try:
            user_text = record.get("user_id", "").strip()
            lock_text = record.get("lock_id", "").strip()
            if mode == "revert" and user_text and lock_text:
                raise Refuse("user_id and lock_id")
            if mode == "revert" and lock_text:
                lock = model_id(world, record["lock_id"], "lock", notes)
                if lock in seen_locks:
                    raise Refuse("duplicate lock")
                seen_locks.add(lock)
                user = int(world.locks[lock])
            elif user_text:
                user = model_id(world, record["user_id"], "user", notes)
                if user in seen_users:
                    raise Refuse("duplicate user")
                seen_users.add(user)
            else:
                raise Refuse("no id")
            for name, default in (("ticket", "T-1"), ("reason", "test"), ("operator", "tester")):
                model_text(world, name, record.get(name, ""), default)
            kinds: list[str] = []
            if mode == "apply":  # revert reads the column and does not use it (a lock reverts
                if has_surrogate(record.get("kinds", "")):  # whole)
                    raise Refuse("a kind with a surrogate")
                kinds = [k.strip() for k in record.get("kinds", "").split(";") if k.strip()]
                if any(k not in KINDS for k in kinds):
                    raise Refuse("unknown kind")
            effect(world, mode, user, kinds or list(KINDS), content, active)
        except Refuse as exc:
            problems.append(str(exc))
    if problems:
        raise Refuse("; ".join(problems))
    expected = {"content": content, "active": sorted(active), "kinds": default_kinds()}
    if set(seen_users) & {int(world.locks[lk]) for lk in seen_locks}:
        notes.append("either: a user named by id and by lock")
    if notes:
        raise Unsure(notes[0], expected)
    return expected


def default_kinds() -> dict[str, tuple[str, str, Any]]:
    return {name: (table, vis, PRIVATE) for name, (table, _i, _o, vis) in KINDS.items()}


def effect(world: World, mode: str, user: int, kinds: list[str],
           content: dict[str, dict[Any, dict[str, Any]]], active: set[int]) -> None:
    """Apply (hide ``kinds``) or revert (restore everything of the lock) ``user`` in the model."""
    if mode == "apply":
        for kind in kinds:
            table, _id, owner, vis = KINDS[kind]
            for row in content[table].values():
                if row[owner] == user:
                    row[vis] = PRIVATE
        active.add(user)
    elif user in active:
        for table, _id, owner, vis in KINDS.values():
            for item_id, row in content[table].items():
                if row[owner] == user:
                    row[vis] = world.pristine[table][item_id][vis]
        active.discard(user)


def csv_text_read(value: str) -> str:
    """A field the tool wrote neutralized ("'=x") means "=x" (docs/OPERATORS.md)."""
    if value[:1] == "'" and value[1:2] in ("=", "+", "-", "@", "\t", "\r"):
        return value[1:]
    return value


def model_csv(world: World, mode: str, rows: list[list[str]]) -> dict[str, Any]:
    """The records of a CSV file given as its rows of fields (the model's own reading)."""
    if any(has_surrogate(f) for row in rows for f in row):
        raise Refuse("not UTF-8")  # a surrogate cannot be written as UTF-8
    rows = [row for row in rows if any(f.strip() for f in row)]
    if not rows:
        raise Refuse("empty")
    names = [f.strip().lower() for f in rows[0]]
    if (not all(names) or len(set(names)) != len(names)
            or any(n not in COLUMNS[mode] for n in names)):
        raise Refuse(f"header {names!r}")
    if mode == "apply" and "user_id" not in names:
        raise Refuse("no user_id column")
    if mode == "revert" and not {"user_id", "lock_id"} & set(names):
        raise Refuse("no id column")
    if any(len(row) != len(names) for row in rows[1:]):
        raise Refuse("row length")
    return model_requests(world, mode, [dict(zip(names, map(csv_text_read, row), strict=True))
                                        for row in rows[1:]])


def model_json(world: World, mode: str, data: Any) -> dict[str, Any]:
    """The records of a JSON file holding ``data`` (objects given as lists of key/value pairs,
    so that a key may repeat)."""
    if not isinstance(data, list) or not data:
        raise Refuse("not a non-empty list")
    records = []
    for obj in data:
        if not isinstance(obj, Pairs):
            raise Refuse("not an object")
        record: dict[str, str] = {}
        for key, value in obj.pairs:
            name = key.strip().lower()
            if name not in COLUMNS[mode]:
                raise Refuse(f"unknown key {key!r}")
            if name in record:
                raise Refuse(f"key {name!r} twice in one object")
            if isinstance(value, Raw):
                raise Refuse("a number too long or lists too deep to read")
            if value is None:
                record[name] = ""
            elif isinstance(value, str):
                record[name] = value
            elif isinstance(value, int) and not isinstance(value, bool):
                record[name] = str(value)
            elif (name == "kinds" and isinstance(value, list)
                  and all(isinstance(v, str) for v in value)):
                record[name] = ";".join(value)
            else:
                raise Refuse(f"{name} of type {type(value).__name__}")
        records.append(record)
    return model_requests(world, mode, records)


class Raw(str):
    """JSON or TOML text written as it is: an integer of more digits than Python reads (4,300),
    lists nested deeper than a recursive reader goes."""


@dataclass(frozen=True)
class Pairs:
    """A JSON object written key by key (a key may repeat, as a hand-edited file can)."""

    pairs: tuple[tuple[str, Any], ...]


def dump_json(value: Any, ascii_only: bool) -> str:
    if isinstance(value, Pairs):
        return "{" + ", ".join(f"{dump_json(k, ascii_only)}: {dump_json(v, ascii_only)}"
                               for k, v in value.pairs) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(dump_json(v, ascii_only) for v in value) + "]"
    if isinstance(value, Raw):
        return str(value)
    if isinstance(value, str) and has_surrogate(value):
        return json.dumps(value, ensure_ascii=True)  # only writable as \\udXXX escapes
    return json.dumps(value, ensure_ascii=ascii_only)


# --- strategies: request files --------------------------------------------------------------------

FORMULA = ["=1+2", "+42", "-42", "@SUM(A1)", "'=x", "'+42", "=cmd|' /C calc'!A0", "\t42"]
CONTROL = ["\x00", "4\x002", "\x01", "\x07", "\x1b[31mred\x1b[0m", "\x1b]0;title\x07", "\x7f",
           "\x85", "\x9b2J", "\r", "line\nbreak", "tab\there", "\x0b", "\x0c"]
INTEGERS = ["４２", "+42", "4_2", "٤٢", "42.0", "4e1", "0x2a", str(2**64), str(2**63),
            str(2**31), str(-(2**63) - 1), "-1", "0", "00000000000000000000000000001", "-0",
            "9" * 5000, "1" * 70_000, "½", "¹", "Ⅻ"]
SPACED = [" 2", "2 ", "\t2\t", "\u00a02", "2\u3000", "\x1c2", "2\x1f", "\u200b2", "2\u200b"]
WORDS = ["", " ", "x", "diary", "photo", "video", "Diary", "diary;video", ";;", "diary;;photo",
         "diary;diary", "DIARY", "null", "None", "true", "[]", "{}", "ＳＵＰ-１", "日記",
         "\ufeff", "\ufeff2", "x" * 70_000, "y" * 191, "y" * 192, "é" * 40_000]
SURROGATES = ["\ud800", "2\udfff", "\udcff"]
HOSTILE_TEXT = FORMULA + CONTROL + INTEGERS + SPACED + WORDS + SURROGATES


def hostile_texts() -> st.SearchStrategy[str]:
    return st.sampled_from(HOSTILE_TEXT) | st.text(max_size=8)


def hostile_json_values() -> st.SearchStrategy[Any]:
    return st.one_of(
        hostile_texts(),
        st.sampled_from([None, True, False, 2, -2, 0, 2**64, 2**63, -(2**63) - 1, 4.2,
                         float("nan"), float("inf"), 1e308, [], [2], ["diary"], ["diary", 3],
                         [["diary"]], Pairs((("a", 1),)), Pairs((("user_id", 2),)),
                         Raw("9" * 5000), Raw("-" + "1" * 70_000),
                         Raw("[" * 100_000 + "]" * 100_000)]),
    )


@dataclass
class RequestFile:
    """A generated request file: its bytes, and what the model says about it."""

    name: str
    data: bytes
    verdict: str  # "accept", "refuse" or "unsure" (either outcome fits)
    expected: dict[str, Any] | None
    why: str

    def __repr__(self) -> str:
        data = self.data if len(self.data) <= 300 else self.data[:300] + b"..."
        return f"RequestFile({self.name!r}, {data!r}, {self.verdict}: {self.why[:200]})"


def verdict_of(model, *args) -> tuple[str, dict[str, Any] | None, str]:
    try:
        return "accept", model(*args), ""
    except Refuse as exc:
        return "refuse", None, str(exc)
    except Unsure as exc:
        return "unsure", exc.expected, str(exc)


def valid_records(draw, world: World, mode: str) -> list[dict[str, Any]]:
    """1-3 valid rows: unlocked users for apply, locked users or their locks for revert."""
    if mode == "apply":
        users = draw(st.lists(st.sampled_from(world.unlocked), min_size=1, max_size=3,
                              unique=True))
        records = [{"user_id": str(u)} for u in users]
    else:
        chosen = draw(st.lists(st.sampled_from(sorted(world.locks)), min_size=1,
                               max_size=len(world.locks), unique=True))
        records = [{"lock_id": str(lk)} if draw(st.booleans())
                   else {"user_id": world.locks[lk]} for lk in chosen]
    for record in records:
        for name in ("ticket", "reason", "operator"):
            if draw(st.booleans()):
                record[name] = draw(st.sampled_from(["SUP-1", "lost mail; hide", "alice"]))
        if mode == "apply" and draw(st.booleans()):
            record["kinds"] = draw(st.sampled_from(["diary", "photo", "diary;photo", ""]))
    return records


@st.composite
def hostile_request_files(draw, world: World, mode: str, fmt: str) -> RequestFile:
    """A valid file with one hostile value (or one hostile file-wide change)."""
    records = valid_records(draw, world, mode)
    columns = list(dict.fromkeys(k for r in records for k in r))
    if mode == "revert" and "user_id" not in columns and draw(st.booleans()):
        columns.insert(0, "user_id")
    where = draw(st.sampled_from(["value", "value", "value", "duplicate", "unknown user",
                                  "key", "file"]))
    row = draw(st.integers(0, len(records) - 1))
    column = draw(st.sampled_from(COLUMNS[mode]))
    if where == "value":
        value = draw(hostile_json_values() if fmt == "json" else hostile_texts())
        records[row][column] = value
        if column not in columns:
            columns.append(column)
    elif where == "duplicate":
        records.append(dict(records[row]))
    elif where == "unknown user":
        records[row] = {"user_id": draw(st.sampled_from(["4", "99", "-3", "13", "0"]))}
        columns = list(dict.fromkeys(["user_id", *columns]))
    elif where == "key":
        bad = draw(st.sampled_from(["User_ID", " user_id ", "USER_ID", "userid", "user id",
                                    "\ufeffuser_id", "kinds", "lock_id", "", "=user_id",
                                    "user_id\x00", "ticket"]))
        if fmt == "csv":
            if column in columns:
                columns[columns.index(column)] = bad
            else:
                columns.append(bad)
            for record in records:
                record[bad] = record.pop(column, "2")
    file_change = draw(st.sampled_from(["", "bom", "crlf", "bom+crlf", "trailing", "lf-only"])) \
        if where == "file" else ""
    if fmt == "json":
        objects = [Pairs(tuple(r.items())) for r in records]
        if where == "key":
            pairs = objects[row].pairs
            if any(k == column for k, _v in pairs):
                pairs = tuple((bad if k == column else k, v) for k, v in pairs)
            else:
                pairs = (*pairs, (bad, "2"))
            if draw(st.booleans()):  # and the same key twice in one object
                pairs = (*pairs, (pairs[0][0], draw(st.sampled_from(["3", 3, "11"]))))
            objects[row] = Pairs(pairs)
        body = dump_json(objects, draw(st.booleans()))
        if file_change in ("crlf", "bom+crlf"):
            body = body.replace(", ", ",\r\n")
        verdict, expected, why = verdict_of(model_json, world, mode, objects)
    else:
        rows = [columns] + [[str(r.get(c, "")) for c in columns] for r in records]
        terminator = "\r\n" if "crlf" in file_change else "\n"
        body = write_csv(rows, draw(st.sampled_from([csv.QUOTE_MINIMAL, csv.QUOTE_ALL])),
                         terminator)
        if file_change == "trailing":
            body += terminator + "," * (len(columns) - 1) + terminator
        verdict, expected, why = verdict_of(model_csv, world, mode, rows)
    data = body.encode("utf-8", "surrogatepass")
    if "bom" in file_change:
        data = b"\xef\xbb\xbf" + data
    return RequestFile(f"req.{fmt}", data, verdict, expected, why)


def write_csv(rows: list[list[str]], quoting: int, terminator: str) -> str:
    out = io.StringIO()
    csv.writer(out, quoting=quoting, lineterminator=terminator).writerows(rows)
    return out.getvalue()


@st.composite
def random_structure_files(draw, world: World, mode: str, fmt: str) -> RequestFile:
    """JSON of any shape; CSV with random columns, rows and quoting (from the valid names and
    values and from anything)."""
    names = st.sampled_from([*COLUMNS[mode], "kinds", "lock_id", "User_Id "]) | st.text(max_size=6)
    values = (st.sampled_from([str(u) for u in world.users] + [str(lk) for lk in world.locks]
                              + ["diary", "photo", "SUP-1", ""]) | hostile_texts())
    if fmt == "json":
        scalars = (st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True)
                   | values)
        anything = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3)
                                | st.builds(Pairs, st.lists(st.tuples(names, inner), max_size=4)
                                            .map(tuple)), max_leaves=12)
        objects = st.builds(Pairs, st.lists(st.tuples(names, scalars | anything), max_size=5)
                            .map(tuple))
        data = draw(st.lists(objects, max_size=4) | anything)
        body = dump_json(data, draw(st.booleans()))
        verdict, expected, why = verdict_of(model_json, world, mode, data)
    else:
        header = draw(st.lists(names, min_size=1, max_size=5))
        width = st.integers(len(header) - 1, len(header) + 1) if draw(st.booleans()) \
            else st.just(len(header))
        rows = [header] + draw(st.lists(width.flatmap(
            lambda n: st.lists(values, min_size=max(n, 0), max_size=max(n, 0))), max_size=4))
        body = write_csv(rows, draw(st.sampled_from([csv.QUOTE_MINIMAL, csv.QUOTE_ALL,
                                                     csv.QUOTE_NONNUMERIC])),
                         draw(st.sampled_from(["\n", "\r\n"])))
        verdict, expected, why = verdict_of(model_csv, world, mode, rows)
    return RequestFile(f"req.{fmt}", body.encode("utf-8", "surrogatepass"), verdict, expected,
                       why)


@st.composite
def random_byte_files(draw, world: World, mode: str, fmt: str) -> RequestFile:
    """Random bytes, sometimes after a valid start (a header, '['). The model reads them with
    the standard library's UTF-8, csv and json readers."""
    start = draw(st.sampled_from([b"", b"user_id\n", b"user_id,ticket\n2,", b"[", b"[{",
                                  b'[{"user_id": ', b"\xef\xbb\xbf", b"\xff\xfe"]))
    data = start + draw(st.binary(max_size=200))
    verdict, expected, why = verdict_of(model_bytes, world, mode, fmt, data)
    return RequestFile(f"req.{fmt}", data, verdict, expected, why)


def model_bytes(world: World, mode: str, fmt: str, data: bytes) -> dict[str, Any]:
    try:
        body = data.decode("utf-8")
    except UnicodeDecodeError:
        if fmt == "json" or data.startswith(b"\xef\xbb\xbf"):
            raise Refuse("not UTF-8") from None
        try:  # a CSV that is not UTF-8 is read as CP932 (Japanese Excel) when it is that
            body = data.decode("cp932")
        except UnicodeDecodeError:
            raise Refuse("neither UTF-8 nor CP932") from None
        if re.search("[\u0080\ue000-\uf8ff]", body):  # bytes that are no CP932 character
            raise Refuse("neither UTF-8 nor CP932") from None
    body = body.removeprefix("\ufeff")
    if fmt == "json":
        try:
            value = json.loads(body, object_pairs_hook=lambda pairs: Pairs(tuple(pairs)))
        except ValueError:
            raise Refuse("not JSON") from None
        return model_json(world, mode, value)
    try:
        rows = list(csv.reader(io.StringIO(body, newline=""), strict=True))
    except csv.Error:
        raise Refuse("not CSV") from None
    return model_csv(world, mode, rows)


# --- the request-file tests -----------------------------------------------------------------------


def run_request_file(world: World, mode: str, request_file: RequestFile, dry_run: bool) -> None:
    path = world.tmp / request_file.name
    path.write_bytes(request_file.data)
    args = [mode, "--from-file", str(path), *IDENTITY, "--format", "json"]
    if dry_run:
        args.append("--dry-run")
    result = invoke(world, args)
    expected = request_file.expected
    if dry_run and expected is not None:
        expected = {"content": world.baseline, "active": world.locked, "kinds": {}}
    must = {"accept": "accept", "refuse": "refuse"}.get(request_file.verdict)
    check_run(world, result, expected, must,
              f"{mode} {request_file.verdict} {request_file.why} {request_file.data[:300]!r}")


STRATEGIES = {"hostile": hostile_request_files, "structure": random_structure_files,
              "bytes": random_byte_files}


@pytest.mark.parametrize("fmt", ["csv", "json"])
@pytest.mark.parametrize("strategy", list(STRATEGIES))
def test_request_files(world, strategy, fmt):
    """apply/revert --from-file: exit 0 doing exactly what the file says, or exit 2 with
    nothing changed."""

    @fuzz_settings(world.dialect)
    @given(data=st.data())
    def run(data):
        mode = data.draw(st.sampled_from(["apply", "revert"]), label="mode")
        request_file = data.draw(STRATEGIES[strategy](world, mode, fmt), label="file")
        dry_run = data.draw(st.booleans(), label="dry_run") if LONG else False
        run_request_file(world, mode, request_file, dry_run)

    run()


# --- config files ---------------------------------------------------------------------------------


def valid_config() -> dict[str, Any]:
    return {
        "accounts": {"table": "users", "id": "id"},
        "content": {
            "diary": {"table": "diaries", "id": "id", "owner": "user_id",
                      "visibility": "visibility", "private": PRIVATE},
            "photo": {"table": "photos", "id": "id", "owner": "owner_id",
                      "visibility": "scope", "private": PRIVATE},
        },
        "policy": {"revert_requires_approval": False},
    }


def toml_value(value: Any) -> str:
    if isinstance(value, Raw):
        return str(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        # a JSON string is a TOML basic string; a lone surrogate stays an escape TOML refuses
        return json.dumps(value, ensure_ascii=has_surrogate(value))
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{toml_value(k)} = {toml_value(v)}" for k, v in value.items()) + "}"
    raise TypeError(value)


def dump_toml(data: dict[str, Any]) -> str:
    """Tables of scalars as [a] / [a."b"] sections; anything else inline."""
    lines: list[str] = []

    def section(path: list[str], table: dict[str, Any]) -> None:
        scalars = {k: v for k, v in table.items() if not isinstance(v, dict)}
        tables = {k: v for k, v in table.items() if isinstance(v, dict)}
        if path and (scalars or not tables):
            lines.append("[" + ".".join(toml_value(p) for p in path) + "]")
        lines.extend(f"{toml_value(k)} = {toml_value(v)}" for k, v in scalars.items())
        for key, sub in tables.items():
            section([*path, key], sub)

    section([], data)
    return "\n".join(lines) + "\n"


HOSTILE_CONFIG_VALUES = [
    "", " ", "users; DROP TABLE users", "diaries\"", "`diaries`", "diaries--", "'diaries'",
    "DIARIES", "Diaries", " diaries", "main.diaries", "privacy_lock_locks", "privacy_lock_audit",
    "visibility", "title", "name", "id", "user_id", "scope", "owner_id", "nope", "x" * 70_000,
    "\x00", "\x1b[31m", "self ", "SELF", "public", 9, -1, 0, 2**31, 2**63, 2**64, -(2**63) - 1,
    1.5, float("nan"), float("inf"), float("-inf"), True, False, [], ["diaries"], {"a": 1}, {},
    Raw("[" * 100_000 + "]" * 100_000), Raw("{a = " * 5_000 + "1" + "}" * 5_000),
    Raw("9" * 5_000),
]


@st.composite
def hostile_configs(draw) -> dict[str, Any]:
    """The valid config with one hostile change: a value, an unknown table or key, a missing
    section, a kind renamed."""
    config = valid_config()
    change = draw(st.sampled_from(["value", "value", "value", "unknown", "missing", "rename"]))
    if change == "value":
        section = draw(st.sampled_from(["accounts", "diary", "photo", "policy", "database",
                                        "audit"]))
        target = config["content"][section] if section in KINDS else \
            config.setdefault(section, {})
        key = draw(st.sampled_from({
            "accounts": ["table", "id"], "policy": ["revert_requires_approval", "audit_reads"],
            "database": ["url", "one_user_per_chunk", "chunk_size"], "audit": ["key_file"],
        }.get(section, ["table", "id", "owner", "visibility", "private"])))
        target[key] = draw(st.sampled_from(HOSTILE_CONFIG_VALUES) | st.text(max_size=6))
    elif change == "unknown":
        where = draw(st.sampled_from(["top", "content", "diary", "database"]))
        name = draw(st.sampled_from(["chunk_size", "x", "Content", "diary", "video", "1", ""]))
        value = draw(st.sampled_from([-1, "x", {}, {"table": "diaries"}, 0]))
        {"top": config, "content": config["content"], "diary": config["content"]["diary"],
         "database": config.setdefault("database", {})}[where][name] = value
    elif change == "missing":
        path = draw(st.sampled_from([("accounts",), ("content",), ("content", "diary"),
                                     ("content", "photo"), ("policy",),
                                     ("content", "diary", "private"), ("accounts", "id")]))
        holder = config
        for part in path[:-1]:
            holder = holder[part]
        del holder[path[-1]]
    else:
        name = draw(st.sampled_from(["Diary", "diary-2", "d", "2diary", "diary.x", "日記",
                                     "a" * 64, "a" * 65, "diary;photo", " diary"]))
        config["content"][name] = config["content"].pop("diary")
    return config


def config_values() -> st.SearchStrategy[Any]:
    scalar = (st.sampled_from(HOSTILE_CONFIG_VALUES) | st.text(max_size=6) | st.integers()
              | st.floats() | st.booleans())
    return st.recursive(scalar, lambda inner: st.lists(inner, max_size=3)
                        | st.dictionaries(st.text(max_size=5), inner, max_size=3), max_leaves=8)


@st.composite
def random_configs(draw) -> dict[str, Any]:
    keys = st.sampled_from(["database", "accounts", "content", "policy", "audit", "diary",
                            "table", "id", "owner", "visibility", "private"]) | st.text(max_size=5)
    return draw(st.dictionaries(keys, st.dictionaries(keys, config_values(), max_size=4)
                                | config_values(), max_size=4))


def model_config(world: World, config: dict[str, Any], mode: str, user: int) -> dict[str, Any]:
    """What ``apply USER`` / ``revert --user USER`` must leave under ``config`` if accepted.

    Refuse: a config the documented format does not allow (unknown sections or keys, wrong
    types). Unsure: a well-formed config whose map differs from the site's (another accounts
    table, a kind renamed, other columns): refusing it is right, and so is obeying it exactly
    (the expected content is computed from the map as written). Revert follows the lock's own
    binding, never today's map (DESIGN.md)."""
    allowed = {"database": {"url": str, "one_user_per_chunk": bool},
               "policy": {"revert_requires_approval": bool, "audit_reads": bool},
               "accounts": {"table": str, "id": str}, "audit": {"key_file": str}}
    for name, section in config.items():
        if name not in (*allowed, "content"):
            raise Refuse(f"unknown section {name!r}")
        if not isinstance(section, dict):
            raise Refuse(f"{name} is not a table")
        for key, value in section.items():
            if name == "content":
                continue
            if key not in allowed[name] or type(value) is not allowed[name][key]:
                raise Refuse(f"{name}.{key} = {value!r}")
    if "key_file" in config.get("audit", {}):
        raise Refuse("a key file that does not exist")
    if config.get("accounts") is not None and set(config["accounts"]) != {"table", "id"}:
        raise Refuse("accounts needs table and id")
    content = config.get("content")
    if not content:
        raise Refuse("no content kinds")
    kinds: dict[str, tuple[str, str, Any]] = {}
    for name, section in content.items():
        if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_-]{0,63}", name) or not isinstance(section, dict):
            raise Refuse(f"kind {name!r}")
        if set(section) != {"table", "id", "owner", "visibility", "private"}:
            raise Refuse(f"content.{name} keys")
        if any(type(section[k]) is not str for k in ("table", "id", "owner", "visibility")) \
                or type(section["private"]) not in (str, int):
            raise Refuse(f"content.{name} types")
        kinds[name] = (section["table"], section["visibility"], section["private"])
    base, active = fresh(world)
    if mode == "revert":
        effect(world, mode, user, list(KINDS), base, active)
        expected = {"content": base, "active": sorted(active), "kinds": {}}
    else:
        expected = {"content": base, "active": sorted({*active, user}), "kinds": kinds}
        for name, section in content.items():
            table, owner, vis = section["table"], section["owner"], section["visibility"]
            rows = base.get(table)
            if not rows or {owner, vis, section["id"]} - set(next(iter(rows.values()))):
                raise Refuse(f"content.{name} maps no table or column of the site")
            for row in rows.values():
                if row[owner] == user:
                    row[vis] = section["private"]
    if content == valid_config()["content"] and config.get("accounts") in (
            None, valid_config()["accounts"]):
        return expected
    raise Unsure("either: a map other than the site's", expected)


def model_config_bytes(world: World, data: bytes, mode: str, user: int) -> dict[str, Any]:
    """The model of a config file's bytes, read with the standard library's TOML reader."""
    try:
        config = tomllib.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError):
        raise Refuse("not TOML") from None
    return model_config(world, config, mode, user)


def run_config(world: World, config_text: bytes, model: tuple[str, Any, str], mode: str,
               user: int) -> None:
    path = world.tmp / "fuzz.toml"
    path.write_bytes(config_text)
    args = [mode, *(["--user"] if mode == "revert" else []), str(user), *IDENTITY,
            "--format", "json"]
    result = invoke(world, args, config=path)
    verdict, expected, why = model
    must = {"accept": "accept", "refuse": "refuse", "unsure": None}.get(verdict, "refuse")
    check_run(world, result, expected, must, f"config {verdict} {why} {config_text[:300]!r}")


def config_case(data, world: World) -> tuple[str, int]:
    mode = data.draw(st.sampled_from(["apply", "revert"]), label="mode")
    user = data.draw(st.sampled_from(world.unlocked if mode == "apply" else world.locked),
                     label="user")
    return mode, user


def _fuzz_configs(world: World, configs: st.SearchStrategy[Any]) -> None:
    """Run each drawn config (a TOML value) against its model's verdict."""

    @fuzz_settings(world.dialect)
    @given(data=st.data())
    def run(data):
        mode, user = config_case(data, world)
        config = data.draw(configs, label="config")
        verdict = verdict_of(model_config, world, config, mode, user)
        run_config(world, dump_toml(config).encode("utf-8", "surrogatepass"), verdict,
                   mode, user)

    run()


def test_config_hostile_value(world):
    """One hostile value in the valid config: exit 0 doing what the map says, or exit 2."""
    _fuzz_configs(world, hostile_configs())


def test_config_random_structure(world):
    """TOML of any shape: refused with one line (exit 2), nothing changed."""
    _fuzz_configs(world, random_configs())


def test_config_random_bytes(world):
    """Random bytes as the config (sometimes after a valid start): exit 2, nothing changed."""

    @fuzz_settings(world.dialect)
    @given(data=st.data())
    def run(data):
        mode, user = config_case(data, world)
        start = data.draw(st.sampled_from([b"", b"[content.diary]\n", b"[accounts]\ntable = ",
                                           dump_toml(valid_config()).encode()[:150]]))
        config_text = start + data.draw(st.binary(max_size=200), label="bytes")
        run_config(world, config_text, verdict_of(model_config_bytes, world, config_text,
                                                  mode, user), mode, user)

    run()
