"""Command-line tools (fake datasets, tiny weights, result parsing, checks); importable from the repo root."""
