"""What a lock was taken under: per kind, the table, the id / owner / visibility columns, the
owner-only value and its type, recorded on the lock (``privacy_lock_locks.binding``).

Revert and status use the recorded binding, never today's config: a config that renamed a kind,
pointed it at another table or changed its ``private`` value would otherwise strand hidden
items (they no longer look owner-only) or write a diary's original into a photo row. When the
live schema no longer matches the record, revert refuses and says what differs.
"""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import Connection, MetaData, Table
from sqlalchemy.exc import NoSuchTableError

from privacy_lock.config import BoundKind, ContentKind, ContentMap, value_kind_of
from privacy_lock.errors import ConfigError, UsageError

Binding = dict[str, Any]  # one kind's: table, schema, id, owner, visibility, private, value_kind


def binding_of(kind: BoundKind) -> Binding:
    """The record of how ``kind`` is bound now."""
    return {
        "table": kind.table.name, "schema": kind.table.schema, "id": kind.id_col.name,
        "owner": kind.owner_col.name, "visibility": kind.vis_col.name,
        "private": kind.private, "value_kind": kind.value_kind,
    }


def dumps(bindings: dict[str, Binding]) -> str:
    """The stored text of a lock's bindings (canonical: the seal digests it)."""
    return json.dumps(bindings, ensure_ascii=False, sort_keys=True, separators=(",", ":"))


def loads(text: str | None) -> dict[str, Binding] | None:
    """A lock's recorded bindings; None for a lock made before they were recorded."""
    return None if text is None else json.loads(text)


def describe(name: str, binding: Binding) -> str:
    """One kind's binding in words, for messages."""
    return (f"{name} = {_table_name(binding)}(id {binding['id']}, owner {binding['owner']}, "
            f"visibility {binding['visibility']}, private {binding['private']!r})")


def extended(
    recorded: str | None, kinds: list[BoundKind], lock_id: int, subject: str
) -> str | None:
    """The bindings text a lock must hold to take ``kinds`` now: None when it already holds
    them as they are bound now. A kind the lock holds under another binding is refused: its
    hidden items were hidden under the other one (revert them first). So is a kind whose
    visibility column the lock holds under another kind name (the kind renamed in the config):
    its items would be snapshotted a second time, the owner-only value or a later one as the
    "original", and revert would restore whichever came last."""
    bindings = loads(recorded) or {}
    changed = False
    for kind in kinds:
        now = binding_of(kind)
        before = bindings.get(kind.name)
        if before is None:
            held = [name for name, b in bindings.items() if _column_of(b) == _column_of(now)]
            if held:
                raise UsageError(
                    f"lock {lock_id} of user {subject} holds the items of {_column_name(now)} "
                    f"as kind {held[0]!r}; the content map now calls them {kind.name!r}: "
                    f"revert lock {lock_id} first, or restore the name [content.{held[0]}]")
            bindings[kind.name] = now
            changed = True
        elif before != now:
            raise UsageError(
                f"lock {lock_id} of user {subject} was taken with {describe(kind.name, before)}; "
                f"the content map now says {describe(kind.name, now)}: revert lock {lock_id} "
                "first, or restore that mapping")
    return dumps(bindings) if changed or recorded is None else None


def _column_of(binding: Binding) -> tuple[str, str, str]:
    """A binding's visibility column: schema and table ignoring case (as SQLite and MariaDB
    compare table names, and as the content map's overlap check does), column as reflected."""
    return ((binding.get("schema") or "").casefold(), binding["table"].casefold(),
            binding["visibility"])


def _table_name(binding: Binding) -> str:
    return f"{binding['schema']}.{binding['table']}" if binding.get("schema") else binding["table"]


def _column_name(binding: Binding) -> str:
    return f"{_table_name(binding)}.{binding['visibility']}"


class Resolver:
    """Bound kinds for locks' recorded bindings: the config's own when they are the same,
    else reflected from the live schema as recorded (once per distinct binding)."""

    def __init__(self, conn: Connection, cmap: ContentMap) -> None:
        self.conn, self.cmap = conn, cmap
        self.meta = MetaData()
        self.cache: dict[str, BoundKind] = {}

    def kinds(self, lock_id: int, recorded: str | None, names: list[str]) -> list[BoundKind]:
        """The kinds ``names`` of a lock, bound as the lock records them (a lock made before
        bindings were recorded uses the content map, and every kind must still be in it)."""
        bindings = loads(recorded)
        if bindings is None:
            missing = sorted(n for n in names if n not in self.cmap.kinds)
            if missing:
                raise ConfigError(
                    f"lock {lock_id} holds {missing[0]!r} items but the content map has no "
                    f"[content.{missing[0]}]: restore that section to revert the lock")
            return [k for k in self.cmap.kinds.values() if k.name in names]
        unbound = sorted(n for n in names if n not in bindings)
        if unbound:
            raise UsageError(f"lock {lock_id} holds {unbound[0]!r} items but records no "
                             "binding for them (its row was edited?)")
        return [self._bound(lock_id, name, bindings[name]) for name in sorted(names)]

    def _bound(self, lock_id: int, name: str, binding: Binding) -> BoundKind:
        configured = self.cmap.kinds.get(name)
        if configured is not None and binding_of(configured) == binding:
            return configured
        key = json.dumps([name, binding], sort_keys=True)
        if key not in self.cache:
            self.cache[key] = self._reflect(lock_id, name, binding)
        return self.cache[key]

    def _reflect(self, lock_id: int, name: str, binding: Binding) -> BoundKind:
        where = f"lock {lock_id} was taken with {describe(name, binding)}"
        try:
            table = Table(binding["table"], self.meta, schema=binding.get("schema"),
                          autoload_with=self.conn)
        except NoSuchTableError:
            raise UsageError(f"{where}, but table {binding['table']} no longer exists; nothing "
                             "was changed") from None
        columns = []
        for role in ("id", "owner", "visibility"):
            if binding[role] not in table.c:
                raise UsageError(f"{where}, but column {binding['table']}.{binding[role]} no "
                                 "longer exists; nothing was changed")
            columns.append(table.c[binding[role]])
        id_col, owner_col, vis_col = columns
        if value_kind_of(vis_col) != binding["value_kind"]:
            raise UsageError(f"{where}, but {binding['table']}.{binding['visibility']} is now "
                             f"{vis_col.type}, not {binding['value_kind']}; nothing was changed")
        spec = ContentKind(name, binding["table"], binding["id"], binding["owner"],
                           binding["visibility"], binding["private"])
        return BoundKind(spec, table, id_col, owner_col, vis_col, binding["value_kind"])
