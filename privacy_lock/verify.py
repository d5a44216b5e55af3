"""`privacy-lock verify-identity USER`: questions only the account's owner should be able to
answer, built from the account's own data, answered by the caller over the phone.

The order protects the answers: support types what the caller said, the tool judges it and
commits an ``identity-answer`` event (right or wrong, never the answer itself), and only then
shows support what the account holds, so no answer is ever seen without a trace. Support may
correct a judgement (a spelling the tool could not match), recorded as a second event. The
session ends with an ``identity-verdict`` event the operator confirms: passed when at least
:data:`PASS_RIGHT` answers are right and none is wrong beyond :data:`MAX_WRONG`. A verdict the
operator does not confirm is recorded as not passed; an operator cannot turn a failed verdict
into a pass. ``apply``/``revert --identity-check EVENT`` cite a passed verdict for that user.

The account must have been listed by a ``find`` under the same ticket first: verify-identity
reveals the answers, so it must not be a way to read any account's data by its id.
"""

from __future__ import annotations

import json
import random
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Protocol

from sqlalchemy import Connection, select

from privacy_lock.audit import Actor, append_event
from privacy_lock.config import BoundIdentity, bind_value
from privacy_lock.db import reading
from privacy_lock.errors import UsageError
from privacy_lock.identity import fold, fragment_score, year_month
from privacy_lock.schema import audit_events
from privacy_lock.vocabulary import TIME_FORMAT

QUESTIONS = 3  # asked per session, at most
PASS_RIGHT = 2  # right answers a verdict of "passed" needs
MAX_WRONG = 1
TEXT_MATCH = 0.6  # fragment score an answer needs against a value to be judged right
FIND_WINDOW = timedelta(hours=24)  # how recent the find that listed the user must be


@dataclass(frozen=True)
class Question:
    """One question: what support reads out, what the account holds, and how to judge."""

    kind: str  # first-month | early-entry | entry-of-year | joined
    source: str  # the memory source's name ("account" for joined)
    text: str  # what support asks
    answers: tuple[str, ...]  # what the account holds (shown only after the answer is typed)
    month: bool  # answers are year-months (compared as such), else text

    def judge(self, said: str) -> bool:
        """Whether what the caller said matches (width, case, a typo forgiven)."""
        if self.month:
            given = parse_month(said)
            return given is not None and given in self.answers
        heard = fold(said)
        if len(heard) < 2:
            return False
        return any(fragment_score(heard, fold(a)) >= TEXT_MATCH
                   or fragment_score(fold(a), heard) >= TEXT_MATCH for a in self.answers)


def parse_month(text: str) -> str | None:
    """``2006-04``, ``2006/4``, ``2006年4月`` (any width) as ``YYYY-MM``."""
    numbers = re.findall(r"\d+", fold(text))
    if len(numbers) < 2 or len(numbers[0]) != 4 or not 1 <= int(numbers[1]) <= 12:
        return None
    return f"{int(numbers[0]):04d}-{int(numbers[1]):02d}"


def build_questions(conn: Connection, bound: BoundIdentity, user: str,
                    rng: random.Random) -> list[Question]:
    """Up to :data:`QUESTIONS` questions from the user's memory sources (those with a date
    column) and join date; which ones, and which year, chosen by ``rng``."""
    pool: list[Question] = []
    for source in bound.memory:
        if source.at is None:
            continue
        owner = bind_value(source.owner, user)
        rows = conn.execute(
            select(source.text, source.at).where(source.owner == owner, source.at.is_not(None),
                                                 source.text.is_not(None))
            .order_by(source.at).limit(200)).all()
        if not rows:
            continue
        first = year_month(rows[0][1])
        pool.append(Question("first-month", source.name,
                             f"In which month (year and month) did they add their first entry "
                             f"to {source.name}?", (first or "",), True))
        early = tuple(dict.fromkeys(str(t) for t, _at in rows[:3]))
        pool.append(Question("early-entry", source.name,
                             f"Name one of the first entries of their {source.name}.", early,
                             False))
        years = sorted({(year_month(at) or "")[:4] for _t, at in rows if year_month(at)})
        if years:
            year = rng.choice(years)
            texts = tuple(dict.fromkeys(str(t) for t, at in rows
                                        if (year_month(at) or "").startswith(year)))
            pool.append(Question("entry-of-year", source.name,
                                 f"Name one of their {source.name} from {year}.", texts, False))
    if bound.joined is not None:
        joined = conn.execute(select(bound.joined).where(
            bound.account_id == bind_value(bound.account_id, user))).scalar()
        if joined is not None:
            pool.append(Question("joined", "account", "In which month did they join the site?",
                                 (year_month(joined) or "",), True))
    rng.shuffle(pool)
    chosen: list[Question] = []
    for question in pool:  # one question per (kind, source) at most, prefer variety
        if len(chosen) < QUESTIONS and all(
                (q.kind, q.source) != (question.kind, question.source) for q in chosen):
            chosen.append(question)
    return chosen


class Interview(Protocol):
    """How the session talks to support (the CLI prompts; tests script it)."""

    def ask(self, number: int, question: Question) -> str: ...
    def reveal(self, question: Question, judged_right: bool) -> bool: ...
    def confirm_verdict(self, passed: bool, right: int, asked: int) -> bool: ...


@dataclass
class VerifyOutcome:
    """What the session recorded."""

    user: str
    asked: int
    right: int
    passed: bool
    confirmed: bool
    verdict_event: int
    answers: list[bool] = field(default_factory=list)


def require_prior_find(conn: Connection, user: str, actor: Actor) -> None:
    """The user was listed by a ``find`` under the same ticket within :data:`FIND_WINDOW`;
    else a usage error (the refusal is audited by the caller)."""
    since = (datetime.now(UTC) - FIND_WINDOW).strftime(TIME_FORMAT)
    with reading(conn):
        rows = conn.execute(select(audit_events.c.details).where(
            audit_events.c.action == "find", audit_events.c.ticket == actor.ticket,
            audit_events.c.occurred_at >= since)).scalars().all()
    if not any(user in json.loads(d).get("listed", []) for d in rows):
        raise UsageError(f"verify-identity {user}: no `find` under ticket {actor.ticket} listed "
                         f"this account in the last {FIND_WINDOW.days * 24 or 24} hours; find "
                         "the account from what the caller remembers first")


def interview(conn: Connection, bound: BoundIdentity, user: str, actor: Actor,
              talk: Interview, rng: random.Random) -> VerifyOutcome:
    """Ask, record each answer before revealing it, and record the confirmed verdict."""
    try:
        require_prior_find(conn, user, actor)
    except UsageError as exc:
        with conn.begin():
            append_event(conn, "identity-refused", actor, subject=user,
                         details={"refused": "no find under this ticket listed the account"})
        raise exc from None
    with reading(conn):
        questions = build_questions(conn, bound, user, rng)
    if len(questions) < PASS_RIGHT:
        with conn.begin():
            append_event(conn, "identity-refused", actor, subject=user, details={
                "refused": "too little data to ask", "questions": len(questions)})
        raise UsageError(f"verify-identity {user}: the account holds too little to ask "
                         f"{PASS_RIGHT} questions; verify the caller another way")
    answers: list[bool] = []
    for number, question in enumerate(questions, start=1):
        said = talk.ask(number, question)
        judged = question.judge(said)
        about = {"question": number, "kind": question.kind, "source": question.source}
        with conn.begin():  # committed before support sees the account's answer
            append_event(conn, "identity-answer", actor, subject=user, details={
                **about, "right": judged, "by": "tool", "answered": bool(said.strip())})
        right = talk.reveal(question, judged)
        if right != judged:
            with conn.begin():
                append_event(conn, "identity-answer", actor, subject=user, details={
                    **about, "right": right, "by": "operator"})
        answers.append(right)
    right_count = sum(answers)
    passed = right_count >= PASS_RIGHT and len(answers) - right_count <= MAX_WRONG
    confirmed = talk.confirm_verdict(passed, right_count, len(answers))
    with conn.begin():
        event = append_event(conn, "identity-verdict", actor, subject=user, details={
            "passed": passed and confirmed, "right": right_count, "asked": len(answers),
            "confirmed": confirmed})
    return VerifyOutcome(user, len(answers), right_count, passed and confirmed, confirmed,
                         int(event["seq"]), answers)


def check_identity_event(conn: Connection, seq: int, subject: str) -> None:
    """``--identity-check EVENT``: the event exists, is a passed ``identity-verdict`` about
    ``subject``; a usage error otherwise (nothing changed)."""
    with reading(conn):
        row = conn.execute(select(audit_events.c.action, audit_events.c.subject,
                                  audit_events.c.details)
                           .where(audit_events.c.seq == seq)).first()
    if row is None:
        raise UsageError(f"--identity-check {seq}: no such audit event")
    if row.action != "identity-verdict":
        raise UsageError(f"--identity-check {seq}: event {seq} is {row.action}, not an "
                         "identity-verdict")
    if row.subject != subject:
        raise UsageError(f"--identity-check {seq}: that verification was about user "
                         f"{row.subject}, not {subject}")
    if not json.loads(row.details).get("passed"):
        raise UsageError(f"--identity-check {seq}: that verification did not pass")
