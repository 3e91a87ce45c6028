#!/usr/bin/env python
"""Compute the frozen teacher's image features of every training view once, for E epochs, and store them
in ``TRAINER.PROMPTKD.TEACHER_CACHE_DIR`` (``trainers/teacher_cache.py`` says what is stored and how it is
keyed). Every later run with the same teacher, data and augmentation key that sets that key reads them
instead of running the teacher's image tower: PromptKD vs PromptKD_RSM, an omega sweep, reruns.

Takes train.py's arguments, plus ``--epochs`` (default ``OPTIM.MAX_EPOCH``). Random transforms need
``DATALOADER.SEEDED_AUGMENTATION True``; a deterministic transform stores one epoch-free file. The
storage dtype is ``TRAINER.PROMPTKD.TEACHER_CACHE_DTYPE`` (fp16 halves the disk size; see README).
Epoch files already complete are kept, so an interrupted fill resumes. One process (the files are
written atomically).

    python tools/cache_teacher.py --root DATA --seed 1 --trainer PromptKD --config-file ... \
        --dataset-config-file ... --epochs 2 DATALOADER.SEEDED_AUGMENTATION True \
        TRAINER.PROMPTKD.TEACHER_CACHE_DIR cache/pets_seed1
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Dict, Optional, Sequence

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from dassl.utils import UserError  # noqa: E402
from trainers import teacher_cache  # noqa: E402


def _epoch_batches(trainer, epoch: int, every_image: bool):
    """The training batches of ``epoch`` as the run will see them; with ``every_image`` (a deterministic
    transform, whose one file serves runs with any order) every training image once, in order."""
    if not every_image:
        trainer.set_loader_epoch(epoch)
        return trainer.train_loader_x
    loader = trainer.train_loader_x
    return torch.utils.data.DataLoader(loader.dataset, batch_size=loader.batch_size or 64, shuffle=False,
                                       drop_last=False, num_workers=loader.num_workers)


def fill_cache(trainer, folder: str, epochs: int, dtype: torch.dtype) -> Dict[str, float]:
    """Run ``trainer``'s teacher over its training loader for ``epochs`` epochs and write the epoch files."""
    files = teacher_cache.TeacherFeatureFiles(folder, trainer.teacher_disk_key())
    files.check_key()  # refuses a folder holding another key's cache
    files.write_key(dtype)
    n = len(trainer.dm.dataset.train_x)
    labels = sorted({files.label(epoch) for epoch in range(epochs)}, key=str)
    written, images, start = 0, 0, time.perf_counter()
    for label in labels:
        epoch = 0 if label == teacher_cache.ALL_EPOCHS else int(label)
        stored = files.read_epoch(epoch)
        if stored is not None and bool(stored["filled"].all()):
            continue
        features, filled, teacher_dtype = None, torch.zeros(n, dtype=torch.bool), torch.float32
        with torch.no_grad():
            for batch in _epoch_batches(trainer, epoch, every_image=label == teacher_cache.ALL_EPOCHS):
                image = batch["img"].to(trainer.device)
                with trainer.precision.autocast():
                    rows = trainer.teacher.image_features(image)
                if features is None:
                    features = torch.zeros(n, rows.shape[1], dtype=dtype)
                teacher_dtype = rows.dtype
                index = torch.as_tensor(batch["index"], dtype=torch.long)
                features[index] = rows.to("cpu", dtype)
                filled[index] = True
                images += len(index)
        if features is None:
            raise UserError("the training loader yielded no batch: nothing to cache")
        files.write_epoch(epoch, features, filled, dtype, teacher_dtype)
        written += 1
    seconds = time.perf_counter() - start
    sizes = [Path(files.epoch_path(0 if lab == teacher_cache.ALL_EPOCHS else int(lab))).stat().st_size
             for lab in labels]
    return {"epoch_files": len(labels), "written": written, "images": images, "seconds": seconds,
            "bytes_per_image_epoch": sum(sizes) / (len(labels) * n)}


def main(argv: Optional[Sequence[str]] = None) -> int:
    import train

    parser = train.build_parser()
    parser.add_argument("--epochs", type=int, default=None, help="epochs to cache (default OPTIM.MAX_EPOCH)")
    args = parser.parse_args(argv)
    try:
        return _run(args, train)
    except UserError as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace, train) -> int:
    from dassl.engine import build_trainer
    from dassl.utils import set_random_seed

    cfg = train.setup_cfg(args)
    folder = cfg.TRAINER.PROMPTKD.TEACHER_CACHE_DIR
    if not folder:
        raise UserError(f"{teacher_cache.DIR_KEY} is empty: name the folder to write the teacher cache into")
    dtype = teacher_cache.store_dtype(cfg)
    epochs = args.epochs if args.epochs is not None else int(cfg.OPTIM.MAX_EPOCH)
    cfg.defrost()
    cfg.TRAINER.PROMPTKD.TEACHER_CACHE_DIR = ""  # this trainer computes the features
    cfg.TRAINER.PROMPTKD.CACHE_TEACHER_FEATURES = False
    cfg.TRAINER.PROMPTKD.CACHE_TEACHER_LOGITS = False
    cfg.freeze()
    if cfg.SEED >= 0:
        set_random_seed(cfg.SEED)
    trainer = build_trainer(cfg)
    trainer.set_model_mode("eval")
    stats = fill_cache(trainer, folder, epochs, dtype)
    print(f"Teacher cache {folder}: {stats['epoch_files']} epoch file(s), {stats['written']} written "
          f"({stats['images']} images in {stats['seconds']:.1f} s), {stats['bytes_per_image_epoch']:.0f} bytes per "
          f"image-epoch")
    return 0


if __name__ == "__main__":
    sys.exit(main())
