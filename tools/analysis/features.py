"""The student's image features on a run's evaluation images, and their file ``features.npz``.

What is extracted, per evaluation image, with the run's trainer in eval mode and its precision:
- ``backbone``: the student CLIP's image features (``student.encode(image)[0]``), unnormalised;
- ``projected``: those features after the student's projector (``student.encode(image)[1]``), unnormalised;
  the student is scored with their L2-normalised version against the teacher's class vectors;
- ``manifold`` (RSM runs only): the image rows of the RSM manifold, ``rsm.project_images`` of the image
  feature the run's RSM term uses (``TRAINER.RSM.IMAGE_FEATURE``); ``manifold_text`` are the text rows
  (``rsm.project_texts`` of the teacher's class vectors), one per class.

Labels are global class indices (label order of ``dataset.classnames``). Under base2novel (and base_only) the trainer's
``val`` split holds the base classes' test images labelled 0..nb-1 and ``test`` the new classes' test images
labelled 0..nn-1; the new labels are shifted by nb (the number of base classes) and every image carries
``is_new``. Under cross, val and test are the same images of all classes, read once, all marked base.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np
import torch

from dassl.data.datasets import num_base_classes
from datasets.protocols import BASE_NEW_DISTILL_PROTOCOLS
from dassl.utils import UserError

# --split: which evaluation images are read.
SPLITS = ("all", "val", "test")
SPACES = ("backbone", "projected", "manifold")

_ARRAYS = ("backbone", "projected", "manifold", "manifold_text", "class_vectors", "labels", "is_new", "classnames")
_META = ("label", "trainer", "dataset", "protocol", "split", "checkpoint_epoch", "num_base")


@dataclass
class FeatureSet:
    """Features of one run's evaluation images (see the module docstring), as saved in ``features.npz``."""

    backbone: np.ndarray  # [N, D_s]
    projected: np.ndarray  # [N, D_t]
    labels: np.ndarray  # [N] global class index
    is_new: np.ndarray  # [N] bool: a new (unseen in base2novel) class
    classnames: List[str]  # [C] label order
    class_vectors: np.ndarray  # [C, D_t] the teacher's normalised class vectors
    manifold: Optional[np.ndarray] = None  # [N, R] RSM runs only
    manifold_text: Optional[np.ndarray] = None  # [C, R] RSM runs only
    # label, trainer, dataset, protocol, split, checkpoint_epoch, num_base (all classes under cross)
    meta: Dict[str, Any] = field(default_factory=dict)

    @property
    def num_base(self) -> int:
        """The number of base classes: classes ``0..num_base-1`` are base, the rest new."""
        return int(self.meta.get("num_base", len(self.classnames)))

    def spaces(self) -> Dict[str, np.ndarray]:
        """The feature matrices present, by name (``manifold`` only for RSM runs)."""
        found = {"backbone": self.backbone, "projected": self.projected}
        if self.manifold is not None:
            found["manifold"] = self.manifold
        return found

    def groups(self) -> Dict[str, np.ndarray]:
        """Row masks by name: ``all``, and for base2novel ``base`` / ``new`` (those present)."""
        masks = {"all": np.ones(len(self.labels), dtype=bool)}
        if self.meta.get("protocol") in BASE_NEW_DISTILL_PROTOCOLS:
            if (~self.is_new).any():
                masks["base"] = ~self.is_new
            if self.is_new.any():
                masks["new"] = self.is_new.copy()
        return masks

    def save(self, path: str) -> str:
        """Write every array and the metadata to ``path`` (a ``.npz``; readable without pickle)."""
        arrays = {"backbone": self.backbone, "projected": self.projected, "labels": self.labels,
                  "is_new": self.is_new, "classnames": np.asarray(self.classnames, dtype=str),
                  "class_vectors": self.class_vectors}
        if self.manifold is not None:
            arrays["manifold"] = self.manifold
            arrays["manifold_text"] = self.manifold_text
        for key in _META:
            if key in self.meta and self.meta[key] is not None:
                arrays[key] = np.asarray(self.meta[key])
        np.savez_compressed(path, **arrays)
        return path

    @classmethod
    def load(cls, path: str) -> "FeatureSet":
        """Read a file written by :meth:`save`."""
        with np.load(path, allow_pickle=False) as data:
            get = {key: data[key] for key in data.files}
        meta = {key: get[key].item() for key in _META if key in get}
        return cls(backbone=get["backbone"], projected=get["projected"], labels=get["labels"],
                   is_new=get["is_new"].astype(bool), classnames=[str(c) for c in get["classnames"]],
                   class_vectors=get["class_vectors"], manifold=get.get("manifold"),
                   manifold_text=get.get("manifold_text"), meta=meta)


def evaluation_parts(trainer: Any, split: str) -> List[Tuple[str, Any, int, bool]]:
    """``(name, loader, label offset, is_new)`` for each loader of ``split`` (see the module docstring)."""
    if split not in SPLITS:
        raise UserError(f"--split must be one of {list(SPLITS)}, got {split!r}")
    n_classes = len(trainer.dm.dataset.classnames)
    if trainer.protocol not in BASE_NEW_DISTILL_PROTOCOLS:
        loader = trainer.val_loader if split == "val" and trainer.val_loader is not None else trainer.test_loader
        return [("all classes", loader, 0, False)]
    if trainer.val_loader is None:
        raise UserError("the base2novel run has no val split (the base classes' test images); check the dataset")
    n_base = num_base_classes(n_classes)
    parts = []
    if split in ("all", "val"):
        parts.append(("base classes", trainer.val_loader, 0, False))
    if split in ("all", "test"):
        parts.append(("new classes", trainer.test_loader, n_base, True))
    return parts


def rsm_image_feature(trainer: Any) -> Optional[str]:
    """Which image feature feeds the run's RSM projections ("projected" / "backbone"), None without RSM."""
    term = getattr(trainer, "rsm_term", None)
    if term is None or getattr(trainer.student, "rsm", None) is None:
        return None
    return term.image_feature


def extract_features(trainer: Any, split: str = "all", label: str = "",
                     progress: Callable[[str], None] = print) -> FeatureSet:
    """Run the loaded student over the evaluation images of ``split`` and collect every feature."""
    student = trainer.student
    feature_for_rsm = rsm_image_feature(trainer)
    classnames = [str(c) for c in trainer.dm.dataset.classnames]
    n_classes = len(classnames)
    trainer.set_model_mode("eval")
    columns: Dict[str, List[np.ndarray]] = {"backbone": [], "projected": [], "manifold": [], "labels": [],
                                            "is_new": []}
    with torch.no_grad():
        for name, loader, offset, is_new in evaluation_parts(trainer, split):
            n_batches = len(loader)
            every = max(1, n_batches // 10)
            progress(f"Extracting features of the {name} ({len(loader.dataset)} images, {n_batches} batches)")
            for index, batch in enumerate(loader):
                image = batch["img"].to(trainer.device)
                with trainer.precision.autocast():
                    backbone, projected = student.encode(image)
                    manifold = None
                    if feature_for_rsm is not None:
                        source = projected if feature_for_rsm == "projected" else backbone
                        manifold = student.rsm.project_images(source)
                labels = batch["label"].cpu().numpy().astype(np.int64) + offset
                if labels.size and (labels.min() < 0 or labels.max() >= n_classes):
                    raise UserError(f"the {name}' labels fall outside 0..{n_classes - 1}: the run's dataset "
                                    "does not match its class list")
                columns["backbone"].append(backbone.float().cpu().numpy())
                columns["projected"].append(projected.float().cpu().numpy())
                if manifold is not None:
                    columns["manifold"].append(manifold.float().cpu().numpy())
                columns["labels"].append(labels)
                columns["is_new"].append(np.full(len(labels), is_new, dtype=bool))
                if (index + 1) % every == 0 or index + 1 == n_batches:
                    progress(f"  batch {index + 1}/{n_batches}")
        class_vectors = trainer.text_features.float()
        manifold_text = None
        if feature_for_rsm is not None:
            with trainer.precision.autocast():
                manifold_text = student.rsm.project_texts(trainer.text_features).float().cpu().numpy()
    cfg = trainer.cfg
    num_base = num_base_classes(n_classes) if trainer.protocol in BASE_NEW_DISTILL_PROTOCOLS else n_classes
    meta = {"label": label or cfg.TRAINER.NAME, "trainer": cfg.TRAINER.NAME, "dataset": cfg.DATASET.NAME,
            "protocol": trainer.protocol, "split": split, "checkpoint_epoch": int(getattr(trainer, "weights_epoch", 0)),
            "num_base": num_base}
    return FeatureSet(
        backbone=np.concatenate(columns["backbone"]), projected=np.concatenate(columns["projected"]),
        labels=np.concatenate(columns["labels"]), is_new=np.concatenate(columns["is_new"]),
        classnames=classnames, class_vectors=class_vectors.cpu().numpy(),
        manifold=np.concatenate(columns["manifold"]) if columns["manifold"] else None,
        manifold_text=manifold_text, meta=meta)
