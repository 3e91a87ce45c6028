"""Errors raised when CLIP weights cannot be found, verified or read.

When our engine is importable they also subclass ``dassl.utils.UserError``,
so the command line prints them as a one-line message instead of a traceback.
``clip`` itself stays importable without ``dassl``.
"""
from __future__ import annotations


def _user_error_base():
    try:
        from dassl.utils import UserError  # type: ignore
    except Exception:  # dassl absent or broken: clip must still work on its own
        return None
    if isinstance(UserError, type) and issubclass(UserError, Exception):
        return UserError
    return None


def _error_class(name: str, builtin: type, doc: str) -> type:
    """``builtin`` subclass, also a ``dassl.utils.UserError`` when that can be combined."""
    user_error = _user_error_base()
    attrs = {"__doc__": doc, "__module__": __name__}
    if user_error is not None and not issubclass(builtin, user_error):
        try:
            return type(name, (user_error, builtin), attrs)
        except TypeError:  # incompatible exception layouts: keep the builtin base only
            pass
    return type(name, (builtin,), attrs)


WeightsNotFoundError = _error_class(
    "WeightsNotFoundError", FileNotFoundError,
    "No weights file at any searched location (the message lists them and how to get the file).")
WeightsChecksumError = _error_class(
    "WeightsChecksumError", RuntimeError,
    "A downloaded or cached file's SHA256 does not match the published one.")
WeightsFormatError = _error_class(
    "WeightsFormatError", RuntimeError,
    "The file exists but is not a readable CLIP checkpoint.")
