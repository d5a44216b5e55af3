"""The one chunked, crash-safe protocol for apply and revert (being rebuilt: for now the public
names of the engine, re-exported from the modules it replaces)."""

from privacy_lock.batch import (  # noqa: F401
    BatchResult,
    Outcome,
    missing_locks,
    outcome_rows,
    planned_items,
    run_batch,
    write_output,
)
from privacy_lock.locking import (  # noqa: F401
    KindCounts,
    active_lock_id,
    active_lock_ids,
    check_users,
    find_lock,
    user_status,
)
