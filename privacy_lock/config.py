"""Settings and the content map (TOML), and the check of every mapped name against the live schema.

Resolution order for each setting: command-line option, then environment variable
(``PRIVACY_LOCK_DATABASE_URL``, ``PRIVACY_LOCK_CONFIG``), then the config file, then the embedded
default (a local SQLite file). Click resolves option-then-environment; this module does the rest.
"""

from __future__ import annotations

import re
import tomllib
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import Column, Connection, MetaData, Table, cast, false, inspect, select
from sqlalchemy import types as sqltypes
from sqlalchemy.dialects.mysql import SET as MYSQL_SET
from sqlalchemy.exc import NoSuchTableError

from privacy_lock.db import DEFAULT_DATABASE_URL
from privacy_lock.errors import ConfigError, UsageError
from privacy_lock.ids import parse_id
from privacy_lock.schema import TOOL_TABLES, locks
from privacy_lock.stored_text import TextLimit, stored_limits, text_problem

DEFAULT_CONFIG_FILE = "privacy-lock.toml"
_KIND_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,63}$")
# Each [content.KIND] key and the types (isinstance) its value may have.
_CONTENT_KEYS: dict[str, type | tuple[type, ...]] = {
    "table": str, "id": str, "owner": str, "visibility": str, "private": (str, int),
}
_ALLOWED_TOP_LEVEL = {"database", "accounts", "content", "policy", "audit", "display",
                       "identity"}
_IDENTITY_KEYS = {"mail", "nickname", "joined", "max_candidates", "searches_per_hour",
                  "mail_history", "memory"}
_HISTORY_KEYS = ("table", "owner", "address", "changed_at")
_MEMORY_KEYS = ("name", "table", "owner", "text")
_MEMORY_OPTIONAL = ("at",)
# A table or column name with a control character is never the site's: the drivers refuse a
# NUL mid-command (a database error, exit 1) and the others would only be shown escaped.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_POLICY_KEYS = {"audit_reads": bool, "revert_requires_approval": bool}


@dataclass(frozen=True)
class ContentKind:
    """One kind of content as the config maps it: where its items live and what "owner only" is."""

    name: str
    table: str
    id: str
    owner: str
    visibility: str
    private: str | int


@dataclass(frozen=True)
class Accounts:
    """The optional users table, used to reject unknown users before anything changes."""

    table: str
    id: str


@dataclass(frozen=True)
class Policy:
    """Site policy switches from the ``[policy]`` section."""

    # status and dry runs of a named user write a "viewed" audit event (access logging)
    audit_reads: bool = False
    # revert only files a request; a second operator runs it with `approve` (see approvals.py).
    # Only `init` reads it, to seed the database's stored policy (policy.py), which rules after.
    revert_requires_approval: bool = True
    given: frozenset[str] = frozenset()  # the keys the config file set (the others: defaults)


@dataclass(frozen=True)
class MailHistory:
    """``[identity.mail_history]``: the addresses an account had before, one row each."""

    table: str
    owner: str
    address: str
    changed_at: str


@dataclass(frozen=True)
class MemorySource:
    """One ``[[identity.memory]]``: text a person may remember (diary titles, communities), with
    the column of when it was written (``at``, optional: verify-identity asks about it)."""

    name: str
    table: str
    owner: str
    text: str
    at: str | None = None


@dataclass(frozen=True)
class IdentityConfig:
    """The ``[identity]`` section: where `find` and `verify-identity` look."""

    mail: str
    nickname: str | None = None
    joined: str | None = None
    max_candidates: int = 10
    searches_per_hour: int = 30
    mail_history: MailHistory | None = None
    memory: tuple[MemorySource, ...] = ()


@dataclass(frozen=True)
class Settings:
    """Everything a command needs to know before it touches the database."""

    database_url: str
    config_path: Path | None
    content: dict[str, ContentKind] = field(default_factory=dict)
    accounts: Accounts | None = None
    policy: Policy = Policy()
    # Never share a transaction between users (batches then go user by user): for engines
    # that shard by owner id, where a transaction over several owners spans shards.
    one_user_per_chunk: bool = False
    # The audit key ([audit] key_file, relative to the config file; anchors.py reads it when a
    # command connects): every event is then MACed with it.
    audit_key_file: Path | None = None
    # [display] timezone: the IANA zone times are shown in and bare dates are days of, when
    # neither --tz nor PRIVACY_LOCK_TZ names one (checked when a command shows times).
    timezone: str | None = None
    identity: IdentityConfig | None = None


def load_settings(config_option: str | None, url_option: str | None,
                  key_file_option: str | None = None) -> Settings:
    """Read the config file (if any) and resolve the database URL and the audit key file.

    ``config_option``, ``url_option`` and ``key_file_option`` already include their
    environment variables (Click).
    Without an explicit config, ``./privacy-lock.toml`` is used when it exists.
    """
    path: Path | None
    if config_option:
        path = Path(config_option)
        if not path.is_file():
            raise ConfigError(f"config file {config_option} not found")
    else:
        path = Path(DEFAULT_CONFIG_FILE) if Path(DEFAULT_CONFIG_FILE).is_file() else None
    data = _read_toml(path) if path else {}
    settings = _parse(data, path)
    url = url_option or settings.database_url or DEFAULT_DATABASE_URL
    key_file = Path(key_file_option) if key_file_option else settings.audit_key_file
    return Settings(url, path, settings.content, settings.accounts, settings.policy,
                    settings.one_user_per_chunk, key_file, settings.timezone,
                    settings.identity)


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from None
    except ValueError:  # tomllib reads integers with int(): at most 4,300 digits
        raise ConfigError(f"{path}: invalid TOML: a number of more than 4300 digits") from None
    except RecursionError:  # tomllib reads nested arrays and tables recursively
        raise ConfigError(f"{path}: invalid TOML: arrays or tables nested too deeply") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read config: {exc}") from None


def _parse(data: dict[str, Any], path: Path | None) -> Settings:
    where = str(path) if path else "config"
    _reject_unknown(data, _ALLOWED_TOP_LEVEL, where, "section")
    database = _section(data, "database", where)
    _reject_unknown(database, {"url", "one_user_per_chunk"}, where, "key", "database")
    url = database.get("url", "")
    if not isinstance(url, str):
        raise ConfigError(f"{where}: database.url must be a string")
    one_user_per_chunk = database.get("one_user_per_chunk", False)
    if not isinstance(one_user_per_chunk, bool):
        raise ConfigError(f"{where}: database.one_user_per_chunk must be true or false")

    accounts = None
    if "accounts" in data:
        section = _section(data, "accounts", where)
        _reject_unknown(section, {"table", "id"}, where, "key", "accounts")
        accounts = Accounts(
            table=_required_str(section, "table", where, "accounts"),
            id=_required_str(section, "id", where, "accounts"),
        )
        _check_name(accounts.table, where, "accounts.table")
        _check_name(accounts.id, where, "accounts.id")

    content: dict[str, ContentKind] = {}
    for name, section in _section(data, "content", where).items():
        prefix = f"content.{name}"
        if not _KIND_NAME.match(name):
            raise ConfigError(
                f"{where}: [{prefix}]: a kind name is a letter, then letters, digits, _ or -"
            )
        if not isinstance(section, dict):
            raise ConfigError(f"{where}: {prefix} must be a table like [content.{name}]")
        _reject_unknown(section, set(_CONTENT_KEYS), where, "key", prefix)
        values: dict[str, Any] = {}
        for key, expected in _CONTENT_KEYS.items():
            if key not in section:
                raise ConfigError(f"{where}: [{prefix}] is missing the key {key!r}")
            value = section[key]
            if isinstance(value, bool) or not isinstance(value, expected):
                wanted = "a string or an integer" if key == "private" else "a string"
                raise ConfigError(f"{where}: {prefix}.{key} must be {wanted}, got {value!r}")
            if key != "private":
                _check_name(str(value), where, f"{prefix}.{key}")
            elif isinstance(value, str) and "\x00" in value:
                raise ConfigError(f"{where}: {prefix}.private contains a NUL character")
            values[key] = value
        content[name] = ContentKind(name=name, **values)

    policy_section = _section(data, "policy", where)
    _reject_unknown(policy_section, set(_POLICY_KEYS), where, "key", "policy")
    for key, expected in _POLICY_KEYS.items():
        if key in policy_section and not isinstance(policy_section[key], expected):
            raise ConfigError(f"{where}: policy.{key} must be true or false")
    policy = Policy(**policy_section, given=frozenset(policy_section))
    audit = _section(data, "audit", where)
    _reject_unknown(audit, {"key_file"}, where, "key", "audit")
    key_file = None
    if "key_file" in audit:
        key_file = Path(_required_str(audit, "key_file", where, "audit")).expanduser()
        if path is not None and not key_file.is_absolute():
            key_file = path.parent / key_file
    display = _section(data, "display", where)
    _reject_unknown(display, {"timezone"}, where, "key", "display")
    timezone = _required_str(display, "timezone", where, "display") if display else None
    identity = _parse_identity(data, where, accounts)
    return Settings(url, path, content, accounts, policy, one_user_per_chunk, key_file,
                    timezone, identity)


def _parse_identity(data: dict[str, Any], where: str,
                    accounts: Accounts | None) -> IdentityConfig | None:
    """``[identity]``, ``[identity.mail_history]`` and ``[[identity.memory]]``: names only;
    :func:`bind_identity` checks them against the live schema."""
    if "identity" not in data:
        return None
    section = _section(data, "identity", where)
    _reject_unknown(section, _IDENTITY_KEYS, where, "key", "identity")
    if accounts is None:
        raise ConfigError(f"{where}: [identity] needs [accounts] (the table whose column "
                          "identity.mail holds each account's address)")
    mail = _required_str(section, "mail", where, "identity")
    optional: dict[str, str | None] = {}
    for key in ("nickname", "joined"):
        optional[key] = _required_str(section, key, where, "identity") if key in section \
            else None
    limits: dict[str, int] = {}
    for key, default, top in (("max_candidates", 10, 100), ("searches_per_hour", 30, 10_000)):
        value = section.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= top:
            raise ConfigError(f"{where}: identity.{key} must be an integer from 1 to {top}, "
                              f"got {value!r}")
        limits[key] = value
    history = None
    if "mail_history" in section:
        sub = _section(section, "mail_history", where)
        _reject_unknown(sub, set(_HISTORY_KEYS), where, "key", "identity.mail_history")
        history = MailHistory(*(_required_str(sub, k, where, "identity.mail_history")
                                for k in _HISTORY_KEYS))
    memory = []
    raw_memory = section.get("memory", [])
    if not isinstance(raw_memory, list) or not all(isinstance(m, dict) for m in raw_memory):
        raise ConfigError(f"{where}: identity.memory must be tables like [[identity.memory]]")
    for number, item in enumerate(raw_memory, start=1):
        prefix = f"identity.memory[{number}]"
        _reject_unknown(item, {*_MEMORY_KEYS, *_MEMORY_OPTIONAL}, where, "key", prefix)
        name, table, owner, text = (_required_str(item, k, where, prefix) for k in _MEMORY_KEYS)
        at = _required_str(item, "at", where, prefix) if "at" in item else None
        memory.append(MemorySource(name, table, owner, text, at))
    names = [m.name for m in memory]
    if len(set(names)) != len(names):
        raise ConfigError(f"{where}: two [[identity.memory]] share the name "
                          f"{next(n for n in names if names.count(n) > 1)!r}")
    return IdentityConfig(mail, optional["nickname"], optional["joined"],
                          limits["max_candidates"], limits["searches_per_hour"], history,
                          tuple(memory))


def _section(data: dict[str, Any], name: str, where: str) -> dict[str, Any]:
    value = data.get(name, {})
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: {name} must be a section like [{name}]")
    return value


def _reject_unknown(
    data: dict[str, Any], allowed: set[str], where: str, what: str, prefix: str = ""
) -> None:
    unknown = sorted(set(data) - allowed)
    if unknown:
        name = f"{prefix}.{unknown[0]}" if prefix else unknown[0]
        raise ConfigError(
            f"{where}: unknown {what} {name!r} (expected one of: {', '.join(sorted(allowed))})"
        )


def _required_str(section: dict[str, Any], key: str, where: str, prefix: str) -> str:
    value = section.get(key)
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{where}: {prefix}.{key} must be a non-empty string")
    return value


def _check_name(value: str, where: str, key: str) -> None:
    """A table or column name: not empty, no control character (see _CONTROL)."""
    if not value.strip():
        raise ConfigError(f"{where}: {key} must be a non-empty string")
    found = _CONTROL.search(value)
    if found:
        raise ConfigError(f"{where}: {key} contains the control character {found.group()!r} "
                          f"at position {found.start() + 1}; no table or column name has one")


# --- binding the map to the live schema -------------------------------------------------------


@dataclass(frozen=True)
class BoundKind:
    """A content kind checked against the live schema, with reflected columns to build SQL from."""

    spec: ContentKind
    table: Table
    id_col: Column
    owner_col: Column
    vis_col: Column
    # "int" or "text": which snapshot column keeps the original, fixed by the column's type.
    value_kind: str

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def private(self) -> str | int:
        return self.spec.private


@dataclass(frozen=True)
class ContentMap:
    """The content map bound to one database: the kinds, the accounts table, user-id rules."""

    kinds: dict[str, BoundKind]
    accounts_table: Table | None
    accounts_id: Column | None
    integer_users: bool
    user_bits: int = 64  # of a signed integer every integer owner (and accounts) column binds
    user_limits: tuple[TextLimit, ...] = ()  # what the owner and subject columns hold
    pads_trailing_spaces: bool = False  # the tool's tables compare 'a ' = 'a' (MariaDB)

    def select(self, names: list[str] | tuple[str, ...] | None) -> list[BoundKind]:
        """The kinds named (all when none), in config order; unknown names are a usage error."""
        if not names:
            return list(self.kinds.values())
        unknown = [n for n in names if n not in self.kinds]
        if unknown:
            raise UsageError(
                f"unknown kind {unknown[0]!r} (configured: {', '.join(self.kinds) or 'none'})"
            )
        return [self.kinds[n] for n in dict.fromkeys(names)]

    def normalize_user(self, raw: str) -> str:
        """The canonical text of a user id: when owner ids are integers, by the one id rule
        (:mod:`privacy_lock.ids`: ``"007"`` is user 7, ``" 7 "`` too, ``"+7"`` or ``"７"`` is
        refused). A string id is taken exactly as written, surrounding spaces included: on a
        NO PAD collation (MariaDB ``utf8mb4_nopad_bin``, PostgreSQL, SQLite) ``"u-alice "`` is
        another account than ``"u-alice"`` (:func:`spaces_hint` says so when it does not
        exist). Text that is not valid Unicode or longer than the columns hold is refused."""
        text = str(raw)
        if not text.strip():
            raise UsageError("empty user id")
        if found := text_problem("user id", text, () if self.integer_users
                                 else self.user_limits):
            raise UsageError(found)
        if self.integer_users:
            low = -(2 ** (self.user_bits - 1))
            return str(parse_id(text, "user id", minimum=low, maximum=-low - 1))
        if self.pads_trailing_spaces and text.endswith(" "):
            raise UsageError(
                f"user id {text!r} ends with a space: the tool's tables on MySQL/MariaDB "
                f"compare it equal to {text.rstrip(' ')!r} (a PAD SPACE collation), so its "
                "lock could not be kept apart from that user's; refused")
        return text

    def spaces_hint(self, conn: Connection, unknown: list[str]) -> dict[str, str]:
        """For each unknown id of ``unknown`` written with surrounding spaces whose stripped
        form exists, a hint naming it (ids are never stripped silently: see
        :meth:`normalize_user`)."""
        spaced = {s: s.strip() for s in unknown if s != s.strip()}
        if not spaced:
            return {}
        missing = set(self.unknown_users(conn, list(set(spaced.values()))))
        return {s: f" (a user id is taken exactly, spaces included: did you mean {bare!r}? "
                   "it exists)" for s, bare in spaced.items() if bare not in missing}

    def owner_value(self, kind: BoundKind, subject: str) -> int | str | uuid.UUID:
        """The subject as the owner column of ``kind`` wants it bound."""
        return bind_value(kind.owner_col, subject)

    def unknown_users(self, conn: Connection, subjects: list[str]) -> list[str]:
        """Of ``subjects`` (normalized ids), those that do not exist: not in the accounts table
        when one is configured, else owning no content and having no lock. A few set-based
        queries for any number of users (a 10,000-row request file is validated in seconds)."""
        candidates = set(subjects)
        if self.accounts_table is not None and self.accounts_id is not None:
            sources = [self.accounts_id]
        else:
            sources = [locks.c.subject] + [k.owner_col for k in self.kinds.values()]
        for col in sources:
            if not candidates:
                break
            values = {bind_value(col, s): s for s in candidates}
            found = conn.execute(
                select(col).where(col.in_(list(values))).distinct()
            ).scalars().all()
            for value in found:
                if value in values:
                    candidates.discard(values[value])
                else:  # matched by collation ('Alice' for 'alice'): ask about each exactly
                    candidates = {s for s in candidates if not self._exists_exactly(conn, col, s)}
                    break
        return [s for s in subjects if s in candidates]

    def _exists_exactly(self, conn: Connection, col: Column, subject: str) -> bool:
        from privacy_lock.dialects import for_connection  # the strategies import this module

        exactly = for_connection(conn).exactly(col, bind_value(col, subject))
        return conn.execute(select(col).where(exactly).limit(1)).first() is not None


def bind_value(col: Column, text: str) -> int | str | uuid.UUID:
    """A value stored as text (a user id, a snapshot's item id) in the type ``col`` binds."""
    if _is_integer(col):
        return int(text)
    if isinstance(col.type, sqltypes.Uuid) and col.type.as_uuid:
        try:
            return uuid.UUID(text)
        except ValueError:
            raise UsageError(f"user id {text!r} is not a UUID (column {col.name} is)") from None
    return text


def stored_as(col: Column, text: Any) -> Any:
    """SQL: a value stored as text (``text``, a column such as a lock's subject) in the type
    ``col`` holds, as :func:`bind_value` does for a Python value."""
    if _is_integer(col) or (isinstance(col.type, sqltypes.Uuid) and col.type.as_uuid):
        return cast(text, col.type)
    return text


def bind_content_map(conn: Connection, settings: Settings) -> ContentMap:
    """Reflect every mapped table and check every name and value type before anything runs."""
    if not settings.content:
        where = settings.config_path or "no config file"
        raise ConfigError(
            f"no content kinds are configured ({where}): give --config FILE with [content.KIND] "
            "sections, or run `privacy-lock demo` to try the tool"
        )
    meta = MetaData()
    inspector = inspect(conn)
    views = _view_names(inspector)
    kinds: dict[str, BoundKind] = {}
    for spec in settings.content.values():
        prefix = f"content.{spec.name}"
        _refuse_tool_table(spec.table, f"{prefix}.table")
        table = _reflect(conn, meta, spec.table, f"{prefix}.table")
        if spec.table.casefold() in views:
            raise ConfigError(
                f"{prefix}.table: {spec.table} is a view, not a table; map the table it reads "
                "(a view has no key that makes each item's id unique)"
            )
        id_col = _column(table, spec.id, f"{prefix}.id")
        owner_col = _column(table, spec.owner, f"{prefix}.owner")
        vis_col = _column(table, spec.visibility, f"{prefix}.visibility")
        _refuse_shared_columns(spec, prefix)
        _require_unique_id(inspector, spec, prefix)
        _refuse_visibility_in_primary_key(inspector, spec, prefix)
        value_kind = _value_kind(vis_col)
        if value_kind is None:
            raise ConfigError(
                f"{prefix}.visibility: column {spec.table}.{spec.visibility} has type "
                f"{vis_col.type}; privacy-lock supports string and integer visibility columns"
            )
        if isinstance(vis_col.type, MYSQL_SET):
            # Several values at once, read back as a Python set: a revert could never tell
            # an item still owner-only, so every item would be a conflict and stay hidden.
            raise ConfigError(
                f"{prefix}.visibility: column {spec.table}.{spec.visibility} has type SET, "
                "which holds several values at once; privacy-lock supports string and "
                "integer visibility columns"
            )
        named_type = getattr(vis_col.type, "name", None)
        if isinstance(vis_col.type, sqltypes.Enum) and named_type:
            # A type of its own (PostgreSQL CREATE TYPE ... AS ENUM): apply could hide items,
            # but revert writes the stored original back as text, which such a column refuses.
            raise ConfigError(
                f"{prefix}.visibility: column {spec.table}.{spec.visibility} has the enumerated "
                f"type {named_type}; privacy-lock supports string and integer visibility columns"
            )
        _check_private_fits(spec, vis_col, value_kind, prefix)
        for col, key in ((id_col, "id"), (owner_col, "owner")):
            if _value_kind(col) is None and not isinstance(col.type, sqltypes.Uuid):
                raise ConfigError(
                    f"{prefix}.{key}: column {spec.table}.{col.name} has type {col.type}; "
                    "ids must be integers or strings (UUIDs)"
                )
        kinds[spec.name] = BoundKind(spec, table, id_col, owner_col, vis_col, value_kind)
    _refuse_overlapping_kinds(list(settings.content.values()))
    for kind in kinds.values():
        # Open each table as a read does: a table another session holds locked (LOCK TABLES,
        # a migration's DDL) stops the command here, before any change, after --lock-timeout
        # (reflection reads the catalog, which MariaDB serves past such a lock).
        conn.execute(select(kind.id_col).where(false()))

    accounts_table = accounts_id = None
    if settings.accounts:
        accounts_table = _reflect(conn, meta, settings.accounts.table, "accounts.table")
        accounts_id = _column(accounts_table, settings.accounts.id, "accounts.id")
    from privacy_lock.dialects import for_connection  # the strategies import this module

    integer_columns = [c for c in [*(k.owner_col for k in kinds.values()), accounts_id]
                       if c is not None and _is_integer(c)]
    user_bits = min((for_connection(conn).integer_bits(c) for c in integer_columns), default=64)
    # A string id longer than a site column or the tool's subject column holds is refused up
    # front (MariaDB would refuse it mid-batch; PostgreSQL varchar(n) too).
    strategy = for_connection(conn)
    user_limits = list(stored_limits(conn.dialect.name).get("user id", ()))
    for owner in [*(k.owner_col for k in kinds.values()), accounts_id]:
        if owner is not None and (size_unit := strategy.text_limit(owner.type)) is not None:
            user_limits.append(TextLimit(*size_unit, f"{owner.table.name}.{owner.name}"))
    return ContentMap(kinds, accounts_table, accounts_id, bool(integer_columns), user_bits,
                      tuple(user_limits), strategy.tool_text_pads)


def missing_owner_indexes(conn: Connection, cmap: ContentMap) -> list[str]:
    """A CREATE INDEX suggestion for every content table with no index leading with its owner
    column: without one, each chunk of apply scans the whole table under a transaction."""
    inspector = inspect(conn)
    suggestions = []
    for kind in cmap.kinds.values():
        table, owner, key = kind.table.name, kind.owner_col.name, kind.id_col.name
        leading = [ix["column_names"][:1] for ix in inspector.get_indexes(table)]
        if [owner] not in leading:
            suggestions.append(
                f"CREATE INDEX ix_{table}_{owner}_{key} ON {table} ({owner}, {key});"
            )
    return suggestions


# --- content maps that would destroy data -----------------------------------------------------
# Each check refuses a map the database itself would accept and that would overwrite or strand
# originals (README "What a content map may not do" lists them). They run before anything does.

# The tool's own tables all carry this prefix, reserved to the tool: a kind on one of them
# would overwrite stored originals, locks or the audit trail.
TOOL_TABLE_PREFIX = "privacy_lock_"


def _refuse_tool_table(name: str, key: str) -> None:
    """Compared as databases fold names: ignoring case (SQLite, and MySQL/MariaDB on many
    systems) and on the last part of a schema-qualified or quoted name."""
    bare = name.rsplit(".", 1)[-1].strip('"`[] ').casefold()
    if bare.startswith(TOOL_TABLE_PREFIX) or bare in {t.casefold() for t in TOOL_TABLES}:
        raise ConfigError(
            f"{key}: {name} is one of privacy-lock's own tables ({TOOL_TABLE_PREFIX}*); "
            "a content kind must be one of the site's tables"
        )


def _view_names(inspector: Any) -> set[str]:
    names = set(inspector.get_view_names())
    try:
        names |= set(inspector.get_materialized_view_names())
    except NotImplementedError:  # only PostgreSQL has materialized views
        pass
    return {n.casefold() for n in names}


def _refuse_shared_columns(spec: ContentKind, prefix: str) -> None:
    """id, owner and visibility are three different columns: hiding writes the visibility
    column, so on the id or owner column it would overwrite what identifies or owns an item."""
    where = f"column {spec.table}.{spec.visibility}"
    if spec.visibility == spec.id:
        raise ConfigError(
            f"{prefix}.visibility: {where} is also the id column; hiding would overwrite "
            "every item's id"
        )
    if spec.visibility == spec.owner:
        raise ConfigError(
            f"{prefix}.visibility: {where} is also the owner column; hiding would overwrite "
            "who owns each item"
        )
    if spec.owner == spec.id:
        raise ConfigError(
            f"{prefix}.owner: column {spec.table}.{spec.owner} is also the id column; the "
            "owner must be a column of its own"
        )


def _require_unique_id(inspector: Any, spec: ContentKind, prefix: str) -> None:
    """The id column alone is the primary key or has a unique constraint or a (non-partial)
    unique index: apply and revert find each item by it, so a duplicate would hide several
    rows under one snapshot. A composite key does not make one of its columns unique."""
    column = spec.id
    pk = inspector.get_pk_constraint(spec.table).get("constrained_columns") or []
    if pk == [column]:
        return
    if any(uc["column_names"] == [column] for uc in inspector.get_unique_constraints(spec.table)):
        return
    for ix in inspector.get_indexes(spec.table):
        partial = any(k.endswith("_where") and v is not None
                      for k, v in (ix.get("dialect_options") or {}).items())
        if ix.get("unique") and ix["column_names"] == [column] and not partial:
            return
    has = f"primary key ({', '.join(pk)})" if pk else "no primary key"
    raise ConfigError(
        f"{prefix}.id: column {spec.table}.{column} is not unique on its own ({spec.table} has "
        f"{has} and no unique constraint or index on ({column}) alone); each item must be "
        "found by its id"
    )


def _refuse_visibility_in_primary_key(inspector: Any, spec: ContentKind, prefix: str) -> None:
    """Hiding would rewrite a key: rows of other tables pointing at it follow (ON UPDATE
    CASCADE) or block it, and revert could no longer find the item."""
    pk = inspector.get_pk_constraint(spec.table).get("constrained_columns") or []
    if spec.visibility in pk:
        raise ConfigError(
            f"{prefix}.visibility: column {spec.table}.{spec.visibility} is part of the primary "
            f"key of {spec.table} ({', '.join(pk)}); hiding would change each item's key"
        )


def _check_private_fits(
    spec: ContentKind, vis_col: Column, value_kind: str, prefix: str
) -> None:
    """The owner-only value is stored exactly as given: of the column's type, within its
    length, range or enumerated values. A value the database truncates, clamps or blanks
    (MySQL outside strict mode) would no longer equal ``private``, and revert would leave every
    item hidden as a "conflict"."""
    private = spec.private
    where = f"column {spec.table}.{spec.visibility} ({vis_col.type})"
    if isinstance(private, bool) or (value_kind == "int") != isinstance(private, int):
        raise ConfigError(
            f"{prefix}.private = {private!r} does not fit {where}: use "
            f"{'an integer' if value_kind == 'int' else 'a quoted string'}"
        )
    if isinstance(private, int):
        low, high = _integer_range(vis_col)
        if not low <= private <= high:
            raise ConfigError(
                f"{prefix}.private = {private} is out of range for {where}: {low}..{high}"
            )
        return
    enums = vis_col.type.enums if isinstance(vis_col.type, sqltypes.Enum) else None
    if enums and private not in enums:
        raise ConfigError(
            f"{prefix}.private = {private!r} is not one of the values of {where}: "
            f"{', '.join(enums)}"
        )
    length = getattr(vis_col.type, "length", None)
    if length is not None and len(private) > length:
        raise ConfigError(
            f"{prefix}.private = {private!r} is {len(private)} characters, longer than "
            f"{where} holds ({length})"
        )


def _integer_range(col: Column) -> tuple[int, int]:
    """The integers ``col``'s declared type holds (MySQL's TINYINT and MEDIUMINT included,
    unsigned or not); SQLite, which stores any integer, is held to the same declaration so a
    map accepted there is accepted on the production database."""
    if isinstance(col.type, sqltypes.BigInteger):
        bits = 64
    elif isinstance(col.type, sqltypes.SmallInteger):
        bits = 16
    else:
        bits = {"TINYINT": 8, "MEDIUMINT": 24}.get(type(col.type).__name__, 32)
    if getattr(col.type, "unsigned", False):
        return 0, 2**bits - 1
    return -(2 ** (bits - 1)), 2 ** (bits - 1) - 1


def _refuse_overlapping_kinds(specs: list[ContentKind]) -> None:
    """No column is written by two kinds, and no kind writes a column another kind reads as an
    id or owner: one item would be snapshotted twice (the second snapshot keeps the first's
    owner-only value as the "original"), or hiding one kind would change another's items.
    Tables are compared ignoring case, as SQLite and MySQL/MariaDB compare them."""
    seen: dict[tuple[str, str], ContentKind] = {}
    for spec in specs:
        key = (spec.table.casefold(), spec.visibility)
        first = seen.setdefault(key, spec)
        if first is not spec:
            raise ConfigError(
                f"content.{spec.name}.visibility: column {spec.table}.{spec.visibility} is "
                f"already the visibility column of content.{first.name}; one column can belong "
                "to one kind only"
            )
    for spec in specs:
        for other in specs:
            if other is spec or other.table.casefold() != spec.table.casefold():
                continue
            for role, column in (("id", other.id), ("owner", other.owner)):
                if column == spec.visibility:
                    raise ConfigError(
                        f"content.{spec.name}.visibility: column {spec.table}.{column} is the "
                        f"{role} column of content.{other.name}; hiding {spec.name} items "
                        f"would rewrite {other.name} {role}s"
                    )


def _reflect(conn: Connection, meta: MetaData, name: str, key: str) -> Table:
    from privacy_lock.dialects import for_connection  # the strategies import this module

    problem = for_connection(conn).name_problem(name)
    if problem:
        raise ConfigError(f"{key}: table name {_shown(name)} {problem}")
    try:
        table = Table(name, meta, autoload_with=conn)
    except NoSuchTableError:
        raise ConfigError(f"{key}: table {name!r} does not exist in the database") from None
    # SQLite (and MySQL on some systems) finds a table whatever the case of its name, but the
    # inspector's other questions (keys, indexes) are asked of the name as written and fail
    # mid-binding as a database error; PostgreSQL would not find it at all. One rule for all.
    inspector = inspect(conn)
    names = set(inspector.get_table_names()) | set(inspector.get_view_names())
    if name not in names:
        spelled = sorted(n for n in names if n.casefold() == name.casefold())
        if spelled:
            raise ConfigError(f"{key}: table {name!r} is spelled {spelled[0]!r} in the database; "
                              "write it as the database does")
    return table


def _shown(name: str, limit: int = 40) -> str:
    return repr(name if len(name) <= limit else name[:limit] + "...")


def _column(table: Table, name: str, key: str) -> Column:
    if name not in table.c:
        columns = ", ".join(c.name for c in table.c)
        raise ConfigError(
            f"{key}: column {name!r} does not exist in table {table.name} (it has: {columns})"
        )
    return table.c[name]


def _is_integer(col: Column) -> bool:
    return isinstance(col.type, sqltypes.Integer)


def _value_kind(col: Column) -> str | None:
    if isinstance(col.type, sqltypes.Integer):
        return "int"
    if isinstance(col.type, sqltypes.String):
        return "text"
    return None


def value_kind_of(col: Column) -> str | None:
    """Which snapshot column keeps a visibility column's originals: "int", "text", or None
    (a type the tool does not support)."""
    return _value_kind(col)


# --- the [identity] section bound to the live schema ------------------------------------------


@dataclass(frozen=True)
class BoundMemory:
    """A memory source checked against the live schema."""

    name: str
    table: Table
    owner: Column
    text: Column
    at: Column | None


@dataclass(frozen=True)
class BoundIdentity:
    """``[identity]`` checked against the live schema, with the columns `find` reads."""

    spec: IdentityConfig
    accounts: Table
    account_id: Column
    mail: Column
    nickname: Column | None
    joined: Column | None
    history: Table | None
    history_owner: Column | None
    history_address: Column | None
    history_changed: Column | None
    memory: tuple[BoundMemory, ...]

    def text_columns(self) -> list[tuple[str, Column, Column]]:
        """(source, owner column, text column) of every column a fragment is looked for in."""
        found = [("mail", self.account_id, self.mail)]
        if self.history_address is not None and self.history_owner is not None:
            found.append(("mail_history", self.history_owner, self.history_address))
        if self.nickname is not None:
            found.append(("nickname", self.account_id, self.nickname))
        found += [(f"memory:{m.name}", m.owner, m.text) for m in self.memory]
        return found


def bind_identity(conn: Connection, settings: Settings) -> BoundIdentity:
    """Reflect every table and column ``[identity]`` names; a clear error for a wrong one, and
    for a config without ``[identity]``."""
    spec, accounts = settings.identity, settings.accounts
    if spec is None or accounts is None:
        where = settings.config_path or "no config file"
        raise ConfigError(f"no [identity] section is configured ({where}): find and "
                          "verify-identity need it (see docs/OPERATORS.md, \"Finding the "
                          "account\")")
    meta = MetaData()
    _refuse_tool_table(accounts.table, "accounts.table")
    table = _reflect(conn, meta, accounts.table, "accounts.table")
    account_id = _column(table, accounts.id, "accounts.id")
    mail = _text_column(table, spec.mail, "identity.mail")
    nickname = _text_column(table, spec.nickname, "identity.nickname") if spec.nickname \
        else None
    joined = _column(table, spec.joined, "identity.joined") if spec.joined else None
    history = h_owner = h_address = h_changed = None
    if spec.mail_history:
        h = spec.mail_history
        _refuse_tool_table(h.table, "identity.mail_history.table")
        history = _reflect(conn, meta, h.table, "identity.mail_history.table")
        h_owner = _column(history, h.owner, "identity.mail_history.owner")
        h_address = _text_column(history, h.address, "identity.mail_history.address")
        h_changed = _column(history, h.changed_at, "identity.mail_history.changed_at")
    memory = []
    for number, source in enumerate(spec.memory, start=1):
        prefix = f"identity.memory[{number}]"
        _refuse_tool_table(source.table, f"{prefix}.table")
        m_table = (meta.tables[source.table] if source.table in meta.tables
                   else _reflect(conn, meta, source.table, f"{prefix}.table"))
        memory.append(BoundMemory(
            source.name, m_table, _column(m_table, source.owner, f"{prefix}.owner"),
            _text_column(m_table, source.text, f"{prefix}.text"),
            _column(m_table, source.at, f"{prefix}.at") if source.at else None))
    return BoundIdentity(spec, table, account_id, mail, nickname, joined, history, h_owner,
                         h_address, h_changed, tuple(memory))


def _text_column(table: Table, name: str, key: str) -> Column:
    col = _column(table, name, key)
    if not isinstance(col.type, sqltypes.String):
        raise ConfigError(f"{key}: column {table.name}.{name} has type {col.type}; it must "
                          "hold text")
    return col
