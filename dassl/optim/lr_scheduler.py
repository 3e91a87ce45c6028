"""``build_lr_scheduler``: per-epoch schedules (cosine, single/multi step) with optional warm-up.

The warm-up wrappers reproduce Dassl's learning rates exactly (with one constant warm-up epoch the
cosine curve starts one epoch late and never reaches its tail: "Dassl: delayed cosine" in
docs/compatibility.md), but differ in two ways on purpose:
- they do not pass the ``verbose`` argument that PyTorch >= 2.7 removed;
- ``state_dict()`` nests the successor scheduler's *state dict* instead of the scheduler object,
  so checkpoints contain plain data and load with ``torch.load(weights_only=True)``.
"""
from __future__ import annotations

from collections import Counter
from typing import Any, Dict, List

import torch
from torch.optim.lr_scheduler import CosineAnnealingLR, LRScheduler, StepLR
from torch.optim.lr_scheduler import MultiStepLR as _TorchMultiStepLR

from dassl.utils.tools import UnknownChoiceError

__all__ = [
    "AVAI_SCHEDS",
    "ConstantWarmupScheduler",
    "LinearWarmupScheduler",
    "MultiStepLR",
    "build_lr_scheduler",
]

AVAI_SCHEDS = ["single_step", "multi_step", "cosine"]


class MultiStepLR(_TorchMultiStepLR):
    """torch's MultiStepLR whose state dict stores milestones as a plain dict (not a Counter)."""

    def state_dict(self) -> Dict[str, Any]:
        state = super().state_dict()
        state["milestones"] = dict(state["milestones"])
        return state

    def load_state_dict(self, state_dict: Dict[str, Any]) -> None:
        state = dict(state_dict)
        state["milestones"] = Counter(state.get("milestones", {}))
        super().load_state_dict(state)


class _BaseWarmupScheduler(LRScheduler):
    """Runs its own warm-up rule for ``warmup_epoch`` steps, then hands every step to ``successor``."""

    def __init__(self, optimizer: torch.optim.Optimizer, successor: LRScheduler, warmup_epoch: int,
                 last_epoch: int = -1) -> None:
        self.successor = successor
        self.warmup_epoch = warmup_epoch
        super().__init__(optimizer, last_epoch)

    def warmup_lr(self) -> List[float]:
        raise NotImplementedError

    def get_lr(self) -> List[float]:
        if self.last_epoch >= self.warmup_epoch:
            return self.successor.get_last_lr()
        return self.warmup_lr()

    def step(self, epoch: Any = None) -> None:
        if self.last_epoch >= self.warmup_epoch:
            self.successor.step(epoch)
            self._last_lr = self.successor.get_last_lr()
        else:
            super().step(epoch)

    def state_dict(self) -> Dict[str, Any]:
        state = {key: value for key, value in self.__dict__.items() if key not in ("optimizer", "successor")}
        state["successor"] = self.successor.state_dict()
        return state

    def load_state_dict(self, state_dict: Dict[str, Any]) -> None:
        """Restore our state and the successor's (a nested dict; in original Dassl checkpoints the
        pickled successor object, which ``load_checkpoint`` turns into a dict of its attributes)."""
        state = {k: v for k, v in state_dict.items() if k != "optimizer"}
        successor_state = state.pop("successor", None)
        if successor_state is not None:
            if not isinstance(successor_state, dict):
                successor_state = dict(getattr(successor_state, "__dict__", {}))
            # Never let a saved optimizer (object or stand-in dict) replace the live one.
            successor_state = {k: v for k, v in successor_state.items() if k != "optimizer"}
            self.successor.load_state_dict(successor_state)
        self.__dict__.update(state)


class ConstantWarmupScheduler(_BaseWarmupScheduler):
    """Warm-up at a constant ``cons_lr`` for ``warmup_epoch`` epochs."""

    def __init__(self, optimizer: torch.optim.Optimizer, successor: LRScheduler, warmup_epoch: int,
                 cons_lr: float, last_epoch: int = -1) -> None:
        self.cons_lr = cons_lr
        super().__init__(optimizer, successor, warmup_epoch, last_epoch)

    def warmup_lr(self) -> List[float]:
        return [self.cons_lr for _ in self.base_lrs]


class LinearWarmupScheduler(_BaseWarmupScheduler):
    """Warm-up from ``min_lr`` (epoch 0), then ``base_lr * epoch / warmup_epoch``."""

    def __init__(self, optimizer: torch.optim.Optimizer, successor: LRScheduler, warmup_epoch: int,
                 min_lr: float, last_epoch: int = -1) -> None:
        self.min_lr = min_lr
        super().__init__(optimizer, successor, warmup_epoch, last_epoch)

    def warmup_lr(self) -> List[float]:
        if self.last_epoch == 0:
            return [self.min_lr for _ in self.base_lrs]
        return [base_lr * self.last_epoch / self.warmup_epoch for base_lr in self.base_lrs]


def build_lr_scheduler(optimizer: torch.optim.Optimizer, optim_cfg: Any) -> LRScheduler:
    """Build the per-epoch scheduler named by ``optim_cfg.LR_SCHEDULER`` (call ``step()`` once per epoch)."""
    name = optim_cfg.LR_SCHEDULER
    stepsize = optim_cfg.STEPSIZE
    max_epoch = optim_cfg.MAX_EPOCH
    if name not in AVAI_SCHEDS:
        raise UnknownChoiceError(f"OPTIM.LR_SCHEDULER must be one of {AVAI_SCHEDS}, but got {name!r}")

    if name == "single_step":
        if isinstance(stepsize, (list, tuple)):
            stepsize = stepsize[-1]
        if not isinstance(stepsize, int) or isinstance(stepsize, bool):
            raise ValueError(f"OPTIM.STEPSIZE for single_step must be an int, but got {stepsize!r}")
        if stepsize <= 0:
            stepsize = max_epoch
        scheduler: LRScheduler = StepLR(optimizer, step_size=stepsize, gamma=optim_cfg.GAMMA)
    elif name == "multi_step":
        if not isinstance(stepsize, (list, tuple)):
            raise ValueError(f"OPTIM.STEPSIZE for multi_step must be a list of epochs, but got {stepsize!r}")
        scheduler = MultiStepLR(optimizer, milestones=list(stepsize), gamma=optim_cfg.GAMMA)
    else:
        scheduler = CosineAnnealingLR(optimizer, T_max=float(max_epoch))

    if optim_cfg.WARMUP_EPOCH > 0:
        if not optim_cfg.WARMUP_RECOUNT:
            scheduler.last_epoch = optim_cfg.WARMUP_EPOCH
        if optim_cfg.WARMUP_TYPE == "constant":
            scheduler = ConstantWarmupScheduler(
                optimizer, scheduler, optim_cfg.WARMUP_EPOCH, optim_cfg.WARMUP_CONS_LR
            )
        elif optim_cfg.WARMUP_TYPE == "linear":
            scheduler = LinearWarmupScheduler(
                optimizer, scheduler, optim_cfg.WARMUP_EPOCH, optim_cfg.WARMUP_MIN_LR
            )
        else:
            raise UnknownChoiceError(
                f"OPTIM.WARMUP_TYPE must be 'constant' or 'linear', but got {optim_cfg.WARMUP_TYPE!r}"
            )
    return scheduler
