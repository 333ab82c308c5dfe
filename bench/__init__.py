"""Benchmarks: `python -m bench <scenario>|all`; each writes its section of docs/benchmarks.md."""
