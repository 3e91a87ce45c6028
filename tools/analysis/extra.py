"""The optional ``analysis`` extra (scikit-learn, matplotlib): one check, one clear error.

The training code never needs these packages, so they are not installed by default; the analysis
tools call :func:`require_analysis_extra` before doing any work, and a missing package ends the tool
with one ``Error:`` line that names the extra to install.
"""
from __future__ import annotations

import importlib
from typing import Sequence

from dassl.utils import UserError

EXTRA_INSTALL = 'pip install -e ".[analysis]"'
# Import name -> the name pip knows the package by.
PACKAGES = {"sklearn": "scikit-learn", "matplotlib": "matplotlib"}


class MissingExtraError(UserError):
    """A package of the ``analysis`` extra cannot be imported."""


def require_analysis_extra(modules: Sequence[str] = ("sklearn", "matplotlib")) -> None:
    """Import ``modules``; raise :class:`MissingExtraError` naming the extra when one is missing."""
    missing = []
    for name in modules:
        try:
            importlib.import_module(name)
        except ImportError:
            missing.append(PACKAGES.get(name, name))
    if missing:
        raise MissingExtraError(f"the analysis tools need {' and '.join(missing)}, which are not installed: "
                                f"run {EXTRA_INSTALL} (the optional 'analysis' extra)")
