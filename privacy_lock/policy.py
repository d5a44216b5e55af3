"""The site's rules for the tool, stored in the database (``privacy_lock_policy``), not in an
operator's config.

The two-person rule protects the people whose content is hidden; an operator who copies the
config and writes ``revert_requires_approval = false`` in it must not be able to revert alone.
So the rules live in the tool's tables:

- ``init`` seeds each missing rule, from the config's ``[policy]`` where it has one, else the
  default (the row says ``set_by = init`` and when); it never changes a stored one. Seeding
  writes no audit event: it is the database's set-up, done by its owner, and the trail starts
  with the first operator's action.
- ``privacy-lock policy set RULE VALUE`` changes one, with a ``policy-changed`` event in the same
  transaction. The tool's least-privilege role only reads the table (roles.py): changing the
  policy takes the tables' owner's login, as ``init`` does.
- A rule without a row (a database whose tables were made from ``sql/*.sql`` by hand) is its
  secure default: reverts need approval, names must differ.
- A config that disagrees with the stored policy is ignored, with a note.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, insert, inspect, select, update

from privacy_lock.audit import Actor, EventSpec, append_events
from privacy_lock.config import Policy
from privacy_lock.errors import UsageError
from privacy_lock.schema import policy as policy_table
from privacy_lock.vocabulary import utc_now

REVERT_REQUIRES_APPROVAL = "revert_requires_approval"
APPROVAL = "approval"
DISTINCT_NAMES = "distinct-names"
DISTINCT_ACCOUNTS = "distinct-accounts"

# rule -> (allowed values, the secure default, what it means)
RULES: dict[str, tuple[tuple[str, ...], str, str]] = {
    REVERT_REQUIRES_APPROVAL: (
        ("true", "false"), "true",
        "revert only files a request; a second operator runs it with `approve`"),
    APPROVAL: (
        (DISTINCT_NAMES, DISTINCT_ACCOUNTS), DISTINCT_NAMES,
        "who counts as a second operator: another name (distinct-names), or also another OS "
        "account and database login (distinct-accounts)"),
}


@dataclass(frozen=True)
class StoredPolicy:
    """The rules in force: each rule's stored value, or its secure default."""

    values: dict[str, str] = field(default_factory=lambda: {
        name: default for name, (_v, default, _m) in RULES.items()})
    rows: dict[str, Any] = field(default_factory=dict)  # rule -> its stored row

    @property
    def revert_requires_approval(self) -> bool:
        return self.values[REVERT_REQUIRES_APPROVAL] == "true"

    @property
    def distinct_accounts(self) -> bool:
        return self.values[APPROVAL] == DISTINCT_ACCOUNTS


def read_policy(conn: Connection) -> StoredPolicy:
    """The stored policy, in the caller's transaction; a rule without a row, or a database made
    before the table existed, gets the secure default."""
    if not inspect(conn).has_table(policy_table.name):
        return StoredPolicy()
    rows = {row.name: row for row in conn.execute(select(policy_table))}
    values = StoredPolicy().values
    values.update({name: row.value for name, row in rows.items() if name in RULES})
    return StoredPolicy(values, rows)


def _config_values(config: Policy) -> dict[str, str]:
    """The rules the config sets (``[policy]`` keys it gives), as stored values."""
    values = {}
    if REVERT_REQUIRES_APPROVAL in config.given:
        values[REVERT_REQUIRES_APPROVAL] = "true" if config.revert_requires_approval else "false"
    return values


def seed_policy(conn: Connection, config: Policy) -> list[str]:
    """Store each missing rule, from the config where it sets it, else the default, in the
    caller's transaction (``init``); return "rule = value" for each seeded. Stored rules are
    never changed here: that is ``policy set``'s job, audited on its own."""
    stored = read_policy(conn).rows
    wanted = {name: default for name, (_v, default, _m) in RULES.items()}
    from_config = _config_values(config)
    wanted.update(from_config)
    missing = [name for name in RULES if name not in stored]
    if not missing:
        return []
    now = utc_now()
    conn.execute(insert(policy_table), [
        {"name": name, "value": wanted[name], "set_by": "init", "set_at": now}
        for name in missing])
    return [f"{name} = {wanted[name]}" for name in missing]


@dataclass(frozen=True)
class PolicyChange:
    """What ``policy set`` did to one rule."""

    rule: str
    value: str
    previous: str
    changed: bool


def check_rule(rule: str, value: str) -> str:
    """The value as stored; a usage error names the rules or values allowed."""
    if rule not in RULES:
        raise UsageError(f"unknown policy rule {rule!r} (one of: {', '.join(RULES)})")
    allowed = RULES[rule][0]
    value = value.strip().lower()
    if value not in allowed:
        raise UsageError(f"policy {rule} is one of: {', '.join(allowed)} (not {value!r})")
    return value


def set_rule(conn: Connection, rule: str, value: str, actor: Actor) -> PolicyChange:
    """Set one rule and append its ``policy-changed`` event, in one transaction; a value
    already in force changes nothing and writes no event."""
    value = check_rule(rule, value)
    with conn.begin():
        row = conn.execute(select(policy_table).where(policy_table.c.name == rule)
                           .with_for_update()).first()
        previous = row.value if row is not None else RULES[rule][1]
        if row is not None and row.value == value:
            return PolicyChange(rule, value, previous, False)
        values = {"value": value, "set_by": actor.operator, "set_at": utc_now()}
        if row is None:
            conn.execute(insert(policy_table).values(name=rule, **values))
        else:
            conn.execute(update(policy_table).where(policy_table.c.name == rule)
                         .values(**values))
        append_events(conn, [EventSpec("policy-changed", actor, details={
            "rule": rule, "value": value, "previous": previous,
            "from": "policy set" if row is not None else "policy set (was the default)"})])
    return PolicyChange(rule, value, previous, True)


def ignored_config(stored: StoredPolicy, config: Policy) -> list[str]:
    """One note per rule the config sets to something else than the stored policy (the
    config's value is ignored)."""
    return [f"note: the config's [policy] {name} = {value} is ignored: the database's policy "
            f"says {stored.values[name]} (see `privacy-lock policy show`)"
            for name, value in _config_values(config).items() if stored.values[name] != value]


def policy_rows(stored: StoredPolicy, config: Policy) -> list[dict[str, Any]]:
    """Each rule as ``policy show`` prints it: value, where it comes from, who set it when."""
    from_config = _config_values(config)
    return [{"rule": name, "value": stored.values[name],
             "source": "stored" if name in stored.rows else "default (no stored row)",
             "set_by": stored.rows[name].set_by if name in stored.rows else None,
             "set_at": stored.rows[name].set_at if name in stored.rows else None,
             "config": (from_config[name] + (" (ignored)" if from_config[name]
                                             != stored.values[name] else ""))
             if name in from_config else None,
             "meaning": meaning}
            for name, (_v, _d, meaning) in RULES.items()]
