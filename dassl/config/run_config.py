"""The merged configuration of a run, saved in its output folder as ``config.yaml``.

A run folder then says exactly what was run: the analysis tools (tools/analyze.py) rebuild the model
from it, and a person can diff two runs' files. Written atomically, once the output folder exists.
"""
from __future__ import annotations

import os.path as osp

from dassl.run_files import RUN_CONFIG_FILENAME
from dassl.utils.tools import atomic_write


def run_config_path(output_dir: str) -> str:
    """Where a run's merged config is saved."""
    return osp.join(output_dir, RUN_CONFIG_FILENAME)


def write_run_config(cfg, output_dir: str) -> str:
    """Save ``cfg`` (yacs YAML, ``cfg.dump()``) into ``output_dir``; returns the path."""
    path = run_config_path(output_dir)
    text = cfg.dump()

    def write(temporary: str) -> None:
        with open(temporary, "w", encoding="utf-8") as stream:
            stream.write(text)

    atomic_write(path, write)
    return path
