"""Benchmark of `privacy-lock find` (issue #17) on a large accounts table.

    python -m bench.find --accounts 1000000 [--url URL] [--searches 7]

Builds (set-based, in the database) ``members`` with N accounts (address, nickname, join
date) and ``mail_history`` with 1.5 past addresses per account, then times a two-fragment
search (a past address's local part and the nickname) through the service API, without and
with the index each database offers (SQLite: the FTS5 table `find --reindex` builds;
PostgreSQL: the pg_trgm GIN indexes init prints; MariaDB: none). Prints the median and the
process's peak RSS before and after the searches. docs/BENCHMARKS.md has the figures.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import tempfile
import time
from pathlib import Path

from sqlalchemy import create_engine, text
from sqlalchemy.pool import NullPool

from privacy_lock import service
from privacy_lock.service import Identity, Target

NAMES = ("taro", "hanako", "kenji", "sakura", "yui", "shota", "miyuki", "daisuke")
DOMAINS = ("docomo.ne.jp", "ezweb.ne.jp", "jp-t.ne.jp", "softbank.ne.jp")


def local_part(i: int) -> str:
    """The local part the SQL gives account ``i`` (see :func:`_expressions`)."""
    return f"{NAMES[i % 8]}{(i * 7919) % 1000003}"


def _cat(dialect: str, *parts: str) -> str:
    return f"concat({', '.join(parts)})" if dialect == "mysql" else " || ".join(parts)


def _case(column: str, values: tuple[str, ...]) -> str:
    whens = " ".join(f"WHEN {k} THEN '{v}'" for k, v in enumerate(values))
    return f"(CASE ({column}) % {len(values)} {whens} END)"


def _numbers(dialect: str, n: int) -> str:
    if dialect == "postgresql":
        return f"(SELECT generate_series(1::bigint, {n}) AS i) AS n"
    if dialect == "mysql":
        return f"(SELECT seq AS i FROM seq_1_to_{n}) AS n"
    return f"(WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < {n}) " \
           "SELECT i FROM s) AS n"


def build(url: str, accounts: int) -> None:
    """members and mail_history (1.5 past addresses per account), set-based."""
    engine = create_engine(url, poolclass=NullPool)
    dialect = engine.dialect.name
    name = _case("i", NAMES)
    digits = "CAST(((i * 7919) % 1000003) AS CHAR(10))" if dialect == "mysql" else \
        "CAST(((i * 7919) % 1000003) AS TEXT)"
    local = _cat(dialect, name, digits)
    joined = {"postgresql": "TIMESTAMP '2005-04-01' + (i % 3000) * INTERVAL '1 day'",
              "mysql": "TIMESTAMP('2005-04-01') + INTERVAL (i % 3000) DAY",
              "sqlite": "datetime('2005-04-01', '+' || (i % 3000) || ' days')"}[dialect]
    with engine.begin() as conn:
        for table in ("mail_history", "members"):
            conn.execute(text(f"DROP TABLE IF EXISTS {table}"))
        conn.execute(text("CREATE TABLE members (id INTEGER PRIMARY KEY, mail_address "
                          "VARCHAR(200), nick VARCHAR(80), registered_at TIMESTAMP NULL)"))
        conn.execute(text("CREATE TABLE mail_history (id INTEGER PRIMARY KEY, member_code "
                          "INTEGER NOT NULL, address VARCHAR(200) NOT NULL, changed_at "
                          "TIMESTAMP NULL)"))
        current = _cat(dialect, local, "'@i.softbank.jp'")
        nick = _cat(dialect, name, "'-'", digits)
        past = _cat(dialect, local, "'@'", _case("i", DOMAINS))
        older = _cat(dialect, "'old'", local, "'@docomo.ne.jp'")
        conn.execute(text(
            "INSERT INTO members (id, mail_address, nick, registered_at) SELECT i, "
            f"{current}, {nick}, {joined} FROM {_numbers(dialect, accounts)}"))
        # 1.5 per account: every account one past address, every other account a second.
        conn.execute(text(
            "INSERT INTO mail_history (id, member_code, address, changed_at) SELECT i, i, "
            f"{past}, {joined} "
            f"FROM {_numbers(dialect, accounts)}"))
        conn.execute(text(
            "INSERT INTO mail_history (id, member_code, address, changed_at) SELECT "
            f"{accounts} + i, 2 * i, {older}, "
            f"{joined} FROM {_numbers(dialect, accounts // 2)}"))
        conn.execute(text("CREATE INDEX ix_mail_history_member ON mail_history (member_code)"))
    engine.dispose()


CONFIG = """[database]
url = "{url}"
[accounts]
table = "members"
id = "id"
[identity]
mail = "mail_address"
nickname = "nick"
joined = "registered_at"
searches_per_hour = 10000
[identity.mail_history]
table = "mail_history"
owner = "member_code"
address = "address"
changed_at = "changed_at"
"""


def time_searches(target: Target, accounts: int, searches: int) -> tuple[float, int]:
    """Median seconds of a two-fragment search for different accounts; peak RSS (KiB)."""
    times = []
    for k in range(searches):
        i = (accounts // (searches + 1)) * (k + 1)
        started = time.perf_counter()
        digits = local_part(i)[len(NAMES[i % 8]):]
        result = service.find(target, mail=[local_part(i)], nickname=f"{NAMES[i % 8]}-{digits}",
                              identity=Identity("bench", "BENCH-1", "benchmark"))
        times.append(time.perf_counter() - started)
        assert str(i) in [c.user for c in result.candidates], (i, result.candidates)
    return statistics.median(times), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.find")
    parser.add_argument("--url", help="a scratch database (default: a temporary SQLite file)")
    parser.add_argument("--accounts", type=int, default=1_000_000)
    parser.add_argument("--searches", type=int, default=7)
    parser.add_argument("--workdir", type=Path,
                        help="keep the SQLite file and config here; reuse a database built "
                        "before (its index too: --indexed-only)")
    parser.add_argument("--indexed-only", action="store_true",
                        help="reuse the database and its index; time only the indexed search")
    args = parser.parse_args()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="bench-find-"))
    work.mkdir(parents=True, exist_ok=True)
    url = args.url or f"sqlite:///{work / 'find.db'}"
    if not args.indexed_only:
        started = time.perf_counter()
        build(url, args.accounts)
        print(f"built {args.accounts:,} accounts, {args.accounts * 3 // 2:,} past addresses "
              f"in {time.perf_counter() - started:.0f} s")
    config = work / "privacy-lock.toml"
    config.write_text(CONFIG.format(url=url), encoding="utf-8")
    target = Target.load(str(config), url)
    service.init(target)
    rss = rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if not args.indexed_only:
        median, rss = time_searches(target, args.accounts, args.searches)
        print(f"no index: median {median * 1000:.0f} ms; peak RSS {rss_before // 1024} -> "
              f"{rss // 1024} MiB")
    dialect = target.engine.dialect.name
    started = time.perf_counter()
    if args.indexed_only:
        pass
    elif dialect == "sqlite":
        print(service.find(target, reindex=True))
    elif dialect == "postgresql":
        with target.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            for line in service.init(target).index_suggestions:
                conn.exec_driver_sql(line.rstrip(";"))
            conn.exec_driver_sql("ANALYZE members")
            conn.exec_driver_sql("ANALYZE mail_history")
    else:
        print("MariaDB/MySQL: no trigram index (the scan above is the figure)")
        target.dispose()
        return
    print(f"index built in {time.perf_counter() - started:.0f} s")
    median, rss2 = time_searches(target, args.accounts, args.searches)
    print(f"with index: median {median * 1000:.0f} ms; peak RSS {rss // 1024} -> "
          f"{rss2 // 1024} MiB")
    target.dispose()


if __name__ == "__main__":
    main()
