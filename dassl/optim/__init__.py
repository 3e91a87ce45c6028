"""Optimisers and learning-rate schedulers built from ``cfg.OPTIM``."""
from dassl.optim.lr_scheduler import (  # noqa: F401
    AVAI_SCHEDS,
    ConstantWarmupScheduler,
    LinearWarmupScheduler,
    build_lr_scheduler,
)
from dassl.optim.optimizer import AVAI_OPTIMS, build_optimizer  # noqa: F401
