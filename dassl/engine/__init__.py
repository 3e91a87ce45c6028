"""Trainers, their registry, and device/precision handling."""
from .build import TRAINER_REGISTRY, build_trainer
from .precision import PRECISION_MODES, Precision, select_device
from .trainer import SimpleTrainer, TrainerBase, TrainerX

__all__ = ["TRAINER_REGISTRY", "build_trainer", "Precision", "PRECISION_MODES", "select_device",
           "TrainerBase", "SimpleTrainer", "TrainerX"]
