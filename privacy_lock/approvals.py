"""Two-person revert: ``revert`` files a request, a second operator runs it with ``approve``.

Reverting makes hidden content visible again, so with ``[policy] revert_requires_approval`` (the
default) one operator cannot do it alone. A request moves pending -> approved -> done:

- ``request_revert`` records it (one open request per lock, enforced by a unique column) and the
  ``revert-requested`` event, and changes no content.
- ``approve_request`` refuses an approver whose stated operator name is the requester's (the
  refusal is audited as ``revert-refused`` and nothing else changes); otherwise it records
  ``revert-approved`` and marks the request approved in one transaction, runs the ordinary
  chunked revert, then marks the request done. A run interrupted after the approval is resumed
  by running ``approve`` again (the request is still approved, not done).

Names are compared ignoring case and spacing ("Alice" and "alice " are one person). The OS user
and host of both sides are recorded beside the names; the same OS account approving under another
name is allowed (shared support desks exist) but flagged in the event and on screen.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import datetime, tzinfo
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, insert, select, update
from sqlalchemy.exc import IntegrityError

from privacy_lock import locking
from privacy_lock.audit import Actor, append_event, utc_now
from privacy_lock.config import ContentMap
from privacy_lock.db import reading
from privacy_lock.errors import UsageError
from privacy_lock.report import from_stored, now_utc, show_time
from privacy_lock.schema import locks, revert_requests

if TYPE_CHECKING:
    from privacy_lock.pacing import Pacer
    from privacy_lock.requests import Request

PENDING, APPROVED, DONE = "pending", "approved", "done"
OPEN_STATES = (PENDING, APPROVED)


@dataclass(frozen=True)
class RequestOutcome:
    """What ``revert`` did for one lock when approval is required."""

    request_id: int | None
    lock_id: int | None
    user: str | None
    status: str  # pending-approval | already-requested | not-locked
    requested_by: str | None

    def as_dict(self) -> dict[str, Any]:
        return {"request": self.request_id, "lock": self.lock_id, "user": self.user,
                "status": self.status, "requested_by": self.requested_by}


def same_operator(first: str | None, second: str | None) -> bool:
    """Whether two stated operator names name the same person (case and spacing ignored)."""
    def norm(name: str | None) -> str:
        return " ".join((name or "").split()).casefold()
    return norm(first) == norm(second)


def _open_request(conn: Connection, lock_id: int) -> Any:
    return conn.execute(
        select(revert_requests).where(revert_requests.c.open_lock_id == lock_id)
    ).first()


def request_revert(conn: Connection, lock_id: int, actor: Actor) -> RequestOutcome:
    """File a revert request for an active lock, or return the one already open for it."""
    for _attempt in range(2):
        try:
            with conn.begin():
                # Lock the lock row: a concurrent revert, apply or request of it waits for us.
                lock = conn.execute(
                    select(locks).where(locks.c.lock_id == lock_id).with_for_update()
                ).first()
                if lock is None:
                    raise UsageError(f"no lock with id {lock_id}")
                if lock.state != locking.ACTIVE:
                    return RequestOutcome(None, lock_id, lock.subject, "not-locked", None)
                existing = _open_request(conn, lock_id)
                if existing is not None:
                    return RequestOutcome(existing.request_id, lock_id, lock.subject,
                                          "already-requested", existing.requested_by)
                request_id = conn.execute(insert(revert_requests).values(
                    lock_id=lock_id, subject=lock.subject, state=PENDING, open_lock_id=lock_id,
                    requested_by=actor.operator, requested_os_user=actor.os_user,
                    requested_host=actor.host, ticket=actor.ticket or "",
                    reason=actor.reason or "", requested_at=utc_now(),
                )).inserted_primary_key[0]
                append_event(conn, "revert-requested", actor, subject=lock.subject,
                             lock_id=lock_id, details={"request_id": int(request_id)})
                return RequestOutcome(int(request_id), lock_id, lock.subject,
                                      "pending-approval", actor.operator)
        except IntegrityError:
            continue  # another operator filed one between our look and our insert: report it
    raise UsageError(f"could not file a revert request for lock {lock_id}; run revert again")


def request_reverts(
    conn: Connection, cmap: ContentMap, requests: Iterable[Request]
) -> list[RequestOutcome]:
    """File a revert request for each request's lock (by lock id, or the user's active lock)."""
    outcomes = []
    for request in requests:
        lock_id, subject = request.lock_id, None
        if lock_id is None:
            subject = cmap.normalize_user(request.user_id or "")
            with conn.begin():
                lock_id = locking.active_lock_id(conn, subject)
            if lock_id is None:
                outcomes.append(RequestOutcome(None, None, subject, "not-locked", None))
                continue
        actor = Actor.current(request.operator, request.ticket, request.reason)
        outcomes.append(request_revert(conn, lock_id, actor))
    return outcomes


@dataclass
class ApprovalOutcome:
    """The approved request and the result of the revert it ran."""

    request: dict[str, Any]
    result: locking.UserResult
    resumed: bool
    same_os_account: bool


def approve_request(
    conn: Connection,
    cmap: ContentMap,
    request_id: int,
    approver: Actor,
    pacer: Pacer | None = None,
) -> ApprovalOutcome:
    """Approve a pending request and run its revert; refuse (audited) a self-approval.

    The revert runs as the approver, under the request's ticket and reason.
    """
    refused = None
    with conn.begin():
        req = conn.execute(
            select(revert_requests).where(revert_requests.c.request_id == request_id)
            .with_for_update()
        ).first()
        if req is None:
            raise UsageError(f"no revert request with id {request_id} (see `privacy-lock "
                             "requests --state all`)")
        if req.state == DONE:
            raise UsageError(
                f"request {request_id} is already done: approved by {req.approved_by} at "
                f"{req.approved_at}, outcome {req.outcome}"
            )
        same_account = (req.requested_os_user, req.requested_host) == (approver.os_user,
                                                                       approver.host)
        approver = replace(approver, ticket=req.ticket)
        if same_operator(req.requested_by, approver.operator):
            append_event(conn, "revert-refused", approver, subject=req.subject,
                         lock_id=req.lock_id, details={
                             "request_id": request_id, "requested_by": req.requested_by,
                             "why": "the approver is the requester"})
            refused = (f"request {request_id} was filed by {req.requested_by}: a revert needs a "
                       "second operator's approval (refused; nothing was changed)")
        elif req.state == PENDING:
            now = utc_now()
            conn.execute(
                update(revert_requests).where(revert_requests.c.request_id == request_id)
                .values(state=APPROVED, approved_by=approver.operator,
                        approved_os_user=approver.os_user, approved_host=approver.host,
                        approved_at=now)
            )
            append_event(conn, "revert-approved", approver, subject=req.subject,
                         lock_id=req.lock_id, details={
                             "request_id": request_id, "requested_by": req.requested_by,
                             "requested_os_user": req.requested_os_user,
                             "requested_host": req.requested_host,
                             "same_os_account": same_account})
    if refused:
        raise UsageError(refused)  # after the commit: the refusal itself stays in the trail

    runner = Actor(approver.operator, req.ticket, req.reason, approver.os_user, approver.host)
    result = locking.revert_lock(conn, cmap, req.lock_id, runner, pacer)
    with conn.begin():
        conn.execute(
            update(revert_requests)
            .where(revert_requests.c.request_id == request_id,
                   revert_requests.c.state == APPROVED)
            .values(state=DONE, open_lock_id=None, finished_at=utc_now(), outcome=result.status)
        )
        final = conn.execute(
            select(revert_requests).where(revert_requests.c.request_id == request_id)
        ).mappings().one()
    return ApprovalOutcome(dict(final), result, req.state == APPROVED, same_account)


def list_requests(
    conn: Connection, state: str, zone: tzinfo, now: datetime | None = None
) -> list[dict[str, Any]]:
    """Revert requests in ``state`` (open = pending or approved-but-unfinished; or all)."""
    now = now or now_utc()
    query = select(revert_requests).order_by(revert_requests.c.request_id)
    if state == "open":
        query = query.where(revert_requests.c.state.in_(OPEN_STATES))
    elif state != "all":
        query = query.where(revert_requests.c.state == state)
    with reading(conn):
        rows = conn.execute(query).all()
    return [
        {
            "request": row.request_id, "lock": row.lock_id, "user": row.subject,
            "state": row.state, "age_days": (now - from_stored(row.requested_at)).days,
            "requested_by": row.requested_by,
            "requested_from": f"{row.requested_os_user}@{row.requested_host}",
            "ticket": row.ticket, "reason": row.reason,
            "requested_at": show_time(row.requested_at, zone),
            "approved_by": row.approved_by, "approved_at": show_time(row.approved_at, zone),
            "outcome": row.outcome,
        }
        for row in rows
    ]
