"""The test SNS (sns.py) with what `find` and `verify-identity` read: members with current
addresses, nicknames and join dates, the addresses they had before, and diary titles and
communities they may remember. Shared by test_find.py and test_verify_identity.py."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Column, DateTime, Integer, MetaData, String, Table, insert, select

from privacy_lock.schema import audit_events
from sns import Sns, build_sns

# (id, current address, nickname, joined)
MEMBERS = [
    (1, "taro.yamada@au.com", "たろう", datetime(2005, 6, 3)),
    (2, "hanako@i.softbank.jp", "ｈａｎａ", datetime(2006, 4, 20)),
    (3, "kenji.@docomo.ne.jp", "kenji", datetime(2007, 1, 9)),
]
# (owner, past address, until)
HISTORY = [
    (1, "taro1985@ezweb.ne.jp", datetime(2009, 5, 1)),
    (2, "hana..ko@docomo.ne.jp", datetime(2007, 2, 1)),
    (2, "hanako77@jp-t.ne.jp", datetime(2008, 8, 1)),
    (3, "kenji..b@docomo.ne.jp", datetime(2008, 1, 1)),
]
# (owner, title, written)
DIARIES = [
    (1, "初日記", datetime(2005, 6, 5)), (1, "花火大会", datetime(2006, 8, 1)),
    (1, "ラーメン日記", datetime(2007, 2, 2)),
    (2, "部活おわった", datetime(2006, 5, 1)), (2, "新しいケータイ！", datetime(2007, 3, 1)),
    (3, "nemui", datetime(2007, 2, 1)),
]
COMMUNITIES = [(1, "猫好き集まれ", datetime(2005, 7, 1)), (1, "ラーメン部", datetime(2008, 1, 1)),
               (2, "J-POP好き", datetime(2006, 5, 1)), (3, "夜更かし部", datetime(2007, 3, 1))]
CROWD = 15  # members 100.. sharing a name, for the candidate cap


def build_identity_sns(url: str, tmp_path: Path, max_candidates: int = 5,
                       searches_per_hour: int = 30, crowd: bool = False) -> Sns:
    """:func:`sns.build_sns` plus members, mail_history, nikki and circles, and [identity]."""
    sns = build_sns(url, tmp_path, init=False)
    meta = MetaData()
    members = Table("members", meta, Column("id", Integer, primary_key=True),
                    Column("mail_address", String(200)), Column("nick", String(80)),
                    Column("registered_at", DateTime))
    history = Table("mail_history", meta, Column("id", Integer, primary_key=True),
                    Column("member_code", Integer, nullable=False),
                    Column("address", String(200), nullable=False),
                    Column("changed_at", DateTime))
    nikki = Table("nikki", meta, Column("id", Integer, primary_key=True),
                  Column("member_code", Integer, nullable=False), Column("title", String(200)),
                  Column("written_at", DateTime))
    circles = Table("circle_members", meta, Column("id", Integer, primary_key=True),
                    Column("member_code", Integer, nullable=False),
                    Column("circle", String(100)), Column("joined_at", DateTime))
    meta.create_all(sns.engine)
    rows = [{"id": i, "mail_address": m, "nick": n, "registered_at": j}
            for i, m, n, j in MEMBERS]
    if crowd:
        rows += [{"id": 100 + i, "mail_address": f"sakura{i:02d}@docomo.ne.jp",
                  "nick": "sakura", "registered_at": datetime(2008, 1 + i % 12, 1)}
                 for i in range(CROWD)]
    with sns.engine.begin() as conn:
        conn.execute(insert(members), rows)
        conn.execute(insert(history), [{"member_code": o, "address": a, "changed_at": c}
                                       for o, a, c in HISTORY])
        conn.execute(insert(nikki), [{"member_code": o, "title": t, "written_at": w}
                                     for o, t, w in DIARIES])
        conn.execute(insert(circles), [{"member_code": o, "circle": c, "joined_at": w}
                                       for o, c, w in COMMUNITIES])
    config = sns.config_path.read_text(encoding="utf-8").replace(
        '[accounts]\ntable = "users"', '[accounts]\ntable = "members"')
    config += f"""
[identity]
mail = "mail_address"
nickname = "nick"
joined = "registered_at"
max_candidates = {max_candidates}
searches_per_hour = {searches_per_hour}

[identity.mail_history]
table = "mail_history"
owner = "member_code"
address = "address"
changed_at = "changed_at"

[[identity.memory]]
name = "diary titles"
table = "nikki"
owner = "member_code"
text = "title"
at = "written_at"

[[identity.memory]]
name = "communities"
table = "circle_members"
owner = "member_code"
text = "circle"
at = "joined_at"
"""
    sns.config_path.write_text(config, encoding="utf-8")
    sns.run("init")
    return sns


WHO = ("--operator", "alice", "--ticket", "SUP-1", "--reason", "lost login")


def trail(sns: Sns, *actions: str) -> list[dict[str, Any]]:
    """Events of these actions, oldest first, with details parsed."""
    with sns.engine.connect() as conn:
        rows = conn.execute(select(audit_events).where(audit_events.c.action.in_(actions))
                            .order_by(audit_events.c.seq)).mappings().all()
    return [{**r, "details": json.loads(r["details"])} for r in rows]
