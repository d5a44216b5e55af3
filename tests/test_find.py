"""`privacy-lock find` (issue #17): finding the account from what the person remembers, and
what keeps it from becoming a way to look anyone up. The matching rules as unit tests; the
search, the evidence minimum, the cap, the rate limit and the audit on every dialect."""

from __future__ import annotations

import json
import re

import pytest
from identity_sns import HISTORY, MEMBERS, WHO, build_identity_sns, trail
from sqlalchemy import func, select

from helpers import RUN_DURATION, readme_transcript
from privacy_lock.config import load_settings
from privacy_lock.errors import ConfigError, UsageError
from privacy_lock.identity import (
    carrier_family,
    fold,
    fragment_score,
    mask_address,
    parse_joined,
    parse_mail_fragment,
    remembered,
)
from privacy_lock.schema import find_usage

# --- the matching rules (no database) ---------------------------------------------------------


def test_folding_is_width_and_case_only_and_keeps_docomo_dots():
    assert fold("ＴａＲｏ") == "taro"
    assert fold(" Kenji..B.@DoCoMo.ne.jp ") == "kenji..b.@docomo.ne.jp"  # never "normalized"


@pytest.mark.parametrize(("domain", "family"), [
    ("ezweb.ne.jp", "au"), ("au.com", "au"), ("jp-t.ne.jp", "softbank"),
    ("t.vodafone.ne.jp", "softbank"), ("softbank.ne.jp", "softbank"),
    ("i.softbank.jp", "softbank"), ("docomo.ne.jp", "docomo"), ("gmail.com", None),
    ("notezweb.ne.jp", None),
])
def test_carrier_domains_form_families(domain, family):
    assert carrier_family(domain) == family


def test_a_mail_fragment_splits_into_text_and_family():
    assert parse_mail_fragment("taro@ezweb").text == "taro"
    assert parse_mail_fragment("taro@ezweb").family == "au"
    only = parse_mail_fragment("@t.vodafone.ne.jp")
    assert (only.text, only.family) == ("", "softbank")
    assert parse_mail_fragment("vodafone").family == "softbank"
    assert parse_mail_fragment("kenji.@").text == "kenji.@"


def test_fragment_scores_forgive_a_typo_but_not_a_different_name():
    assert fragment_score("taro1985", "taro1985@ezweb.ne.jp") == 1.0
    assert fragment_score("taro1958", "taro1985@ezweb.ne.jp") >= 0.45  # swapped digits
    assert fragment_score("tar01985", "taro1985@ezweb.ne.jp") >= 0.45  # a typo
    assert fragment_score("hanako", "taro1985@ezweb.ne.jp") < 0.45


@pytest.mark.parametrize(("address", "masked"), [
    ("taro1985@ezweb.ne.jp", "ta***85@ezweb.ne.jp"),
    ("hana..ko@docomo.ne.jp", "ha***ko@docomo.ne.jp"),
    ("kenji.@docomo.ne.jp", "ke***@docomo.ne.jp"),
    ("abc@gmail.com", "a***@g***.com"),
    ("taro.yamada@yamada-family.jp", "ta***da@y***.jp"),
])
def test_masked_addresses_never_show_the_address(address, masked):
    assert mask_address(address) == masked


def test_joined_takes_a_year_a_month_or_a_range():
    assert (parse_joined("2006").first, parse_joined("2006").last) == ("2006-01", "2006-12")
    assert parse_joined("２００６-04..2007-03").months == 12
    for bad in ("06", "2006-13", "2007..2006", "last year"):
        with pytest.raises(UsageError, match="--joined"):
            parse_joined(bad)


def test_short_fragments_and_empty_searches_are_refused():
    with pytest.raises(UsageError, match="at least 3 characters"):
        remembered(mail=["ta"])
    with pytest.raises(UsageError, match="at least 3 characters"):
        remembered(mail=["a@"])
    with pytest.raises(UsageError, match="at least 3 characters"):
        remembered(texts=["日記"])
    with pytest.raises(UsageError, match="give something"):
        remembered()


def test_evidence_needs_two_fragments_or_one_long_mail_fragment():
    assert remembered(mail=["taro"]).evidence_possible() == 1
    assert remembered(mail=["taro19"]).evidence_possible() == 2
    assert remembered(mail=["taro"], nickname="たろう").evidence_possible() == 2
    assert remembered(mail=["taro", "taro1"]).evidence_possible() == 1  # one memory, split
    assert remembered(mail=["taro", "1985"]).evidence_possible() == 2
    assert remembered(mail=["taro", "taro1985"]).evidence_possible() == 2  # the long one
    assert remembered(mail=["@ezweb.ne.jp"]).evidence_possible() == 0  # a domain is no one's
    assert remembered(joined="2005..2012").evidence_possible() == 0  # too wide to count
    assert remembered(joined="2006").evidence_possible() == 1


# --- config -----------------------------------------------------------------------------------


def test_identity_config_is_checked(tmp_path):
    config = tmp_path / "c.toml"
    config.write_text('[identity]\nmail = "email"\n', encoding="utf-8")
    with pytest.raises(ConfigError, match=r"\[identity\] needs \[accounts\]"):
        load_settings(str(config), "sqlite://")
    config.write_text('[accounts]\ntable = "u"\nid = "id"\n[identity]\nmail = "email"\n'
                      'max_candidates = 0\n', encoding="utf-8")
    with pytest.raises(ConfigError, match="max_candidates must be an integer from 1"):
        load_settings(str(config), "sqlite://")
    config.write_text('[accounts]\ntable = "u"\nid = "id"\n[identity]\nmail = "email"\n'
                      'mial = "x"\n', encoding="utf-8")
    with pytest.raises(ConfigError, match="unknown key 'identity.mial'"):
        load_settings(str(config), "sqlite://")


def test_identity_names_are_checked_against_the_live_schema(db_url, tmp_path):
    sns = build_identity_sns(db_url, tmp_path)
    text = sns.config_path.read_text(encoding="utf-8")
    sns.config_path.write_text(text.replace('text = "title"', 'text = "titel"'),
                               encoding="utf-8")
    result = sns.run("find", "--mail-fragment", "taro1985", *WHO, expect=2)
    assert "identity.memory[1].text: column 'titel' does not exist in table nikki" \
        in result.stderr
    assert "Traceback" not in result.output
    assert trail(sns, "find", "find-refused") == []  # nothing searched


# --- the search on every dialect --------------------------------------------------------------


def find(sns, *args, expect=0):
    result = sns.run("find", *args, *WHO, "--format", "json", expect=expect)
    return json.loads(result.stdout) if expect == 0 else result


ALL_ADDRESSES = [m[1] for m in MEMBERS] + [h[1] for h in HISTORY]


def assert_no_address(text: str) -> None:
    for address in ALL_ADDRESSES:
        assert address not in text and address.split("@")[0] + "@" not in text


def test_fuzzy_matching_finds_the_right_account(db_url, tmp_path):
    sns = build_identity_sns(db_url, tmp_path)
    # a substring of a past address, alone long enough
    assert [c["user"] for c in find(sns, "--mail-fragment", "taro1985")] == ["1"]
    # a typo, plus the carrier's later domain (ezweb.ne.jp became au.com)
    found = find(sns, "--mail-fragment", "tar01985@au.com", "--nickname", "たろう")
    assert [c["user"] for c in found] == ["1"]
    # full width and case, in the input and in the stored nickname
    found = find(sns, "--mail-fragment", "ＨＡＮＡＫＯ７７", "--nickname", "hana")
    assert [c["user"] for c in found] == ["2"] and found[0]["joined"] == "2006-04"
    # J-Phone's domain remembered, the address is on a vodafone/softbank domain
    found = find(sns, "--mail-fragment", "hanako@jp-t", "--joined", "2006")
    assert found[0]["user"] == "2"
    # docomo's RFC-breaking addresses, matched as stored
    assert [c["user"] for c in find(sns, "--mail-fragment", "hana..ko")] == ["2"]
    assert [c["user"] for c in find(sns, "--mail-fragment", "kenji.@",
                                    "--text", "nemui")] == ["3"]
    # remembered text, in the memory sources
    assert [c["user"] for c in find(sns, "--text", "花火大会", "--text", "猫好き")] == ["1"]
    assert len(trail(sns, "find")) == 7  # every search audited


def test_no_format_prints_a_full_address(db_url, tmp_path):
    sns = build_identity_sns(db_url, tmp_path)
    for fmt in ("table", "csv", "json"):
        for args in (("--mail-fragment", "taro1985"), ("--mail-fragment", "hana..ko"),
                     ("--mail-fragment", "kenji.@", "--nickname", "kenji")):
            result = sns.run("find", *args, *WHO, "--format", fmt)
            assert "***" in result.stdout, (fmt, args)
            assert_no_address(result.output)
            assert not re.search(r"\d{4}-\d\d-\d\d", result.stdout)  # dates as year-month
    for event in trail(sns, "find"):
        assert_no_address(json.dumps(event, ensure_ascii=False))
        assert "taro1985" not in json.dumps(event)


def test_a_weak_search_gets_only_a_coarse_count_and_is_audited(db_url, tmp_path):
    sns = build_identity_sns(db_url, tmp_path)
    result = sns.run("find", "--mail-fragment", "hana", *WHO, "--format", "json")
    assert json.loads(result.stdout) == []
    assert "not enough to list anyone" in result.stderr and "1-5" in result.stderr
    only_domain = sns.run("find", "--mail-fragment", "@docomo.ne.jp", *WHO, "--format", "json")
    assert json.loads(only_domain.stdout) == []
    nothing = find(sns, "--mail-fragment", "zzzzzzzz")
    assert nothing == []
    events = trail(sns, "find")
    assert [e["details"]["outcome"] for e in events] == ["weak", "weak", "none listed"]
    assert [e["details"]["matched"] for e in events] == ["1-5", "1-5", "none"]
    assert all(e["details"]["listed"] == [] and e["ticket"] == "SUP-1" for e in events)
    assert events[0]["details"]["fragments"] == [{"kind": "mail", "masked": "h***(4)"}]


def test_too_short_fragments_are_refused_and_the_refusal_audited(db_url, tmp_path):
    sns = build_identity_sns(db_url, tmp_path)
    result = sns.run("find", "--mail-fragment", "t", *WHO, expect=2)
    assert "privacy-lock: error: --mail-fragment: at least 3 characters" in result.stderr
    [refused] = trail(sns, "find-refused")
    assert refused["operator"] == "alice" and "at least 3" in refused["details"]["refused"]
    missing = sns.run("find", "--mail-fragment", "taro1985", "--operator", "alice", expect=2)
    assert "--ticket, --reason required" in missing.stderr


def test_at_most_max_candidates_are_listed(db_url, tmp_path):
    sns = build_identity_sns(db_url, tmp_path, max_candidates=5, crowd=True)
    result = sns.run("find", "--mail-fragment", "sakura", *WHO, "--format", "json")
    listed = json.loads(result.stdout)
    assert len(listed) == 5 and all(int(c["user"]) >= 100 for c in listed)
    assert "more candidates fit than are listed" in result.stderr
    [event] = trail(sns, "find")
    assert len(event["details"]["listed"]) == 5 and event["details"]["matched"] == "more than 5"


def test_the_rate_limit_is_per_person_kept_in_the_database_and_audited(db_url, tmp_path):
    sns = build_identity_sns(db_url, tmp_path, searches_per_hour=2)
    find(sns, "--mail-fragment", "taro1985")
    find(sns, "--mail-fragment", "zzzzzzzz")  # finding nothing counts too
    refused = sns.run("find", "--mail-fragment", "taro1985", *WHO, expect=2)
    assert "rate limit" in refused.stderr and refused.stdout == ""
    # another spelling of the same name, or another name from the same OS account: no reset
    for name in ("ＡＬＩＣＥ", "mallory"):
        again = sns.run("find", "--mail-fragment", "taro1985", "--operator", name,
                        "--ticket", "SUP-1", "--reason", "x", expect=2)
        assert "rate limit" in again.stderr
    with sns.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(find_usage)).scalar_one() == 2
    assert len(trail(sns, "find")) == 2 and len(trail(sns, "find-refused")) == 3
    assert sns.run("audit", "verify").exit_code == 0


def test_each_database_searches_its_own_trigram_index(db_url, dialect, tmp_path):
    """SQLite: the FTS5 table `find --reindex` builds; PostgreSQL: the pg_trgm indexes init
    prints for a DBA (without them, or without the extension, find still works and says so);
    MariaDB: a scan, said so. The same searches find the same accounts either way."""
    sns = build_identity_sns(db_url, tmp_path)
    searches = [("--mail-fragment", "tar01985@au.com", "--nickname", "たろう"),
                ("--mail-fragment", "ＨＡＮＡＫＯ７７"), ("--mail-fragment", "kenji.@",
                                                        "--text", "nemui")]
    before = [find(sns, *s) for s in searches]
    printed = sns.run("sql", "--dialect", "postgresql").stdout  # for a DBA, from any database
    assert "CREATE INDEX CONCURRENTLY IF NOT EXISTS ix_mail_history_address_trgm ON " \
           "mail_history USING gin (lower(address) gin_trgm_ops);" in printed
    unindexed = sns.run("find", *searches[0], *WHO)
    assert ("no trigram index" in unindexed.stderr
            or "no pg_trgm index" in unindexed.stderr)
    if dialect == "sqlite":
        built = sns.run("find", "--reindex")
        assert "rebuilt the FTS5 trigram index privacy_lock_find_fts" in built.stdout
        used = "searched the FTS5 trigram index"
    elif dialect == "postgresql":
        init = sns.run("init")
        ddl = [line.strip() for line in init.stderr.splitlines()
               if line.strip().startswith("CREATE ")]
        assert any("gin_trgm_ops" in line and "ON members" in line for line in ddl)
        with sns.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            for statement in ddl:
                conn.exec_driver_sql(statement.rstrip(";"))
        assert "gin_trgm_ops" not in sns.run("init").stderr  # nothing left to suggest
        used = "searched with the pg_trgm GIN indexes"
    else:
        assert "nothing to rebuild" in sns.run("find", "--reindex").stdout
        used = "no trigram index: MariaDB/MySQL"
    after = [find(sns, *s) for s in searches]
    assert after == before and [c[0]["user"] for c in after] == ["1", "2", "3"]
    assert used in sns.run("find", *searches[0], *WHO).stderr


def test_the_readme_walk_through_is_what_the_tool_prints(tmp_path, monkeypatch):
    """README "Finding the account": find -> verify-identity -> apply, run again on a fresh
    demo (the questions fixed as in the README's run, the caller's answers typed as shown)."""
    import random
    import shlex

    from click.testing import CliRunner

    from privacy_lock.cli import cli

    steps = readme_transcript("## Finding the account of a caller")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("PRIVACY_LOCK_CONFIG", raising=False)
    monkeypatch.delenv("PRIVACY_LOCK_DATABASE_URL", raising=False)
    monkeypatch.setattr(random, "SystemRandom", lambda: random.Random(4))
    CliRunner().invoke(cli, ["demo"], catch_exceptions=False)
    typed = "ライブに行った日記\ny\nいろいろあった日\n\n2005年10月\n\ny\n"

    def normal(lines: list[str]) -> list[str]:
        text = "\n".join(lines).replace(str(tmp_path.resolve()) + "/", "/home/you/")
        text = re.sub(r"\d{4}-\d\d-\d\dT[\d:.]+Z", "TIME", text)
        text = RUN_DURATION[0].sub(RUN_DURATION[1], text)
        return [line.rstrip() for line in text.strip().splitlines()]

    assert [shlex.split(c)[1] for c, _ in steps] == ["find", "find", "find", "verify-identity",
                                                     "apply"]
    for command, expected in steps:
        args = shlex.split(command)[1:]
        result = CliRunner().invoke(cli, args, catch_exceptions=False,
                                    input=typed if args[0] == "verify-identity" else None)
        assert result.exit_code == 0, (command, result.output)
        assert normal(result.output.splitlines()) == normal(expected), command


def test_with_an_audit_key_fragments_are_kept_as_keyed_hashes(db_url, tmp_path):
    import hashlib
    import hmac

    sns = build_identity_sns(db_url, tmp_path)
    key = tmp_path / "audit.key"
    key.write_bytes(b"k" * 32)
    sns.config_path.write_text(f'[audit]\nkey_file = "{key}"\n\n'
                               + sns.config_path.read_text(encoding="utf-8"), encoding="utf-8")
    find(sns, "--mail-fragment", "taro1985", "--text", "花火大会")
    [event] = trail(sns, "find")
    records = event["details"]["fragments"]
    expected = hmac.new(b"k" * 32, b"privacy-lock find v1:mail:taro1985",
                        hashlib.sha256).hexdigest()
    assert records[0] == {"kind": "mail", "masked": "t***(8)", "hmac": expected}
    assert records[1]["masked"] == "花***(4)" and len(records[1]["hmac"]) == 64
    assert "taro1985" not in json.dumps(event) and event["mac"]  # the event itself is keyed
