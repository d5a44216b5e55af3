"""`privacy-lock verify-identity` and `apply/revert --identity-check` (issue #17): questions
from the account's own data, each answer recorded right or wrong before support sees the
account's, a verdict the operator confirms, and changes that cite a passed verdict."""

from __future__ import annotations

import json
import random

import pytest
from identity_sns import WHO, build_identity_sns, trail
from sqlalchemy import select

from privacy_lock import service
from privacy_lock.errors import UsageError
from privacy_lock.schema import audit_events
from privacy_lock.service import Identity, Target
from privacy_lock.verify import parse_month


def test_months_are_read_however_they_are_said():
    assert parse_month("２００６年４月") == "2006-04"
    assert parse_month("2006/4") == "2006-04"
    assert parse_month("April") is None and parse_month("2006-13") is None


class Scripted:
    """An interview that answers by a plan: 'right' (the account's own answer), 'wrong', or
    'blank'; checks at each reveal that the answer was already recorded."""

    def __init__(self, sns, plan, confirm=True, override=None):
        self.sns, self.plan, self.confirm, self.override = sns, list(plan), confirm, override
        self.revealed: list[tuple[str, bool]] = []

    def ask(self, number, question):
        step = self.plan[number - 1]
        return {"right": question.answers[0], "wrong": "まったく違う答え", "blank": ""}[step]

    def reveal(self, question, judged_right):
        recorded = trail(self.sns, "identity-answer")
        assert recorded and recorded[-1]["details"]["kind"] == question.kind  # before showing
        assert recorded[-1]["details"]["right"] is judged_right
        self.revealed.append((question.kind, judged_right))
        return judged_right if self.override is None else self.override

    def confirm_verdict(self, passed, right, asked):
        return self.confirm


@pytest.fixture
def sns(db_url, tmp_path):
    sns = build_identity_sns(db_url, tmp_path)
    sns.run("find", "--mail-fragment", "taro1985", *WHO)  # lists user 1 under SUP-1
    return sns


def verify(sns, talk, user="1", ticket="SUP-1"):
    target = Target.load(str(sns.config_path), sns.url)
    try:
        return service.verify_identity(target, user, talk, rng=random.Random(3),
                                       identity=Identity("alice", ticket))
    finally:
        target.dispose()


def test_answers_are_recorded_before_they_are_revealed_and_the_verdict_confirmed(sns):
    outcome = verify(sns, Scripted(sns, ["right", "right", "wrong"]))
    assert (outcome.asked, outcome.right, outcome.passed) == (3, 2, True)
    answers = trail(sns, "identity-answer")
    assert [a["details"]["right"] for a in answers] == [True, True, False]
    assert all(a["subject"] == "1" and a["ticket"] == "SUP-1" for a in answers)
    text = json.dumps([a["details"] for a in answers], ensure_ascii=False)
    assert "まったく違う答え" not in text  # never the answer itself
    [verdict] = trail(sns, "identity-verdict")
    assert verdict["seq"] == outcome.verdict_event and verdict["subject"] == "1"
    assert verdict["details"] == {"passed": True, "right": 2, "asked": 3, "confirmed": True}


def test_a_verdict_the_operator_does_not_confirm_does_not_pass(sns):
    outcome = verify(sns, Scripted(sns, ["right", "right", "right"], confirm=False))
    assert not outcome.passed
    [verdict] = trail(sns, "identity-verdict")
    assert verdict["details"]["passed"] is False and verdict["details"]["confirmed"] is False


def test_an_operator_correction_is_recorded_as_its_own_answer(sns):
    outcome = verify(sns, Scripted(sns, ["wrong", "wrong", "wrong"], override=True))
    assert outcome.passed  # the operator heard the right answers the tool could not match
    answers = trail(sns, "identity-answer")
    assert [(a["details"]["by"], a["details"]["right"]) for a in answers] == [
        ("tool", False), ("operator", True)] * 3


def test_verification_needs_a_find_that_listed_the_account_under_the_ticket(sns):
    for user, ticket in (("2", "SUP-1"), ("1", "SUP-OTHER")):
        with pytest.raises(UsageError, match="no `find` under ticket"):
            verify(sns, Scripted(sns, []), user=user, ticket=ticket)
    refused = trail(sns, "identity-refused")
    assert [(r["subject"], r["ticket"]) for r in refused] == [("2", "SUP-1"),
                                                              ("1", "SUP-OTHER")]
    assert trail(sns, "identity-answer") == []
    unknown = sns.run("verify-identity", "999", "--operator", "alice", "--ticket", "SUP-1",
                      expect=2)
    assert "unknown user '999'" in unknown.stderr


def test_the_cli_asks_reveals_after_the_answer_and_records_a_failed_verdict(sns):
    result = sns.run("verify-identity", "1", "--operator", "alice", "--ticket", "SUP-1",
                     input_text="\n\n\n\n\n\ny\n", expect=0)
    assert result.output.count("the account holds:") == 3
    first_answer = result.output.index("what the caller said")
    assert result.output.index("the account holds:") > first_answer
    assert "verdict: NOT PASSED (0 of 3 answers right)" in result.output
    assert [a["details"]["answered"] for a in trail(sns, "identity-answer")] == [False] * 3
    [verdict] = trail(sns, "identity-verdict")
    assert verdict["details"]["passed"] is False and verdict["details"]["confirmed"] is True
    assert "cite it with" not in result.output


def test_apply_and_revert_cite_a_passed_verification(sns):
    passed = verify(sns, Scripted(sns, ["right", "right", "right"])).verdict_event
    check = ("--identity-check", str(passed))
    # refused before anything changes: another user, two users, not a verdict, no such event
    for args, message in (
            (("apply", "2", *check), "was about user 1, not 2"),
            (("apply", "1", "2", *check), "one USER"),
            (("apply", "1", "--identity-check", "1"), "is find, not an identity-verdict"),
            (("apply", "1", "--identity-check", "9999"), "no such audit event")):
        result = sns.run(*args, *WHO, expect=2)
        assert message in result.stderr
    assert sns.lock_rows() == []
    sns.run("apply", "1", *check, *WHO)
    [apply] = [e for e in trail(sns, "apply") if e["subject"] == "1"]
    assert apply["details"]["identity_check"] == passed
    sns.run("revert", "--user", "1", *check, *WHO)
    [revert] = trail(sns, "revert")
    assert revert["details"]["identity_check"] == passed
    assert sns.run("audit", "verify").exit_code == 0


def test_a_failed_verification_cannot_be_cited(sns):
    failed = verify(sns, Scripted(sns, ["wrong", "wrong", "right"])).verdict_event
    result = sns.run("apply", "1", "--identity-check", str(failed), *WHO, expect=2)
    assert "that verification did not pass" in result.stderr
    assert sns.lock_rows() == []
    with sns.engine.connect() as conn:
        actions = conn.execute(select(audit_events.c.action)).scalars().all()
    assert "lock" not in actions and "apply" not in actions
