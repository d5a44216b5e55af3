"""A small SNS in any test database: users, diaries and photos, with helpers to look at them.

Shapes vary the way real sites do: integer or string (UUID) ids, string or integer visibility
codes, NULL meaning "site default".
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from click.testing import CliRunner, Result
from sqlalchemy import (
    Column,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    create_engine,
    delete,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.pool import NullPool

from privacy_lock.cli import cli
from privacy_lock.schema import audit_events, locks, snapshots

STYLES = {
    # name: (visibility values used, the owner-only value)
    "text": (["public", "friends", "self", None], "self"),
    "code": ([0, 1, 9, None], 9),
}


@dataclass
class Sns:
    url: str
    config_path: Path
    id_style: str
    vis_style: str
    users: list[Any]
    tables: dict[str, Table]
    columns: dict[str, tuple[str, str, str]]  # kind -> (id, owner, visibility)
    engine: Any = field(repr=False, default=None)

    @property
    def private(self) -> Any:
        return STYLES[self.vis_style][1]

    @property
    def values(self) -> list[Any]:
        return STYLES[self.vis_style][0]

    @property
    def public(self) -> Any:
        return self.values[0]

    @property
    def friends(self) -> Any:
        return self.values[1]

    def new_id(self) -> Any:
        return str(uuid.uuid4()) if self.id_style == "uuid" else None

    def add_item(self, kind: str, owner: Any, vis: Any) -> Any:
        table = self.tables[kind]
        id_col, owner_col, vis_col = self.columns[kind]
        row = {owner_col: owner, vis_col: vis}
        if self.id_style == "uuid":
            row[id_col] = self.new_id()
        with self.engine.begin() as conn:
            result = conn.execute(insert(table).values(row))
            return row.get(id_col) or result.inserted_primary_key[0]

    def rows(self, kind: str) -> dict[Any, tuple[Any, Any]]:
        """item id -> (owner, visibility), for every row of the kind."""
        table = self.tables[kind]
        id_col, owner_col, vis_col = self.columns[kind]
        with self.engine.connect() as conn:
            result = conn.execute(select(table.c[id_col], table.c[owner_col], table.c[vis_col]))
            return {r[0]: (r[1], r[2]) for r in result}

    def everything(self) -> dict[str, dict[Any, tuple[Any, Any]]]:
        return {kind: self.rows(kind) for kind in self.tables}

    def vis(self, kind: str, item_id: Any) -> Any:
        return self.rows(kind)[item_id][1]

    def set_vis(self, kind: str, item_id: Any, value: Any) -> None:
        table = self.tables[kind]
        id_col, _, vis_col = self.columns[kind]
        with self.engine.begin() as conn:
            conn.execute(update(table).where(table.c[id_col] == item_id).values({vis_col: value}))

    def delete(self, kind: str, item_id: Any) -> None:
        table = self.tables[kind]
        id_col = self.columns[kind][0]
        with self.engine.begin() as conn:
            conn.execute(delete(table).where(table.c[id_col] == item_id))

    def items_of(self, owner: Any, kind: str | None = None) -> dict[tuple[str, Any], Any]:
        """(kind, id) -> visibility for one owner."""
        out = {}
        for k in [kind] if kind else list(self.tables):
            for item_id, (own, vis) in self.rows(k).items():
                if own == owner:
                    out[(k, item_id)] = vis
        return out

    def snapshot_rows(self) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            return [dict(r) for r in conn.execute(
                select(snapshots).order_by(snapshots.c.snapshot_id)).mappings()]

    def lock_rows(self) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            return [dict(r) for r in conn.execute(
                select(locks).order_by(locks.c.lock_id)).mappings()]

    def audit_count(self) -> int:
        with self.engine.connect() as conn:
            return conn.execute(select(func.count()).select_from(audit_events)).scalar_one()

    def original_of(self, snap: dict[str, Any]) -> Any:
        return snap["original_int"] if self.vis_style == "code" else snap["original_text"]

    def run(self, *args: str, expect: int | None = 0, operator: bool = True,
            input_text: str | None = None) -> Result:
        """Invoke the CLI against this SNS (``input_text`` typed at its prompts); check the exit
        code unless expect is None."""
        base = ["--config", str(self.config_path), "--database-url", self.url]
        result = CliRunner().invoke(cli, [*base, *args], catch_exceptions=False,
                                    input=input_text)
        if expect is not None:
            assert result.exit_code == expect, (result.exit_code, result.output)
        return result

    def apply(self, *users: Any, extra: tuple[str, ...] = ()) -> Result:
        return self.run("apply", *map(str, users), *IDENTITY, *extra)

    def revert_user(self, *users: Any, extra: tuple[str, ...] = ()) -> Result:
        args = [a for u in users for a in ("--user", str(u))]
        return self.run("revert", *args, *IDENTITY, *extra)


IDENTITY = ("--operator", "tester", "--ticket", "T-1", "--reason", "test")


def build_sns(
    url: str,
    tmp_path: Path,
    id_style: str = "int",
    vis_style: str = "text",
    items_per_value: int = 3,
    init: bool = True,
) -> Sns:
    """Create users/diaries/photos with every visibility value for three users; write a config.

    User ids are users[0..2]; each owns ``items_per_value`` diaries and photos of each value.
    """
    meta = MetaData()
    id_type = String(36) if id_style == "uuid" else Integer
    vis_type = String(16) if vis_style == "text" else Integer
    pk = {"primary_key": True}
    if id_style == "int":
        pk["autoincrement"] = True
    users_t = Table("users", meta, Column("id", id_type, primary_key=True),
                    Column("name", String(50)))
    diaries = Table("diaries", meta, Column("id", id_type, **pk),
                    Column("user_id", id_type, nullable=False),
                    Column("visibility", vis_type, nullable=True),
                    Column("title", String(100)))
    photos = Table("photos", meta, Column("id", id_type, **pk),
                   Column("owner_id", id_type, nullable=False),
                   Column("scope", vis_type, nullable=True))
    Index("ix_diaries_owner", diaries.c.user_id, diaries.c.id)
    Index("ix_photos_owner", photos.c.owner_id, photos.c.id)
    engine = create_engine(url, poolclass=NullPool)
    meta.drop_all(engine)
    meta.create_all(engine)
    users = ["u-alice", "u-bob", "u-carol"] if id_style == "uuid" else [1, 2, 3]
    sns = Sns(url, tmp_path / "privacy-lock.toml", id_style, vis_style, users,
              {"diary": diaries, "photo": photos},
              {"diary": ("id", "user_id", "visibility"), "photo": ("id", "owner_id", "scope")},
              engine)
    with engine.begin() as conn:
        conn.execute(insert(users_t), [{"id": u, "name": f"user {u}"} for u in users])
    # Interleave owners so one user's ids are not contiguous (as on a real site).
    with engine.begin() as conn:
        for kind, table in sns.tables.items():
            id_col, owner_col, vis_col = sns.columns[kind]
            rows = [
                {owner_col: user, vis_col: value}
                for _ in range(items_per_value) for value in sns.values for user in users
            ]
            if id_style == "uuid":
                for row in rows:
                    row[id_col] = sns.new_id()
            conn.execute(insert(table), rows)
    private = f'"{sns.private}"' if vis_style == "text" else str(sns.private)
    sns.config_path.write_text(
        f"""[accounts]
table = "users"
id = "id"

[content.diary]
table = "diaries"
id = "id"
owner = "user_id"
visibility = "visibility"
private = {private}

[content.photo]
table = "photos"
id = "id"
owner = "owner_id"
visibility = "scope"
private = {private}

[policy]
# the core tests exercise revert itself; the approval flow has its own tests
revert_requires_approval = false
""",
        encoding="utf-8",
    )
    if init:
        sns.run("init")
    return sns


def build_sns_under_stored_policy(url: str, tmp_path: Path) -> Sns:
    """:func:`build_sns` with the config's [policy] gone before ``init``: the database stores
    the secure defaults (a revert needs a second operator, names must differ)."""
    sns = build_sns(url, tmp_path, init=False)
    head = sns.config_path.read_text(encoding="utf-8").split("[policy]")[0]
    sns.config_path.write_text(head, encoding="utf-8")
    sns.run("init")
    return sns


def tool_session(sns: Sns):
    """(engine, content map) for calling the library API directly, as the CLI would."""
    from privacy_lock.config import bind_content_map, load_settings
    from privacy_lock.db import create_tool_engine

    settings = load_settings(str(sns.config_path), sns.url)
    engine = create_tool_engine(sns.url)
    with engine.connect() as conn, conn.begin():
        cmap = bind_content_map(conn, settings)
    return engine, cmap
