"""The analysis figures: t-SNE panels, F-score heat maps, accuracy against shots. Files only, no display.

- t-SNE (AME's Fig. 4): scikit-learn's exact settings below, with a fixed ``random_state``, so the same
  features give the same picture; several runs side by side on shared axis limits, one colour per class
  (the same class has the same colour in every panel), circles for base classes and triangles for new ones;
- F-score map (AME's Fig. 3): a row per class, a column per feature dimension, colour
  ``log10(1 + F)`` (F spans orders of magnitude) on one colour scale shared by every panel; under
  base2novel a dashed line separates the base classes' rows (above) from the new ones' (below);
- shot curves (AME's Fig. 5): Base, New and HM against the number of shots, a line per trainer through
  the means over seeds and a band of +- one standard deviation (an error bar where a trainer has a
  single number of shots), one colour per trainer in every row; untrained references (zero-shot) are
  horizontal dashed lines at their first point.
"""
from __future__ import annotations

from typing import Dict, List, Sequence, Tuple

import numpy as np

TSNE_SEED = 0
TSNE_MAX_PERPLEXITY = 30.0
TSNE_EXACT_MAX_POINTS = 1000  # up to this many points the exact gradient (faster there), Barnes-Hut beyond
LEGEND_MAX_CLASSES = 20  # beyond this the class legend would hide the plot: base/new markers only
TICK_MAX_CLASSES = 60  # beyond this the F-score rows are not labelled


def _pyplot():
    """matplotlib's pyplot on the file-only Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def tsne_perplexity(n_points: int) -> float:
    """scikit-learn's default perplexity (30), lowered to (n - 1) / 3 for small sets (it must stay < n)."""
    return float(min(TSNE_MAX_PERPLEXITY, max(1.0, (n_points - 1) / 3.0)))


def tsne_embedding(rows: np.ndarray, seed: int = TSNE_SEED) -> np.ndarray:
    """2-D t-SNE of ``rows`` (PCA initialisation, automatic learning rate, fixed ``random_state``; the
    exact method up to ``TSNE_EXACT_MAX_POINTS`` rows, Barnes-Hut beyond).

    Fewer than 3 rows cannot be embedded: they are all placed at the origin.
    """
    from sklearn.manifold import TSNE

    rows = np.asarray(rows, dtype=np.float64)
    if len(rows) < 3:
        return np.zeros((len(rows), 2))
    method = "exact" if len(rows) <= TSNE_EXACT_MAX_POINTS else "barnes_hut"
    tsne = TSNE(n_components=2, perplexity=tsne_perplexity(len(rows)), init="pca", learning_rate="auto",
                method=method, random_state=seed)
    return tsne.fit_transform(rows)


def subsample(n_points: int, max_points: int, seed: int = TSNE_SEED) -> np.ndarray:
    """Sorted indices of at most ``max_points`` of ``n_points`` rows, drawn without replacement (fixed seed)."""
    if max_points <= 0 or n_points <= max_points:
        return np.arange(n_points)
    return np.sort(np.random.default_rng(seed).choice(n_points, size=max_points, replace=False))


def class_colours(n_classes: int) -> np.ndarray:
    """One RGBA colour per class, neighbouring labels far apart in colour.

    Up to 10 classes: tab10; up to 20: tab20's dark shades first, then its light ones; beyond: turbo
    sampled at golden-ratio steps (so classes i and i + 1 never get similar hues).
    """
    plt = _pyplot()
    if n_classes <= 10:
        return plt.get_cmap("tab10")(np.arange(n_classes))
    if n_classes <= 20:
        order = np.concatenate([np.arange(0, 20, 2), np.arange(1, 20, 2)])[:n_classes]
        return plt.get_cmap("tab20")(order)
    positions = 0.05 + 0.9 * np.mod(np.arange(n_classes) * 0.6180339887, 1.0)
    return plt.get_cmap("turbo")(positions)


def _shared_limits(embeddings: Sequence[np.ndarray]) -> Tuple[Tuple[float, float], Tuple[float, float]]:
    points = np.concatenate([e for e in embeddings if len(e)]) if any(len(e) for e in embeddings) else np.zeros((1, 2))
    low, high = points.min(axis=0), points.max(axis=0)
    pad = np.maximum((high - low) * 0.05, 1e-3)
    return (low[0] - pad[0], high[0] + pad[0]), (low[1] - pad[1], high[1] + pad[1])


def plot_tsne(panels: Sequence[dict], classnames: Sequence[str], path: str) -> str:
    """Side-by-side t-SNE panels; each panel is ``{"title", "embedding" [N, 2], "labels", "is_new"}``.

    ``classnames`` are all the classes in label order (they fix the colours); the legend names the
    classes that appear in some panel.
    """
    plt = _pyplot()
    from matplotlib.lines import Line2D

    colours = class_colours(len(classnames))
    present = np.unique(np.concatenate([np.asarray(p["labels"], dtype=np.int64) for p in panels]))
    n_classes = len(present)
    xlim, ylim = _shared_limits([p["embedding"] for p in panels])
    with_class_legend = n_classes <= LEGEND_MAX_CLASSES
    width = 5.0 * len(panels) + (2.6 if with_class_legend else 0.4)
    height = 5.4 if with_class_legend else 5.9
    fig, axes = plt.subplots(1, len(panels), figsize=(width, height), squeeze=False)
    for ax, panel in zip(axes[0], panels):
        embedding, labels, is_new = panel["embedding"], np.asarray(panel["labels"]), np.asarray(panel["is_new"])
        small = len(labels) < 2000
        for new, marker in ((False, "o"), (True, "^")):
            mask = is_new == new
            if mask.any():
                ax.scatter(embedding[mask, 0], embedding[mask, 1], c=colours[labels[mask]], marker=marker,
                           s=22 if small else 7, linewidths=0.3 if small else 0.0, edgecolors="black",
                           alpha=0.85)
        ax.set_xlim(*xlim)
        ax.set_ylim(*ylim)
        ax.set_title(panel["title"], fontsize=10)
        ax.set_xticks([])
        ax.set_yticks([])
    kinds = [Line2D([], [], marker=m, linestyle="", color="grey", markeredgecolor="black", label=text)
             for m, text in (("o", "base class"), ("^", "new class"))]
    if with_class_legend:
        handles = [Line2D([], [], marker="s", linestyle="", color=colours[i], label=classnames[i])
                   for i in present] + kinds
        axes[0, -1].legend(handles=handles, loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=8,
                           frameon=False, title="class")
        fig.tight_layout()
    else:
        fig.legend(handles=kinds, loc="lower center", ncol=2, fontsize=9, frameon=False,
                   title=f"{n_classes} classes, one colour each (too many to name)", title_fontsize=9)
        fig.tight_layout(rect=(0, 0.08, 1, 1))
    fig.savefig(path, dpi=130)
    plt.close(fig)
    return path


def plot_fscore(panels: Sequence[dict], classnames: Sequence[str], path: str) -> str:
    """Stacked F-score heat maps; each panel is ``{"title", "scores" [C, D], "num_base"}``: a row per name
    in ``classnames``, the first ``num_base`` rows base classes (None: no base / new split)."""
    plt = _pyplot()

    n_classes = len(classnames)
    shown = [np.log10(1.0 + np.asarray(p["scores"], dtype=np.float64)) for p in panels]
    vmax = max(float(s.max()) for s in shown) if shown else 1.0
    vmax = vmax if vmax > 0 else 1.0
    row_height = 0.16 if n_classes <= TICK_MAX_CLASSES else 0.05
    panel_height = max(2.4, row_height * n_classes + 1.2)
    fig, axes = plt.subplots(len(panels), 1, figsize=(12.0, panel_height * len(panels)), squeeze=False)
    for ax, panel, values in zip(axes[:, 0], panels, shown):
        image = ax.imshow(values, aspect="auto", interpolation="nearest", cmap="viridis", vmin=0.0, vmax=vmax)
        ax.set_title(panel["title"], fontsize=10)
        ax.set_xlabel(f"feature dimension (0..{values.shape[1] - 1})", fontsize=9)
        if n_classes <= TICK_MAX_CLASSES:
            ax.set_yticks(np.arange(n_classes))
            ax.set_yticklabels(classnames, fontsize=max(4.5, min(8.0, 300.0 / max(n_classes, 1))))
        else:
            ax.set_ylabel(f"{n_classes} classes (label order)", fontsize=9)
        num_base = panel.get("num_base")
        if num_base is not None and 0 < num_base < n_classes:
            ax.axhline(num_base - 0.5, color="white", linestyle="--", linewidth=1.2)
            ax.text(1.005, 1.0 - num_base / (2 * n_classes), "base", transform=ax.transAxes, rotation=90,
                    va="center", fontsize=8)
            ax.text(1.005, (n_classes - num_base) / (2 * n_classes), "new", transform=ax.transAxes, rotation=90,
                    va="center", fontsize=8)
        colourbar = fig.colorbar(image, ax=ax, pad=0.03, fraction=0.03)
        colourbar.set_label("log10(1 + F)", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)
    return path


def shot_tick_label(shots: int) -> str:
    """"full" for the whole training split (0 or fewer shots), else the number."""
    return "full" if shots <= 0 else str(shots)


def shot_order(shots: int) -> Tuple[int, int]:
    """Sort key: numbers ascending, "full" last."""
    return (1, 0) if shots <= 0 else (0, shots)


def plot_shot_curves(curves_by_dataset: Dict[str, List], path: str, which: str = "best") -> str:
    """A row per dataset, columns Base / New / HM; ``curves_by_dataset`` maps a dataset to its
    :class:`~tools.analysis.shots.ShotCurve` list."""
    plt = _pyplot()

    metrics = (("base", "Base"), ("new", "New"), ("hm", "HM"))
    datasets = list(curves_by_dataset)
    fig, axes = plt.subplots(len(datasets), 3, figsize=(13.0, 3.6 * len(datasets) + 0.8), squeeze=False)
    palette = plt.get_cmap("tab10")
    curve_labels = list(dict.fromkeys(c.label for curves in curves_by_dataset.values() for c in curves))
    colour_of = {label: palette(index % 10) for index, label in enumerate(curve_labels)}  # same in every row
    labels: Dict[str, object] = {}
    for row, dataset in enumerate(datasets):
        curves = curves_by_dataset[dataset]
        trained = [c for c in curves if not c.reference]
        shots = sorted({p.shots for c in trained for p in c.points}, key=shot_order)
        position = {s: i for i, s in enumerate(shots)}
        for column, (key, title) in enumerate(metrics):
            ax = axes[row, column]
            for curve in curves:
                colour = colour_of[curve.label]
                means = np.array([getattr(p, key) for p in curve.points])
                stds = np.array([getattr(p, f"{key}_std") for p in curve.points])
                if curve.reference:
                    handle = ax.axhline(means[0], color=colour, linestyle="--", linewidth=1.2, label=curve.label)
                    ax.axhspan(means[0] - stds[0], means[0] + stds[0], color=colour, alpha=0.08, linewidth=0)
                else:
                    x = np.array([position[p.shots] for p in curve.points])
                    (handle,) = ax.plot(x, means, marker="o", color=colour, linewidth=1.6, label=curve.label)
                    if len(x) > 1:
                        ax.fill_between(x, means - stds, means + stds, color=colour, alpha=0.18, linewidth=0)
                    else:  # a band needs two points: one point shows its +- std as an error bar, side by side
                        dodge = 0.08 * (trained.index(curve) - (len(trained) - 1) / 2)
                        handle.set_xdata(x + dodge)
                        ax.errorbar(x + dodge, means, yerr=stds, color=colour, capsize=4, linewidth=1.2)
                labels.setdefault(curve.label, handle)
            ax.set_xticks(np.arange(len(shots)))
            ax.set_xticklabels([shot_tick_label(s) for s in shots])
            if len(shots) == 1:
                ax.set_xlim(-0.5, 0.5)
            ax.set_xlabel("shots per class")
            ax.grid(alpha=0.3)
            ax.set_title(f"{dataset}: {title}" if len(datasets) > 1 else title, fontsize=11)
            if column == 0:
                ax.set_ylabel("accuracy (%)")
    fig.legend(list(labels.values()), list(labels), loc="lower center", ncol=min(4, max(1, len(labels))),
               fontsize=9, frameon=False)
    which_text = {"best": "best-on-base checkpoint", "last": "last epoch"}.get(which, which)
    fig.suptitle(f"Accuracy against shots ({which_text}; mean over seeds, band +- 1 std)", fontsize=12)
    rows_of_legend = (len(labels) + 3) // 4
    fig.tight_layout(rect=(0, 0.04 + 0.03 * rows_of_legend / max(1, len(datasets)), 1, 0.96))
    fig.savefig(path, dpi=130)
    plt.close(fig)
    return path
