"""Shared pytest set-up: the repository root's import path, and user caches kept inside tmp_path."""
import os
import sys

import pytest

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)


@pytest.fixture(autouse=True)
def private_user_caches(tmp_path, monkeypatch):
    """No test reads or writes the user's caches: few-shot samples of read-only datasets go to tmp_path."""
    monkeypatch.delenv("AME_FEWSHOT_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "user-cache"))


def pytest_configure(config):
    """The ``gpu`` marker: tests that need a CUDA device (skipped without one; `bash tools/device_check.sh`
    runs them with ``-m gpu``)."""
    config.addinivalue_line("markers", "gpu: needs a CUDA device; run by tools/device_check.sh (pytest -m gpu)")
