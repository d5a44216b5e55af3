"""privacy-lock: reversible owner-only privacy lock with a hash-chained audit trail."""

__version__ = "0.1.0"
