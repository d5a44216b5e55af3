"""Seals: digests, written into the audit trail, of exactly the rows a revert depends on.

An event's own hash covers its fields, not the rows of the other tables. Editing a stored
original (``UPDATE privacy_lock_snapshots SET original_text = 'public'``), a lock's binding or an
approval would leave the chain intact and make revert publish what was private. So each event
that writes such rows carries, in its ``details``, a seal of exactly those rows as the
transaction wrote them:

- ``lock`` (and ``apply`` when a lock gains a kind): ``{"lock": DIGEST}`` of the lock row's
  fields the tool trusts later (user, who, ticket, reason, when, and the content binding);
- ``apply`` / ``hide`` (the transaction's snapshots of one lock): ``{"snapshots": N, "at": T,
  "digest": DIGEST}`` over the (kind, item, original) rows that transaction wrote, which all
  carry ``snapshotted_at = T``;
- ``revert-requested``: ``{"request": DIGEST}`` of the request row's fields as filed;
  ``revert-approved``: ``{"approval": DIGEST}`` of those and the approver's, as approved (who
  asked and who approved is what the two-person rule rests on).

``audit verify`` recomputes every seal from the tables; revert and approve recompute the seals
of the locks they are about to restore, and refuse (nothing changed) when one does not match.
A digest is SHA-256 over a canonical JSON text, so it is the same on every database and in
every Python.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, select

from privacy_lock.errors import TamperedError
from privacy_lock.schema import audit_events, locks, revert_requests, snapshots

SnapshotRow = tuple[str, str, str | None, int | None]  # kind, item id, original text / int

LOCK_FIELDS = ("lock_id", "subject", "operator", "ticket", "reason", "created_at", "binding")
REQUEST_FIELDS = ("request_id", "lock_id", "subject", "requested_by", "requested_os_user",
                  "requested_host", "requested_db_user", "ticket", "reason", "requested_at")
APPROVAL_FIELDS = (*REQUEST_FIELDS, "approved_by", "approved_os_user", "approved_host",
                   "approved_db_user", "approved_at")


def _digest(payload: Any) -> str:
    text = json.dumps(payload, ensure_ascii=False, separators=(",", ":"), sort_keys=True)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def snapshot_digest(rows: Iterable[SnapshotRow]) -> str:
    """The digest of a set of snapshot rows, whatever order the database returned them in.
    An original's type is part of it: ``'1'`` and ``1`` and NULL and ``''`` all differ."""
    return _digest(sorted(
        [str(kind), str(item), text, None if number is None else int(number)]
        for kind, item, text, number in rows))


def snapshot_seal(rows: list[SnapshotRow], at: str) -> dict[str, Any]:
    """What an event that wrote ``rows`` (all with ``snapshotted_at = at``) carries."""
    return {"snapshots": len(rows), "at": at, "digest": snapshot_digest(rows)}


def fields_digest(row: Mapping[str, Any], fields: Iterable[str]) -> str:
    """The digest of the named fields of one row (a lock, a request)."""
    return _digest({name: _plain(row[name]) for name in fields})


def _plain(value: Any) -> Any:
    """Values as JSON keeps them the same on every database (ids as integers)."""
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return str(value)


# --- checking --------------------------------------------------------------------------------


@dataclass
class SealCheck:
    """What recomputing the seals found: how many were checked, the locks made before seals
    existed (not checkable), and the problems, each naming the row and the event."""

    checked: int = 0
    legacy_locks: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


SEALING_ACTIONS = ("lock", "apply", "hide", "revert-requested", "revert-approved")
LOCKS_PER_READ = 500


def check_seals(conn: Connection, lock_ids: Sequence[int] | None = None) -> SealCheck:
    """Recompute the seals of ``lock_ids`` (every lock when None) from the lock and snapshot
    tables and compare them with what the trail's events sealed. Read-only; the caller chooses
    the transaction. Locks made before seals existed (no sealed ``lock`` event) are counted,
    not checked."""
    if lock_ids is None:
        lock_ids = [int(i) for i in conn.execute(
            select(locks.c.lock_id).order_by(locks.c.lock_id)).scalars()]
    check = SealCheck()
    for start in range(0, len(lock_ids), LOCKS_PER_READ):
        _check_part(conn, list(lock_ids[start:start + LOCKS_PER_READ]), check)
    return check


def check_sealed(conn: Connection, lock_ids: Sequence[int], command: str) -> None:
    """Refuse ``command`` (revert, approve) before it changes anything when what it depends on
    for ``lock_ids`` (their locks, snapshots and revert requests) no longer matches the seals:
    :class:`TamperedError`, naming the first problem."""
    check = check_seals(conn, lock_ids)
    if not check.ok:
        more = (f" (and {len(check.problems) - 1} more problems)"
                if len(check.problems) > 1 else "")
        raise TamperedError(f"refusing to {command}, nothing was changed: {check.problems[0]}"
                            f"{more}; run `privacy-lock audit verify`")


def _check_part(conn: Connection, lock_ids: list[int], check: SealCheck) -> None:
    expected_lock: dict[int, tuple[int, str]] = {}  # lock -> (seq, digest), the latest
    expected_rows: dict[tuple[int, str], tuple[int, int, str]] = {}  # (lock, at) -> seq, n, d
    # request -> (seq, digest) of its filing, and of its approval
    expected_request: dict[str, dict[int, tuple[int, str]]] = {"request": {}, "approval": {}}
    for seq, lock_id, details in conn.execute(
        select(audit_events.c.seq, audit_events.c.lock_id, audit_events.c.details)
        .where(audit_events.c.lock_id.in_(lock_ids),
               audit_events.c.action.in_(SEALING_ACTIONS))
        .order_by(audit_events.c.seq)
    ).all():
        sealed = _sealed(details)
        if "lock" in sealed:
            expected_lock[int(lock_id)] = (int(seq), sealed["lock"])
        if "digest" in sealed:
            expected_rows[int(lock_id), sealed["at"]] = (
                int(seq), int(sealed["snapshots"]), sealed["digest"])
        for what in ("request", "approval"):
            if what in sealed:
                expected_request[what][int(json.loads(details)["request_id"])] = (
                    int(seq), sealed[what])
    _check_requests(conn, expected_request, check)
    sealed_locks = set(expected_lock)
    check.legacy_locks += len(set(lock_ids) - sealed_locks)
    for row in conn.execute(select(*[locks.c[f] for f in LOCK_FIELDS])
                            .where(locks.c.lock_id.in_(sorted(sealed_locks)))).mappings():
        seq, digest = expected_lock.pop(int(row["lock_id"]))
        check.checked += 1
        if fields_digest(dict(row), LOCK_FIELDS) != digest:
            check.problems.append(
                f"lock {row['lock_id']} no longer matches what event {seq} sealed (its user, "
                "operator, ticket, reason, time or content binding was edited)")
    for lock_id, (seq, _digest) in sorted(expected_lock.items()):
        check.problems.append(f"lock {lock_id}, sealed by event {seq}, is gone")
    found: dict[tuple[int, str], list[SnapshotRow]] = {}
    for lock_id, at, kind, item, text, number in conn.execute(
        select(snapshots.c.lock_id, snapshots.c.snapshotted_at, snapshots.c.kind,
               snapshots.c.item_id, snapshots.c.original_text, snapshots.c.original_int)
        .where(snapshots.c.lock_id.in_(sorted(sealed_locks)))
    ).all():
        found.setdefault((int(lock_id), at), []).append((kind, item, text, number))
    for key in sorted(set(found) | set(expected_rows)):
        lock_id, at = key
        rows = found.get(key, [])
        if key not in expected_rows:
            check.problems.append(
                f"{len(rows)} snapshot row(s) of lock {lock_id} written at {at} are sealed by no "
                "event (added by hand?)")
            continue
        seq, count, digest = expected_rows[key]
        check.checked += 1
        if len(rows) != count or snapshot_digest(rows) != digest:
            check.problems.append(
                f"the snapshots of lock {lock_id} written at {at} no longer match what event "
                f"{seq} sealed ({count} rows then, {len(rows)} now; a stored original, item or "
                "kind was edited, added or removed)")


def _check_requests(
    conn: Connection, expected: dict[str, dict[int, tuple[int, str]]], check: SealCheck
) -> None:
    """Each sealed request row against its filing's and its approval's seals."""
    ids = sorted(set(expected["request"]) | set(expected["approval"]))
    rows = {int(row["request_id"]): dict(row) for row in conn.execute(
        select(revert_requests).where(revert_requests.c.request_id.in_(ids))).mappings()}
    for what, fields in (("request", REQUEST_FIELDS), ("approval", APPROVAL_FIELDS)):
        for request_id, (seq, digest) in sorted(expected[what].items()):
            check.checked += 1
            row = rows.get(request_id)
            if row is None:
                check.problems.append(f"revert request {request_id}, sealed by event {seq}, "
                                      "is gone")
            elif fields_digest(row, fields) != digest:
                who = "who asked, from where, ticket or reason" if what == "request" else (
                    "who asked or who approved, from where, or when")
                check.problems.append(
                    f"revert request {request_id} no longer matches what event {seq} sealed "
                    f"({who} was edited)")


def _sealed(details: str | None) -> dict[str, Any]:
    try:
        sealed = json.loads(details or "{}").get("sealed")
    except (ValueError, AttributeError):
        return {}
    return sealed if isinstance(sealed, dict) else {}
