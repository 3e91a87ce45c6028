"""Check that a dataset folder is readable by our readers, and print what they see.

    python tools/check_dataset.py oxford_pets --root /path/to/data
    python tools/check_dataset.py all --root /path/to/data --decode 0

Reads the dataset with the same reader training uses (``NUM_SHOTS 0``, so no few-shot cache is
written; a missing split JSON is rebuilt from the raw annotations where the dataset allows it),
prints the class and image counts, and tries to decode a sample of the images. On a problem it
prints the exact message (which file or folder is wrong) and exits with status 1.
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import List, Optional, Sequence

if __package__ in (None, ""):  # run as a script: make the repo root importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def resolve_dataset_name(name: str) -> str:
    """Registered name from a registered name or a config key (``oxford_pets`` -> ``OxfordPets``)."""
    from datasets import DATASET_KEYS
    from dassl.utils import UserError

    if name in DATASET_KEYS:
        return name
    for registered, key in DATASET_KEYS.items():
        if key == name:
            return registered
    raise UserError(f"Unknown dataset {name!r}; choose one of: "
                    + ", ".join(f"{reg} ({key})" for reg, key in DATASET_KEYS.items()))


def sample_evenly(items: Sequence, count: Optional[int]) -> list:
    """All items when `count` is None, else up to `count` items spread over the list."""
    if count is None or len(items) <= count:
        return list(items)
    if count <= 0:
        return []
    step = len(items) / count
    return [items[int(i * step)] for i in range(count)]


def undecodable(paths: Sequence[str]) -> List[str]:
    """Paths among `paths` that PIL cannot decode, each with the reason."""
    from PIL import Image

    bad = []
    for path in paths:
        try:
            with Image.open(path) as img:
                img.convert("RGB")
        except Exception as exc:  # noqa: BLE001 - report any decoding failure with its file
            bad.append(f"{path} ({type(exc).__name__}: {exc})")
    return bad


def check_dataset(name: str, root: str, decode: Optional[int] = 50, seed: int = 1) -> dict:
    """Read `name` under `root`; return counts. Raises UserError describing the first problem."""
    import datasets  # noqa: F401  (registers the readers)
    from dassl.config import get_cfg_default
    from dassl.data.datasets import DATASET_REGISTRY
    from dassl.utils import UserError

    registered = resolve_dataset_name(name)
    cfg = get_cfg_default()
    cfg.merge_from_list(["DATASET.ROOT", root, "DATASET.NAME", registered, "DATASET.NUM_SHOTS", 0, "SEED", seed])
    dataset = DATASET_REGISTRY.get(registered)(cfg)
    splits = {"train_x": dataset.train_x, "val": dataset.val or [], "test": dataset.test}
    bad = []
    for items in splits.values():
        bad += undecodable([item.impath for item in sample_evenly(items, decode)])
    if bad:
        shown = "\n  ".join(bad[:5])
        raise UserError(f"{registered}: {len(bad)} image(s) cannot be decoded, e.g.:\n  {shown}")
    return {
        "dataset": registered,
        "folder": dataset.dataset_dir,
        "classes": dataset.num_classes,
        "base": len(dataset.base_classnames),
        "new": len(dataset.new_classnames),
        **{split: len(items) for split, items in splits.items()},
        "first_classnames": dataset.classnames[:5],
    }


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description="Check a dataset folder with our readers.")
    parser.add_argument("name", help="registered name (OxfordPets), config key (oxford_pets) or 'all'")
    parser.add_argument("--root", required=True, help="your DATASET.ROOT folder")
    parser.add_argument("--decode", default="50",
                        help="images to decode per split: a number, 'all', or 0 to skip (default 50)")
    parser.add_argument("--seed", type=int, default=1, help="seed for a split rebuilt from raw annotations")
    args = parser.parse_args(argv)

    from dassl.utils import UserError

    decode = None if args.decode == "all" else int(args.decode)
    if args.name == "all":
        from datasets import DATASET_KEYS

        names = [n for n, key in DATASET_KEYS.items()
                 if os.path.isdir(os.path.join(os.path.expanduser(args.root), _folder_of(n)))]
        if not names:
            print(f"Problem: no dataset folders found under {args.root}. See DATASETS.md.")
            return 1
    else:
        names = [args.name]
    status = 0
    for name in names:
        try:
            info = check_dataset(name, args.root, decode=decode, seed=args.seed)
        except UserError as exc:
            print(f"Problem: {exc}")
            status = 1
            continue
        print(f"OK {info['dataset']} at {info['folder']}: {info['classes']} classes "
              f"({info['base']} base / {info['new']} new); train_x {info['train_x']}, val {info['val']}, "
              f"test {info['test']}; first classes: {', '.join(info['first_classnames'])}")
    return status


def _folder_of(registered: str) -> str:
    from dassl.data.datasets import DATASET_REGISTRY

    return DATASET_REGISTRY.get(registered).dataset_dir


if __name__ == "__main__":
    sys.exit(main())
