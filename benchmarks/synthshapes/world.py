"""The SynthShapes world: shapes, colours and sizes, and a vectorised 32x32 renderer.

Every image shows one shape of one colour and one size, roughly centred (+-0.5 px) and rotated within
+-15 degrees, on a random background. Rendering is done for a whole batch at once with torch
(`grid_sample` of pre-drawn shape masks), so contrastive pretraining can draw fresh images each step.
Downstream domain shifts (noise + low contrast, textured backgrounds) live in `apply_shift`.
"""
from __future__ import annotations

import math
from functools import lru_cache

import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw

IMAGE_SIZE = 32
SHAPES = ("circle", "triangle", "square", "star", "cross",
          "ring", "heart", "arrow", "moon", "bar")   # chosen to stay distinct at 32 px (no hexagon vs circle)
COLORS = {  # name -> RGB in [0, 1]
    "red": (0.86, 0.10, 0.10),
    "orange": (0.98, 0.55, 0.05),
    "yellow": (0.96, 0.90, 0.12),
    "green": (0.15, 0.70, 0.20),
    "cyan": (0.10, 0.85, 0.90),
    "blue": (0.12, 0.25, 0.90),
    "purple": (0.55, 0.15, 0.75),
    "pink": (0.98, 0.50, 0.75),
    "brown": (0.50, 0.30, 0.12),
    "white": (0.97, 0.97, 0.97),
}
COLOR_NAMES = tuple(COLORS)
SIZES = ("small", "medium", "large")
SIZE_RADIUS_PX = (7.0, 10.0, 13.0)   # outer radius of the shape in pixels, per size
SHIFTS = ("clean", "noisy", "textured")
# Pose variation. Measured with a supervised probe of the student's image tower (200 steps): centred and
# upright shapes reach 98% shape accuracy, +-15 degrees and +-0.5 px 75%, +-30 degrees 60%, +-2 px 56%.
# A ViT with 8-pixel patches learns translation and rotation slowly, and pretraining must fit in minutes.
MAX_ROTATION_DEG = 15.0   # shapes are rotated uniformly within +-this many degrees
MAX_JITTER_PX = 0.5       # and shifted by up to this many pixels from the centre
# The 'noisy' shift scales contrast by NOISY_CONTRAST around the image's mean grey and adds Gaussian pixel
# noise of std NOISY_SIGMA. Chosen so that the frozen features still hold the classes (a linear probe on
# them reaches 81% / 87% for student / teacher over the 40 classes) while zero-shot matching breaks down
# (31% / 43%): room for a prompt-tuned teacher to teach. The earlier setting (contrast 0.4, std 0.2)
# destroyed the information itself (probes 50% / 55%), so no student could learn it from any teacher.
NOISY_CONTRAST = 0.25
NOISY_SIGMA = 0.05

_TEMPLATE_PX = 96          # resolution of the pre-drawn masks
_TEMPLATE_EXTENT = 0.9     # shapes fill a circle of this radius in the mask's [-1, 1] frame


def _regular_polygon(n: int, radius: float, phase: float) -> list[tuple[float, float]]:
    return [(radius * math.cos(phase + 2 * math.pi * k / n), radius * math.sin(phase + 2 * math.pi * k / n))
            for k in range(n)]


def _shape_outline(shape: str) -> list[list[tuple[float, float]]]:
    """Polygons (in the [-1, 1] frame, y down) whose union is the shape; used by `shape_masks`."""
    r = _TEMPLATE_EXTENT
    up = -math.pi / 2
    if shape == "triangle":
        return [_regular_polygon(3, r, up)]
    if shape == "square":
        return [_regular_polygon(4, r, math.pi / 4)]
    if shape == "bar":
        a, b = 0.28 * r, r
        return [[(-b, -a), (b, -a), (b, a), (-b, a)]]
    if shape == "star":
        outer, inner = _regular_polygon(5, r, up), _regular_polygon(5, 0.4 * r, up + math.pi / 5)
        return [[p for pair in zip(outer, inner) for p in pair]]
    if shape == "cross":
        a, b = 0.3 * r, r
        return [[(-a, -b), (a, -b), (a, b), (-a, b)], [(-b, -a), (b, -a), (b, a), (-b, a)]]
    if shape == "arrow":
        return [[(-r, -0.22 * r), (0.1 * r, -0.22 * r), (0.1 * r, -0.65 * r), (r, 0.0),
                 (0.1 * r, 0.65 * r), (0.1 * r, 0.22 * r), (-r, 0.22 * r)]]
    raise KeyError(shape)


def _draw_mask(shape: str) -> Image.Image:
    size = _TEMPLATE_PX
    img = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(img)

    def to_px(x: float, y: float) -> tuple[float, float]:
        return ((x + 1) * size / 2, (y + 1) * size / 2)

    r = _TEMPLATE_EXTENT
    if shape == "circle":
        draw.ellipse([to_px(-r, -r), to_px(r, r)], fill=255)
    elif shape == "ring":
        draw.ellipse([to_px(-r, -r), to_px(r, r)], fill=255)
        draw.ellipse([to_px(-0.5 * r, -0.5 * r), to_px(0.5 * r, 0.5 * r)], fill=0)
    elif shape == "moon":
        draw.ellipse([to_px(-r, -r), to_px(r, r)], fill=255)
        draw.ellipse([to_px(-0.25 * r, -1.05 * r), to_px(1.35 * r, 0.75 * r)], fill=0)
    elif shape == "heart":
        lobe = 0.48 * r
        for cx in (-0.45 * r, 0.45 * r):
            draw.ellipse([to_px(cx - lobe, -0.45 * r - lobe), to_px(cx + lobe, -0.45 * r + lobe)], fill=255)
        draw.polygon([to_px(-0.9 * r, -0.3 * r), to_px(0.9 * r, -0.3 * r), to_px(0.0, 0.95 * r)], fill=255)
    else:
        for poly in _shape_outline(shape):
            draw.polygon([to_px(x, y) for x, y in poly], fill=255)
    return img


@lru_cache(maxsize=1)
def shape_masks() -> torch.Tensor:
    """(len(SHAPES), 1, 96, 96) float masks in [0, 1], one per shape, centred in a [-1, 1] frame."""
    import numpy as np
    arrays = [np.asarray(_draw_mask(s), dtype=np.float32) / 255.0 for s in SHAPES]
    return torch.from_numpy(np.stack(arrays))[:, None]


def _uniform(gen: torch.Generator, *shape: int, low: float = 0.0, high: float = 1.0) -> torch.Tensor:
    return low + (high - low) * torch.rand(*shape, generator=gen)


def _plain_background(n: int, gen: torch.Generator, avoid: torch.Tensor) -> torch.Tensor:
    """Random two-colour linear gradients, re-drawn where too close to the shape colour `avoid` (n, 3)."""
    base = _uniform(gen, n, 3)
    for _ in range(4):  # a few redraws make clashes rare without a data-dependent loop length
        clash = (base - avoid).norm(dim=1) < 0.45
        base = torch.where(clash[:, None], _uniform(gen, n, 3), base)
    other = (base + _uniform(gen, n, 3, low=-0.2, high=0.2)).clamp(0, 1)
    angle = _uniform(gen, n, high=2 * math.pi)
    coords = torch.linspace(-1, 1, IMAGE_SIZE)
    yy, xx = torch.meshgrid(coords, coords, indexing="ij")
    ramp = (xx[None] * torch.cos(angle)[:, None, None] + yy[None] * torch.sin(angle)[:, None, None] + 1.5) / 3
    return base[:, :, None, None] + (other - base)[:, :, None, None] * ramp[:, None]


def _textured_background(n: int, gen: torch.Generator) -> torch.Tensor:
    """Stripes, checkerboards or blotches in two random colours (the 'textured' downstream shift)."""
    c0, c1 = _uniform(gen, n, 3), _uniform(gen, n, 3)
    coords = torch.linspace(-1, 1, IMAGE_SIZE)
    yy, xx = torch.meshgrid(coords, coords, indexing="ij")
    angle = _uniform(gen, n, 1, 1, high=math.pi)
    freq = _uniform(gen, n, 1, 1, low=4.0, high=12.0)
    phase = _uniform(gen, n, 1, 1, high=2 * math.pi)
    u = xx * torch.cos(angle) + yy * torch.sin(angle)
    v = -xx * torch.sin(angle) + yy * torch.cos(angle)
    stripes = 0.5 + 0.5 * torch.sin(freq * u + phase)
    checker = (torch.sign(torch.sin(freq * u + phase) * torch.sin(freq * v)) + 1) / 2
    blotch = F.interpolate(torch.rand(n, 1, 6, 6, generator=gen), size=IMAGE_SIZE, mode="bicubic",
                           align_corners=False)[:, 0].clamp(0, 1)
    kind = torch.randint(0, 3, (n, 1, 1), generator=gen)
    pattern = torch.where(kind == 0, stripes, torch.where(kind == 1, checker, blotch))
    return c0[:, :, None, None] + (c1 - c0)[:, :, None, None] * pattern[:, None]


def render(shape_idx: torch.Tensor, color_idx: torch.Tensor, size_idx: torch.Tensor,
           gen: torch.Generator, background: str = "plain") -> torch.Tensor:
    """Render a batch: indices are int tensors of equal length; returns (n, 3, 32, 32) floats in [0, 1]."""
    n = shape_idx.numel()
    if not (color_idx.numel() == size_idx.numel() == n):
        raise ValueError("shape_idx, color_idx and size_idx must have the same length")
    masks = shape_masks()[shape_idx]
    radius = torch.tensor(SIZE_RADIUS_PX)[size_idx] / (IMAGE_SIZE / 2)      # in the image's [-1, 1] frame
    scale = radius / _TEMPLATE_EXTENT                                          # template units -> image units
    max_theta = math.radians(MAX_ROTATION_DEG)
    theta = _uniform(gen, n, low=-max_theta, high=max_theta)
    shift = _uniform(gen, n, 2, low=-MAX_JITTER_PX, high=MAX_JITTER_PX) / (IMAGE_SIZE / 2)
    cos, sin = torch.cos(theta) / scale, torch.sin(theta) / scale
    # affine_grid maps output coords to template coords: p_t = R(-theta) (p - t) / s
    mat = torch.stack([torch.stack([cos, sin], 1), torch.stack([-sin, cos], 1)], 1)     # (n, 2, 2)
    offset = -(mat @ shift[:, :, None])
    grid = F.affine_grid(torch.cat([mat, offset], 2), [n, 1, IMAGE_SIZE, IMAGE_SIZE], align_corners=False)
    alpha = F.grid_sample(masks, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    colour = torch.tensor([COLORS[c] for c in COLOR_NAMES])[color_idx]
    colour = (colour + _uniform(gen, n, 3, low=-0.06, high=0.06)).clamp(0, 1)
    if background == "plain":
        bg = _plain_background(n, gen, colour)
    elif background == "textured":
        bg = _textured_background(n, gen)
    else:
        raise ValueError(f"unknown background {background!r} (expected 'plain' or 'textured')")
    img = bg * (1 - alpha) + colour[:, :, None, None] * alpha
    img = img + 0.02 * torch.randn(img.shape, generator=gen)
    return img.clamp(0, 1)


def shift_settings() -> dict:
    """The downstream shifts' parameters: part of the datasets' cache key, so changing one re-renders."""
    return {"noisy_contrast": NOISY_CONTRAST, "noisy_sigma": NOISY_SIGMA}


def apply_shift(images: torch.Tensor, shift: str, gen: torch.Generator) -> torch.Tensor:
    """Downstream domain shift: 'clean' (none), 'noisy' (very low contrast + noise), 'textured' (mild noise).

    The textured shift's backgrounds are drawn by `render(..., background='textured')`; this adds its noise.
    """
    if shift == "clean":
        return images
    if shift == "noisy":
        grey = images.mean(dim=(1, 2, 3), keepdim=True)
        low_contrast = grey + NOISY_CONTRAST * (images - grey)
        return (low_contrast + NOISY_SIGMA * torch.randn(images.shape, generator=gen)).clamp(0, 1)
    if shift == "textured":
        return (images + 0.06 * torch.randn(images.shape, generator=gen)).clamp(0, 1)
    raise ValueError(f"unknown shift {shift!r} (expected one of {SHIFTS})")


def render_shifted(shape_idx: torch.Tensor, color_idx: torch.Tensor, size_idx: torch.Tensor,
                   gen: torch.Generator, shift: str = "clean") -> torch.Tensor:
    """Render a batch with a downstream domain shift applied (see `apply_shift`)."""
    background = "textured" if shift == "textured" else "plain"
    return apply_shift(render(shape_idx, color_idx, size_idx, gen, background), shift, gen)


def sample_attributes(n: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Uniformly random (shape, colour, size) indices for n images."""
    return (torch.randint(0, len(SHAPES), (n,), generator=gen),
            torch.randint(0, len(COLOR_NAMES), (n,), generator=gen),
            torch.randint(0, len(SIZES), (n,), generator=gen))


def to_uint8_images(images: torch.Tensor) -> list[Image.Image]:
    """(n, 3, H, W) floats in [0, 1] -> PIL RGB images."""
    arr = (images.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    return [Image.fromarray(a, mode="RGB") for a in arr]
