"""Benchmarks of issue 7 (not part of the test suite): run `python -m benchmarks`."""
