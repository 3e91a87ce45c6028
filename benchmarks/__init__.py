"""Benchmarks that run the project's protocols end to end (run from the repository root)."""
