"""Project-specific config keys (RSM, teacher and weight locations), added before any merge.

``train.py`` calls :func:`extend_cfg` right after ``get_cfg_default()``; yacs rejects unknown keys at
merge time, so every key a YAML file or a command line may set must exist here first. Keys that the
engine already defines are left untouched (the function only fills in what is missing), so calling it
twice is harmless.
"""
from yacs.config import CfgNode as CN

# PromptKD's own namespace (promptkd.md §10). The engine's get_cfg_default() normally provides it; the
# defaults are repeated here only so that this module also works on a bare tree (tests, tools).
_PROMPTKD_DEFAULTS = {
    "N_CTX_VISION": 4,
    "N_CTX_TEXT": 4,
    "CTX_INIT": "a photo of a",
    "PREC": "fp16",
    "PROMPT_DEPTH_VISION": 9,
    "PROMPT_DEPTH_TEXT": 9,
    "PROJECT_LAYER": 2,
    "CE_WEIGHT": 0.0,
    "KD_WEIGHT": 1.0,
    "TEMPERATURE": 1.0,
    # [quirk] PromptKD's default is the misspelt "ViT/L-14"; kept for compatibility, the teacher
    # loader reads it as ViT-L/14 (see trainers.teacher.resolve_teacher_weights).
    "TEACHER_NAME": "ViT/L-14",
}

# Keys this project adds to TRAINER.PROMPTKD (shared by every distillation trainer).
_TEACHER_LOCATION_DEFAULTS = {
    # Explicit CLIP weights file for the teacher backbone; "" resolves TEACHER_NAME through clip's loader.
    "TEACHER_WEIGHTS": "",
    # Explicit teacher checkpoint file; "" uses PromptKD's folder layout under TEACHER_ROOT.
    "TEACHER_CKPT": "",
    "TEACHER_ROOT": "./teacher_model",
}

# Opt-in speed-up of the distillation step (trainers/teacher_cache.py).
_TEACHER_CACHE_DEFAULTS = {
    # Reuse the frozen teacher's output per training image instead of recomputing its image tower every
    # epoch (and in later runs of the same process with the same teacher and data). Exact only for a
    # deterministic training transform, so a random op in INPUT.TRANSFORMS is refused.
    "CACHE_TEACHER_LOGITS": False,
}

# The RSM entropy regulariser (ame.md §2).
_RSM_DEFAULTS = {
    "WEIGHT": 50.0,  # omega in L = L_KD + omega * H(M); 0 switches the term off
    "DIM": 64,  # manifold width R
    "HIDDEN": 0,  # inner width of phi_v / phi_w; 0 means DIM
    "NORMALIZE": True,  # L2-normalise V and W before the projections
    "IMAGE_FEATURE": "projected",  # "projected" (after the student's projector) or "backbone"
}


def _node(parent: CN, name: str) -> CN:
    """Return ``parent.<name>``, creating an empty node when it does not exist."""
    if name not in parent:
        parent[name] = CN()
    return parent[name]


def _fill(node: CN, defaults: dict) -> None:
    """Add every key of ``defaults`` that ``node`` does not have yet."""
    for key, value in defaults.items():
        if key not in node:
            node[key] = value


def extend_cfg(cfg: CN) -> CN:
    """Add this project's keys to a default config tree (called by train.py before merging).

    Adds ``MODEL.BACKBONE.WEIGHTS``, ``TRAINER.PROMPTKD.{TEACHER_WEIGHTS, TEACHER_CKPT, TEACHER_ROOT,
    CACHE_TEACHER_LOGITS}`` and ``TRAINER.RSM.*``; fills in ``TRAINER.PROMPTKD.*`` / ``TRAINER.MODAL``
    when the engine tree lacks them. Returns the same (mutated) tree.
    """
    backbone = _node(_node(cfg, "MODEL"), "BACKBONE")
    # Explicit CLIP weights file for the student / backbone; "" resolves MODEL.BACKBONE.NAME.
    _fill(backbone, {"NAME": "", "WEIGHTS": ""})

    trainer = _node(cfg, "TRAINER")
    if "MODAL" not in trainer:
        trainer.MODAL = "base2novel"
    promptkd = _node(trainer, "PROMPTKD")
    _fill(promptkd, _PROMPTKD_DEFAULTS)
    _fill(promptkd, _TEACHER_LOCATION_DEFAULTS)
    _fill(promptkd, _TEACHER_CACHE_DEFAULTS)
    _fill(_node(trainer, "RSM"), _RSM_DEFAULTS)
    return cfg
