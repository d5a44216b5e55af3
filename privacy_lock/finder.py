"""`privacy-lock find`: rank the accounts that fit what a caller remembers, without becoming a
way to look anyone up.

The search, in one read transaction, never loads a table into Python:

1. each text fragment (mail, nickname, remembered text) becomes a filter on its columns in SQL
   (``lower(col) LIKE '%piece%'`` for each piece of :func:`identity.search_pieces`, so one typo
   still finds the row): at most :data:`POOL` owners per fragment come back;
2. those owners' addresses, nickname, join month and matching texts are read and scored in
   Python (:func:`identity.score_account`);
3. only candidates with :data:`identity.MIN_EVIDENCE` points are listed, best first, at most
   ``max_candidates``; a search that cannot reach the evidence minimum gets a coarse count.

Before it runs, and whatever it finds, the search is written to the audit trail (fragments
masked, and keyed-hashed when the trail has a key) together with a row of the rate-limit table,
in one transaction; a refused search (too short a fragment, over the rate limit) is audited as
``find-refused``. docs/OPERATORS.md, "Finding the account", gives the reasoning.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Column, ColumnElement, Connection, and_, func, or_, select
from sqlalchemy import types as sqltypes

from privacy_lock.anchors import key_of
from privacy_lock.audit import Actor, append_event
from privacy_lock.config import BoundIdentity, bind_value
from privacy_lock.db import reading
from privacy_lock.dialects import for_connection
from privacy_lock.errors import UsageError
from privacy_lock.identity import (
    MIN_EVIDENCE,
    AccountFacts,
    Candidate,
    JoinedRange,
    Remembered,
    fold,
    mask_text,
    score_account,
    search_pieces,
    year_month,
)
from privacy_lock.schema import audit_head, find_usage
from privacy_lock.vocabulary import TIME_FORMAT

POOL = 500  # owners read per fragment; a fragment matching more is too broad to rank by
FUZZY_POOL = 100  # owners a fragment's pieces may find (a typo) and still be scored
_IN_BATCH = 500  # owners per IN (...) when reading their facts
_TEXTS_PER_OWNER = 20  # remembered texts read per candidate and source


@dataclass
class FindResult:
    """What a search showed: the candidates listed (masked), or only a coarse count."""

    candidates: list[Candidate]
    listed: bool  # False: the search could not reach the evidence minimum; count only
    matched: str  # coarse count of accounts that matched a fragment: "none", "1-10", ...
    more: bool  # more candidates qualified than max_candidates (the best are listed)
    event_seq: int  # the find event
    notes: list[str] = field(default_factory=list)


def fragment_record(kind: str, text: str, conn: Connection) -> dict[str, Any]:
    """How the trail keeps one fragment: masked (first character and length), plus its HMAC
    under the audit key when the trail is keyed (an auditor with the key can check whether a
    given address was searched for; without the key a short fragment's hash could be guessed,
    so none is stored)."""
    record: dict[str, Any] = {"kind": kind, "masked": f"{mask_text(text)}({len(text)})"}
    key = key_of(conn)
    if key is not None:
        record["hmac"] = hmac.new(key.secret, f"privacy-lock find v1:{kind}:{text}".encode(),
                                  hashlib.sha256).hexdigest()
    return record


def describe(conn: Connection, memory: Remembered) -> dict[str, Any]:
    """What the trail records of a search's input (never a fragment in clear)."""
    details: dict[str, Any] = {
        "fragments": [fragment_record(kind, text, conn) for kind, text in memory.fragments()]}
    if memory.families:
        details["carriers"] = sorted(memory.families)
    if memory.joined:
        details["joined"] = f"{memory.joined.first}..{memory.joined.last}"
    return details


def refuse(conn: Connection, actor: Actor, why: str, details: dict[str, Any]) -> UsageError:
    """Audit a refused search (``find-refused``) and return the usage error to raise."""
    with conn.begin():
        append_event(conn, "find-refused", actor, details={**details, "refused": why})
    return UsageError(why)


def search(conn: Connection, bound: BoundIdentity, memory: Remembered, actor: Actor
           ) -> FindResult:
    """Run one audited, rate-limited search (see the module docstring)."""
    spec = bound.spec
    details = describe(conn, memory)
    keys, account = _operator_key(actor), f"{actor.os_user}@{actor.host}"
    with reading(conn):
        used = _searches_last_hour(conn, keys, account)
    if used >= spec.searches_per_hour:
        raise refuse(conn, actor, f"rate limit: {used} searches in the last hour by this "
                     f"operator or OS account ({spec.searches_per_hour} allowed, [identity] "
                     "searches_per_hour)", details)
    with reading(conn):
        pool, broad = _candidate_owners(conn, bound, memory)
        facts = _facts(conn, bound, memory, pool)
        how = for_connection(conn).find_index_state(conn, bound)
    scored = sorted((score_account(f, memory) for f in facts),
                    key=lambda c: (-c.points, -c.score, c.user))
    strong = memory.evidence_possible() >= MIN_EVIDENCE
    qualified = [c for c in scored if c.points >= MIN_EVIDENCE] if strong else []
    listed = qualified[:spec.max_candidates]
    matched = bucket(len(pool) if not broad else POOL + 1, spec.max_candidates)
    outcome = "listed" if listed else "weak" if not strong else "none listed"
    details.update(outcome=outcome, matched=matched, listed=[c.user for c in listed])
    with conn.begin():
        # Under the head lock (every append takes it): two searches of one operator at once
        # are counted one after the other, so the limit holds under concurrency too.
        conn.execute(select(audit_head.c.seq).where(audit_head.c.id == 1).with_for_update())
        used = _searches_last_hour(conn, keys, account)
        if used >= spec.searches_per_hour:
            refused = details | {"refused": "rate limit", "listed": [], "outcome": "refused"}
            append_event(conn, "find-refused", actor, details=refused)
            over, seq = True, 0
        else:
            event = append_event(conn, "find", actor, details=details)
            conn.execute(find_usage.insert().values(
                operator_key=keys, os_account=account, searched_at=event["occurred_at"],
                event_seq=event["seq"]))
            over, seq = False, int(event["seq"])
    if over:
        raise UsageError(f"rate limit: {spec.searches_per_hour} searches per hour reached")
    notes = [how]
    if not strong:
        notes.append(f"not enough to list anyone: give two fragments, or a mail fragment of "
                     f"at least 6 characters (matched: {matched})")
    elif broad and not listed:
        notes.append("a fragment matched too many accounts to rank: add another one")
    return FindResult(listed, bool(listed), matched, len(qualified) > len(listed),
                      seq, notes)


def reindex(conn: Connection, bound: BoundIdentity) -> str:
    """`find --reindex`: rebuild the index the tool maintains on this database (SQLite's FTS5
    table), in one transaction; say what was done."""
    with conn.begin():
        return for_connection(conn).rebuild_find_index(conn, bound)


def index_ddl(conn: Connection, bound: BoundIdentity) -> list[str]:
    """The index statements a DBA should still run for `find` on this database (PostgreSQL's
    pg_trgm indexes); empty where there are none or the tool maintains its own."""
    with reading(conn):
        return for_connection(conn).missing_find_index_ddl(conn, bound)


def bucket(count: int, cap: int) -> str:
    """A count shown only coarsely: the exact number of accounts sharing a fragment would be
    an oracle for narrowing searches."""
    if count == 0:
        return "none"
    if count <= cap:
        return f"1-{cap}"
    return f"more than {cap}"


def _operator_key(actor: Actor) -> str:
    """The operator's name as the rate limit counts it: width, case, spaces and punctuation
    folded away (``Ａｌｉｃｅ`` is ``alice``). Look-alike letters from other scripts are not
    (the OS account is counted too, which a new name does not change)."""
    return re.sub(r"[\W_]+", "", fold(actor.operator)) or fold(actor.operator)


def _searches_last_hour(conn: Connection, operator_key: str, os_account: str) -> int:
    since = (datetime.now(UTC) - timedelta(hours=1)).strftime(TIME_FORMAT)
    return int(conn.execute(
        select(func.count()).select_from(find_usage).where(
            find_usage.c.searched_at >= since,
            or_(find_usage.c.operator_key == operator_key,
                find_usage.c.os_account == os_account))
    ).scalar_one())


# --- the SQL side ------------------------------------------------------------------------------


def like_any(col: Any, pieces: Iterable[str], dialect: str = "") -> ColumnElement[bool]:
    """``lower(col)`` holds any of ``pieces`` (LIKE wildcards in them escaped); an ASCII piece
    is also looked for in full width, as some sites stored ``ｔａｒｏ``."""
    terms = []
    # SQLite's LIKE already ignores ASCII case, and its lower() folds nothing more: without
    # it each row costs one function call less. Elsewhere lower() is what the index covers.
    folded = col if dialect == "sqlite" else func.lower(col)
    for piece in dict.fromkeys(pieces):
        for variant in dict.fromkeys((piece, _full_width(piece))):
            escaped = variant.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            terms.append(folded.like(f"%{escaped}%", escape="\\"))
    return or_(*terms)


def _full_width(text: str) -> str:
    return "".join(chr(ord(c) + 0xFEE0) if "!" <= c <= "~" else c for c in text)


def _sources(bound: BoundIdentity, kind: str) -> list[tuple[str, Column, Column]]:
    """(source name, owner column, text column) a fragment of ``kind`` is looked for in."""
    wanted = {"mail": ("mail", "mail_history"), "nickname": ("nickname",)}.get(kind)
    return [(name, owner, col) for name, owner, col in bound.text_columns()
            if (name in wanted if wanted else name.startswith("memory:"))]


def _candidate_owners(conn: Connection, bound: BoundIdentity, memory: Remembered
                      ) -> tuple[list[str], bool]:
    """The owners (as text) a text fragment matched, at most :data:`POOL` per fragment; and
    whether a fragment matched more (too broad to rank by, only scored). With no text
    fragment, the join range or carrier alone is counted (never listed)."""
    pool: dict[str, None] = {}
    broad = False
    strategy = for_connection(conn)
    for kind, text in memory.fragments():
        sources = _sources(bound, kind)
        # The fragment whole first; its pieces (a typo) only when that finds no one, and only
        # when they are rare enough to score (a common half finds thousands).
        exact = _owners_holding(conn, strategy, sources, [text], POOL)
        if exact is None:
            broad = True
            continue
        pool.update(exact)
        pieces = search_pieces(text)
        if not exact and pieces != [text]:
            pool.update(_owners_holding(conn, strategy, sources, pieces, FUZZY_POOL) or {})
    if not memory.fragments():
        condition = _joined_or_carrier(bound, memory)
        if condition is not None:
            ids = conn.execute(select(bound.account_id).where(condition).limit(POOL + 1))
            pool.update((str(r[0]), None) for r in ids)
            broad = len(pool) > POOL
    return list(pool)[:POOL], broad


def _owners_holding(conn: Connection, strategy: Any, sources: list[tuple[str, Column, Column]],
                    pieces: list[str], limit: int) -> dict[str, None] | None:
    """Owners (as text) whose ``sources`` hold any of ``pieces``: from the index the tool
    maintains when there is one, else filtered in SQL; None when more than ``limit``."""
    variants = [v for p in pieces for v in dict.fromkeys((p, _full_width(p)))]
    indexed = strategy.fragment_owners(conn, [name for name, _o, _c in sources], variants,
                                       limit + 1)
    found: dict[str, None] = dict.fromkeys(indexed) if indexed is not None else {}
    for _name, owner, col in sources if indexed is None else []:
        rows = conn.execute(select(owner).where(like_any(col, pieces, conn.dialect.name))
                            .distinct().limit(limit + 1 - len(found))).scalars()
        found.update((str(r), None) for r in rows)
        if len(found) > limit:
            break
    return None if len(found) > limit else found


def _joined_or_carrier(bound: BoundIdentity, memory: Remembered) -> Any:
    from privacy_lock.identity import CARRIER_FAMILIES

    terms = []
    if memory.joined is not None and bound.joined is not None:
        terms.append(joined_between(bound.joined, memory.joined))
    for family in memory.families:
        terms.append(or_(*(func.lower(bound.mail).like(f"%@{d}") for d in
                           CARRIER_FAMILIES[family]),
                         *(func.lower(bound.mail).like(f"%.{d}") for d in
                           CARRIER_FAMILIES[family])))
    return and_(*terms) if terms else None


def joined_between(col: Column, joined: JoinedRange) -> ColumnElement[bool]:
    """``col`` (a date, timestamp or ISO text) within the remembered months."""
    fy, fm = map(int, joined.first.split("-"))
    ly, lm = map(int, joined.last.split("-"))
    start = datetime(fy, fm, 1)
    end = datetime(ly + (lm == 12), lm % 12 + 1, 1)
    if isinstance(col.type, sqltypes.String):
        return and_(col >= start.strftime("%Y-%m-%d"), col < end.strftime("%Y-%m-%d"))
    if isinstance(col.type, sqltypes.Date) and not isinstance(col.type, sqltypes.DateTime):
        return and_(col >= start.date(), col < end.date())
    return and_(col >= start, col < end)


def _facts(conn: Connection, bound: BoundIdentity, memory: Remembered,
           owners: Sequence[str]) -> list[AccountFacts]:
    """What the scoring needs of each owner: addresses, nickname, join month, and the
    remembered texts that hold a piece of a --text fragment."""
    if not owners:
        return []
    accounts: dict[str, dict[str, Any]] = {}
    cols = [bound.account_id, bound.mail, *(c for c in (bound.nickname, bound.joined)
                                            if c is not None)]
    for batch in _batches(owners):
        ids = _bind_all(bound.account_id, batch)
        for row in conn.execute(select(*cols).where(bound.account_id.in_(ids))).mappings():
            accounts[str(row[bound.account_id.name])] = dict(row)
    history: dict[str, list[tuple[str, str | None, bool]]] = {}
    if bound.history_owner is not None and bound.history_address is not None:
        changed = bound.history_changed
        for batch in _batches(list(accounts)):
            query = select(bound.history_owner, bound.history_address,
                           *([changed] if changed is not None else [])).where(
                bound.history_owner.in_(_bind_all(bound.history_owner, batch)))
            for entry in conn.execute(query):
                month = year_month(entry[2]) if changed is not None else None
                history.setdefault(str(entry[0]), []).append((entry[1], month, False))
    texts: dict[str, list[tuple[str, str]]] = {}
    pieces = [p for t in memory.texts for p in search_pieces(t)]
    if pieces:
        for source in bound.memory:
            for batch in _batches(list(accounts)):
                query = select(source.owner, source.text).where(
                    source.owner.in_(_bind_all(source.owner, batch)),
                    like_any(source.text, pieces, conn.dialect.name),
                ).limit(_TEXTS_PER_OWNER * len(batch))
                for owner, value in conn.execute(query):
                    if value is not None:
                        texts.setdefault(str(owner), []).append((source.name, value))
    facts = []
    for user, account in accounts.items():
        addresses: list[tuple[str, str | None, bool]] = (
            [(account[bound.mail.name], None, True)] if account[bound.mail.name] else [])
        addresses += history.get(user, [])
        facts.append(AccountFacts(
            user, tuple(addresses),
            account.get(bound.nickname.name) if bound.nickname is not None else None,
            year_month(account.get(bound.joined.name)) if bound.joined is not None else None,
            tuple(texts.get(user, []))))
    return facts


def _batches(values: Sequence[str]) -> Iterable[Sequence[str]]:
    for start in range(0, len(values), _IN_BATCH):
        yield values[start:start + _IN_BATCH]


def _bind_all(col: Column, values: Iterable[str]) -> list[Any]:
    """Owner ids as ``col`` binds them; an id that is no integer for an integer column
    (an owner column of text elsewhere) cannot be an owner here and is left out."""
    out = []
    for value in values:
        try:
            out.append(bind_value(col, value))
        except (ValueError, UsageError):
            continue
    return out
