"""Build a demo SNS database (SQLite) and the privacy-lock content map that describes it.

The demo imitates an old Japanese social network: accounts registered with carrier mail
addresses, diaries and photos with a visibility column that may be NULL ("site default").
Everything is generated from one seed, so the same arguments always build the same database.
"""

from __future__ import annotations

import random
import tomllib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import (
    Column,
    Connection,
    DateTime,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    create_engine,
    func,
    insert,
    select,
)
from sqlalchemy.pool import NullPool

from privacy_lock.errors import UsageError

__all__ = ["DemoSummary", "build_demo"]

VISIBILITY_VALUES: tuple[str | None, ...] = ("public", "friends", "self", None)
VISIBILITY_WEIGHTS: tuple[int, ...] = (45, 30, 15, 10)
SAMPLE_USER_ID = 42
SAMPLE_MIN_DIARIES = 20
SAMPLE_MIN_PHOTOS = 10
INSERT_BATCH_SIZE = 1000

SITE_OPENED = datetime(2005, 4, 1, 9, 0, 0)
SIGNUP_WINDOW_DAYS = 6 * 365
SITE_FROZEN = datetime(2014, 3, 31, 23, 59, 59)

CARRIER_DOMAINS = ("docomo.ne.jp", "ezweb.ne.jp", "softbank.ne.jp", "i.softbank.jp")
# fmt: off
# (display name, romaji used for the mail address)
NICKNAMES: tuple[tuple[str, str], ...] = (
    ("さくら", "sakura"), ("健太", "kenta"), ("ゆい", "yui"), ("翔太", "shota"),
    ("あおい", "aoi"), ("大輔", "daisuke"), ("みゆき", "miyuki"), ("拓也", "takuya"),
    ("はるか", "haruka"), ("美咲", "misaki"), ("りょう", "ryo"), ("直樹", "naoki"),
    ("まい", "mai"), ("彩", "aya"), ("ゆうき", "yuki"), ("恵", "megumi"),
    ("sakura_chan", "sakura"), ("kenta88", "kenta"), ("yuipon", "yui"),
    ("shota.k", "shota"), ("aoi*", "aoi"), ("dai-chan", "daisuke"), ("miyukiti", "miyuki"),
    ("takuya_z", "takuya"), ("haruka~", "haruka"), ("misaki.m", "misaki"),
    ("ryo_ryo", "ryo"), ("naoki", "naoki"), ("maimai", "mai"), ("ayaya", "aya"),
    ("yuuki", "yuki"), ("megu", "megumi"), ("ハル", "haru"), ("ぴよ", "piyo"),
)
DIARY_TITLES = (
    "今日のランチ", "部活おわった", "テスト終了～", "Shibuya de kaimono", "バイト疲れた",
    "雨…", "kyou no gohan", "新しいケータイ！", "誕生日でした", "花火大会",
    "ライブ行ってきた", "nemui", "旅行の計画", "初日記", "いろいろあった日",
)
DIARY_SENTENCES = (
    "今日は朝から雨でした。", "友達とカラオケに行った。", "明日は早起きしないと。",
    "ケータイの電池がすぐ切れる。", "Mata ashita kaku ne.", "ごはんがおいしかった！",
    "テスト勉強しなきゃ…", "Densha ga okureta.", "久しぶりに実家に帰った。",
    "コメントありがとう！", "写メも見てね。", "Kyou wa hayaku neru.",
)
PHOTO_CAPTIONS = (
    "夕焼け", "neko", "ラーメン", "桜", "海！", "プリ", "Tokyo tower", "うちの犬",
    "文化祭", "雪だ", "ケーキ", "Fuji-san", "", "空", "花火",
)
# fmt: on

metadata = MetaData()

users_table = Table(
    "users",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("name", String(80), nullable=False),
    Column("email", String(200)),
    Column("created_at", DateTime, nullable=False),
)

diaries_table = Table(
    "diaries",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("user_id", Integer, nullable=False),
    Column("title", String(200)),
    Column("body", Text),
    Column("visibility", String(16), nullable=True),
    Column("created_at", DateTime, nullable=False),
    Index("ix_diaries_user_id_id", "user_id", "id"),
)

photos_table = Table(
    "photos",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("owner_id", Integer, nullable=False),
    Column("caption", String(200)),
    Column("scope", String(16), nullable=True),
    Column("taken_at", DateTime, nullable=False),
    Index("ix_photos_owner_id_id", "owner_id", "id"),
)


@dataclass(frozen=True)
class DemoSummary:
    """What `build_demo` created, for the CLI to print."""

    database_path: Path
    config_path: Path
    users: int
    diaries: int
    photos: int
    sample_user: str
    visibility_counts: dict[str, dict[str, int]]


def build_demo(
    database_path: Path,
    config_path: Path,
    *,
    users: int = 200,
    seed: int = 7,
    overwrite: bool = False,
) -> DemoSummary:
    """Create the demo SNS SQLite database and its TOML content map; return a summary.

    Raises UsageError if either file exists and `overwrite` is False.
    """
    database_path = Path(database_path).expanduser().resolve()
    config_path = Path(config_path).expanduser().resolve()
    if users < 1:
        raise UsageError(f"the demo needs at least 1 user, got {users}")
    if database_path == config_path:
        raise UsageError(f"the database and the config cannot both be {database_path}")
    for path in (database_path, config_path):
        if path.is_dir():
            raise UsageError(f"{path} is a directory")
        if path.exists() and not overwrite:
            raise UsageError(f"{path} already exists; pass --force to rebuild the demo")

    rng = random.Random(seed)
    user_rows = _generate_users(rng, users)
    diary_counts, photo_counts, sample_user_id = _plan_item_counts(rng, users)
    diary_rows, photo_rows = _generate_items(
        rng, user_rows, diary_counts, photo_counts, sample_user_id
    )

    database_path.parent.mkdir(parents=True, exist_ok=True)
    config_path.parent.mkdir(parents=True, exist_ok=True)
    if overwrite:
        _remove_sqlite_files(database_path)

    url = "sqlite:///" + database_path.as_posix()
    engine = create_engine(url, poolclass=NullPool)
    try:
        with engine.begin() as conn:
            metadata.create_all(conn)
            _insert_in_batches(conn, users_table, user_rows)
            _insert_in_batches(conn, diaries_table, diary_rows)
            _insert_in_batches(conn, photos_table, photo_rows)
            visibility_counts = {
                "diary": _count_visibility(conn, diaries_table.c.visibility),
                "photo": _count_visibility(conn, photos_table.c.scope),
            }
    finally:
        engine.dispose()

    _write_config(config_path, url)
    return DemoSummary(
        database_path=database_path,
        config_path=config_path,
        users=len(user_rows),
        diaries=len(diary_rows),
        photos=len(photo_rows),
        sample_user=str(sample_user_id),
        visibility_counts=visibility_counts,
    )


def _generate_users(rng: random.Random, count: int) -> list[dict[str, Any]]:
    """Accounts 1..count with nicknames, carrier mail addresses and signup times."""
    rows = []
    emails: set[str] = set()
    for user_id in range(1, count + 1):
        name, romaji = rng.choice(NICKNAMES)
        email = f"{romaji}{rng.randrange(10, 1000)}@{rng.choice(CARRIER_DOMAINS)}"
        while email in emails:
            email = f"{romaji}{rng.randrange(1000, 100000)}@{rng.choice(CARRIER_DOMAINS)}"
        emails.add(email)
        signed_up = SITE_OPENED + timedelta(seconds=rng.randrange(SIGNUP_WINDOW_DAYS * 86400))
        rows.append(
            {
                "id": user_id,
                "name": name,
                "email": email,
                "created_at": signed_up,
            }
        )
    return rows


def _plan_item_counts(rng: random.Random, user_count: int) -> tuple[list[int], list[int], int]:
    """Skewed per-user diary and photo counts (index = user id - 1), plus the sample user."""
    diary_counts: list[int] = []
    photo_counts: list[int] = []
    for _ in range(user_count):
        roll = rng.random()
        if roll < 0.04:
            total = rng.randint(100, 220)
        elif roll < 0.15:
            total = rng.randint(21, 60)
        else:
            total = rng.randint(0, 20)
        diaries = round(total * rng.uniform(0.5, 0.75))
        diary_counts.append(diaries)
        photo_counts.append(total - diaries)

    if user_count >= SAMPLE_USER_ID:
        sample_user_id = SAMPLE_USER_ID
    else:
        totals = [d + p for d, p in zip(diary_counts, photo_counts, strict=True)]
        sample_user_id = totals.index(max(totals)) + 1
    index = sample_user_id - 1
    diary_counts[index] = max(diary_counts[index], SAMPLE_MIN_DIARIES)
    photo_counts[index] = max(photo_counts[index], SAMPLE_MIN_PHOTOS)
    return diary_counts, photo_counts, sample_user_id


def _visibilities(rng: random.Random, count: int, cover_all: bool) -> list[str | None]:
    """`count` visibility values in the site's usual mix; `cover_all` forces every value once."""
    values = rng.choices(VISIBILITY_VALUES, weights=VISIBILITY_WEIGHTS, k=count)
    if cover_all:
        values[: len(VISIBILITY_VALUES)] = VISIBILITY_VALUES
        rng.shuffle(values)
    return values


def _generate_items(
    rng: random.Random,
    user_rows: Sequence[dict[str, Any]],
    diary_counts: Sequence[int],
    photo_counts: Sequence[int],
    sample_user_id: int,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Diary and photo rows for every user, with ids assigned in time order across users.

    Numbering by time interleaves users, so one user's ids are not contiguous, as on a real
    site; that is what keyset walks over (owner, id) have to cope with.
    """
    diary_events: list[tuple[datetime, int, str | None]] = []
    photo_events: list[tuple[datetime, int, str | None]] = []
    for user, n_diaries, n_photos in zip(user_rows, diary_counts, photo_counts, strict=True):
        user_id = user["id"]
        active_seconds = max(int((SITE_FROZEN - user["created_at"]).total_seconds()), 1)
        cover_all = user_id == sample_user_id
        for events, count in ((diary_events, n_diaries), (photo_events, n_photos)):
            for visibility in _visibilities(rng, count, cover_all):
                when = user["created_at"] + timedelta(seconds=rng.randrange(active_seconds))
                events.append((when, user_id, visibility))
    # Sort on (time, user) only: visibility may be None and must not take part in the order.
    diary_events.sort(key=lambda event: (event[0], event[1]))
    photo_events.sort(key=lambda event: (event[0], event[1]))

    diary_rows = [
        {
            "id": item_id,
            "user_id": user_id,
            "title": rng.choice(DIARY_TITLES),
            "body": "".join(rng.choices(DIARY_SENTENCES, k=rng.randint(1, 3))),
            "visibility": visibility,
            "created_at": when,
        }
        for item_id, (when, user_id, visibility) in enumerate(diary_events, start=1)
    ]
    photo_rows = [
        {
            "id": item_id,
            "owner_id": user_id,
            "caption": rng.choice(PHOTO_CAPTIONS),
            "scope": visibility,
            "taken_at": when,
        }
        for item_id, (when, user_id, visibility) in enumerate(photo_events, start=1)
    ]
    return diary_rows, photo_rows


def _batches(rows: Sequence[dict[str, Any]], size: int) -> Iterator[Sequence[dict[str, Any]]]:
    """Consecutive slices of at most `size` rows."""
    for start in range(0, len(rows), size):
        yield rows[start : start + size]


def _insert_in_batches(conn: Connection, table: Table, rows: Sequence[dict[str, Any]]) -> None:
    """Set-based executemany inserts of `rows` into `table`."""
    for batch in _batches(rows, INSERT_BATCH_SIZE):
        conn.execute(insert(table), list(batch))


def _count_visibility(conn: Connection, column: Column[Any]) -> dict[str, int]:
    """Rows per visibility value as stored in the database; NULL is reported as "NULL"."""
    counts = {"public": 0, "friends": 0, "self": 0, "NULL": 0}
    for value, count in conn.execute(select(column, func.count()).group_by(column)):
        counts["NULL" if value is None else str(value)] = count
    return counts


def _remove_sqlite_files(database_path: Path) -> None:
    """Delete an old demo database and any journal files SQLite left beside it.

    A stale -journal or -wal next to a fresh file would be replayed into it by SQLite.
    """
    for suffix in ("", "-journal", "-wal", "-shm"):
        database_path.with_name(database_path.name + suffix).unlink(missing_ok=True)


def _toml_basic_string(value: str) -> str:
    """`value` as a TOML basic string (double quotes, backslash escapes)."""
    escaped = []
    for char in value:
        if char in ('"', "\\"):
            escaped.append("\\" + char)
        elif ord(char) < 0x20 or ord(char) == 0x7F:
            escaped.append(f"\\u{ord(char):04X}")
        else:
            escaped.append(char)
    return '"' + "".join(escaped) + '"'


def _write_config(config_path: Path, url: str) -> None:
    """Write the content map for the demo tables, after checking it parses back to `url`."""
    text = f"""\
# privacy-lock content map for the demo SNS (generated by `privacy-lock demo`)
[database]
url = {_toml_basic_string(url)}

[accounts]
table = "users"
id = "id"

[content.diary]
table = "diaries"
id = "id"
owner = "user_id"
visibility = "visibility"
private = "self"

[content.photo]
table = "photos"
id = "id"
owner = "owner_id"
visibility = "scope"
private = "self"

[policy]
# Reverting makes hidden content visible again, so it takes two people: `revert` only files a
# request, and a second operator (a different --operator name) runs it with
# `privacy-lock approve REQUEST_ID`. Set to false to let `revert` run at once.
revert_requires_approval = true
# Access logging: when true, `status` and dry runs of a named user write a "viewed" event to
# the audit trail (for sites whose policy requires every look at a person's content logged).
audit_reads = false
"""
    parsed = tomllib.loads(text)
    if parsed["database"]["url"] != url:
        raise AssertionError(f"demo config does not round-trip the database URL {url!r}")
    config_path.write_text(text, encoding="utf-8")
