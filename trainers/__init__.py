"""Trainers; importing this package registers every trainer in TRAINER_REGISTRY."""
from trainers.config import extend_cfg  # noqa: F401
