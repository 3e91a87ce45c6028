"""Trainers; importing this package registers every trainer in TRAINER_REGISTRY."""
from trainers.config import default_config, extend_cfg  # noqa: F401

# Distillation trainers (PromptKD and the AME / RSM variants).
from trainers import promptkd, promptkd_rsm, simple, simple_rsm  # noqa: F401,E402

# Teacher training and the zero-shot baseline.
from trainers import promptsrc, zsclip  # noqa: F401,E402

# Supervised prompt learners (baselines; PromptSRC above is one too).
from trainers import cocoop, coop, ivlp, maple  # noqa: F401,E402

# KDPL: distillation from a zero-shot CLIP into a host prompt learner (and KDPL_RSM).
from trainers import kdpl  # noqa: F401,E402
