"""Errors raised when CLIP weights cannot be found, verified or read.

Plain exception classes: this package depends on nothing else in the repository, so any caller
(our trainers, a notebook, another project) can use it alone. Callers that want a one-line message
for their users catch these (or their built-in bases) and re-raise in their own terms; the trainers
turn them into the engine's ``UserError``, naming the config key that chose the weights.
"""
from __future__ import annotations

__all__ = ["WeightsNotFoundError", "WeightsChecksumError", "WeightsFormatError"]


class WeightsNotFoundError(FileNotFoundError):
    """No weights file at any searched location; the message lists them and how to get the file."""


class WeightsChecksumError(RuntimeError):
    """A downloaded or cached file's SHA256 differs from the one published for that model."""


class WeightsFormatError(RuntimeError):
    """The file exists but is not a readable CLIP checkpoint (or not in the OpenAI ViT layout)."""
