"""Write a SynthShapes downstream dataset in the CoOp on-disk layout, with a split JSON.

Layout (under the data root, next to the real datasets):

    <root>/synth_shapes_<variant>/
        images/<class_folder>/<split>_<index>.png      e.g. images/red_triangle/train_0007.png
        split_zhou_SynthShapes.json                    {"train"|"val"|"test": [[relpath, label, classname]]}
        synthshapes.json                               what was written (variant, seed, counts, version)

The 40 classes are a fixed permutation of the 100 colour x shape combinations (identical for every
variant); labels follow that permutation, so base = the first 20, new = the last 20.
"""
from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import torch

from benchmarks.synthshapes.captions import class_name
from benchmarks.synthshapes.world import (COLOR_NAMES, SHAPES, SHIFTS, SIZES, render_shifted, shift_settings,
                                          to_uint8_images)

WORLD_VERSION = 2   # bump on any change to how world.py renders images (pose, colours, shapes)
SPLIT_FILE = "split_zhou_SynthShapes.json"
META_FILE = "synthshapes.json"
CLASS_PERMUTATION_SEED = 1234
NUM_CLASSES = 40
DEFAULT_COUNTS = {"train": 64, "val": 16, "test": 100}
VARIANT_SEEDS = {"clean": 11, "noisy": 22, "textured": 33}


def dataset_dir_name(variant: str) -> str:
    """Folder of a variant under the data root ('synth_shapes_noisy', ...)."""
    if variant not in SHIFTS:
        raise ValueError(f"unknown SynthShapes variant {variant!r} (expected one of {SHIFTS})")
    return f"synth_shapes_{variant}"


def downstream_classes(num_classes: int = NUM_CLASSES) -> list[tuple[int, int]]:
    """(colour index, shape index) of each downstream label, from a fixed permutation of all 100 pairs."""
    pairs = [(c, s) for s in range(len(SHAPES)) for c in range(len(COLOR_NAMES))]
    order = torch.randperm(len(pairs), generator=torch.Generator().manual_seed(CLASS_PERMUTATION_SEED))
    if not 2 <= num_classes <= len(pairs):
        raise ValueError(f"num_classes must be in [2, {len(pairs)}], got {num_classes}")
    return [pairs[i] for i in order[:num_classes].tolist()]


def downstream_classnames(num_classes: int = NUM_CLASSES) -> list[str]:
    """Class names by label ('red triangle', ...)."""
    return [class_name(COLOR_NAMES[c], SHAPES[s]) for c, s in downstream_classes(num_classes)]


def _expected_meta(variant: str, counts: dict, num_classes: int, seed: int) -> dict:
    return {"world_version": WORLD_VERSION, "shifts": shift_settings(), "variant": variant, "counts": counts,
            "num_classes": num_classes, "seed": seed}


def data_key(counts: dict, num_classes: int) -> dict:
    """Everything a data root's contents depend on (hashed into its folder name by the benchmark)."""
    return {"counts": counts, "n": num_classes, "world_version": WORLD_VERSION, "shifts": shift_settings()}


def _clear_previous(dataset_dir: Path) -> None:
    """Remove an older rendering (images, split, few-shot caches) before writing a new one.

    Only folders this writer made (they hold its metadata file) are cleared; anything else stops.
    """
    if not dataset_dir.exists() or not any(dataset_dir.iterdir()):
        return
    if not (dataset_dir / META_FILE).is_file():
        raise FileExistsError(f"{dataset_dir} exists but was not written by the SynthShapes writer "
                              f"(no {META_FILE}); move it away or choose another data root")
    for name in ("images", "split_fewshot"):
        shutil.rmtree(dataset_dir / name, ignore_errors=True)
    for name in (SPLIT_FILE, META_FILE):
        (dataset_dir / name).unlink(missing_ok=True)


def write_dataset(root: str | Path, variant: str, counts: dict | None = None,
                  num_classes: int = NUM_CLASSES, seed: int | None = None, force: bool = False) -> Path:
    """Render and write one variant under `root`; returns its dataset folder.

    Re-uses an existing folder whose `synthshapes.json` matches the request (unless `force`).
    """
    counts = dict(DEFAULT_COUNTS if counts is None else counts)
    seed = VARIANT_SEEDS[variant] if seed is None and variant in VARIANT_SEEDS else (seed or 0)
    dataset_dir = Path(root).expanduser().resolve() / dataset_dir_name(variant)
    meta = _expected_meta(variant, counts, num_classes, seed)
    meta_path = dataset_dir / META_FILE
    if not force and meta_path.is_file() and (dataset_dir / SPLIT_FILE).is_file():
        if json.loads(meta_path.read_text()) == meta:
            return dataset_dir
    _clear_previous(dataset_dir)
    image_dir = dataset_dir / "images"
    image_dir.mkdir(parents=True, exist_ok=True)
    gen = torch.Generator().manual_seed(seed)
    split: dict[str, list] = {name: [] for name in ("train", "val", "test")}
    for label, (c, s) in enumerate(downstream_classes(num_classes)):
        name = class_name(COLOR_NAMES[c], SHAPES[s])
        folder = image_dir / name.replace(" ", "_")
        folder.mkdir(exist_ok=True)
        for split_name in ("train", "val", "test"):
            n = int(counts[split_name])
            sizes = torch.randint(0, len(SIZES), (n,), generator=gen)
            images = render_shifted(torch.full((n,), s), torch.full((n,), c), sizes, gen, variant)
            for i, img in enumerate(to_uint8_images(images)):
                rel = f"{folder.name}/{split_name}_{i:04d}.png"
                img.save(image_dir / rel)
                split[split_name].append([rel, label, name])
    (dataset_dir / SPLIT_FILE).write_text(json.dumps(split, indent=4, separators=(",", ": ")))
    meta_path.write_text(json.dumps(meta, indent=2))
    return dataset_dir


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Write SynthShapes downstream datasets (CoOp layout).")
    parser.add_argument("root", help="data root (DATASET.ROOT)")
    parser.add_argument("--variants", nargs="+", default=["noisy", "textured"], choices=SHIFTS)
    parser.add_argument("--force", action="store_true", help="re-render even if a matching copy exists")
    args = parser.parse_args(argv)
    for variant in args.variants:
        print(f"SynthShapes {variant}: {write_dataset(args.root, variant, force=args.force)}")


if __name__ == "__main__":
    main()
