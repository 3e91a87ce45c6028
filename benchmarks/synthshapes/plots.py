"""Curves of the benchmark: HM against omega, and H(M) (and max p) over training, as CSV and PNG.

The PNGs are drawn with matplotlib when it is installed, otherwise with a small Pillow line plot
(Pillow is already a dependency), so no plotting library is required. The CSVs are always written.
"""
from __future__ import annotations

import csv
import math
import re
from pathlib import Path
from typing import Sequence

_PRINT_LINE = re.compile(r"epoch \[(\d+)/(\d+)\] batch \[(\d+)/(\d+)\].*?\bH ([-+\d.eE]+) .*?max_p ([-+\d.eE]+)")


def read_entropy_curve(log_path: str | Path) -> list[tuple[int, float, float]]:
    """(iteration, H(M), max p) at every training print of a PromptKD_RSM log.txt (current values)."""
    points = []
    for line in Path(log_path).read_text(errors="replace").splitlines():
        m = _PRINT_LINE.search(line)
        if m:
            epoch, _, batch, per_epoch, h, max_p = m.groups()
            points.append(((int(epoch) - 1) * int(per_epoch) + int(batch), float(h), float(max_p)))
    return points


def write_csv(path: str | Path, header: Sequence[str], rows: Sequence[Sequence]) -> Path:
    path = Path(path)
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    return path


Series = tuple[str, list[float], list[float], list[float] | None]   # label, x, y, optional error bars


def line_plot(path: str | Path, series: Sequence[Series], title: str, xlabel: str, ylabel: str,
              log_x: bool = False) -> str:
    """Write a PNG line plot; returns which backend drew it ('matplotlib' or 'pillow')."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        _pillow_plot(path, series, title, xlabel, ylabel, log_x)
        return "pillow"
    fig, ax = plt.subplots(figsize=(6, 4))
    for label, xs, ys, err in series:
        ax.errorbar(xs, ys, yerr=err, marker="o", capsize=3, label=label)
    if log_x:
        ax.set_xscale("symlog", linthresh=1)
    ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return "matplotlib"


def two_panel_plot(path: str | Path, panels: tuple[Sequence[Series], Sequence[Series]], title: str, xlabel: str,
                   ylabels: tuple[str, str]) -> str:
    """Two line plots over the same x, one above the other, in one PNG (e.g. H(M) and max p over training);
    returns the backend that drew it."""
    path = Path(path)
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        from PIL import Image
        parts = [path.with_name(f"{path.stem}.part{i}.png") for i in range(2)]
        for part, series, ylabel in zip(parts, panels, ylabels):
            _pillow_plot(part, series, f"{title}: {ylabel}", xlabel, ylabel, False)
        images = [Image.open(part) for part in parts]
        out = Image.new("RGB", (images[0].width, sum(im.height for im in images)), "white")
        out.paste(images[0], (0, 0))
        out.paste(images[1], (0, images[0].height))
        out.save(path)
        for part in parts:
            part.unlink()
        return "pillow"
    fig, axes = plt.subplots(2, 1, figsize=(7, 6), sharex=True)
    for ax, series, ylabel in zip(axes, panels, ylabels):
        for label, xs, ys, _ in series:
            ax.plot(xs, ys, label=label)
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
    axes[0].set_title(title, fontsize=9)
    axes[0].legend(fontsize=7, ncol=2)
    axes[1].set_xlabel(xlabel)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return "matplotlib"


_COLOURS = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
            (140, 86, 75), (227, 119, 194), (127, 127, 127)]


def _pillow_plot(path, series, title, xlabel, ylabel, log_x) -> None:
    from PIL import Image, ImageDraw
    width, height, left, right, top, bottom = 720, 480, 70, 150, 40, 50
    img = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(img)
    fx = (lambda v: math.log10(1 + v)) if log_x else (lambda v: v)
    xs = [fx(x) for _, sx, _, _ in series for x in sx]
    ys = [y + s * (e or 0) for _, _, sy, err in series for i, y in enumerate(sy)
          for e in [err[i] if err else 0] for s in (-1, 1)]
    if not xs:
        xs, ys = [0.0, 1.0], [0.0, 1.0]
    x0, x1 = min(xs), max(xs) if max(xs) > min(xs) else min(xs) + 1
    y0, y1 = min(ys), max(ys) if max(ys) > min(ys) else min(ys) + 1
    pad = 0.05 * (y1 - y0)
    y0, y1 = y0 - pad, y1 + pad

    def to_px(x, y):
        px = left + (fx(x) - x0) / (x1 - x0) * (width - left - right)
        py = height - bottom - (y - y0) / (y1 - y0) * (height - top - bottom)
        return px, py

    draw.rectangle([left, top, width - right, height - bottom], outline="black")
    for i in range(5):
        yv = y0 + (y1 - y0) * i / 4
        _, py = to_px(0 if not log_x else 0, yv)
        draw.line([left - 4, py, left, py], fill="black")
        draw.text((5, py - 6), f"{yv:.3g}", fill="black")
    ticks = sorted({x for _, sx, _, _ in series for x in sx})
    if len(ticks) > 8:
        ticks = [ticks[int(i * (len(ticks) - 1) / 7)] for i in range(8)]
    for xv in ticks:
        px, _ = to_px(xv, y0)
        draw.line([px, height - bottom, px, height - bottom + 4], fill="black")
        draw.text((px - 8, height - bottom + 6), f"{xv:g}", fill="black")
    draw.text((width / 2 - 60, 10), title, fill="black")
    draw.text((width / 2 - 40, height - 20), xlabel, fill="black")
    draw.text((5, top - 25), ylabel, fill="black")
    for k, (label, sx, sy, err) in enumerate(series):
        colour = _COLOURS[k % len(_COLOURS)]
        pts = [to_px(x, y) for x, y in zip(sx, sy)]
        if len(pts) > 1:
            draw.line(pts, fill=colour, width=2)
        for i, (px, py) in enumerate(pts):
            draw.ellipse([px - 3, py - 3, px + 3, py + 3], fill=colour)
            if err:
                _, lo = to_px(sx[i], sy[i] - err[i])
                _, hi = to_px(sx[i], sy[i] + err[i])
                draw.line([px, lo, px, hi], fill=colour)
        draw.line([width - right + 10, top + 15 * k + 6, width - right + 30, top + 15 * k + 6], fill=colour, width=2)
        draw.text((width - right + 35, top + 15 * k), label[:18], fill="black")
    img.save(path)
