"""Content maps that the database accepts but that would destroy data are refused before anything
runs: one line naming the table or column, exit 2, and nothing changed (no lock, no snapshot, no
audit event, content identical). On every dialect."""

from __future__ import annotations

from typing import Any

import pytest
from click.testing import CliRunner
from sqlalchemy import (
    Column,
    Enum,
    Index,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    SmallInteger,
    String,
    Table,
    UniqueConstraint,
    create_engine,
    insert,
    select,
    text,
)
from sqlalchemy.pool import NullPool

from privacy_lock import demo
from privacy_lock.cli import cli
from sns import IDENTITY, Sns, build_sns

# Site tables each attack needs, besides the SNS's users/diaries/photos.
site = MetaData()
# A composite primary key: (user_id, id) is unique, id alone is not (ids restart per user).
entries = Table(
    "entries", site,
    Column("user_id", Integer, nullable=False), Column("id", Integer, nullable=False),
    Column("visibility", String(16)), PrimaryKeyConstraint("user_id", "id"),
)
# No primary key; id has a plain index and is unique only together with user_id.
comments = Table(
    "comments", site,
    Column("id", Integer, nullable=False), Column("user_id", Integer, nullable=False),
    Column("visibility", String(16)),
    Index("ix_comments_id", "id"), UniqueConstraint("id", "user_id"),
)
# id is unique, but the visibility column is part of the primary key.
shares = Table(
    "shares", site,
    Column("id", Integer, nullable=False, unique=True), Column("owner_id", Integer, nullable=False),
    Column("scope", String(16), nullable=False), PrimaryKeyConstraint("scope", "id"),
)
# Value codes of narrower types: a SMALLINT level and an enumerated state.
codes = Table(
    "codes", site,
    Column("id", Integer, primary_key=True), Column("owner_id", Integer, nullable=False),
    Column("level", SmallInteger),
    Column("state", Enum("public", "friends", "self", name="state_t")),
)
# Accepted: ids that are not the primary key but are unique on their own (constraint, index).
albums = Table(
    "albums", site,
    Column("pk", Integer, primary_key=True), Column("uid", String(36), nullable=False),
    Column("owner_id", Integer, nullable=False), Column("scope", String(16)),
    UniqueConstraint("uid"),
)
clips = Table(
    "clips", site,
    Column("pk", Integer, primary_key=True), Column("ref", Integer, nullable=False),
    Column("owner_id", Integer, nullable=False), Column("scope", Integer),
    Index("ux_clips_ref", "ref", unique=True),
)


@pytest.fixture
def sns(db_url, tmp_path) -> Sns:
    """The SNS (integer ids, text codes), the extra site tables with rows, and a lock of user 3
    already taken, so that the tool's tables have rows an attack could overwrite."""
    sns = build_sns(db_url, tmp_path)
    site.create_all(sns.engine)
    with sns.engine.begin() as conn:
        for user in (1, 2):
            for n, vis in enumerate(("public", "friends", None), start=1):
                conn.execute(insert(entries).values(user_id=user, id=n, visibility=vis))
                conn.execute(insert(comments).values(id=n, user_id=user, visibility=vis))
            conn.execute(insert(shares).values(id=user, owner_id=user, scope="public"))
            conn.execute(insert(codes).values(owner_id=user, level=1, state="public"))
            conn.execute(insert(albums).values(uid=f"a-{user}", owner_id=user, scope="public"))
            conn.execute(insert(clips).values(ref=user, owner_id=user, scope=0))
        conn.execute(text("CREATE VIEW diary_view AS SELECT id, user_id, visibility FROM diaries"))
    sns.apply(3)
    return sns


def kind(name: str, table: str, id: str, owner: str, visibility: str, private: str) -> str:
    """A [content.NAME] section; ``private`` is TOML (quoted string, integer, ...)."""
    return (f'\n[content.{name}]\ntable = "{table}"\nid = "{id}"\nowner = "{owner}"\n'
            f'visibility = "{visibility}"\nprivate = {private}\n')


# (test id, extra kind, fragments the one-line error must contain)
ATTACKS: list[tuple[str, str, tuple[str, ...]]] = [
    # 1. a kind on one of the tool's own tables: name as given, another case, schema-qualified
    ("tool-table", kind("x", "privacy_lock_snapshots", "snapshot_id", "lock_id",
                        "original_text", '"self"'),
     ("content.x.table", "privacy_lock_snapshots", "privacy-lock's own tables")),
    ("tool-table-case", kind("x", "PRIVACY_LOCK_LOCKS", "lock_id", "subject", "state",
                             '"reverted"'),
     ("content.x.table", "PRIVACY_LOCK_LOCKS", "own tables")),
    ("tool-table-schema", kind("x", "main.privacy_lock_audit", "seq", "subject", "action",
                               '"self"'),
     ("content.x.table", "main.privacy_lock_audit", "own tables")),
    # 2. an id column that is not unique on its own
    ("id-in-composite-pk", kind("x", "entries", "id", "user_id", "visibility", '"self"'),
     ("content.x.id", "entries.id", "not unique on its own", "primary key (user_id, id)")),
    ("id-no-pk-composite-unique", kind("x", "comments", "id", "user_id", "visibility", '"self"'),
     ("content.x.id", "comments.id", "not unique on its own", "no primary key")),
    ("id-not-unique", kind("x", "diaries", "title", "user_id", "visibility", '"self"'),
     ("content.x.id", "diaries.title", "not unique on its own")),
    ("view", kind("x", "diary_view", "id", "user_id", "visibility", '"self"'),
     ("content.x.table", "diary_view", "is a view")),
    # 3. visibility on the id or owner column, owner on the id column
    ("visibility-is-id", kind("x", "diaries", "id", "user_id", "id", "9"),
     ("content.x.visibility", "diaries.id", "also the id column")),
    ("visibility-is-owner", kind("x", "diaries", "id", "user_id", "user_id", "9"),
     ("content.x.visibility", "diaries.user_id", "also the owner column")),
    ("owner-is-id", kind("x", "diaries", "id", "id", "visibility", '"self"'),
     ("content.x.owner", "diaries.id", "also the id column")),
    ("visibility-in-pk", kind("x", "shares", "id", "owner_id", "scope", '"self"'),
     ("content.x.visibility", "shares.scope", "part of the primary key")),
    # 4. two kinds on one table and visibility column, whatever their private values
    ("same-column-other-private", kind("x", "diaries", "id", "user_id", "visibility",
                                       '"friends"'),
     ("content.x.visibility", "diaries.visibility", "content.diary")),
    ("same-column-same-private", kind("x", "diaries", "id", "user_id", "visibility", '"self"'),
     ("content.x.visibility", "diaries.visibility", "content.diary")),
    ("visibility-is-another-kinds-owner", kind("x", "diaries", "id", "title", "user_id", "9"),
     ("content.x.visibility", "diaries.user_id", "owner column of content.diary")),
    # 5. a private value that the visibility column cannot hold exactly
    ("int-for-text", kind("x", "albums", "uid", "owner_id", "scope", "9"),
     ("content.x.private", "albums.scope", "use a quoted string")),
    ("text-for-int", kind("x", "clips", "ref", "owner_id", "scope", '"self"'),
     ("content.x.private", "clips.scope", "use an integer")),
    ("bool", kind("x", "clips", "ref", "owner_id", "scope", "true"),
     ("content.x.private", "must be a string or an integer", "True")),
    ("float", kind("x", "clips", "ref", "owner_id", "scope", "9.0"),
     ("content.x.private", "must be a string or an integer", "9.0")),
    ("too-long", kind("x", "albums", "uid", "owner_id", "scope", '"owner-only-forever"'),
     ("content.x.private", "albums.scope", "18 characters, longer than")),
    ("out-of-range", kind("x", "codes", "id", "owner_id", "level", "99999"),
     ("content.x.private", "codes.level", "out of range", "-32768..32767")),
    # not an ENUM value (MariaDB), too long for the VARCHAR(7) an enum is on SQLite, or a
    # PostgreSQL enumerated type (refused whatever the value: see the test below)
    ("not-an-enum-value", kind("x", "codes", "id", "owner_id", "state", '"owner only"'),
     ("content.x.", "codes.state")),
]


def state(sns: Sns) -> dict[str, Any]:
    """Everything an attack could change: content, the site's other tables, the tool's tables."""
    with sns.engine.connect() as conn:
        others = {t.name: sorted(map(tuple, conn.execute(select(t))), key=repr)
                  for t in site.sorted_tables}
    return {"content": sns.everything(), "site": others, "locks": sns.lock_rows(),
            "snapshots": sns.snapshot_rows(), "audit": sns.audit_count()}


def assert_refused(sns: Sns, config: str, fragments: tuple[str, ...]) -> None:
    """Every command that binds the map refuses ``config`` in one line with ``fragments``."""
    bad = sns.config_path.with_name("bad.toml")
    bad.write_text(config, encoding="utf-8")
    before = state(sns)
    # a dry run, a real apply (also of user 3, whose lock is lock 1: the row a kind on a tool
    # table would reach), status and init
    for args in (["apply", "1", "--dry-run"], ["apply", "1", *IDENTITY],
                 ["apply", "3", *IDENTITY], ["status", "1"], ["init"]):
        result = CliRunner().invoke(cli, ["--config", str(bad), "--database-url", sns.url, *args],
                                    catch_exceptions=False)
        assert result.exit_code == 2, (args, result.exit_code, result.output)
        errors = [line for line in result.stderr.splitlines()
                  if line.startswith("privacy-lock: ")]
        assert len(errors) == 1, (args, result.stderr)
        assert "Traceback" not in result.output
        for fragment in fragments:
            assert fragment in errors[0], (args, fragment, errors[0])
    assert state(sns) == before


@pytest.mark.parametrize("extra, fragments", [a[1:] for a in ATTACKS],
                         ids=[a[0] for a in ATTACKS])
def test_a_destructive_content_map_is_refused_and_changes_nothing(sns, extra, fragments):
    assert_refused(sns, sns.config_path.read_text() + extra, fragments)


def test_a_unique_index_that_is_partial_does_not_make_id_unique(sns, dialect):
    if dialect == "mysql":
        pytest.skip("MySQL/MariaDB have no partial indexes")
    with sns.engine.begin() as conn:
        conn.execute(text("CREATE TABLE tags (id INTEGER NOT NULL, user_id INTEGER NOT NULL, "
                          "visibility VARCHAR(16), live INTEGER)"))
        conn.execute(text("CREATE UNIQUE INDEX ux_tags_live_id ON tags (id) WHERE live = 1"))
        conn.execute(text("INSERT INTO tags VALUES (1, 1, 'public', 1), (1, 1, 'friends', 0)"))
    assert_refused(sns, sns.config_path.read_text()
                   + kind("x", "tags", "id", "user_id", "visibility", '"self"'),
                   ("content.x.id", "tags.id", "not unique on its own"))


def test_a_postgresql_enum_type_is_refused_as_revert_cannot_write_it(sns, dialect):
    """Even with one of its values: revert writes the original back as text, which a column of
    a type of its own refuses (items would stay hidden). MariaDB's ENUM takes text."""
    if dialect != "postgresql":
        pytest.skip("only PostgreSQL has enumerated types of their own")
    assert_refused(sns, sns.config_path.read_text()
                   + kind("x", "codes", "id", "owner_id", "state", '"self"'),
                   ("content.x.visibility", "codes.state", "enumerated type state_t"))


def test_a_kind_moved_onto_a_tool_table_is_refused_as_a_replacement(sns):
    """Not only an added kind: the diary kind itself pointed at the snapshots."""
    config = sns.config_path.read_text().replace(
        'table = "diaries"\nid = "id"\nowner = "user_id"\nvisibility = "visibility"',
        'table = "Privacy_Lock_Snapshots"\nid = "snapshot_id"\nowner = "lock_id"\n'
        'visibility = "original_text"')
    assert "Privacy_Lock_Snapshots" in config
    assert_refused(sns, config, ("content.diary.table", "Privacy_Lock_Snapshots"))


@pytest.mark.parametrize("id_style, vis_style",
                         [("int", "text"), ("int", "code"), ("uuid", "text"), ("uuid", "code")])
def test_the_normal_maps_are_still_accepted(db_url, tmp_path, id_style, vis_style):
    sns = build_sns(db_url, tmp_path, id_style=id_style, vis_style=vis_style, items_per_value=1)
    result = sns.run("apply", str(sns.users[0]), "--dry-run")
    assert "privacy-lock:" not in result.stderr


def test_ids_unique_by_constraint_or_index_and_narrow_codes_are_accepted(sns, dialect):
    config = sns.config_path.read_text() \
        + kind("album", "albums", "uid", "owner_id", "scope", '"self"') \
        + kind("clip", "clips", "ref", "owner_id", "scope", "9") \
        + kind("level", "codes", "id", "owner_id", "level", "-32768")
    if dialect != "postgresql":  # MariaDB's ENUM takes text; SQLite's is a VARCHAR
        config += kind("state", "codes", "id", "owner_id", "state", '"self"')
    sns.config_path.write_text(config, encoding="utf-8")
    before = sns.rows("diary")
    sns.apply(1)
    with sns.engine.connect() as conn:
        assert conn.execute(select(albums.c.scope).where(albums.c.owner_id == 1)).scalar() == "self"
        assert conn.execute(select(clips.c.scope).where(clips.c.owner_id == 1)).scalar() == 9
        level, state_ = conn.execute(select(codes.c.level, codes.c.state)
                                     .where(codes.c.owner_id == 1)).one()
    assert (level, state_) == (-32768, "public" if dialect == "postgresql" else "self")
    assert sns.rows("diary") != before
    sns.revert_user(1)
    with sns.engine.connect() as conn:
        assert conn.execute(select(albums.c.scope).where(albums.c.owner_id == 1)).scalar() \
            == "public"


def test_the_demo_map_is_accepted_on_every_dialect(db_url, tmp_path):
    engine = create_engine(db_url, poolclass=NullPool)
    try:
        demo.metadata.create_all(engine)
    finally:
        engine.dispose()
    config = tmp_path / "demo.toml"
    demo._write_config(config, db_url)
    sns_like = Sns(db_url, config, "int", "text", [], {}, {})
    result = sns_like.run("init")
    assert "privacy-lock:" not in result.stderr
