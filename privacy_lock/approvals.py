"""Two-person revert: ``revert`` files a request, a second operator runs it with ``approve``.

Reverting makes hidden content visible again, so with ``[policy] revert_requires_approval`` (the
default) one operator cannot do it alone. A request moves pending -> approved -> done:

- ``request_revert`` records it (one open request per lock, enforced by a unique column) and the
  ``revert-requested`` event, and changes no content.
- ``approve_requests`` refuses an approver who is the requester (the refusal is audited as
  ``revert-refused`` and nothing else changes); otherwise it records
  ``revert-approved`` and marks the request approved, runs the ordinary chunked revert (all
  the requests approved at once as one batch, where small locks share chunks), then marks the
  request done. A run interrupted after the approval is resumed by its approver running
  ``approve`` again (the request is still approved, not done); anyone else is refused, so
  that whoever closes the lock is the operator the trail shows approving it. Two runs of the
  same approver at once both work through the lock (each chunk holds the lock row and restores
  only what is still pending); the one that finds the lock closed by this approval records the
  request ``reverted``, as the lock is.

Who is the requester: names are compared as :func:`operator_keys` makes them (Unicode
compatibility forms, case, spacing, punctuation, invisible characters and look-alike letters
ignored: ``ａｌｉｃｅ``, ``аlice`` with a Cyrillic a and ``al ice`` are all ``alice``). The OS
account (from the real uid) and host of both sides, and on PostgreSQL and MariaDB their database
logins, are recorded beside the names. Under the stored policy's ``approval = distinct-names``
(the default; policy.py) the same OS account approving under another name is allowed (shared
support desks exist) but flagged in the event and on screen; under ``distinct-accounts`` it is
refused, and so is the same database login.
"""

from __future__ import annotations

import functools
import json
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, tzinfo
from importlib import resources
from typing import Any, NamedTuple, TypeVar

from sqlalchemy import Connection, insert, select, update
from sqlalchemy.exc import IntegrityError

from privacy_lock import seal
from privacy_lock.audit import Actor, EventSpec, append_event, append_events
from privacy_lock.config import ContentMap
from privacy_lock.db import insert_rows, reading
from privacy_lock.dialects import for_connection
from privacy_lock.engine import Outcome, active_lock_ids, preflight, run_batch
from privacy_lock.errors import UsageError
from privacy_lock.pacing import Pacer
from privacy_lock.policy import read_policy
from privacy_lock.report import from_stored, now_utc, show_time
from privacy_lock.requests import Request
from privacy_lock.schema import locks, revert_requests
from privacy_lock.vocabulary import (
    OPEN_REQUEST_STATES,
    LockState,
    RequestState,
    Status,
    utc_now,
)

T = TypeVar("T")


@dataclass(frozen=True)
class RequestOutcome:
    """What ``revert`` did for one lock when approval is required."""

    request_id: int | None
    lock_id: int | None
    user: str | None
    status: Status  # PENDING_APPROVAL | ALREADY_REQUESTED | NOT_LOCKED
    requested_by: str | None

    def as_dict(self) -> dict[str, Any]:
        return {"request": self.request_id, "lock": self.lock_id, "user": self.user,
                "status": self.status, "requested_by": self.requested_by}


def same_operator(first: str | None, second: str | None) -> bool:
    """Whether two stated operator names name the same person: the one comparison of names
    the two-person rule makes (see :func:`operator_keys`)."""
    return bool(operator_keys(first) & operator_keys(second))


def operator_keys(name: str | None) -> frozenset[str]:
    """A name as the two-person rule compares it; two names are one person when they share
    a key.

    Compatibility forms are folded (NFKD: full width ``ａ`` is ``a``), case is folded, and
    whitespace, punctuation, control, format (zero-width) and other default-ignorable
    characters are dropped; each character becomes its prototype in Unicode's confusables
    data (the TR39 skeleton: Cyrillic ``а`` is ``a``, ``0`` is ``o``). Case folding and the
    skeleton do not commute (``I`` looks like ``l``, but folds to ``i``; Greek ``Β`` looks like
    ``B`` but folds to ``β``), so there are two keys, case folded before and after the
    skeleton. Two different people may share a key (``rn`` and ``m`` look alike); that refuses
    an approval, never allows one."""
    return frozenset({_key(name or "", fold_first=True), _key(name or "", fold_first=False)})


def _key(text: str, fold_first: bool) -> str:
    for _ in range(2):  # again, for prototypes that decompose or fold further
        text = unicodedata.normalize("NFKD", text)
        text = _skeleton(_visible(text.casefold() if fold_first else text)).casefold()
    return _visible(text)


# Default-ignorable code points that are not in category C (DerivedCoreProperties.txt): they
# show nothing, so a name may carry them unseen.
_IGNORABLE = frozenset(
    [0x034F, 0x115F, 0x1160, 0x17B4, 0x17B5, 0x3164, 0xFFA0, *range(0x180B, 0x1810),
     *range(0xFE00, 0xFE10), *range(0xE0100, 0xE01F0)])


def _visible(text: str) -> str:
    """Without separators and spaces (Z), punctuation (P), control/format/unassigned (C) and
    the other default-ignorable characters."""
    return "".join(ch for ch in text if unicodedata.category(ch)[0] not in "ZPC"
                   and not ch.isspace() and ord(ch) not in _IGNORABLE)


def _skeleton(text: str) -> str:
    prototypes = _prototypes()
    return "".join(prototypes.get(ch, ch) for ch in text)


@functools.cache
def _prototypes() -> dict[str, str]:
    """Character -> its prototype, from Unicode's confusables.txt as the confusable-homoglyphs
    package ships it (read from the package itself: its loader also honours the
    CONFUSABLE_DATA environment variable, which would let an operator swap the table).

    That file links each confusable pair both ways, so the direction is recovered: a character
    linked to a sequence, or to a character linked to several, maps to it (confusables.txt maps
    single characters only, and never maps a prototype); a pair linked only to each other maps
    both to the smaller. Bidirectional marks the file keeps around right-to-left characters are
    dropped."""
    raw = json.loads(resources.files("confusable_homoglyphs").joinpath("confusables.json")
                     .read_text(encoding="utf-8"))
    links: dict[str, list[str]] = {}
    for key, entries in raw.items():
        key = _unmarked(key)
        if key:
            links.setdefault(key, []).extend(c for e in entries if (c := _unmarked(e["c"])))
    mapping: dict[str, str] = {}
    for key, targets in links.items():
        if len(key) != 1 or len(set(targets)) != 1:
            continue
        target = targets[0]
        if len(target) > 1 or len(set(links.get(target, []))) > 1:
            mapping[key] = target
        elif target != key:  # a pair: either may be the prototype, one of them stands for both
            mapping[max(key, target)] = min(key, target)
    for _ in range(3):  # a sequence's characters are prototypes, or a pair's other half
        mapping = {key: "".join(mapping.get(ch, ch) for ch in target)
                   for key, target in mapping.items()}
    return mapping


def _unmarked(text: str) -> str:
    return "".join(ch for ch in text if unicodedata.category(ch) != "Cf")


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
                if lock.state != LockState.ACTIVE:
                    return RequestOutcome(None, lock_id, lock.subject, Status.NOT_LOCKED, None)
                existing = _open_request(conn, lock_id)
                if existing is not None:
                    return RequestOutcome(existing.request_id, lock_id, lock.subject,
                                          Status.ALREADY_REQUESTED, existing.requested_by)
                login = for_connection(conn).current_login(conn)
                row = _request_row(lock, actor, login, utc_now())
                inserted = conn.execute(insert(revert_requests).values(
                    **row)).inserted_primary_key
                assert inserted is not None  # a single-row INSERT always has one
                request_id = inserted[0]
                append_event(conn, "revert-requested", actor, subject=lock.subject,
                             lock_id=lock_id, details=_filed(row, int(request_id)))
                return RequestOutcome(int(request_id), lock_id, lock.subject,
                                      Status.PENDING_APPROVAL, actor.operator)
        except IntegrityError:
            continue  # another operator filed one between our look and our insert: report it
    raise UsageError(f"could not file a revert request for lock {lock_id}; run revert again")


def request_reverts(
    conn: Connection, cmap: ContentMap, requests: Sequence[Request]
) -> list[RequestOutcome]:
    """File a revert request for each request's lock (by lock id, or the user's active lock),
    :data:`APPROVE_IN_ONE` requests per transaction, in order; a part that races another
    operator filing for the same lock is filed again one request at a time."""
    for request in requests:
        check_operator_name(request.operator, request.line)
    subject_at = {position: cmap.normalize_user(r.user_id or "")
                  for position, r in enumerate(requests) if r.lock_id is None}
    with reading(conn):
        active = {s: lock_id for part in _parts(list(subject_at.values()))
                  for s, lock_id in active_lock_ids(conn, part).items()}
    outcomes: list[RequestOutcome | None] = [None] * len(requests)
    todo: list[tuple[int, int, Actor]] = []  # (position, lock id, who asks)
    for position, request in enumerate(requests):
        lock_id = request.lock_id
        if lock_id is None:
            subject = subject_at[position]
            lock_id = active.get(subject)
            if lock_id is None:
                outcomes[position] = RequestOutcome(None, None, subject, Status.NOT_LOCKED, None)
                continue
        todo.append((position, lock_id, Actor.current(request.operator, request.ticket,
                                                      request.reason)))
    for part in _parts(todo, APPROVE_IN_ONE):
        try:
            with conn.begin():
                filed = _file_requests(conn, part)
        except IntegrityError:  # another operator filed one of them meanwhile: one by one
            filed = [request_revert(conn, lock_id, actor) for _p, lock_id, actor in part]
        for (position, _lock_id, _actor), outcome in zip(part, filed, strict=True):
            outcomes[position] = outcome
    return [o for o in outcomes if o is not None]


def _file_requests(
    conn: Connection, part: Sequence[tuple[int, int, Actor]]
) -> list[RequestOutcome]:
    """:func:`request_revert` for several locks in the caller's transaction: lock their lock
    rows, find their open requests, insert the missing ones in one statement, and append their
    ``revert-requested`` events under one lock of the audit head."""
    lock_ids = sorted({lock_id for _p, lock_id, _a in part})
    lock_rows = {row.lock_id: row for row in conn.execute(
        select(locks).where(locks.c.lock_id.in_(lock_ids)).order_by(locks.c.lock_id)
        .with_for_update())}
    if unknown := [lock_id for lock_id in lock_ids if lock_id not in lock_rows]:
        raise UsageError(f"no lock with id {unknown[0]}")
    open_request = {row.open_lock_id: (row.request_id, row.requested_by) for row in
                    conn.execute(select(revert_requests).where(
                        revert_requests.c.open_lock_id.in_(lock_ids)))}
    now, new_rows, asked_by = utc_now(), [], {}
    login = for_connection(conn).current_login(conn)
    for _position, lock_id, actor in part:
        lock = lock_rows[lock_id]
        if (lock.state == LockState.ACTIVE and lock_id not in open_request
                and lock_id not in asked_by):
            asked_by[lock_id] = actor
            new_rows.append(_request_row(lock, actor, login, now))
    if new_rows:
        insert_rows(conn, revert_requests, new_rows)
        new_ids = dict(conn.execute(
            select(revert_requests.c.open_lock_id, revert_requests.c.request_id)
            .where(revert_requests.c.open_lock_id.in_(list(asked_by)))).all())
        row_of = {row["lock_id"]: row for row in new_rows}
        append_events(conn, [
            EventSpec("revert-requested", actor, lock_rows[lock_id].subject, lock_id,
                      _filed(row_of[lock_id], int(new_ids[lock_id])))
            for lock_id, actor in asked_by.items()])
    outcomes, reported = [], set()
    for _position, lock_id, actor in part:
        lock = lock_rows[lock_id]
        if lock.state != LockState.ACTIVE:
            outcomes.append(RequestOutcome(None, lock_id, lock.subject, Status.NOT_LOCKED, None))
        elif lock_id in asked_by and lock_id not in reported:
            reported.add(lock_id)
            outcomes.append(RequestOutcome(int(new_ids[lock_id]), lock_id, lock.subject,
                                           Status.PENDING_APPROVAL, actor.operator))
        else:  # open before, or named twice: the first one is the request
            request_id, requested_by = open_request.get(lock_id) or (
                int(new_ids[lock_id]), asked_by[lock_id].operator)
            outcomes.append(RequestOutcome(int(request_id), lock_id, lock.subject,
                                           Status.ALREADY_REQUESTED, requested_by))
    return outcomes


@dataclass
class ApprovalOutcome:
    """An approved request (its :data:`SHOWN` fields as they are after its run) and the outcome
    of its revert."""

    request: dict[str, Any]
    outcome: Outcome
    resumed: bool  # it was approved before, by an earlier run that did not finish
    same_os_account: bool


@dataclass
class ApprovalRun:
    """What one ``approve`` did: the requests run (in the order given), and those another
    approver finished between our look and our approval (not run again)."""

    approved: list[ApprovalOutcome]
    finished_meanwhile: list[str]  # as in Approved.finished_meanwhile (not run)
    interrupted: bool


APPROVE_IN_ONE = 500  # requests approved (or marked done) per transaction
# What an approval's result keeps of its request: what the output and notes name. Only these,
# for 30,000 requests a whole row each (and each row read twice) held 175 MB at the end.
SHOWN = ("request_id", "lock_id", "state", "outcome", "requested_by", "requested_os_user",
         "requested_host", "approved_by", "approved_at")


class Ready(NamedTuple):
    """An approved request ready to run: what its revert and its result need of it."""

    request_id: int
    lock_id: int
    ticket: str
    reason: str


@dataclass
class Approved:
    """Requests approved (now, or by an earlier run that did not finish) and ready to run."""

    approver: Actor
    runnable: list[tuple[Ready, bool, bool]]  # (request, resumed, same OS account)
    # one line per request another approver finished, or approved, between our look and our
    # approval (not run: only its approver may run it)
    finished_meanwhile: list[str]

    @property
    def requests(self) -> list[Request]:
        """The reverts to run, each as the approver under its request's ticket and reason."""
        return [Request(line=0, user_id=None, lock_id=req.lock_id, ticket=req.ticket,
                        reason=req.reason, operator=self.approver.operator, kinds=())
                for req, _resumed, _same in self.runnable]


def _request_row(lock: Any, actor: Actor, login: str | None, now: str) -> dict[str, Any]:
    """The revert request row filed for ``lock`` by ``actor``."""
    return {"lock_id": lock.lock_id, "subject": lock.subject, "state": RequestState.PENDING,
            "open_lock_id": lock.lock_id, "requested_by": actor.operator,
            "requested_os_user": actor.os_user, "requested_host": actor.host,
            "requested_db_user": login, "ticket": actor.ticket or "",
            "reason": actor.reason or "", "requested_at": now}


def _filed(row: dict[str, Any], request_id: int) -> dict[str, Any]:
    """The ``revert-requested`` event's details: the request, sealed as filed (seal.py)."""
    return {"request_id": request_id, "db_user": row["requested_db_user"],
            "sealed": {"request": seal.fields_digest({**row, "request_id": request_id},
                                                     seal.REQUEST_FIELDS)}}


def approve_requests(
    conn: Connection, cmap: ContentMap, request_ids: Sequence[int], approver: Actor
) -> Approved:
    """Approve the requests, or refuse them all when the approver may not approve any of them.

    Everything that can refuse the command is decided before the first approval: unknown or
    finished requests are a usage error; so is a lock no longer bound as it records, and one
    whose seals fail is refused (:func:`privacy_lock.engine.preflight`, what the revert itself
    would refuse); requests the approver filed (or, under the stored policy's ``approval =
    distinct-accounts``, filed from the approver's OS account or database login) are refused
    with a ``revert-refused`` event each and a usage error, and none of the others is approved
    or run; so are requests another operator approved (only their approver finishes them). The
    approvals (``revert-approved``, the request marked approved) commit in transactions of
    :data:`APPROVE_IN_ONE`; :func:`run_approved` then runs them.
    """
    check_operator_name(approver.operator)
    ids = list(dict.fromkeys(request_ids))
    with reading(conn):
        found = {row.request_id: row for part in _parts(ids) for row in conn.execute(
            select(revert_requests).where(revert_requests.c.request_id.in_(part)))}
        distinct_accounts = read_policy(conn).distinct_accounts
        login = for_connection(conn).current_login(conn)
    _check_approvable(ids, found)
    # Who asked must still be who the trail says asked, and the rest; and the revert must be
    # able to run, checked now, not after the approvals are recorded.
    lock_ids = sorted({int(row.lock_id) for row in found.values()})
    checked = preflight(conn, cmap, lock_ids, "approve")
    # a closed lock's requests are sealed too (short reads of its own)
    seal.check_sealed(conn, [i for i in lock_ids if i not in checked], "approve")
    _refuse_requests(conn, ids, found, approver, login, distinct_accounts)
    _refuse_others_approvals(ids, found, approver)
    approved = Approved(approver, [], [])
    for part in _parts(ids, APPROVE_IN_ONE):
        with conn.begin():
            rows = {row.request_id: row for row in conn.execute(
                select(revert_requests).where(revert_requests.c.request_id.in_(part))
                .order_by(revert_requests.c.request_id).with_for_update())}
            events, approving = [], []
            approved_at = utc_now()
            for request_id in part:
                req = rows[request_id]
                same_account = (req.requested_os_user, req.requested_host) == (
                    approver.os_user, approver.host)
                if req.state == RequestState.REJECTED:  # rejected since we looked: never run
                    approved.finished_meanwhile.append(
                        f"request {request_id} was rejected meanwhile")
                    continue
                if req.state == RequestState.DONE:  # finished by another approver since we looked
                    approved.finished_meanwhile.append(
                        f"request {request_id} was finished meanwhile by {req.approved_by}")
                    continue
                if (req.state == RequestState.APPROVED
                        and not same_operator(req.approved_by, approver.operator)):
                    approved.finished_meanwhile.append(  # approved since we looked
                        f"request {request_id} was approved meanwhile {_by_approver(req)}")
                    continue
                if req.state == RequestState.PENDING:
                    approving.append(request_id)
                    as_approved = {**req._asdict(), "approved_by": approver.operator,
                                   "approved_os_user": approver.os_user,
                                   "approved_host": approver.host, "approved_db_user": login,
                                   "approved_at": approved_at}
                    events.append(EventSpec("revert-approved", replace(approver,
                                                                       ticket=req.ticket),
                                            req.subject, req.lock_id, {
                                                "request_id": request_id,
                                                "requested_by": req.requested_by,
                                                "requested_os_user": req.requested_os_user,
                                                "requested_host": req.requested_host,
                                                "requested_db_user": req.requested_db_user,
                                                "db_user": login,
                                                "same_os_account": same_account,
                                                "sealed": {"approval": seal.fields_digest(
                                                    as_approved, seal.APPROVAL_FIELDS)}}))
                approved.runnable.append((
                    Ready(request_id, int(req.lock_id), req.ticket, req.reason),
                    req.state == RequestState.APPROVED, same_account))
            if approving:
                conn.execute(
                    update(revert_requests)
                    .where(revert_requests.c.request_id.in_(approving))
                    .values(state=RequestState.APPROVED, approved_by=approver.operator,
                            approved_os_user=approver.os_user, approved_host=approver.host,
                            approved_db_user=login, approved_at=approved_at)
                )
            append_events(conn, events)
    return approved


def check_operator_name(name: str | None, line: int = 0) -> None:
    """A usage error for a name with no letter or digit left once compared (``...``, a
    zero-width space): it could not be told from another such name."""
    if not any(operator_keys(name)):
        where = f"line {line}: " if line else ""
        raise UsageError(f"{where}operator name {name!r} has no letter or digit: give your "
                         "name, it is how the two-person rule tells operators apart")


def refusal(req: Any, approver: Actor, login: str | None, distinct_accounts: bool) -> str | None:
    """Why ``approver`` (connected as database ``login``) may not approve request ``req``, as
    "filed by ..." text, or None. The requester is the approver when the names compare equal
    (:func:`same_operator`); under ``distinct-accounts`` also when the OS account (user@host)
    or the database login is the requester's."""
    if same_operator(req.requested_by, approver.operator):
        return f"filed by {req.requested_by}"
    if not distinct_accounts:
        return None
    if (req.requested_os_user, req.requested_host) == (approver.os_user, approver.host):
        return f"filed from your OS account ({req.requested_os_user}@{req.requested_host})"
    if req.requested_db_user is not None and req.requested_db_user == login:
        return f"filed with your database login ({login})"
    return None


def _refuse_requests(
    conn: Connection, ids: list[int], found: dict[int, Any], approver: Actor,
    login: str | None, distinct_accounts: bool,
) -> None:
    """When the approver may not approve any of the requests (:func:`refusal`): record one
    ``revert-refused`` event per such request and raise a usage error naming them; no request
    is approved and no content changes. Who filed a request never changes, so what was read
    before is what holds."""
    refused = [(found[i], why) for i in ids
               if (why := refusal(found[i], approver, login, distinct_accounts))]
    if not refused:
        return
    with conn.begin():
        append_events(conn, [
            EventSpec("revert-refused", replace(approver, ticket=req.ticket), req.subject,
                      req.lock_id, {"request_id": req.request_id,
                                    "requested_by": req.requested_by,
                                    "requested_os_user": req.requested_os_user,
                                    "requested_host": req.requested_host,
                                    "requested_db_user": req.requested_db_user,
                                    "db_user": login,
                                    "why": "the approver is the requester"
                                    if why.startswith("filed by") else
                                    f"approval = distinct-accounts: {why}"})
            for req, why in refused])
    by_why: dict[str, list[int]] = {}  # why -> request ids refused
    for req, why in refused:
        by_why.setdefault(why, []).append(req.request_id)
    others = ""  # when other requests were named too, none of them ran either: say so
    if len(refused) < len(ids):
        others = f": approve the others without {'them' if len(refused) > 1 else 'it'}"
    raise UsageError("; ".join(
        (f"request {ids_[0]} was" if len(ids_) == 1 else
         f"requests {id_ranges(ids_)} ({len(ids_):,}) were")
        + f" {why}: a revert needs a second operator's approval"
        + ("" if why.startswith("filed by") else
           ", from another OS account and database login (policy approval = distinct-accounts)")
        + f" (refused; nothing was changed{others})"
        for why, ids_ in by_why.items()))


def _by_approver(req: Any) -> str:
    """'by bob at T: bob runs `privacy-lock approve 3` again to finish it'."""
    return (f"by {req.approved_by} at {req.approved_at}: {req.approved_by} runs "
            f"`privacy-lock approve {req.request_id}` again to finish it")


def _refuse_others_approvals(ids: list[int], found: dict[int, Any], approver: Actor) -> None:
    """A usage error naming the requests another operator approved (and has not finished): only
    the operator who approved a request runs its revert, so that the trail's
    ``revert-approved`` and ``revert`` name the same person. Nothing has changed yet."""
    theirs = [found[i] for i in ids if found[i].state == RequestState.APPROVED
              and not same_operator(found[i].approved_by, approver.operator)]
    if not theirs:
        return
    others = ""
    if len(theirs) < len(ids):
        others = f": approve the others without {'them' if len(theirs) > 1 else 'it'}"
    raise UsageError("; ".join(f"request {req.request_id} was approved {_by_approver(req)}"
                               for req in theirs) + f" (refused; nothing was changed{others})")


def run_approved(
    conn: Connection,
    cmap: ContentMap,
    approved: Approved,
    pacer: Pacer,
    share_chunks: bool = True,
    on_done: Callable[[Outcome], None] | None = None,
) -> ApprovalRun:
    """Run the approved reverts as one batch (:func:`privacy_lock.engine.run_batch`: locks with
    few items share chunks) and mark done each request whose revert finished. A request whose
    revert failed or was interrupted stays approved: approving it again finishes it."""
    result = run_batch(conn, cmap, "revert", approved.requests, pacer, on_done=on_done,
                       share_chunks=share_chunks)
    pairs = list(zip(approved.runnable, result.outcomes, strict=True))
    finals = _mark_done(conn, [(req.request_id, outcome) for (req, _r, _s), outcome in pairs])
    return ApprovalRun(
        [ApprovalOutcome(finals[req.request_id], outcome, resumed, same)
         for (req, resumed, same), outcome in pairs],
        approved.finished_meanwhile, result.interrupted)


def _check_approvable(ids: list[int], found: dict[int, Any]) -> None:
    """A usage error naming every unknown or finished request; nothing has changed yet."""
    missing = [i for i in ids if i not in found]
    if len(missing) == 1:
        raise UsageError(f"no revert request with id {missing[0]} (see `privacy-lock "
                         "requests --state all`)"
                         + ("; nothing was approved" if len(ids) > 1 else ""))
    if missing:
        raise UsageError(f"no revert requests with ids {_some(missing)} (see `privacy-lock "
                         "requests --state all`); nothing was approved")
    rejected = [i for i in ids if found[i].state == RequestState.REJECTED]
    if rejected:
        which = (f"request {rejected[0]} was" if len(rejected) == 1 else
                 f"requests {id_ranges(rejected)} were")
        raise UsageError(f"{which} rejected and can no longer be approved (file a new one "
                         "with `privacy-lock revert`); nothing was approved")
    done = [found[i] for i in ids if found[i].state == RequestState.DONE]
    if len(done) == 1 and len(ids) == 1:
        req = done[0]
        raise UsageError(f"request {req.request_id} is already done: approved by "
                         f"{req.approved_by} at {req.approved_at}, outcome {req.outcome}")
    if done:
        which = (f"request {done[0].request_id} is" if len(done) == 1 else
                 f"requests {_some([r.request_id for r in done])} are")
        raise UsageError(f"{which} already done (see `privacy-lock requests --state done`); "
                         "nothing was approved: approve the others")


def _mark_done(conn: Connection, finished: list[tuple[int, Outcome]]) -> dict[int, dict]:
    """Mark done, with its outcome, each request whose revert ran to the end; return every
    request's :data:`SHOWN` fields as they now are. A run that found the lock closed records
    ``reverted`` when this request's approval closed it (another run of its approver, or an
    earlier one that stopped before marking it done), as the lock says; ``not-locked`` only
    when something else did."""
    closed_by_approval = _closed_by_approval(conn, [
        request_id for request_id, outcome in finished if outcome.status == Status.NOT_LOCKED])
    by_status: dict[str, list[int]] = {}
    for request_id, outcome in finished:
        if not outcome.failed:
            status = Status.REVERTED if request_id in closed_by_approval else outcome.status
            by_status.setdefault(status, []).append(request_id)
    now = utc_now()
    for status, request_ids in by_status.items():
        for part in _parts(request_ids, APPROVE_IN_ONE):
            with conn.begin():
                conn.execute(
                    update(revert_requests)
                    .where(revert_requests.c.request_id.in_(part),
                           revert_requests.c.state == RequestState.APPROVED)
                    .values(state=RequestState.DONE, open_lock_id=None, finished_at=now,
                            outcome=status)
                )
    with reading(conn):
        return {row["request_id"]: dict(row) for part in _parts([i for i, _o in finished])
                for row in conn.execute(
                    select(*[revert_requests.c[name] for name in SHOWN])
                    .where(revert_requests.c.request_id.in_(part))).mappings()}


def _closed_by_approval(conn: Connection, request_ids: list[int]) -> set[int]:
    """Those of the requests whose lock was reverted by their approver after the approval (a
    reverted lock stays reverted, so a read outside the marking transaction holds)."""
    closed: set[int] = set()
    with reading(conn):
        for part in _parts(request_ids):
            for request_id, approved_by, approved_at, reverted_by, reverted_at in conn.execute(
                select(revert_requests.c.request_id, revert_requests.c.approved_by,
                       revert_requests.c.approved_at, locks.c.reverted_by, locks.c.reverted_at)
                .join(locks, locks.c.lock_id == revert_requests.c.lock_id)
                .where(revert_requests.c.request_id.in_(part),
                       locks.c.state == LockState.REVERTED)
            ).all():
                if (approved_at and reverted_at and reverted_at >= approved_at
                        and same_operator(reverted_by, approved_by)):
                    closed.add(int(request_id))
    return closed


def _parts(ids: Sequence[T], size: int = 1000) -> list[list[T]]:
    return [list(ids[i:i + size]) for i in range(0, len(ids), size)]


def id_ranges(ids: Sequence[int]) -> str:
    """Ids as short ranges, every one named: [1, 2, 3, 7, 9, 10] -> "1-3, 7, 9-10"."""
    spans: list[list[int]] = []
    for i in sorted(set(ids)):
        if spans and i == spans[-1][1] + 1:
            spans[-1][1] = i
        else:
            spans.append([i, i])
    return ", ".join(f"{a}-{b}" if a != b else str(a) for a, b in spans)


def _some(ids: list[int], shown: int = 10) -> str:
    """'3, 7, 9' or '3, 7, 9, ... (25 in all)'."""
    text = ", ".join(map(str, ids[:shown]))
    return text if len(ids) <= shown else f"{text}, ... ({len(ids):,} in all)"


def pending_requests(
    conn: Connection, *, ticket: str | None = None, requested_by: str | None = None
) -> list[Any]:
    """The pending requests (oldest first), only those under ``ticket`` and filed by
    ``requested_by`` when given; the name is compared as the two-person rule compares names
    (:func:`same_operator`), so a look-alike spelling finds the same person's requests."""
    query = (select(revert_requests).where(revert_requests.c.state == RequestState.PENDING)
             .order_by(revert_requests.c.request_id))
    if ticket is not None:
        query = query.where(revert_requests.c.ticket == ticket.strip())
    with reading(conn):
        rows = list(conn.execute(query).all())
    if requested_by is not None:
        rows = [row for row in rows if same_operator(row.requested_by, requested_by)]
    return rows


def own_requests(conn: Connection, rows: Sequence[Any], approver: Actor) -> list[Any]:
    """Those of ``rows`` the approver may not approve (:func:`refusal`: filed by them, or
    under ``approval = distinct-accounts`` from their OS account or login)."""
    with reading(conn):
        distinct_accounts = read_policy(conn).distinct_accounts
        login = for_connection(conn).current_login(conn)
    return [row for row in rows if refusal(row, approver, login, distinct_accounts)]


@dataclass(frozen=True)
class RejectedRequest:
    """A request ``reject`` cancelled."""

    request_id: int
    lock_id: int
    user: str
    requested_by: str
    ticket: str

    def as_dict(self) -> dict[str, Any]:
        return {"request": self.request_id, "lock": self.lock_id, "user": self.user,
                "status": RequestState.REJECTED, "requested_by": self.requested_by,
                "ticket": self.ticket}


def reject_requests(
    conn: Connection, request_ids: Sequence[int], rejecter: Actor
) -> list[RejectedRequest]:
    """Cancel pending revert requests: each becomes ``rejected`` (closed: its lock may be
    asked for again, the request itself can never be approved), with one ``revert-rejected``
    event each that seals the row as rejected (seal.py). Anyone may reject, the requester
    included: a rejection makes nothing visible.

    All or nothing: an unknown request, or one that is not pending (approved, done, rejected,
    also when it changed state between the look and the lock), is a usage error and none is
    rejected. One transaction, whatever the count: it touches only the tool's request rows."""
    check_operator_name(rejecter.operator)
    ids = list(dict.fromkeys(request_ids))
    with reading(conn):
        found = {row.request_id: row for part in _parts(ids) for row in conn.execute(
            select(revert_requests).where(revert_requests.c.request_id.in_(part)))}
        login = for_connection(conn).current_login(conn)
    missing = [i for i in ids if i not in found]
    if missing:
        raise UsageError(f"no revert request with id{'s' if len(missing) > 1 else ''} "
                         f"{id_ranges(missing)} (see `privacy-lock requests --state all`); "
                         "nothing was rejected")
    _refuse_not_pending(ids, found)
    with conn.begin():
        rows: dict[int, Any] = {}
        for part in _parts(sorted(ids)):
            rows.update((row.request_id, row) for row in conn.execute(
                select(revert_requests).where(revert_requests.c.request_id.in_(part))
                .order_by(revert_requests.c.request_id).with_for_update()))
        _refuse_not_pending(ids, rows)  # approved or rejected since we looked: roll back
        now = utc_now()
        for part in _parts(ids):
            conn.execute(update(revert_requests)
                         .where(revert_requests.c.request_id.in_(part),
                                revert_requests.c.state == RequestState.PENDING)
                         .values(state=RequestState.REJECTED, open_lock_id=None,
                                 finished_at=now))
        for part in _parts(ids, APPROVE_IN_ONE):  # one statement per part, one transaction
            append_events(conn, [
                EventSpec("revert-rejected", replace(rejecter, ticket=rows[i].ticket),
                          rows[i].subject, rows[i].lock_id, {
                              "request_id": i, "requested_by": rows[i].requested_by,
                              "db_user": login,
                              "sealed": {"rejection": seal.fields_digest(
                                  {**rows[i]._asdict(), "state": RequestState.REJECTED,
                                   "finished_at": now}, seal.REJECTION_FIELDS)}})
                for i in part])
    return [RejectedRequest(i, int(rows[i].lock_id), rows[i].subject, rows[i].requested_by,
                            rows[i].ticket) for i in ids]


def _refuse_not_pending(ids: list[int], rows: dict[int, Any]) -> None:
    """A usage error naming, per state, every request that is not pending."""
    by_state: dict[str, list[int]] = {}
    for i in ids:
        if rows[i].state != RequestState.PENDING:
            by_state.setdefault(rows[i].state, []).append(i)
    if by_state:
        raise UsageError("only pending requests can be rejected: " + "; ".join(
            f"{'request' if len(found) == 1 else 'requests'} {id_ranges(found)} "
            f"{'is' if len(found) == 1 else 'are'} {state}"
            for state, found in by_state.items()) + "; nothing was rejected")


def list_requests(
    conn: Connection, state: str, zone: tzinfo, now: datetime | None = None
) -> list[dict[str, Any]]:
    """Revert requests in ``state`` (open = pending or approved-but-unfinished; or all)."""
    now = now or now_utc()
    query = select(revert_requests).order_by(revert_requests.c.request_id)
    if state == "open":
        query = query.where(revert_requests.c.state.in_(OPEN_REQUEST_STATES))
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
