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
    DDL,
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
    event,
    func,
    insert,
    select,
)
from sqlalchemy.pool import NullPool

from privacy_lock.errors import UsageError
from privacy_lock.identity import carrier_family

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


# Addresses the person had before (privacy-lock find searches them): the carriers' own renames
# and the docomo addresses of before 2009 that broke RFC 5322 ("taro..85@", "taro.@"), stored
# exactly as they were.
mail_history_table = Table(
    "mail_history",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("user_id", Integer, nullable=False),
    Column("address", String(200), nullable=False),
    Column("changed_at", DateTime, nullable=False),
    Index("ix_mail_history_user_id", "user_id"),
)

communities_table = Table(
    "communities",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("name", String(100), nullable=False),
)

community_members_table = Table(
    "community_members",
    metadata,
    Column("community_id", Integer, primary_key=True),
    Column("user_id", Integer, primary_key=True),
    Column("joined_at", DateTime, nullable=False),
    Index("ix_community_members_user_id", "user_id"),
)

# What a person remembers of their communities, one row per membership: `find --text` and
# verify-identity read it as a memory source ([[identity.memory]] maps a table or a view).
event.listen(metadata, "after_create", DDL(
    "CREATE VIEW member_communities AS SELECT m.user_id, c.name, m.joined_at "
    "FROM community_members m JOIN communities c ON c.id = m.community_id"))

COMMUNITY_NAMES = (
    "猫好き集まれ", "ラーメン部", "平成生まれ", "mixi初心者", "写メ日記の会", "J-POP好き",
    "朝が苦手", "カラオケ同好会", "旅行好き", "ケータイ小説", "サッカー観戦", "夜更かし部",
)
# A carrier's domains in the order the person would have had them (the renames).
DOMAIN_HISTORIES = (
    ("jp-t.ne.jp", "t.vodafone.ne.jp", "softbank.ne.jp"),
    ("jp-k.ne.jp", "k.vodafone.ne.jp", "softbank.ne.jp", "i.softbank.jp"),
    ("ezweb.ne.jp", "au.com"),
    ("docomo.ne.jp",),
)
DEMO_FIND_SEED = 17  # its own stream: the accounts, diaries and photos stay as they were


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
            history, communities, members = _generate_identity(
                random.Random(DEMO_FIND_SEED), user_rows, sample_user_id)
            _insert_in_batches(conn, mail_history_table, history)
            _insert_in_batches(conn, communities_table, communities)
            _insert_in_batches(conn, community_members_table, members)
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


def _generate_identity(
    rng: random.Random, user_rows: Sequence[dict[str, Any]], sample_user_id: int
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
    """Past addresses (0-3 per person, along a carrier's renames, some of docomo's RFC-breaking
    ones), communities and who joined them when."""
    history: list[dict[str, Any]] = []
    for user in user_rows:
        local, _, current = user["email"].partition("@")
        family = carrier_family(current)
        domains = rng.choice([h for h in DOMAIN_HISTORIES if carrier_family(h[-1]) == family]
                             or DOMAIN_HISTORIES)
        past = 2 if user["id"] == sample_user_id else rng.choice((0, 1, 1, 2, 2, 3))
        when = user["created_at"]
        for step in range(past):
            when = when + timedelta(days=rng.randrange(200, 900))
            domain = domains[min(step, len(domains) - 1)]
            name = local if rng.random() < 0.6 else f"{local[:4]}{rng.randrange(1, 99)}"
            if domain == "docomo.ne.jp" and rng.random() < 0.5:
                name = rng.choice((f"{name[:3]}..{name[3:]}", f"{name}."))
            history.append({"id": len(history) + 1, "user_id": user["id"],
                            "address": f"{name}@{domain}", "changed_at": min(when, SITE_FROZEN)})
    communities = [{"id": i, "name": name} for i, name in enumerate(COMMUNITY_NAMES, start=1)]
    members = []
    for user in user_rows:
        for community in rng.sample(communities, rng.randrange(0, 4)):
            joined = user["created_at"] + timedelta(days=rng.randrange(0, 1500))
            members.append({"community_id": community["id"], "user_id": user["id"],
                            "joined_at": min(joined, SITE_FROZEN)})
    return history, communities, members


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

[identity]
# `privacy-lock find` and `verify-identity`: where an account's address, nickname and join date
# are, the addresses it had before, and text the person may remember.
mail = "email"
nickname = "name"
joined = "created_at"
max_candidates = 10
searches_per_hour = 30

[identity.mail_history]
table = "mail_history"
owner = "user_id"
address = "address"
changed_at = "changed_at"

[[identity.memory]]
name = "diary titles"
table = "diaries"
owner = "user_id"
text = "title"
at = "created_at"

[[identity.memory]]
name = "communities"
table = "member_communities"
owner = "user_id"
text = "name"
at = "joined_at"

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
