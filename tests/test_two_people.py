"""Two real people (issue 13, item 5): the attacks on the two-person revert, on every dialect
where they apply. Names are compared as one person would see them, the OS account comes from the
real uid, the database login is recorded, and the policy is the database's, not the config's."""

from __future__ import annotations

import json
import os
import pwd
import subprocess
import sys

import pytest
from sqlalchemy import delete, select, text

from privacy_lock import audit
from privacy_lock.approvals import operator_keys, same_operator
from privacy_lock.schema import audit_events, policy, revert_requests
from sns import build_sns_under_stored_policy

LOOK_ALIKES = [
    "\uff41\uff4c\uff49\uff43\uff45",  # ａｌｉｃｅ, full width
    "\u0430lice",  # Cyrillic a
    "alice\u200b",  # a zero-width space
    "al ice",
    "alice.",
    "ALICE",
]


def as_(operator: str, ticket: str = "T-1", reason: str = "test") -> tuple[str, ...]:
    return ("--operator", operator, "--ticket", ticket, "--reason", reason)


@pytest.fixture
def sns(db_url, tmp_path):
    """The test SNS with the config's [policy] gone: init stores the secure defaults."""
    return build_sns_under_stored_policy(db_url, tmp_path)


def events(sns, action: str) -> list[dict]:
    with sns.engine.connect() as conn:
        return [dict(r) for r in conn.execute(
            select(audit_events).where(audit_events.c.action == action)
            .order_by(audit_events.c.seq)).mappings()]


def request_rows(sns) -> list[dict]:
    with sns.engine.connect() as conn:
        return [dict(r) for r in conn.execute(
            select(revert_requests).order_by(revert_requests.c.request_id)).mappings()]


def db_login(sns) -> str | None:
    """What the database says this test's connections log in as (None on SQLite)."""
    query = {"postgresql": "SELECT current_user", "mysql": "SELECT CURRENT_USER()"}.get(
        sns.engine.dialect.name)
    if query is None:
        return None
    with sns.engine.connect() as conn:
        return conn.execute(text(query)).scalar_one()


def filed_by_alice(sns) -> dict:
    """Alice locks user 0 and asks for the revert: request 1, nothing changed yet."""
    sns.run("apply", str(sns.users[0]), *as_("alice"))
    sns.run("revert", "--user", str(sns.users[0]), *as_("alice", "T-2"))
    [req] = request_rows(sns)
    return req


# --- names ------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", LOOK_ALIKES)
def test_a_look_alike_of_a_name_is_that_name(name):
    assert same_operator("alice", name) and "alice" in operator_keys(name)


def test_other_names_stay_other_people():
    assert not same_operator("alice", "bob")
    assert not same_operator("alice", "alicia")
    assert not same_operator("alice", "alicé")
    # the table is Unicode's, read from the package: Greek and Cyrillic capitals, maths bold,
    # a digit that looks like a letter
    assert same_operator("\u0392\u041e\u0412", "bob") and same_operator("b0b", "bob")
    assert operator_keys("\U0001d41b\U0001d428\U0001d41b") == {"bob"}


def test_the_confusables_table_cannot_be_swapped_by_the_environment(tmp_path, monkeypatch):
    """confusable-homoglyphs' own loader reads $CONFUSABLE_DATA; ours reads the package."""
    (tmp_path / "confusables.json").write_text("{}", encoding="utf-8")
    monkeypatch.setenv("CONFUSABLE_DATA", str(tmp_path))
    code = ("from privacy_lock.approvals import same_operator; "
            "print(same_operator('\\u0430lice', 'alice'))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, env={**os.environ, "CONFUSABLE_DATA": str(tmp_path)})
    assert out.stdout.strip() == "True"


def test_every_look_alike_of_the_requester_is_refused_and_audited(sns):
    req = filed_by_alice(sns)
    hidden = sns.everything()
    for name in LOOK_ALIKES:
        result = sns.run("approve", "1", "--operator", name, "-q", expect=2)
        assert "request 1 was filed by alice: a revert needs a second operator's approval " \
               "(refused; nothing was changed)" in result.stderr
        assert "Traceback" not in result.output
    assert sns.everything() == hidden
    assert request_rows(sns) == [req]  # still pending, nobody approved
    refused = events(sns, "revert-refused")
    assert [e["operator"] for e in refused] == LOOK_ALIKES
    assert all(json.loads(e["details"])["why"] == "the approver is the requester"
               for e in refused)
    assert events(sns, "revert-approved") == []

    sns.run("approve", "1", "--operator", "bob", "-q")  # a second person
    assert request_rows(sns)[0]["state"] == "done"
    assert sns.run("audit", "verify").exit_code == 0


def test_a_name_with_no_letter_cannot_ask_or_approve(sns):
    sns.run("apply", str(sns.users[0]), *as_("alice"))
    result = sns.run("revert", "--user", str(sns.users[0]), *as_("\u200b."), expect=2)
    assert "has no letter or digit" in result.stderr and request_rows(sns) == []
    sns.run("revert", "--user", str(sns.users[0]), *as_("alice"))
    assert "has no letter or digit" in sns.run("approve", "1", "--operator", "...",
                                               expect=2).stderr


# --- the OS account and the database login ----------------------------------------------------


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_the_os_account_comes_from_the_real_uid_not_the_environment(sns):
    sns.run("apply", str(sns.users[0]), *as_("alice"))
    env = {**os.environ, "LOGNAME": "bob", "USER": "bob", "LNAME": "bob", "USERNAME": "bob"}
    command = [sys.executable, "-m", "privacy_lock", "--config", str(sns.config_path),
               "--database-url", sns.url, "revert", "--user", str(sns.users[0]), *as_("alice")]
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    real = pwd.getpwuid(os.getuid()).pw_name
    assert real != "bob"
    [req] = request_rows(sns)
    assert req["requested_os_user"] == real
    assert events(sns, "revert-requested")[0]["os_user"] == real


def test_a_uid_without_a_passwd_entry_is_recorded_as_uid_n(monkeypatch):
    def no_entry(uid):
        raise KeyError(uid)

    monkeypatch.setattr(pwd, "getpwuid", no_entry)
    audit._os_user_and_host.cache_clear()
    try:
        assert audit.Actor.current("x").os_user == f"uid:{os.getuid()}"
    finally:
        audit._os_user_and_host.cache_clear()


def test_the_database_login_is_recorded_on_requests_and_approvals(sns):
    filed_by_alice(sns)
    sns.run("approve", "1", "--operator", "bob", "-q")
    login = db_login(sns)
    assert (login is None) == (sns.engine.dialect.name == "sqlite")
    [req] = request_rows(sns)
    assert (req["requested_db_user"], req["approved_db_user"]) == (login, login)
    [asked] = events(sns, "revert-requested")
    [approved] = events(sns, "revert-approved")
    assert json.loads(asked["details"])["db_user"] == login
    details = json.loads(approved["details"])
    assert (details["db_user"], details["requested_db_user"]) == (login, login)


# --- the policy is the database's ------------------------------------------------------------


def test_a_config_cannot_switch_the_two_person_rule_off(sns):
    before = sns.everything()
    sns.run("apply", str(sns.users[0]), *as_("alice"))
    hidden = sns.everything()
    config = sns.config_path.read_text(encoding="utf-8")
    sns.config_path.write_text(config + "[policy]\nrevert_requires_approval = false\n", "utf-8")

    out = sns.run("revert", "--user", str(sns.users[0]), *as_("alice"), "--format", "json")
    assert json.loads(out.stdout)[0]["status"] == "pending-approval"
    assert ("note: the config's [policy] revert_requires_approval = false is ignored: the "
            "database's policy says true") in out.stderr
    assert sns.everything() == hidden and sns.lock_rows()[0]["state"] == "active"
    # init does not take it from the config either: the stored rule stays
    assert "policy stored" not in sns.run("init").stdout
    shown = json.loads(sns.run("policy", "show", "--format", "json").stdout)
    assert {r["rule"]: (r["value"], r["config"]) for r in shown} == {
        "revert_requires_approval": ("true", "false (ignored)"),
        "approval": ("distinct-names", None)}
    sns.run("approve", "1", "--operator", "bob", "-q")
    assert sns.everything() == before


def test_policy_set_is_its_own_audited_command(sns):
    shown = json.loads(sns.run("policy", "show", "--format", "json").stdout)
    assert [(r["rule"], r["value"], r["set_by"]) for r in shown] == [
        ("revert_requires_approval", "true", "init"), ("approval", "distinct-names", "init")]
    assert events(sns, "policy-changed") == []  # stored by init, with the database

    out = sns.run("policy", "set", "revert_requires_approval", "false",
                  *as_("carol", "SEC-1", "bulk unlock day"))
    assert "policy revert_requires_approval: true -> false" in out.stdout
    [changed] = events(sns, "policy-changed")
    assert (changed["operator"], changed["ticket"], changed["reason"]) == (
        "carol", "SEC-1", "bulk unlock day")
    assert json.loads(changed["details"]) | {} == {
        "rule": "revert_requires_approval", "value": "false", "previous": "true",
        "from": "policy set"}
    with sns.engine.connect() as conn:
        assert conn.execute(select(policy.c.value, policy.c.set_by).where(
            policy.c.name == "revert_requires_approval")).one() == ("false", "carol")

    # the same value again changes nothing and writes nothing
    assert "already false" in sns.run("policy", "set", "revert_requires_approval", "false",
                                      *as_("carol")).stdout
    assert len(events(sns, "policy-changed")) == 1
    # refusals: unknown rule or value, a missing ticket; nothing stored, nothing audited
    assert "unknown policy rule" in sns.run("policy", "set", "revert_requires", "true",
                                            *as_("carol"), expect=2).stderr
    assert "one of: true, false" in sns.run("policy", "set", "revert_requires_approval",
                                            "no", *as_("carol"), expect=2).stderr
    assert "--ticket" in sns.run("policy", "set", "approval", "distinct-accounts",
                                 "--operator", "carol", "--reason", "r", expect=2).stderr
    assert len(events(sns, "policy-changed")) == 1

    # and it rules: one operator now reverts alone
    before_apply = sns.everything()
    sns.run("apply", str(sns.users[0]), *as_("alice"))
    sns.run("revert", "--user", str(sns.users[0]), *as_("alice"))
    assert sns.everything() == before_apply and request_rows(sns) == []
    assert sns.run("audit", "verify").exit_code == 0


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_no_stored_row_means_the_secure_default_and_init_stores_it(sns):
    with sns.engine.begin() as conn:
        conn.execute(delete(policy))  # tables made by hand from sql/*.sql: no rows
    config = sns.config_path.read_text(encoding="utf-8")
    sns.config_path.write_text(config + "[policy]\nrevert_requires_approval = false\n", "utf-8")
    shown = json.loads(sns.run("policy", "show", "--format", "json").stdout)
    assert {(r["value"], r["source"]) for r in shown} == {
        ("true", "default (no stored row)"), ("distinct-names", "default (no stored row)")}
    sns.run("apply", str(sns.users[0]), *as_("alice"))
    out = sns.run("revert", "--user", str(sns.users[0]), *as_("alice"), "--format", "json")
    assert json.loads(out.stdout)[0]["status"] == "pending-approval"
    # init stores the missing rules, from the config where it sets them
    assert "policy stored: revert_requires_approval = false, approval = distinct-names" in \
        sns.run("init").stdout
    shown = json.loads(sns.run("policy", "show", "--format", "json").stdout)
    assert [(r["value"], r["source"], r["set_by"]) for r in shown] == [
        ("false", "stored", "init"), ("distinct-names", "stored", "init")]


def test_distinct_accounts_refuses_the_same_os_account_or_database_login(sns, monkeypatch):
    sns.run("policy", "set", "approval", "distinct-accounts", *as_("carol", "SEC-2"))
    req = filed_by_alice(sns)
    hidden = sns.everything()
    account = f"{req['requested_os_user']}@{req['requested_host']}"

    result = sns.run("approve", "1", "--operator", "bob", "-q", expect=2)
    assert (f"request 1 was filed from your OS account ({account}): a revert needs a second "
            "operator's approval, from another OS account and database login (policy approval "
            "= distinct-accounts) (refused; nothing was changed)") in result.stderr
    [refused] = events(sns, "revert-refused")
    assert refused["operator"] == "bob"
    assert json.loads(refused["details"])["why"].startswith(
        "approval = distinct-accounts: filed from your OS account")
    assert sns.everything() == hidden and request_rows(sns) == [req]

    # another OS account: on SQLite (no logins) that is a second person; on a server the
    # shared database login still refuses it
    monkeypatch.setattr(audit, "_os_user_and_host", lambda: ("bob-os", "desk-2"))
    login = db_login(sns)
    if login is None:
        sns.run("approve", "1", "--operator", "bob", "-q")
        assert request_rows(sns)[0]["state"] == "done"
        assert request_rows(sns)[0]["approved_os_user"] == "bob-os"
    else:
        result = sns.run("approve", "1", "--operator", "bob", "-q", expect=2)
        assert f"request 1 was filed with your database login ({login})" in result.stderr
        assert len(events(sns, "revert-refused")) == 2
        assert sns.everything() == hidden and request_rows(sns) == [req]


def test_distinct_names_only_flags_the_same_os_account(sns):
    filed_by_alice(sns)
    result = sns.run("approve", "1", "--operator", "bob", "-q")
    assert "requested and approved from the same OS account" in result.stderr
    assert json.loads(events(sns, "revert-approved")[0]["details"])["same_os_account"] is True
