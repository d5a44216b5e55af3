"""The display zone: --tz > PRIVACY_LOCK_TZ > the config's [display] timezone > UTC. Dates typed
without a zone are days there, times are shown there, and the output names it."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import update

from privacy_lock.schema import locks, revert_requests
from sns import build_sns

# 16:30 UTC on Dec 1st is 01:30 on Dec 2nd in Tokyo
LATE_UTC = "2026-12-01T16:30:00.000000Z"


@pytest.fixture
def sns(db_url, tmp_path, monkeypatch):
    monkeypatch.delenv("PRIVACY_LOCK_TZ", raising=False)
    sns = build_sns(db_url, tmp_path)
    sns.apply(sns.users[0])
    with sns.engine.begin() as conn:  # a lock opened late in the UTC day
        conn.execute(update(locks).values(created_at=LATE_UTC))
    return sns


@pytest.fixture
def sqlite_sns(tmp_path, monkeypatch):
    """For what is decided before any database is read (the zone's name): SQLite only."""
    monkeypatch.delenv("PRIVACY_LOCK_TZ", raising=False)
    return build_sns(f"sqlite:///{tmp_path / 'test.db'}", tmp_path)


def set_display(sns, zone: str | None) -> None:
    config = sns.config_path.read_text(encoding="utf-8").split("[display]")[0]
    if zone is not None:
        config += f'\n[display]\ntimezone = "{zone}"\n'
    sns.config_path.write_text(config, encoding="utf-8")


def listed(sns, *args: str) -> tuple[list[dict], str]:
    out = sns.run("locks", "--state", "all", "--since", "2026-12-02", "--format", "json", *args)
    return json.loads(out.stdout), out.stderr


def test_without_a_zone_a_date_is_a_utc_day(sns):
    rows, err = listed(sns)
    assert rows == [] and "times in UTC" in err
    rows, _ = listed(sns, "--since", "2026-12-01")
    assert rows[0]["created_at"] == "2026-12-01T16:30:00Z"


def test_precedence_option_then_environment_then_config(sns, monkeypatch):
    set_display(sns, "Asia/Tokyo")
    rows, err = listed(sns)
    assert [r["created_at"] for r in rows] == ["2026-12-02T01:30:00+09:00"]
    assert "times in Asia/Tokyo (from" in err and "[display] timezone" in err

    monkeypatch.setenv("PRIVACY_LOCK_TZ", "UTC")  # the environment beats the config
    rows, err = listed(sns)
    assert rows == [] and "times in UTC (from PRIVACY_LOCK_TZ)" in err

    rows, err = listed(sns, "--tz", "Asia/Tokyo")  # the option beats both
    assert len(rows) == 1 and "times in Asia/Tokyo (from --tz)" in err

    monkeypatch.setenv("PRIVACY_LOCK_TZ", "Asia/Tokyo")
    set_display(sns, None)
    rows, _ = listed(sns)
    assert rows[0]["created_at"] == "2026-12-02T01:30:00+09:00"


def test_requests_are_shown_in_the_zone(sns, monkeypatch):
    sns.run("policy", "set", "revert_requires_approval", "true", "--operator", "carol",
            "--ticket", "SEC-1", "--reason", "two people")
    sns.revert_user(sns.users[0])
    with sns.engine.begin() as conn:
        conn.execute(update(revert_requests).values(requested_at=LATE_UTC))
    monkeypatch.setenv("PRIVACY_LOCK_TZ", "Asia/Tokyo")
    out = sns.run("requests", "--format", "json")
    assert json.loads(out.stdout)[0]["requested_at"] == "2026-12-02T01:30:00+09:00"
    assert "times in Asia/Tokyo" in out.stderr


@pytest.mark.parametrize("where", ["option", "environment", "config"])
def test_an_unknown_zone_is_one_line_naming_where_it_came_from(sqlite_sns, monkeypatch,
                                                                where):
    sns = sqlite_sns
    args: tuple[str, ...] = ()
    if where == "option":
        args = ("--tz", "Asia/Tokio")
    elif where == "environment":
        monkeypatch.setenv("PRIVACY_LOCK_TZ", "Asia/Tokio")
    else:
        set_display(sns, "Asia/Tokio")
    for command in (("locks", *args), ("requests", *args), ("audit", "report", *args)):
        out = sns.run(*command, expect=2)
        assert out.stdout == "" and len(out.stderr.splitlines()) == 1, out.stderr
        assert "unknown time zone 'Asia/Tokio'" in out.stderr
        assert {"option": "--tz:", "environment": "PRIVACY_LOCK_TZ:",
                "config": "[display] timezone:"}[where] in out.stderr


def test_a_config_display_section_is_checked(sqlite_sns):
    sns = sqlite_sns
    text = sns.config_path.read_text(encoding="utf-8")
    sns.config_path.write_text(text + '\n[display]\nzone = "Asia/Tokyo"\n', encoding="utf-8")
    out = sns.run("locks", expect=2)
    assert "display" in out.stderr and "zone" in out.stderr
