"""The numbers of ``analysis.json`` for one run's :class:`~tools.analysis.features.FeatureSet`.

Geometry: the backbone and projected features are L2-normalised before any number is computed (the
student is scored by cosine similarity, so only their directions matter); the RSM manifold rows are
used as they are (the RSM entropy is computed from their raw values). The metrics are defined in
``tools/analysis/metrics.py``; each is computed per group of images: ``all``, and under base2novel
``base`` (base classes' images) and ``new`` (new classes' images), each with its own classes only.
"""
from __future__ import annotations

from typing import Dict

import numpy as np

from tools.analysis import metrics
from tools.analysis.features import FeatureSet

NORMALISED_SPACES = ("backbone", "projected")


def space_rows(features: FeatureSet, space: str) -> np.ndarray:
    """The rows of ``space`` in the geometry the analysis uses (see the module docstring)."""
    rows = features.spaces()[space]
    return metrics.l2_normalize(rows) if space in NORMALISED_SPACES else np.asarray(rows, dtype=np.float64)


def class_ids_of_group(features: FeatureSet, group: str) -> np.ndarray:
    """The classes a group's images are scored against: base, new, or all classes."""
    n_classes, n_base = len(features.classnames), features.num_base
    if group == "base":
        return np.arange(n_base)
    if group == "new":
        return np.arange(n_base, n_classes)
    return np.arange(n_classes)


def class_vector_accuracies(features: FeatureSet) -> Dict[str, float]:
    """Per group, the accuracy of the projected features against the teacher's class vectors of the
    group's classes (base: PromptKD's Base accuracy; new: its New accuracy; all: against every class)."""
    result = {}
    for group, mask in features.groups().items():
        result[group] = metrics.class_vector_accuracy(features.projected[mask], features.labels[mask],
                                                      features.class_vectors, class_ids_of_group(features, group))
    return result


def analyse(features: FeatureSet, knn_k: int = 5, progress=print) -> Dict[str, object]:
    """``{"class_vector_accuracy": {group: %}, "separability": {space: {group: numbers}}}``."""
    separability: Dict[str, Dict[str, object]] = {}
    for space in features.spaces():
        rows = space_rows(features, space)
        progress(f"Separability of the {space} features ({rows.shape[0]} x {rows.shape[1]})")
        separability[space] = {group: metrics.separability(rows[mask], features.labels[mask], knn_k)
                               for group, mask in features.groups().items()}
    return {"class_vector_accuracy": class_vector_accuracies(features), "separability": separability}
