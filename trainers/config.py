"""Project-specific config keys (RSM, teacher and weight locations), added before any merge."""
from yacs.config import CfgNode as CN


def extend_cfg(cfg: CN) -> CN:
    """Add this project's keys to a default config tree (called by train.py before merging)."""
    return cfg
