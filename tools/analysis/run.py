"""Rebuild a finished run from its folder: its merged config, its trainer, its checkpoint.

A run folder (``OUTPUT_DIR`` of ``train.py``) holds ``config.yaml`` (the run's merged config, as
``cfg.dump()`` writes it) and ``VLPromptLearner/model-best.pth.tar`` / ``model.pth.tar-<E>``. The config is
rebuilt on a fresh default tree (engine defaults plus the project's method keys), so a run folder is
read exactly as it was trained; ``root`` replaces ``DATASET.ROOT`` (the data may live elsewhere now) and
``opts`` are further ``KEY VALUE`` overrides (e.g. a moved ``TRAINER.PROMPTKD.TEACHER_ROOT``).
Only distillation trainers (``trainers.distill.DistillTrainer``) can be analysed: their students expose
``encode(image)``.
"""
from __future__ import annotations

import os.path as osp
from typing import Any, Optional, Sequence

from dassl.config import merge_opts, merge_yaml
from dassl.config.run_config import RUN_CONFIG_FILENAME
from dassl.utils import UserError, set_random_seed

CONFIG_FILE = RUN_CONFIG_FILENAME  # written by train.py into every run folder


def load_run_config(run_dir: str, root: Optional[str] = None, opts: Sequence[str] = ()):
    """The frozen config of the run in ``run_dir`` (a ``UserError`` naming the file when it is missing)."""
    from trainers.config import default_config

    if not osp.isdir(run_dir):
        raise UserError(f'Run folder not found: "{run_dir}"')
    path = osp.join(run_dir, CONFIG_FILE)
    if not osp.isfile(path):
        raise UserError(f'"{path}" not found: the analysis rebuilds the model from the merged config that '
                        f"train.py saves in every run folder; this run predates it: rerun the training")
    cfg = merge_yaml(default_config(), path)
    if root:
        cfg.DATASET.ROOT = root
    merge_opts(cfg, list(opts))
    cfg.OUTPUT_DIR = run_dir
    cfg.RESUME = ""
    cfg.freeze()
    return cfg


def check_distillation_trainer(cfg, run_dir: str) -> None:
    """Refuse, before anything is built, a run whose trainer has no distillation student."""
    import trainers  # noqa: F401  (registers every trainer)
    from dassl.engine import TRAINER_REGISTRY
    from dassl.utils import check_availability
    from trainers.distill import DistillTrainer

    name = cfg.TRAINER.NAME
    check_availability(name, TRAINER_REGISTRY.registered_names())
    if not issubclass(TRAINER_REGISTRY.get(name), DistillTrainer):
        raise UserError(f'"{run_dir}": trainer {name} is not a distillation trainer (PromptKD, PromptKD_RSM, '
                        "Simple, Simple_RSM); only their students' image features can be analysed")


def uses_rsm(cfg) -> bool:
    """Whether the run's trainer has the RSM term (and so an RSM manifold to analyse)."""
    import trainers  # noqa: F401  (registers every trainer)
    from dassl.engine import TRAINER_REGISTRY

    return bool(getattr(TRAINER_REGISTRY.get(cfg.TRAINER.NAME), "USES_RSM", False))


def build_run_trainer(cfg, load_epoch: Optional[int] = None) -> Any:
    """The trainer of a run config (from :func:`load_run_config`) with the run's checkpoint loaded:
    ``model-best.pth.tar``, or ``model.pth.tar-<load_epoch>``.

    Seeds the global RNGs with the run's ``SEED`` first, so that building the trainer (few-shot sampling,
    RSM initialisation before loading) is the same on every call.
    """
    import datasets  # noqa: F401  (registers every dataset reader)
    from dassl.engine import build_trainer

    check_distillation_trainer(cfg, cfg.OUTPUT_DIR)
    if cfg.SEED >= 0:
        set_random_seed(cfg.SEED)
    trainer = build_trainer(cfg)
    trainer.load_model(cfg.OUTPUT_DIR, epoch=load_epoch)
    return trainer


def load_run(run_dir: str, root: Optional[str] = None, load_epoch: Optional[int] = None,
             opts: Sequence[str] = ()) -> Any:
    """:func:`load_run_config` then :func:`build_run_trainer`: the run's trainer with its checkpoint loaded."""
    return build_run_trainer(load_run_config(run_dir, root=root, opts=opts), load_epoch)
