"""Trainer classes: `TrainerBase` (model registry, loop, checkpoints), `SimpleTrainer` (data, device,
precision, evaluation) and `TrainerX` (the labelled-data epoch loop every prompt trainer uses).

Names, hooks, printed lines and checkpoint files follow Dassl.

The epoch loop: ``before_epoch`` -> ``run_epoch`` -> finite check -> ``after_epoch`` (evaluation only)
-> ``save_epoch_checkpoints`` (every file of the epoch, written after all of the epoch's state is final).

Checkpoints and resuming (our additions; README "Checkpoints, resuming, precision"):
- every checkpoint file holds Dassl's keys (``state_dict, epoch, optimizer, scheduler, val_result``) plus
  everything an exact resume needs: ``rng_state`` (torch / CUDA / Python / NumPy random states as plain
  data), ``best_result``, ``precision`` (gradient-scaler state), ``run_state`` (the trainer's own
  state, `TrainerBase.run_state`), and the configuration identity (``config_hash``, ``config_items``).
  So whichever file a stopped run left last, resuming from it continues exactly;
- after every epoch except the last, ``<OUTPUT_DIR>/<name>/model-last.pth.tar`` is rewritten
  atomically; `resume_model_if_exist` prefers it, else the file named in Dassl's ``checkpoint`` text
  file (for original Dassl/PromptKD outputs this restores weights/optimizer/scheduler only). After the
  final epoch ``model.pth.tar-<E>`` holds the full state and ``model-last.pth.tar`` is removed;
- resuming from a checkpoint of another configuration (other hash) is refused with the differing keys;
  files without an identity (original Dassl/PromptKD outputs) load with a note;
- Dassl auto-resumes whenever ``OUTPUT_DIR/<name>/`` holds a checkpoint. We keep that (old command
  lines rely on it) but say so on one line; ``RESUME`` names another folder to resume from, and a
  ``RESUME`` folder without a checkpoint is an error instead of a silent fresh start;
- a NaN / inf loss or trainable weight stops training before the bad epoch is evaluated or saved
  (`dassl.engine.finite_guard`), so the last checkpoint on disk stays good and resumable.

Several processes (torchrun; `dassl.engine.distributed`): gradients are averaged over the processes
before every optimiser step, BatchNorm layers use the global batch (``DISTRIBUTED.SYNC_BN``), all
processes start from rank 0's weights and resume from the same checkpoint; only rank 0 writes
checkpoints and tensorboard files, and every process waits after each epoch's files are written.
A non-finite value found by any process stops every process with the same message.
"""
from __future__ import annotations

import datetime
import os
import os.path as osp
import time
from collections import OrderedDict
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn as nn
from torch.nn.modules.batchnorm import _BatchNorm
from tqdm import tqdm

from dassl.config.identity import config_hash, config_items, describe_differences
from dassl.data import DataManager
from dassl.evaluation import build_evaluator
from dassl.utils import AverageMeter, MetricMeter, UserError, mkdir_if_missing
from dassl.utils.distributed import all_gather_objects, barrier, is_main_process, world_size
from dassl.utils.tools import remove_stale_temporary_files
from dassl.utils.torchtools import (CheckpointNotFoundError, atomic_copy, get_rng_state, load_checkpoint,
                                    load_state_dict_checked, read_checkpoint_pointer, restore_from_state,
                                    save_checkpoint, set_rng_state)

from .distributed import average_gradients, broadcast_module_states, convert_batchnorm, require_agreement
from .finite_guard import LOSS_NAME, FiniteGuard, NonFiniteError, NonFiniteFinding
from .precision import Precision, select_device

RESUME_FILE_NAME = "model-last.pth.tar"
BEST_FILE_NAME = "model-best.pth.tar"
FINAL_MODEL_CHOICES = ("last_step", "best_val")

Names = Optional[Union[str, Sequence[str]]]


class ConfigMismatchError(UserError):
    """A checkpoint to resume from was written by another configuration (other config hash)."""


def check_max_epoch(cfg) -> None:
    """Training needs at least one epoch: ``OPTIM.MAX_EPOCH <= 0`` is refused before anything is built."""
    if cfg.OPTIM.MAX_EPOCH <= 0:
        raise UserError(f"OPTIM.MAX_EPOCH must be at least 1 to train, got {cfg.OPTIM.MAX_EPOCH} "
                        "(to evaluate without training use --eval-only)")


class _NullWriter:
    """Stands in for tensorboard's SummaryWriter when tensorboard is not installed."""

    def add_scalar(self, *args: Any, **kwargs: Any) -> None:
        pass

    def close(self) -> None:
        pass


class TrainerBase:
    """Registered models/optimisers/schedulers, the epoch loop and its hooks."""

    # State-dict keys that `load_model` drops before loading (frozen buffers a trainer rebuilds itself).
    # Empty: Dassl's strict load. Non-empty: the prompt trainers' load (non-strict, mismatches reported).
    CHECKPOINT_IGNORED_KEYS: Tuple[str, ...] = ()
    # Selected-model files in each model folder that resuming from another folder brings along.
    SELECTED_CHECKPOINT_FILES: Tuple[str, ...] = (BEST_FILE_NAME,)

    def __init__(self):
        self._models: "OrderedDict[str, nn.Module]" = OrderedDict()
        self._optims: "OrderedDict[str, Any]" = OrderedDict()
        self._scheds: "OrderedDict[str, Any]" = OrderedDict()
        self._writer = None
        self._precision = Precision("fp32", "cpu")
        self._finite_guard = FiniteGuard("cpu")
        self._config_identity: Optional[Dict[str, Any]] = None
        self._trainable_cache: Optional[List[Tuple[str, torch.Tensor]]] = None
        self.training_started = False  # set once before_train succeeded (a failure before is a failed start)

    # ------------------------------------------------------------------ models
    def register_model(self, name: str = "model", model: Optional[nn.Module] = None,
                       optim=None, sched=None) -> None:
        """Register a module (and its optimiser / scheduler) for mode switching, stepping and saving."""
        for attr, what in (("_models", "model"), ("_optims", "optim"), ("_scheds", "sched")):
            if self.__dict__.get(attr) is None:
                raise AttributeError(f"Cannot assign {what} before super().__init__() call")
        assert name not in self._models, "Found duplicate model names"
        self._models[name] = model
        self._optims[name] = optim
        self._scheds[name] = sched
        self._trainable_cache = None

    def get_model_names(self, names: Names = None) -> List[str]:
        """All registered names (insertion order), or the given name(s) after checking them."""
        registered = list(self._models.keys())
        if names is None:
            return registered
        names = [names] if isinstance(names, str) else list(names)
        for name in names:
            if name not in registered:
                raise KeyError(f"Model {name!r} is not registered; registered: {registered}")
        return names

    def set_model_mode(self, mode: str = "train", names: Names = None) -> None:
        """``train`` / ``test`` / ``eval`` on the registered modules only."""
        for name in self.get_model_names(names):
            if mode == "train":
                self._models[name].train()
            elif mode in ("test", "eval"):
                self._models[name].eval()
            else:
                raise KeyError(f"Unknown model mode {mode!r} (expected train, test or eval)")

    def update_lr(self, names: Names = None) -> None:
        """Step every registered scheduler (once per epoch, called from forward_backward)."""
        for name in self.get_model_names(names):
            if self._scheds[name] is not None:
                self._scheds[name].step()

    def get_current_lr(self, names: Names = None) -> float:
        name = self.get_model_names(names)[0]
        return self._optims[name].param_groups[0]["lr"]

    # ------------------------------------------------------------------ precision / optimisation
    @property
    def precision(self) -> Precision:
        return self._precision

    def detect_anomaly(self, loss: torch.Tensor) -> None:
        """Raise `NonFiniteError` now if `loss` is NaN / inf (a host sync; the engine itself uses the guard)."""
        if not torch.isfinite(loss).all():
            finding = NonFiniteFinding(getattr(self, "epoch", 0), getattr(self, "batch_idx", 0), LOSS_NAME,
                                       float(loss.detach().float().sum()))
            raise NonFiniteError(self._describe_divergence(finding))

    def model_zero_grad(self, names: Names = None) -> None:
        for name in self.get_model_names(names):
            if self._optims[name] is not None:
                self._optims[name].zero_grad()

    def model_backward(self, loss: torch.Tensor) -> None:
        """(Scaled) backward; the loss is checked for NaN / inf with the weights after the step."""
        self._finite_guard.note_loss(loss)
        self._precision.backward(loss)

    def model_update(self, names: Names = None) -> None:
        """(Scaled) optimiser step of the given or all models, then the non-finite check of the step.

        With several processes the gradients of the stepped models are first averaged over them
        (`dassl.engine.distributed.average_gradients`), so every process applies the same update.
        """
        names = self.get_model_names(names)
        average_gradients(p for name in names if self._optims[name] is not None and self._models[name] is not None
                          for p in self._models[name].parameters() if p.requires_grad)
        for name in names:
            if self._optims[name] is not None:
                self._precision.step(self._optims[name])
        self._precision.update()
        self._finite_guard.record(self.named_trainable_parameters(), getattr(self, "epoch", 0),
                                  getattr(self, "batch_idx", 0))
        if self._finite_guard.poll_every_step:
            self._raise_if_nonfinite(self._finite_guard.poll())

    def model_backward_and_update(self, loss: torch.Tensor, names: Names = None) -> None:
        """zero_grad -> (scaled) backward -> (scaled) optimiser step, for the given or all models."""
        self.model_zero_grad(names)
        self.model_backward(loss)
        self.model_update(names)

    # ------------------------------------------------------------------ non-finite values
    def named_trainable_parameters(self) -> List[Tuple[str, torch.Tensor]]:
        """``(<model name>.<parameter name>, tensor)`` of every parameter an optimiser updates.

        Cached between epoch starts (the loop clears it), so the per-step check does not walk every
        frozen parameter of a large backbone.
        """
        if self._trainable_cache is None:
            named = []
            for name in self.get_model_names():
                if self._optims[name] is None or self._models[name] is None:
                    continue
                named.extend((f"{name}.{pname}", p) for pname, p in self._models[name].named_parameters()
                             if p.requires_grad)
            self._trainable_cache = named
        return self._trainable_cache

    def has_trainable_weights(self) -> bool:
        """Whether any registered model has parameters that training would change."""
        return any(True for _ in self.named_trainable_parameters())

    def check_finite(self, scan_weights: bool = True) -> None:
        """Read the guard's verdict (and with `scan_weights` check the trainable weights once more now);
        raise `NonFiniteError` if anything was NaN / inf.

        Called at the end of every epoch before evaluation and saving (and, without the scan, at the
        progress lines), so weights with NaN / inf are never evaluated, saved or reported.
        """
        finding = self._finite_guard.poll()
        if finding is None and scan_weights:
            self._finite_guard.record(self.named_trainable_parameters(), getattr(self, "epoch", 0),
                                      getattr(self, "batch_idx", 0))
            finding = self._finite_guard.poll()
        self._raise_if_nonfinite(finding)

    def _raise_if_nonfinite(self, finding: Optional[NonFiniteFinding]) -> None:
        """Raise `NonFiniteError` for `finding`, or for the first finding of any process.

        Every process reads its guard at the same points of the loop; with several processes the
        findings are exchanged there, so all of them stop together, with the same message: the
        earliest step's finding, a NaN / inf loss before a parameter (a bad loss on one process makes
        every process's parameters NaN through the averaged gradients), then the lowest rank's.
        """
        if world_size() > 1:
            found = [f for f in all_gather_objects(finding) if f is not None]
            finding = min(found, key=lambda f: (f.epoch, f.batch, f.tensor != LOSS_NAME)) if found else None
        if finding is not None:
            raise NonFiniteError(self._describe_divergence(finding))

    def _describe_divergence(self, finding: NonFiniteFinding) -> str:
        """The one-line report of a non-finite value: where, which tensor, what was kept, what to do."""
        max_epoch = getattr(self, "max_epoch", None)
        num_batches = getattr(self, "num_batches", None)
        epoch = f"{finding.epoch + 1}" + (f"/{max_epoch}" if max_epoch else "")
        step = f"{finding.batch + 1}" + (f"/{num_batches}" if num_batches else "")
        if finding.tensor == LOSS_NAME:
            what = f"the loss is {finding.describe_value()}"
        else:
            kind = "NaN" if finding.describe_value() == "NaN" else "infinite"
            what = f"parameter {finding.tensor} holds {kind} values after the optimiser step"
        return (f"Training diverged at epoch {epoch}, step {step}: {what}. Nothing of this epoch was "
                f"evaluated or saved; {self._last_good_checkpoint()}. Lower OPTIM.LR (or check the data and "
                "the loss weights) and train into a new --output-dir")

    def _last_good_checkpoint(self) -> str:
        output_dir = getattr(self, "output_dir", None)
        for name in self.get_model_names() if output_dir else ():
            folder = osp.join(output_dir, name)
            for candidate in (osp.join(folder, RESUME_FILE_NAME),
                              read_checkpoint_pointer(folder) if osp.isfile(osp.join(folder, "checkpoint")) else None):
                if candidate and osp.isfile(candidate):
                    return f"the last good checkpoint, {candidate}, is kept (the same command resumes from it)"
        return "no checkpoint had been written yet"

    # ------------------------------------------------------------------ tensorboard
    def init_writer(self, log_dir: str) -> None:
        """Tensorboard writer into `log_dir` (rank 0 only; the other processes write nothing)."""
        if self._writer is not None:
            return
        if not is_main_process():
            self._writer = _NullWriter()
            return
        print(f"Initialize tensorboard (log_dir={log_dir})")
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            print("tensorboard is not installed: training curves are not written")
            self._writer = _NullWriter()
        else:
            self._writer = SummaryWriter(log_dir=log_dir)

    def close_writer(self) -> None:
        if self._writer is not None:
            self._writer.close()

    def write_scalar(self, tag: str, scalar_value: Any, global_step: Optional[int] = None) -> None:
        if self._writer is not None:
            self._writer.add_scalar(tag, scalar_value, global_step)

    # ------------------------------------------------------------------ loop
    def train(self, start_epoch: int, max_epoch: int) -> None:
        """before_train, then per epoch before_epoch / run_epoch / after_epoch, then after_train."""
        self.start_epoch = start_epoch
        self.max_epoch = max_epoch
        self.before_train()  # may move start_epoch (resume)
        self.training_started = True
        for self.epoch in range(self.start_epoch, self.max_epoch):
            self._trainable_cache = None  # requires_grad may change between epochs
            self.before_epoch()
            self.run_epoch()
            self.check_finite()  # before anything evaluates or saves this epoch's weights
            self.after_epoch()
            self.save_epoch_checkpoints()
            barrier()  # rank 0 has written the epoch's files before any process reads them
        self.after_train()

    def before_train(self) -> None:
        pass

    def after_train(self) -> None:
        pass

    def before_epoch(self) -> None:
        pass

    def after_epoch(self) -> None:
        pass

    def save_epoch_checkpoints(self) -> None:
        """Write this epoch's files, after ``after_epoch`` (so they hold its final state); then the resume point."""
        self.save_resume_point()

    def save_resume_point(self) -> None:
        """Persist what an exact resume after this epoch needs (no-op here)."""

    def run_state(self) -> Dict[str, Any]:
        """Trainer-specific state an exact resume needs (plain data / tensors; stored in every checkpoint).

        Override together with `load_run_state`, e.g. a per-epoch evaluation record. Default: nothing.
        """
        return {}

    def load_run_state(self, state: Dict[str, Any]) -> None:
        """Restore what `run_state` returned, when resuming (default: nothing to restore)."""

    def data_seed(self) -> Optional[int]:
        """The base seed of seeded training data (stored in checkpoints), or None (default)."""
        return None

    def restore_data_seed(self, seed: int) -> None:
        """Continue with the seeded training data of a checkpoint (default: nothing to restore)."""

    def run_epoch(self) -> None:
        raise NotImplementedError

    def test(self, split: Optional[str] = None):
        raise NotImplementedError

    def parse_batch_train(self, batch: dict):
        raise NotImplementedError

    def parse_batch_test(self, batch: dict):
        raise NotImplementedError

    def forward_backward(self, batch: dict) -> Dict[str, Any]:
        raise NotImplementedError

    def model_inference(self, input: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    # ------------------------------------------------------------------ checkpoints
    def config_identity(self) -> Optional[Dict[str, Any]]:
        """``{"hash", "items"}`` of this trainer's config (None for a trainer without ``cfg``)."""
        cfg = getattr(self, "cfg", None)
        if cfg is None:
            return None
        if self._config_identity is None:
            self._config_identity = {"hash": config_hash(cfg), "items": config_items(cfg)}
        return self._config_identity

    def _resume_state(self) -> Dict[str, Any]:
        """The trainer-wide part of every checkpoint: random states, best result, precision, run state,
        configuration identity (all plain data, so files load with ``weights_only=True``)."""
        state: Dict[str, Any] = {
            "rng_state": get_rng_state(),
            "best_result": float(getattr(self, "best_result", -np.inf)),
            "precision": self._precision.state_dict(),
            "run_state": self.run_state(),
            "data_seed": self.data_seed(),
        }
        identity = self.config_identity()
        if identity is not None:
            state["config_hash"] = identity["hash"]
            state["config_items"] = dict(identity["items"])
        return state

    def _checkpoint_state(self, name: str, epoch: int, val_result: Optional[float]) -> Dict[str, Any]:
        optim, sched = self._optims[name], self._scheds[name]
        return {
            "state_dict": self._models[name].state_dict(),
            "epoch": epoch + 1,
            "optimizer": optim.state_dict() if optim is not None else None,
            "scheduler": sched.state_dict() if sched is not None else None,
            "val_result": val_result,
            **self._resume_state(),
        }

    def save_model(self, epoch: int, directory: str, is_best: bool = False,
                   val_result: Optional[float] = None, model_name: str = "") -> None:
        """Save every registered model to ``directory/<name>/`` (Dassl file names and keys + resume state).

        Only rank 0 writes (all processes hold the same weights).
        """
        if not is_main_process():
            return
        for name in self.get_model_names():
            save_checkpoint(self._checkpoint_state(name, epoch, val_result), osp.join(directory, name),
                            is_best=is_best, model_name=model_name)

    def _identity_differences(self, checkpoint: Dict[str, Any]) -> Optional[str]:
        """None when `checkpoint` has this config's identity (or none at all), else the differing keys."""
        identity = self.config_identity()
        saved_hash = checkpoint.get("config_hash") if isinstance(checkpoint, dict) else None
        if identity is None or saved_hash is None or saved_hash == identity["hash"]:
            return None
        saved_items = checkpoint.get("config_items") or {}
        if not saved_items:
            return f"config hash {saved_hash} there, {identity['hash']} now"
        return describe_differences(saved_items, identity["items"]) or \
            f"config hash {saved_hash} there, {identity['hash']} now"

    def _mismatch_hint(self, checkpoint: Dict[str, Any]) -> str:
        """What to say when a checkpoint does not fit the model: its differing keys when it records them."""
        differences = self._identity_differences(checkpoint)
        if differences:
            return (f"it was trained with another configuration ({differences}): use that configuration, "
                    "or another --model-dir / output folder")
        return ""

    def _check_resume_identity(self, checkpoint: Dict[str, Any], path: str, directory: str,
                               required: bool) -> None:
        """Refuse to continue a run of another configuration; a file without identity gets a note."""
        if isinstance(checkpoint, dict) and checkpoint.get("config_hash") is None and self.config_identity():
            print(f'Note: "{path}" records no configuration (written by Dassl/PromptKD or an older version), '
                  "so it cannot be checked against this run's configuration")
            return
        differences = self._identity_differences(checkpoint)
        if differences is None:
            return
        if required:
            fix = "resume with the configuration of that run, or leave out --resume / RESUME to start afresh"
        else:
            fix = (f"to keep both runs give this one a new --output-dir (the protocol scripts: RUN_TAG=...), "
                   f'or delete "{directory}" to start it over')
        raise ConfigMismatchError(f'"{path}" belongs to a run of another configuration (differs in {differences}); '
                                  f"resuming it would mix two configurations: {fix}")

    def resume_model_if_exist(self, directory: str, required: bool = False) -> int:
        """Restore all registered models from ``directory`` if it holds their checkpoints.

        Returns the number of completed epochs (the start epoch), or 0 when nothing is found;
        with `required` a missing checkpoint is an error. Prefers ``model-last.pth.tar``, else the file
        named in Dassl's ``checkpoint`` file; either holds the full resume state when this engine wrote
        it. A checkpoint of another configuration is refused (`ConfigMismatchError`).
        """
        names = self.get_model_names()
        sources = {}
        for name in names:
            folder = osp.join(directory, name)
            last = osp.join(folder, RESUME_FILE_NAME)
            if osp.isfile(last):
                sources[name] = last
            elif osp.isfile(osp.join(folder, "checkpoint")):
                sources[name] = read_checkpoint_pointer(folder)
        if not names or len(sources) < len(names):
            if required:
                missing = [osp.join(directory, n) for n in names if n not in sources]
                raise CheckpointNotFoundError(
                    f"RESUME={directory!r} holds no checkpoint for {missing or 'any model'} "
                    f"(expected {RESUME_FILE_NAME} or a 'checkpoint' file in each model folder)")
            print("No checkpoint found, train from scratch")
            return 0

        why = "as asked by RESUME" if required else "auto-resume: this folder already holds a checkpoint"
        files = sorted({osp.basename(path) for path in sources.values()})
        print(f"Found checkpoint at {directory} (will resume training from {', '.join(files)}; {why})")

        checkpoints = {}
        for name in names:
            print(f'Loading checkpoint from "{sources[name]}"')
            checkpoints[name] = load_checkpoint(sources[name])
            self._check_resume_identity(checkpoints[name], sources[name], directory, required)
        start_epoch = 0
        for name in names:
            checkpoint = checkpoints[name]
            start_epoch = restore_from_state(checkpoint, self._models[name], self._optims[name],
                                             self._scheds[name], source=sources[name],
                                             hint=self._mismatch_hint(checkpoint))
        self._restore_run_state(checkpoints[names[-1]])
        self._copy_best_models(directory)
        return start_epoch

    def _copy_best_models(self, directory: str) -> None:
        """When resuming from another folder, bring its selected checkpoints (`SELECTED_CHECKPOINT_FILES`) into
        OUTPUT_DIR.

        Keeps the output folder self-contained: `after_train` (best_val) and a later
        ``--eval-only --model-dir OUTPUT_DIR`` find ``model-best.pth.tar`` there.
        """
        output_dir = getattr(self, "output_dir", None)
        if not output_dir or osp.abspath(directory) == osp.abspath(output_dir) or not is_main_process():
            return
        for name in self.get_model_names():
            for file_name in self.SELECTED_CHECKPOINT_FILES:
                source = osp.join(directory, name, file_name)
                if osp.isfile(source):
                    target = osp.join(output_dir, name, file_name)
                    atomic_copy(source, target)
                    print(f"Copied {source} to {target}")

    def _restore_run_state(self, checkpoint: Dict[str, Any]) -> None:
        """Restore trainer-wide state (random states, best result, loss scale, run state) of a checkpoint."""
        if checkpoint.get("rng_state") is None:
            print("Note: this checkpoint holds no random-number state, so the resumed run will not be "
                  "bit-identical to an uninterrupted one")
            return
        set_rng_state(checkpoint["rng_state"])
        if checkpoint.get("data_seed") is not None:
            self.restore_data_seed(int(checkpoint["data_seed"]))
        if checkpoint.get("best_result") is not None:
            self.best_result = checkpoint["best_result"]
        self._precision.load_state_dict(checkpoint.get("precision"))
        if checkpoint.get("run_state") is not None:
            self.load_run_state(checkpoint["run_state"])
        print("Restored random-number states" + (
            f" and best val result {self.best_result:.1f}" if np.isfinite(getattr(self, "best_result", np.nan))
            else ""))

    def load_model(self, directory: str, epoch: Optional[int] = None) -> Dict[str, Dict[str, Any]]:
        """Load ``model-best.pth.tar`` (or ``model.pth.tar-<epoch>``) into every registered model.

        With no ``CHECKPOINT_IGNORED_KEYS`` this is Dassl's load: strict, one ``Load ...`` line per model.
        Otherwise it is the prompt trainers' load (PromptSRC / PromptKD): the ignored keys are dropped,
        the rest is loaded non-strictly, and missing / unexpected keys (other than the ignored ones) are
        reported on ``WARNING`` lines instead of being silently ignored. Either way a checkpoint of
        another shape is one clear error (`CheckpointMismatchError`), and a checkpoint trained with
        another configuration is loaded with a note naming the differing keys.
        Returns ``{model name: {"epoch": ..., "val_result": ...}}`` for the checkpoints loaded (empty when
        ``directory`` is empty).
        """
        if not directory:
            print("Note that load_model() is skipped as no pretrained model is given")
            return {}
        ignored = tuple(self.CHECKPOINT_IGNORED_KEYS)
        fname = BEST_FILE_NAME if epoch is None else f"model.pth.tar-{epoch}"
        loaded: Dict[str, Dict[str, Any]] = {}
        for name in self.get_model_names():
            path = osp.join(directory, name, fname)
            if not osp.exists(path):
                message = f'Model not found at "{path}"' if ignored else f"No model at {path}"
                raise CheckpointNotFoundError(message)
            checkpoint = load_checkpoint(path)
            state_dict = checkpoint.get("state_dict", checkpoint)
            info = {"epoch": checkpoint.get("epoch"), "val_result": checkpoint.get("val_result")}
            hint = self._mismatch_hint(checkpoint)
            differences = self._identity_differences(checkpoint)
            if differences:
                print(f'Note: "{path}" was trained with another configuration (differs in {differences}); '
                      "it is evaluated with this run's configuration")
            if ignored:
                print(f'Loading weights to {name} from "{path}" (epoch = {info["epoch"]})')
                self._load_non_strict(self._models[name], state_dict, ignored, source=path, hint=hint)
            else:
                # Dassl formats val_result with :.1f and crashes when it is None; we print "None".
                val_result = info["val_result"]
                shown = f"{val_result:.1f}" if isinstance(val_result, (int, float)) else "None"
                print(f"Load {path} to {name} (epoch={info['epoch']}, val_result={shown})")
                load_state_dict_checked(self._models[name], state_dict, path, strict=True, hint=hint)
            loaded[name] = info
        return loaded

    @staticmethod
    def _load_non_strict(model: nn.Module, state_dict: Dict[str, Any], ignored: Sequence[str],
                         source: str = "the checkpoint", hint: str = "") -> None:
        """Load ``state_dict`` without the ``ignored`` keys, warning about any other key mismatch."""
        state_dict = {k: v for k, v in state_dict.items() if k not in ignored}
        result = load_state_dict_checked(model, state_dict, source, strict=False, hint=hint)
        missing = [k for k in result.missing_keys if k not in ignored]
        if missing:
            print(f"WARNING: keys missing from the checkpoint (left as built): {missing}")
        if result.unexpected_keys:
            print(f"WARNING: unexpected keys in the checkpoint (ignored): {result.unexpected_keys}")


class SimpleTrainer(TrainerBase):
    """Builds data, model and evaluator from the config; owns the device and precision."""

    def __init__(self, cfg):
        super().__init__()
        self.check_cfg(cfg)
        if cfg.TEST.FINAL_MODEL not in FINAL_MODEL_CHOICES:
            raise UserError(f"TEST.FINAL_MODEL must be one of {list(FINAL_MODEL_CHOICES)}, "
                            f"got {cfg.TEST.FINAL_MODEL!r}")
        self.device = select_device(cfg.USE_CUDA)
        self._precision = Precision("fp32", self.device)
        self._finite_guard = FiniteGuard(self.device)
        self._new_best: Optional[float] = None  # set by after_epoch when this epoch's val result is a new best
        self.start_epoch = self.epoch = 0
        self.max_epoch = cfg.OPTIM.MAX_EPOCH
        self.output_dir = cfg.OUTPUT_DIR
        self.cfg = cfg
        self.best_result = -np.inf
        self.build_data_loader()
        self.build_model()
        self.prepare_processes()
        self.evaluator = build_evaluator(cfg, lab2cname=self.lab2cname)

    def check_cfg(self, cfg) -> None:
        """Hook for trainers to validate their config keys (no-op)."""

    def prepare_processes(self) -> None:
        """With several processes: BatchNorm over the global batch (``DISTRIBUTED.SYNC_BN``) in every
        registered model, then rank 0's weights into every process. Nothing for one process.

        Without ``DISTRIBUTED.SYNC_BN`` each process normalises with the statistics of its own share of
        the batch (batch / N images, as one device running batch / N would), the processes' running
        statistics drift apart, and the checkpoints hold rank 0's.
        """
        if world_size() <= 1:
            return
        names = [name for name in self.get_model_names() if self._models[name] is not None]
        if self.cfg.DISTRIBUTED.SYNC_BN:
            converted = 0
            for name in names:
                self._models[name], count = convert_batchnorm(self._models[name])
                converted += count
            if converted:
                print(f"DISTRIBUTED.SYNC_BN: {converted} BatchNorm layer(s) normalise with the statistics of the "
                      f"global batch (all {world_size()} processes)")
        elif any(isinstance(m, _BatchNorm) for name in names for m in self._models[name].modules()):
            print(f"DISTRIBUTED.SYNC_BN is False: BatchNorm layers normalise with each process's batch / "
                  f"{world_size()} images")
        broadcast_module_states(self._models[name] for name in names)

    def set_precision(self, mode: str) -> None:
        """Install the numeric precision (``fp32 | fp16 | bf16 | amp``) on this trainer's device."""
        self._precision = Precision(mode, self.device)

    def data_protocol(self) -> Optional[str]:
        """The data protocol passed to the readers: None (CoOp semantics) unless a trainer overrides it."""
        return None

    def build_data_loader(self) -> None:
        dm = DataManager(self.cfg, protocol=self.data_protocol())
        self.train_loader_x = dm.train_loader_x
        self.train_loader_u = dm.train_loader_u
        self.val_loader = dm.val_loader
        self.test_loader = dm.test_loader
        self.num_classes = dm.num_classes
        self.num_source_domains = dm.num_source_domains
        self.lab2cname = dm.lab2cname
        self.dm = dm

    def data_seed(self) -> Optional[int]:
        """The base seed of the seeded training data (``DATALOADER.SEEDED_AUGMENTATION``), else None."""
        return getattr(getattr(self, "dm", None), "augmentation_seed", None)

    def restore_data_seed(self, seed: int) -> None:
        """Use a checkpoint's data seed, so that a resumed run sees the data an uninterrupted one would."""
        if self.data_seed() is not None and self.data_seed() != seed:
            self.dm.set_augmentation_seed(seed)

    def build_model(self) -> None:
        raise NotImplementedError(
            f"{type(self).__name__} must implement build_model() (build the modules and call register_model)")

    def train(self) -> None:  # type: ignore[override]
        check_max_epoch(self.cfg)
        super().train(self.start_epoch, self.max_epoch)

    def remove_interrupted_writes(self) -> None:
        """Delete temporary files that a stopped run's atomic writes left in OUTPUT_DIR and its model folders."""
        if not is_main_process():
            return
        folders = [self.output_dir] + [osp.join(self.output_dir, name) for name in self.get_model_names()]
        for folder in folders:
            removed = remove_stale_temporary_files(folder)
            if removed:
                print(f"Removed {len(removed)} unfinished temporary file(s) of an interrupted write in {folder}: "
                      f"{', '.join(removed)}")

    def before_train(self) -> None:
        self.remove_interrupted_writes()
        if self.cfg.RESUME:
            self.start_epoch = self.resume_model_if_exist(self.cfg.RESUME, required=True)
        else:
            self.start_epoch = self.resume_model_if_exist(self.output_dir)
        require_agreement(self.start_epoch, lambda epochs: (
            f"the processes found different checkpoints to resume from (start epoch by rank: {epochs}): "
            "every process must see the same output folder; on several machines put OUTPUT_DIR on a shared "
            "file system"))
        writer_dir = osp.join(self.output_dir, "tensorboard")
        mkdir_if_missing(writer_dir)
        self.init_writer(writer_dir)
        self.time_start = time.time()

    def after_epoch(self) -> None:
        """Dassl's per-epoch validation (TEST.FINAL_MODEL best_val): update ``best_result``.

        Writes nothing: `save_epoch_checkpoints` runs next and saves ``model-best.pth.tar`` when this
        epoch's val result is a new best.
        """
        self._new_best = None
        if not self.cfg.TEST.NO_TEST and self.cfg.TEST.FINAL_MODEL == "best_val":
            curr_result = self.test(split="val")
            if curr_result > self.best_result:
                self.best_result = curr_result
                self._new_best = curr_result

    def save_epoch_checkpoints(self) -> None:
        """The epoch's files, in Dassl's order: model-best (new best), model.pth.tar-<E> (CHECKPOINT_FREQ
        or last epoch), then the resume point. Each holds the full resume state, so a stop between any
        two writes resumes exactly from whichever file `resume_model_if_exist` finds."""
        last_epoch = (self.epoch + 1) == self.max_epoch
        freq = self.cfg.TRAIN.CHECKPOINT_FREQ
        meet_checkpoint_freq = (self.epoch + 1) % freq == 0 if freq > 0 else False
        if self._new_best is not None:
            self.save_model(self.epoch, self.output_dir, val_result=self._new_best, model_name=BEST_FILE_NAME)
        if meet_checkpoint_freq or last_epoch:
            self.save_model(self.epoch, self.output_dir)
        super().save_epoch_checkpoints()

    def save_resume_point(self) -> None:
        """Rewrite ``<name>/model-last.pth.tar`` (weights, optimiser, scheduler, resume state).

        After the final epoch ``model.pth.tar-<E>`` (just written, with the same state) takes its place
        and the file is removed.
        """
        if not is_main_process():
            return
        last_epoch = (self.epoch + 1) == self.max_epoch
        for name in self.get_model_names():
            path = osp.join(self.output_dir, name, RESUME_FILE_NAME)
            if last_epoch:
                if osp.isfile(path):
                    os.remove(path)
                continue
            save_checkpoint(self._checkpoint_state(name, self.epoch, None), osp.join(self.output_dir, name),
                            model_name=RESUME_FILE_NAME, update_pointer=False, verbose=False)

    def after_train(self) -> None:
        print("Finish training")
        if not self.cfg.TEST.NO_TEST:
            self.test_final_model()
        elapsed = round(time.time() - self.time_start)
        print(f"Elapsed: {datetime.timedelta(seconds=elapsed)}")
        self.close_writer()

    def evaluate_saved_model(self, directory: str, epoch: Optional[int] = None):
        """An evaluation-only run (``train.py --eval-only``): load the saved weights, then evaluate them.

        A failure while loading is a failed start (``training_started`` stays False); the evaluation is
        `evaluate_loaded_model`, the hook trainers override to record evaluation-only results.
        """
        self.load_model(directory, epoch=epoch)
        self.training_started = True
        return self.evaluate_loaded_model(directory)

    def evaluate_loaded_model(self, directory: str):
        """Evaluate the weights just loaded from ``directory`` (``--eval-only``); returns the result."""
        return self.test()

    def test_final_model(self):
        """Deploy the final model (TEST.FINAL_MODEL: best on val, or the last epoch's), test it, return the result."""
        if self.cfg.TEST.FINAL_MODEL == "best_val":
            print("Deploy the model with the best val performance")
            self.load_model(self.output_dir)
        else:
            print("Deploy the last-epoch model")
        return self.test()

    @torch.no_grad()
    def test(self, split: Optional[str] = None):
        """Evaluate on ``split`` (default TEST.SPLIT; val falls back to test) and return accuracy."""
        self.set_model_mode("eval")
        self.evaluator.reset()
        if split is None:
            split = self.cfg.TEST.SPLIT
        if split == "val" and self.val_loader is not None:
            data_loader = self.val_loader
        else:
            split = "test"
            data_loader = self.test_loader
        print(f"Evaluate on the *{split}* set")

        for batch in tqdm(data_loader):
            input, label = self.parse_batch_test(batch)
            with self._precision.autocast():
                output = self.model_inference(input)
            self.evaluator.process(output, label)

        results = self.evaluator.evaluate()
        for key, value in results.items():
            if np.isscalar(value):
                self.write_scalar(f"{split}/{key}", value, self.epoch)
        return list(results.values())[0]

    def model_inference(self, input: torch.Tensor) -> torch.Tensor:
        return self.model(input)

    def parse_batch_test(self, batch: dict):
        return batch["img"].to(self.device), batch["label"].to(self.device)


class TrainerX(SimpleTrainer):
    """Trainer for labelled data: one pass over ``train_loader_x`` per epoch."""

    def run_epoch(self) -> None:
        self.set_model_mode("train")
        losses = MetricMeter()
        batch_time = AverageMeter()
        data_time = AverageMeter()
        self.num_batches = len(self.train_loader_x)
        self.set_loader_epoch(self.epoch)
        print_freq = self.cfg.TRAIN.PRINT_FREQ

        end = time.time()
        for self.batch_idx, batch in enumerate(self.train_loader_x):
            data_time.update(time.time() - end)
            loss_summary = self.forward_backward(batch)
            batch_time.update(time.time() - end)
            losses.update(loss_summary)

            if (self.batch_idx + 1) % print_freq == 0 or self.num_batches < print_freq:
                self.check_finite(scan_weights=False)  # the progress line syncs anyway (it reads the losses)
                print(self._progress_line(batch_time, data_time, losses))

            n_iter = self.epoch * self.num_batches + self.batch_idx
            for name, meter in losses.meters.items():
                self.write_scalar("train/" + name, meter.avg, n_iter)
            self.write_scalar("train/lr", self.get_current_lr(), n_iter)
            end = time.time()

    def set_loader_epoch(self, epoch: int) -> None:
        """Tell the training samplers which epoch starts (seeded order and augmentation, several processes)."""
        for loader in (self.train_loader_x, getattr(self, "train_loader_u", None)):
            sampler = getattr(loader, "sampler", None)
            if hasattr(sampler, "set_epoch"):
                sampler.set_epoch(epoch)

    def _progress_line(self, batch_time: AverageMeter, data_time: AverageMeter, losses: MetricMeter) -> str:
        remaining = (self.num_batches - self.batch_idx - 1) + \
            (self.max_epoch - self.epoch - 1) * self.num_batches
        eta = str(datetime.timedelta(seconds=int(batch_time.avg * remaining)))
        return " ".join([
            f"epoch [{self.epoch + 1}/{self.max_epoch}]",
            f"batch [{self.batch_idx + 1}/{self.num_batches}]",
            f"time {batch_time.val:.3f} ({batch_time.avg:.3f})",
            f"data {data_time.val:.3f} ({data_time.avg:.3f})",
            f"{losses}",
            f"lr {self.get_current_lr():.4e}",
            f"eta {eta}",
        ])

    def parse_batch_train(self, batch: dict):
        return (batch["img"].to(self.device), batch["label"].to(self.device),
                batch["domain"].to(self.device))
