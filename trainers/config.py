"""The config keys of the prompt-learning methods: the one place where each method key is defined.

The engine (``dassl.config.get_cfg_default``) holds Dassl's own keys only. Every key a CoOp / CoCoOp /
MaPLe / IVLP / PromptSRC / PromptKD YAML or command line may set, and this project's keys (teacher and
weight locations, caches, the RSM term), is added here by :func:`extend_cfg` before any merge, because
merging rejects unknown keys. Types matter: a float default only accepts floats (``1000.0``, not
``1000``). Values follow the published configs of those methods.

Also here: PromptKD's per-dataset KD weight table (:func:`promptkd_kd_weight`, which the protocol
scripts ask), reading a trainer's precision key (:func:`read_precision`) and the deprecated key alias.
"""
from __future__ import annotations

import warnings
from typing import Any, Dict

from yacs.config import CfgNode as CN

from dassl.config import get_cfg_default
from dassl.engine.precision import PRECISION_MODES
from dassl.utils import UserError

# Supervised prompt learners (their published namespaces; baselines and teachers).
_COOP = {"N_CTX": 16, "CSC": False, "CTX_INIT": "", "PREC": "fp16", "CLASS_TOKEN_POSITION": "end"}
_COCOOP = {"N_CTX": 16, "CTX_INIT": "", "PREC": "fp16"}
_MAPLE = {"N_CTX": 2, "CTX_INIT": "a photo of a", "PREC": "fp16", "PROMPT_DEPTH": 9}
_IVLP = {"N_CTX_VISION": 2, "N_CTX_TEXT": 2, "CTX_INIT": "a photo of a", "PREC": "fp16",
         "PROMPT_DEPTH_VISION": 9, "PROMPT_DEPTH_TEXT": 9}
_PROMPTSRC = {
    "N_CTX_VISION": 4, "N_CTX_TEXT": 4, "CTX_INIT": "a photo of a", "PREC": "fp16",
    "PROMPT_DEPTH_VISION": 9, "PROMPT_DEPTH_TEXT": 9,
    # Integers in the published configs, so YAMLs write them as integers too.
    "TEXT_LOSS_WEIGHT": 25, "IMAGE_LOSS_WEIGHT": 10, "GPA_MEAN": 15, "GPA_STD": 1,
}

_PROMPTKD = {
    "N_CTX_VISION": 4, "N_CTX_TEXT": 4, "CTX_INIT": "a photo of a",
    "PREC": "fp16",  # fp16 | fp32 | amp | bf16
    "PROMPT_DEPTH_VISION": 9, "PROMPT_DEPTH_TEXT": 9,
    "PROJECT_LAYER": 2,  # read by no code, kept so that PromptKD's YAMLs merge
    "CE_WEIGHT": 0.0,  # likewise
    "KD_WEIGHT": 1.0,
    "TEMPERATURE": 1.0,
    # PromptKD's own default is the misspelt "ViT/L-14" (PromptKD quirk 2, docs/compatibility.md); the
    # valid name is the default here, and the teacher loader still reads the misspelling from YAMLs.
    "TEACHER_NAME": "ViT-L/14",
    # This project's keys, shared by every distillation trainer:
    "TEACHER_WEIGHTS": "",  # a CLIP weights file for the teacher; "" resolves TEACHER_NAME
    "TEACHER_CKPT": "",  # a teacher checkpoint file; "" uses PromptKD's folder layout under TEACHER_ROOT
    "TEACHER_ROOT": "./teacher_model",
    # Reuse the frozen teacher's image features per training image instead of recomputing its image
    # tower every epoch (trainers/teacher_cache.py); exact only for a deterministic training transform.
    "CACHE_TEACHER_FEATURES": False,
    # A folder holding the teacher's image features of every training view for a few epochs, written by
    # tools/cache_teacher.py; runs with the same teacher / data / augmentation key read them instead of
    # running the teacher's image tower ("" = off). See trainers/teacher_cache.py.
    "TEACHER_CACHE_DIR": "",
    "TEACHER_CACHE_DTYPE": "fp16",  # fp16 | fp32: how tools/cache_teacher.py stores the features
    # The earlier name of CACHE_TEACHER_FEATURES (it never stored logits); still read, with a warning.
    "CACHE_TEACHER_LOGITS": False,
    # Model selection on held-out training images (trainers/distill.py, "selected_by_agreement" in
    # results.json): the fraction of the unlabelled training images kept out of training, on which the
    # student's agreement with the teacher is measured after every epoch. 0.0 = off (PromptKD's behaviour).
    "SELECT_HOLDOUT": 0.0,
}

# The RSM entropy term (trainers/rsm.py).
_RSM = {
    "WEIGHT": 50.0,  # omega in L = L_KD + omega * H(M); 0 switches the term off
    "DIM": 64,  # manifold width R
    "HIDDEN": 0,  # inner width of phi_v / phi_w; 0 means DIM
    "NORMALIZE": True,  # L2-normalise V and W before the projections
    "IMAGE_FEATURE": "projected",  # "projected" (after the student's projector) or "backbone"
    # Opt-in variants of the term (trainers/rsm.py's docstring); 0 = off, the paper's H(M). At most one.
    "SCORE_TEMPERATURE": 0.0,  # > 0: scale-free row scores cos(M[t], 1) / tau
    "CLASS_ALIGNED": 0.0,  # > 0: class-aligned entropy mean_i H(q_i) - H(mean_i q_i), temperature tau
}

# KDPL (trainers/kdpl.py): a zero-shot CLIP teacher distilled into a prompted student without labels.
_KDPL = {
    # KDPL's teacher key. KDPL's default, "ViT-H-14-quickgelu" (DFN-5B through open_clip), cannot be built
    # here (docs/compatibility.md, section 6, "KDPL"); the default is OpenAI's ViT-L/14.
    "TEACHER": "ViT-L/14",
    "CLASS_AGNOSTIC": False,  # distil over a large class list (CLASS_LIST), K_MAX classes per batch
    "K_MAX": 1000,
    "CTX_INIT": "a photo of a",  # read by no code (as in KDPL): the host's CTX_INIT key decides
    "PREC": "fp16",  # read by no code: the host's PREC key decides
    # This project's keys:
    "TEACHER_WEIGHTS": "",  # a CLIP weights file for the teacher; "" resolves TEACHER
    "CLASS_LIST": "",  # the class names of the class-agnostic mode (a text or KDPL's CSV file)
    "HOST": "CoOp",  # the student's prompt learner: CoOp | CoCoOp | IVLP | MaPLe
}

_TRAINER_NAMESPACES: Dict[str, Dict[str, Any]] = {
    "COOP": _COOP, "COCOOP": _COCOOP, "MAPLE": _MAPLE, "IVLP": _IVLP, "PROMPTSRC": _PROMPTSRC,
    "PROMPTKD": _PROMPTKD, "RSM": _RSM, "KDPL": _KDPL,
}

# PromptKD's distillation protocol, read by the distillation trainers: "base2novel" | "base_only" | "cross"
# (datasets/protocols.py; base_only trains on the base classes' images only).
DEFAULT_PROTOCOL = "base2novel"

DEPRECATED_KEYS = {"TRAINER.PROMPTKD.CACHE_TEACHER_LOGITS": "TRAINER.PROMPTKD.CACHE_TEACHER_FEATURES"}

# PromptKD's per-dataset KD loss weight (its training scripts): 200 for three datasets, 1000 elsewhere.
# Keyed by DATASET.NAME. The protocol scripts ask `promptkd_kd_weight`; train.py alone takes the
# config's TRAINER.PROMPTKD.KD_WEIGHT and says so when it differs from this table.
PROMPTKD_KD_WEIGHTS = {"FGVCAircraft": 200.0, "OxfordFlowers": 200.0, "DescribableTextures": 200.0}
PROMPTKD_DEFAULT_KD_WEIGHT = 1000.0


def promptkd_kd_weight(dataset_name: str) -> float:
    """PromptKD's KD loss weight for a dataset (``DATASET.NAME``, e.g. ``"DescribableTextures"``)."""
    return PROMPTKD_KD_WEIGHTS.get(dataset_name, PROMPTKD_DEFAULT_KD_WEIGHT)


def _node(parent: CN, name: str) -> CN:
    """Return ``parent.<name>``, creating an empty node when it does not exist."""
    if name not in parent:
        parent[name] = CN()
    return parent[name]


def extend_cfg(cfg: CN) -> CN:
    """Add the method keys to an engine default tree (train.py calls it before merging); returns ``cfg``.

    Adds ``MODEL.BACKBONE.WEIGHTS`` (an explicit CLIP weights file; "" resolves ``MODEL.BACKBONE.NAME``),
    ``TRAINER.MODAL`` and the ``TRAINER.<METHOD>.*`` namespaces. Keys already present are left as they
    are, so calling it twice is harmless.
    """
    backbone = _node(_node(cfg, "MODEL"), "BACKBONE")
    if "WEIGHTS" not in backbone:
        backbone.WEIGHTS = ""
    trainer = _node(cfg, "TRAINER")
    if "MODAL" not in trainer:
        trainer.MODAL = DEFAULT_PROTOCOL
    for name, defaults in _TRAINER_NAMESPACES.items():
        node = _node(trainer, name)
        for key, value in defaults.items():
            if key not in node:
                node[key] = value
    return cfg


def default_config() -> CN:
    """A fresh default tree with every method key: the engine's defaults plus :func:`extend_cfg`."""
    return extend_cfg(get_cfg_default())


def cfg_value(cfg: CN, full_key: str) -> Any:
    """The value of a dotted key, e.g. ``cfg_value(cfg, "TRAINER.PROMPTKD.PREC")``."""
    node = cfg
    for part in full_key.split("."):
        node = node[part]
    return node


def read_precision(cfg: CN, key: str) -> str:
    """The precision mode set by ``key`` (one of the engine's modes); a ``UserError`` naming the key if not."""
    mode = cfg_value(cfg, key)
    if mode not in PRECISION_MODES:
        raise UserError(f"{key} must be one of {list(PRECISION_MODES)}, got {mode!r}")
    return mode


def cache_teacher_features(cfg: CN) -> bool:
    """Whether the teacher-feature cache is on: ``CACHE_TEACHER_FEATURES``, or its deprecated old name."""
    kd_cfg = cfg.TRAINER.PROMPTKD
    if kd_cfg.CACHE_TEACHER_LOGITS:
        old, new = next(iter(DEPRECATED_KEYS.items()))
        message = f"{old} is deprecated (it stores image features, not logits): set {new} True instead"
        warnings.warn(message, DeprecationWarning, stacklevel=2)
        print(f"Note: {message}")
    return bool(kd_cfg.CACHE_TEACHER_FEATURES or kd_cfg.CACHE_TEACHER_LOGITS)
