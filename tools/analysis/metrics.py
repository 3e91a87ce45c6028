"""Separability of labelled feature rows, their effective rank, and one-vs-rest ANOVA F-scores.

Every function takes a feature matrix ``X`` (N rows x D dimensions, one row per image) and, where
needed, integer class labels ``y`` (N). Distances are Euclidean on the rows as given; the caller
decides the geometry (``tools/analyze.py`` L2-normalises the student's features first, so there the
Euclidean distance is a monotone function of the cosine similarity the student is scored with).
All numbers are deterministic functions of (X, y): no random sampling anywhere.

- intra-class distance: mean over rows of ``||x_i - mu_{y_i}||``, with ``mu_c`` the mean row of class c;
- inter-class distance: mean over unordered pairs of distinct classes of ``||mu_c - mu_c'||``;
- intra/inter ratio: intra / inter. Small when classes gather tightly around points that lie far apart
  (the picture of AME's Theorem 1: classes gather at h_c and are separated by a margin zeta > 0);
- silhouette: the mean over rows of ``(b_i - a_i) / max(a_i, b_i)`` (scikit-learn's ``silhouette_score``),
  a_i the mean distance to the other rows of its class, b_i the smallest mean distance to another
  class's rows; in [-1, 1], higher is better separated;
- k-NN accuracy: leave-one-out k-nearest-neighbour classification, in percent: each row is given the
  majority class among its k nearest other rows (a tie goes to the tied class met first when the
  neighbours are taken nearest first);
- effective rank (Roy & Vetterli, 2007): ``exp(-sum_i p_i log p_i)`` with ``p_i = s_i / sum_j s_j``, the
  singular values s of the mean-centred X normalised to sum to one: the exponential of the entropy of
  the normalised singular values. Between 1 (one direction carries everything) and min(N, D) (all
  directions equal); 0 for rows that are all the same;
- F-score map: for class c and dimension d, the one-way ANOVA F statistic of dimension d between the
  rows of class c and all other rows (scikit-learn's ``f_classif`` on the binary labels ``y == c``):
  between-group variance over within-group variance. High when the dimension tells class c apart
  (the class-feature relevance of AME's Fig. 3). A dimension that is constant gets 0;
- class-vector accuracy: the percentage of rows whose most cosine-similar class vector, among a given
  set of classes, is their own class's (how the student is scored against the teacher's class vectors).
"""
from __future__ import annotations

import math
import warnings
from typing import Dict, Optional, Tuple

import numpy as np


def l2_normalize(features: np.ndarray) -> np.ndarray:
    """Rows divided by their L2 norm (zero rows stay zero)."""
    features = np.asarray(features, dtype=np.float64)
    norms = np.linalg.norm(features, axis=1, keepdims=True)
    return features / np.maximum(norms, 1e-12)


def class_centroids(features: np.ndarray, labels: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """``(classes, centroids)``: the sorted distinct labels and the mean row of each."""
    features = np.asarray(features, dtype=np.float64)
    labels = np.asarray(labels)
    classes = np.unique(labels)
    centroids = np.stack([features[labels == c].mean(axis=0) for c in classes]) if len(classes) else \
        np.zeros((0, features.shape[1]))
    return classes, centroids


def distance_ratio(features: np.ndarray, labels: np.ndarray) -> Dict[str, Optional[float]]:
    """``{"intra", "inter", "ratio"}``: mean distance to the own class mean, mean distance between class
    means, and their ratio (``inter`` and ``ratio`` are None with fewer than two classes; ``ratio`` is
    None when every class mean coincides)."""
    features = np.asarray(features, dtype=np.float64)
    labels = np.asarray(labels)
    if len(labels) == 0:
        return {"intra": None, "inter": None, "ratio": None}
    classes, centroids = class_centroids(features, labels)
    index = np.searchsorted(classes, labels)
    intra = float(np.linalg.norm(features - centroids[index], axis=1).mean())
    if len(classes) < 2:
        return {"intra": intra, "inter": None, "ratio": None}
    upper = np.triu_indices(len(classes), k=1)
    gaps = np.linalg.norm(centroids[:, None, :] - centroids[None, :, :], axis=-1)[upper]
    inter = float(gaps.mean())
    return {"intra": intra, "inter": inter, "ratio": intra / inter if inter > 0 else None}


def silhouette(features: np.ndarray, labels: np.ndarray) -> Optional[float]:
    """Mean silhouette coefficient (Euclidean), or None when undefined (fewer than 2 classes, or as
    many classes as rows)."""
    from sklearn.metrics import silhouette_score

    labels = np.asarray(labels)
    n_classes = len(np.unique(labels))
    if n_classes < 2 or n_classes > len(labels) - 1:
        return None
    return float(silhouette_score(np.asarray(features, dtype=np.float64), labels, metric="euclidean"))


def nearest_neighbours(features: np.ndarray, k: int) -> np.ndarray:
    """Indices (N x k) of each row's k nearest other rows, nearest first (the row itself excluded)."""
    from sklearn.neighbors import NearestNeighbors

    features = np.asarray(features, dtype=np.float64)
    n = len(features)
    search = NearestNeighbors(n_neighbors=min(k + 1, n), algorithm="brute").fit(features)
    _, found = search.kneighbors(features)
    rows = np.empty((n, k), dtype=np.int64)
    for i in range(n):
        others = found[i][found[i] != i]  # the row itself is usually first, but not always (duplicates)
        rows[i] = others[:k]
    return rows


def knn_accuracy(features: np.ndarray, labels: np.ndarray, k: int = 5) -> Optional[float]:
    """Leave-one-out k-NN accuracy in percent (k is capped at N - 1); None with fewer than two rows."""
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    labels = np.asarray(labels)
    n = len(labels)
    if n < 2:
        return None
    k = min(k, n - 1)
    neighbours = nearest_neighbours(features, k)
    correct = 0
    for i in range(n):
        votes: Dict[int, int] = {}
        for j in neighbours[i]:  # nearest first: dict order is the order classes are met
            votes[int(labels[j])] = votes.get(int(labels[j]), 0) + 1
        top = max(votes.values())
        predicted = next(c for c, count in votes.items() if count == top)
        correct += predicted == int(labels[i])
    return 100.0 * correct / n


def effective_rank(features: np.ndarray) -> float:
    """exp of the entropy of the normalised singular values of the mean-centred rows (0 if all equal)."""
    features = np.asarray(features, dtype=np.float64)
    if len(features) == 0:
        return 0.0
    centred = features - features.mean(axis=0, keepdims=True)
    singular = np.linalg.svd(centred, compute_uv=False)
    total = singular.sum()
    if total <= 1e-12 * max(1.0, float(np.abs(features).max())):
        return 0.0
    p = singular[singular > 0] / total
    return float(math.exp(-(p * np.log(p)).sum()))


def fscore_matrix(features: np.ndarray, labels: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """One-vs-rest ANOVA F-scores, a row per class in ``classes``, a column per dimension.

    A class absent from ``labels`` (or present alone) has a row of zeros; constant dimensions score 0.
    """
    from sklearn.feature_selection import f_classif

    features = np.asarray(features, dtype=np.float64)
    labels = np.asarray(labels)
    scores = np.zeros((len(classes), features.shape[1]), dtype=np.float64)
    for row, c in enumerate(classes):
        member = labels == c
        if not member.any() or member.all():
            continue
        with warnings.catch_warnings():  # constant dimensions: a warning and a division by zero, scored 0 below
            warnings.simplefilter("ignore", RuntimeWarning)
            warnings.simplefilter("ignore", UserWarning)
            f_values, _ = f_classif(features, member.astype(np.int64))
        scores[row] = np.nan_to_num(f_values, nan=0.0, posinf=0.0, neginf=0.0)
    return scores


def class_vector_accuracy(features: np.ndarray, labels: np.ndarray, class_vectors: np.ndarray,
                          class_ids: np.ndarray) -> Optional[float]:
    """Percent of rows whose most cosine-similar vector among ``class_vectors[class_ids]`` is their own class's.

    Ties go to the first of ``class_ids``; None for no rows.
    """
    labels = np.asarray(labels)
    if len(labels) == 0:
        return None
    class_ids = np.asarray(class_ids)
    similarity = l2_normalize(features) @ l2_normalize(np.asarray(class_vectors)[class_ids]).T
    predicted = class_ids[np.argmax(similarity, axis=1)]
    return float(100.0 * np.mean(predicted == labels))


def separability(features: np.ndarray, labels: np.ndarray, k: int = 5) -> Dict[str, object]:
    """Every number above for one set of rows: counts, distances and their ratio, silhouette, k-NN, rank."""
    features = np.asarray(features, dtype=np.float64)
    labels = np.asarray(labels)
    ratio = distance_ratio(features, labels)
    return {
        "n_images": int(len(labels)),
        "n_classes": int(len(np.unique(labels))),
        "dim": int(features.shape[1]),
        "intra_class_distance": ratio["intra"],
        "inter_class_distance": ratio["inter"],
        "intra_inter_ratio": ratio["ratio"],
        "silhouette": silhouette(features, labels),
        "knn_accuracy": knn_accuracy(features, labels, k),
        "knn_k": int(min(k, max(len(labels) - 1, 0))),
        "effective_rank": effective_rank(features),
    }
