"""Benchmark and load tooling used by the integration tests and ``make demo``."""
