"""Benchmark of privacy-lock apply/revert against the database's own set-based floor.

Run it with ``python -m bench --help``; docs/BENCHMARKS.md has the method and the results.
"""
