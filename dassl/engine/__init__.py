"""Trainers, their registry, device/precision handling and the non-finite guard."""
from .build import TRAINER_REGISTRY, build_trainer
from .finite_guard import FiniteGuard, NonFiniteError
from .precision import PRECISION_MODES, Precision, select_device
from .trainer import ConfigMismatchError, SimpleTrainer, TrainerBase, TrainerX, check_max_epoch

__all__ = ["TRAINER_REGISTRY", "build_trainer", "Precision", "PRECISION_MODES", "select_device",
           "TrainerBase", "SimpleTrainer", "TrainerX", "check_max_epoch", "ConfigMismatchError",
           "FiniteGuard", "NonFiniteError"]
