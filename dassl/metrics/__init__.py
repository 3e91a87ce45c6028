"""Metrics used in training summaries."""
from dassl.metrics.accuracy import compute_accuracy  # noqa: F401
