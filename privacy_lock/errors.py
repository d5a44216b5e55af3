"""The one exception hierarchy; the CLI turns it into a message and an exit code in one place."""


class PrivacyLockError(Exception):
    """An operational failure: the database, the network, a lock that cannot be taken. Exit 1."""

    exit_code = 1


class UsageError(PrivacyLockError):
    """Bad input (arguments, config, request file, unknown user or kind). Exit 2."""

    exit_code = 2


class ConfigError(UsageError):
    """The config file or the content map is wrong (a typo, a missing table or column)."""


class DatabaseError(PrivacyLockError):
    """The database could not be reached or refused a statement."""


class NotInitializedError(DatabaseError):
    """The tool's own tables are missing from the target database."""


class LockStateError(PrivacyLockError):
    """A lock changed state under a running command (e.g. reverted while an apply was running)."""

    def __init__(self, message: str, lock_id: int | None = None) -> None:
        super().__init__(message)
        self.lock_id = lock_id  # the lock it is about, for the outcome's lock column
