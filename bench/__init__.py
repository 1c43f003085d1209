"""Benchmarks of srp, run by C{make bench} (C{python -m bench.run}); see docs/benchmarks.md."""
