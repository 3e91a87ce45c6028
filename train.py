"""Train or evaluate a prompt-learning model (PromptKD / PromptSRC / CoOp-style command line).

Examples:
    python train.py --root DATA --seed 1 --trainer PromptKD \
        --dataset-config-file configs/datasets/oxford_pets.yaml \
        --config-file configs/trainers/PromptKD/vit_b16_c2_ep20_batch8_4+4ctx.yaml \
        --output-dir output/pets/seed1 DATASET.SUBSAMPLE_CLASSES all TRAINER.PROMPTKD.KD_WEIGHT 1000.0
    python train.py ... --eval-only --model-dir output/pets/seed1 [--load-epoch 20]

Deliberate differences from PromptKD's train.py (its quirks, fixed):
- ``--seed 0`` is a valid seed (upstream ignores it because 0 is falsy);
- ``--resume DIR`` resumes from DIR (upstream discards the path);
- ``cudnn.benchmark`` is enabled only for unseeded runs, so a seeded run stays reproducible;
- full environment collection (slow: it shells out to pip, nvidia-smi, ...) only with ``--env-info``;
  a short summary is always printed;
- every expected failure (bad input, a missing file, a refused resume, a diverged run, a read-only
  or full output folder, a checkpoint of another shape) ends with one ``Error: ...`` line naming the
  file or key and the fix, exit status 2; an unexpected exception writes its traceback to log.txt
  and ends with one line saying where the log is (exit status 1); Ctrl-C ends with one line, exit 130;
- one run per output folder (``<OUTPUT_DIR>/run.lock``); a run that fails before training starts
  removes its own log file, so the next run's log is ``log.txt`` again.

Several processes: ``torchrun --nproc_per_node N train.py ...`` (README, "Multi-GPU and large runs").
Each process joins the process group torchrun describes (NCCL on ``cuda:LOCAL_RANK``, gloo on the CPU);
``DATALOADER.TRAIN_X.BATCH_SIZE`` stays the global batch; ``DATALOADER.SEEDED_AUGMENTATION`` left unset
becomes True (and is recorded so in the configuration and its hash); rank 0 alone holds the run lock,
logs (``world size: N``) and writes files; another process's failure ends with its own
``[rank R] Error: ...`` line. Without torchrun (or with one process) nothing of this happens.
"""
from __future__ import annotations

import argparse
import contextlib
import os.path as osp
import platform
import sys
import traceback
from dataclasses import dataclass
from typing import Any, Iterator, List, Optional, Sequence, Tuple

import torch

from dassl.config import get_cfg_default, merge_sources
from dassl.config.run_config import write_run_config
from dassl.data.seeding import CONFIG_KEY as SEEDED_AUGMENTATION_KEY
from dassl.data.seeding import seeded_augmentation_enabled
from dassl.engine import build_trainer, check_max_epoch
from dassl.engine.distributed import describe_run, init_distributed, run_on_main, shutdown_distributed
from dassl.utils import (RunLock, UserError, close_logger, collect_env_info, console_stderr, expected_failure_line,
                         is_main_process, log_path, process_rank, quiet_console, set_random_seed, setup_logger,
                         unexpected_failure_line, worker_traceback, write_to_log)

import datasets  # noqa: F401  (registers every dataset reader)
import trainers  # noqa: F401  (registers every trainer)

# (flag, config key, argparse dest): a flag is copied into the config only when given.
FLAG_TO_KEY: Tuple[Tuple[str, str, str], ...] = (
    ("--root", "DATASET.ROOT", "root"),
    ("--output-dir", "OUTPUT_DIR", "output_dir"),
    ("--resume", "RESUME", "resume"),
    ("--seed", "SEED", "seed"),
    ("--source-domains", "DATASET.SOURCE_DOMAINS", "source_domains"),
    ("--target-domains", "DATASET.TARGET_DOMAINS", "target_domains"),
    ("--transforms", "INPUT.TRANSFORMS", "transforms"),
    ("--trainer", "TRAINER.NAME", "trainer"),
    ("--backbone", "MODEL.BACKBONE.NAME", "backbone"),
    ("--head", "MODEL.HEAD.NAME", "head"),
)


def build_parser() -> argparse.ArgumentParser:
    """The command line of PromptKD's train.py (plus ``--env-info``)."""
    parser = argparse.ArgumentParser(description="Train or evaluate a prompt-learning model.")
    parser.add_argument("--root", type=str, default="", help="path to the datasets folder")
    parser.add_argument("--output-dir", type=str, default="", help="output folder (checkpoints, log.txt)")
    parser.add_argument("--resume", type=str, default="", help="folder of a run to resume from")
    parser.add_argument("--seed", type=int, default=None, help="random seed (>= 0; default: unseeded)")
    parser.add_argument("--source-domains", type=str, nargs="+", help="source domains (DA/DG only)")
    parser.add_argument("--target-domains", type=str, nargs="+", help="target domains (DA/DG only)")
    parser.add_argument("--transforms", type=str, nargs="+", help="data augmentation methods")
    parser.add_argument("--config-file", type=str, default="", help="method config YAML")
    parser.add_argument("--dataset-config-file", type=str, default="", help="dataset config YAML")
    parser.add_argument("--trainer", type=str, default="", help="trainer name")
    parser.add_argument("--backbone", type=str, default="", help="backbone name")
    parser.add_argument("--head", type=str, default="", help="head name")
    parser.add_argument("--eval-only", action="store_true", help="evaluate only")
    parser.add_argument("--model-dir", type=str, default="", help="load the model from this folder for --eval-only")
    parser.add_argument("--load-epoch", type=int, help="load model.pth.tar-<EPOCH> instead of model-best.pth.tar")
    parser.add_argument("--no-train", action="store_true", help="build the trainer but do not train")
    parser.add_argument("--env-info", action="store_true", help="print the full (slow) environment report")
    parser.add_argument(
        "opts", default=None, nargs=argparse.REMAINDER, help="config overrides as KEY VALUE pairs"
    )
    return parser


def flag_values(args: argparse.Namespace) -> List[Tuple[str, str, Any]]:
    """The ``(flag, KEY, value)`` triples of the flags the user actually gave."""
    triples = []
    for flag, key, dest in FLAG_TO_KEY:
        value = getattr(args, dest, None)
        given = value is not None if dest == "seed" else bool(value)
        if given:
            triples.append((flag, key, value))
    return triples


def check_paths(args: argparse.Namespace) -> None:
    """Fail early, naming the flag, when a file or folder the user named does not exist."""
    for flag, path in (("--config-file", args.config_file), ("--dataset-config-file", args.dataset_config_file)):
        if path and not osp.isfile(path):
            raise UserError(f'{flag}: config file not found: "{path}"')
    if args.resume and not osp.isdir(args.resume):
        raise UserError(f'--resume: folder not found: "{args.resume}"')
    if args.model_dir and not osp.isdir(args.model_dir):
        raise UserError(f'--model-dir: folder not found: "{args.model_dir}"')
    if args.seed is not None and args.seed < -1:
        raise UserError(f"--seed must be >= 0 (or -1 for an unseeded run), got {args.seed}")


def setup_cfg(args: argparse.Namespace):
    """defaults -> project keys -> dataset YAML -> method YAML -> flags -> opts -> freeze."""
    cfg = get_cfg_default()
    trainers.extend_cfg(cfg)
    return merge_sources(
        cfg,
        dataset_yaml=args.dataset_config_file or None,
        method_yaml=args.config_file or None,
        flag_values=flag_values(args),
        opts=args.opts,
    )


def print_args(args: argparse.Namespace, cfg: Any) -> None:
    """Print the argument and config banners (as Dassl, so logs look the same)."""
    print("***************")
    print("** Arguments **")
    print("***************")
    for key in sorted(vars(args)):
        print(f"{key}: {getattr(args, key)}")
    print("************")
    print("** Config **")
    print("************")
    print(cfg)


def system_summary() -> str:
    """A short, fast description of the software and device."""
    lines = [
        f"Python: {platform.python_version()} ({sys.executable})",
        f"PyTorch: {torch.__version__}",
    ]
    try:
        import torchvision

        lines.append(f"torchvision: {torchvision.__version__}")
    except ImportError:
        pass
    if torch.cuda.is_available():
        lines.append(f"CUDA: {torch.version.cuda}; GPU 0: {torch.cuda.get_device_name(0)} "
                     f"({torch.cuda.device_count()} visible)")
    else:
        lines.append("CUDA: not available")
    return "\n".join(lines)


@dataclass
class RunProgress:
    """How far `main` got: `cli` uses it to word a failure and to tidy up after a failed start."""

    log_file: Optional[str] = None
    trainer: Any = None

    @property
    def started(self) -> bool:
        """Whether training (or evaluation) began, i.e. a failure is more than a failed start."""
        return self.trainer is not None and bool(getattr(self.trainer, "training_started", False))


def note_untrained_evaluation(trainer: Any, args: argparse.Namespace) -> None:
    """Say so when --eval-only without --model-dir evaluates weights nobody trained."""
    has_trainable = getattr(trainer, "has_trainable_weights", None)
    if args.model_dir or not callable(has_trainable) or not has_trainable():
        return
    ignored = " (--load-epoch is ignored without it)" if args.load_epoch is not None else ""
    print(f"Note: --eval-only without --model-dir evaluates the initial, untrained weights of "
          f"{type(trainer).__name__}{ignored}; to evaluate a trained model pass --model-dir DIR "
          f"[--load-epoch E]")


def settle_seeded_augmentation(cfg, processes: int):
    """With several processes, write the effective ``DATALOADER.SEEDED_AUGMENTATION`` into `cfg`.

    Unset (None) becomes True, so the configuration (and its hash, in checkpoints and results.json)
    says which data a run saw: such a run shares its identity with a one-process run that set the key
    True, whose data are the same. False is refused (`seeded_augmentation_enabled`).
    """
    enabled = seeded_augmentation_enabled(cfg, processes)
    if cfg.DATALOADER.SEEDED_AUGMENTATION is None:
        cfg.defrost()
        cfg.DATALOADER.SEEDED_AUGMENTATION = enabled
        cfg.freeze()
    return cfg


@contextlib.contextmanager
def run_lock(folder: str) -> Iterator[None]:
    """Hold ``<folder>/run.lock`` for the run (rank 0 only; every process stops if rank 0 cannot take it)."""
    if not folder:
        yield
        return
    lock = RunLock(folder)
    run_on_main(lock.acquire)
    try:
        yield
    finally:
        lock.release()


def main(args: argparse.Namespace, progress: Optional[RunProgress] = None):
    """Run one training / evaluation as described by ``args``; returns the trainer."""
    progress = progress if progress is not None else RunProgress()
    check_paths(args)
    cfg = setup_cfg(args)
    processes = init_distributed(cfg.USE_CUDA)
    if processes > 1:
        if not is_main_process():
            quiet_console()
        cfg = settle_seeded_augmentation(cfg, processes)
    if not args.eval_only and not args.no_train:
        check_max_epoch(cfg)
    if cfg.SEED >= 0:
        print(f"Setting fixed seed: {cfg.SEED}")
        set_random_seed(cfg.SEED)
    with run_lock(cfg.OUTPUT_DIR):
        progress.log_file = setup_logger(cfg.OUTPUT_DIR)

        if torch.cuda.is_available() and cfg.USE_CUDA and cfg.SEED < 0:
            torch.backends.cudnn.benchmark = True

        print_args(args, cfg)
        if processes > 1:
            print(describe_run())
            print(f"{SEEDED_AUGMENTATION_KEY}: {cfg.DATALOADER.SEEDED_AUGMENTATION}")
        if cfg.OUTPUT_DIR:
            write_run_config(cfg, cfg.OUTPUT_DIR)
        print("Collecting env info ...")
        print(f"** System info **\n{collect_env_info() if args.env_info else system_summary()}\n")

        trainer = build_trainer(cfg)
        progress.trainer = trainer
        if args.eval_only:
            note_untrained_evaluation(trainer, args)
            trainer.evaluate_saved_model(args.model_dir, epoch=args.load_epoch)
            return trainer
        if not args.no_train:
            trainer.train()
        return trainer


def report_failure(exc: BaseException, progress: RunProgress) -> int:
    """Print what ended the run as one ``Error:`` line; returns the exit status (2 expected, 1 unexpected).

    A process other than rank 0 of a multi-process run (quiet otherwise) prints its line, prefixed
    with ``[rank R]``, to the real console.
    """
    sys.stdout.flush()
    stderr = sys.stderr if is_main_process() else console_stderr()
    error = "Error:" if is_main_process() else f"[rank {process_rank()}] Error:"
    line = expected_failure_line(exc)
    if line is not None:
        detail = worker_traceback(exc)
        if detail:
            write_to_log(detail)
        print(f"{error} {line}", file=stderr)
        return 2
    details = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    if write_to_log(details):
        print(f"{error} {unexpected_failure_line(exc, log_path())}", file=stderr)
    else:
        print(details, end="", file=stderr)
        print(f"{error} {unexpected_failure_line(exc, None)}", file=stderr)
    return 1


def cli(argv: Optional[Sequence[str]] = None) -> int:
    """Command-line entry point: see the module docstring for the exit statuses."""
    args = build_parser().parse_args(argv)
    progress = RunProgress()
    discard_log = False
    try:
        main(args, progress)
        return 0
    except KeyboardInterrupt:
        sys.stdout.flush()
        resume = " run the same command again to resume from the last finished epoch" if progress.started else ""
        print(f"Interrupted (Ctrl-C): the run stopped.{resume}", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001  (every failure ends in one line; see report_failure)
        status = report_failure(exc, progress)
        discard_log = status == 2 and not progress.started and progress.log_file is not None
        return status
    finally:
        close_logger(discard=discard_log)
        shutdown_distributed()


if __name__ == "__main__":
    sys.exit(cli())
