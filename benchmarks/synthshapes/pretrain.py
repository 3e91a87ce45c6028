"""Contrastive pretraining of the tiny SynthShapes CLIPs on freshly rendered captioned images.

Our own loop on our own `clip` model: symmetric InfoNCE with a learnable logit scale (init 1/0.07,
clamped at 100), fused AdamW (betas 0.9/0.98, weight decay 0.1 except embeddings, gains, biases and
the scale; lr 1e-3 for the teacher, 2e-3 for the smaller student), linear warm-up then cosine. Every
step draws its batch from a generator seeded by (seed, step), so a resumed run sees exactly the
batches it would have seen.

Each step renders `batch_size` images but encodes only `batch_size / images_per_caption` captions:
every caption is drawn twice (two renderings of the same description), which halves the text tower's
cost at no loss in accuracy (measured). bf16 autocast is used only on CPUs with native bf16.

Writes into the cache folder (see `cache.py`):
  <role>-<key>.pt      the OpenAI-layout float32 state dict (loadable by `clip.load_state_dict`)
  <role>-<key>.json    settings, timings and the 100-way zero-shot accuracy
  <role>-<key>.partial.pt   resumable training state while a run is unfinished

    python -m benchmarks.synthshapes.pretrain teacher --steps 400
"""
from __future__ import annotations

import argparse
import math
import os
import re
import time
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

from benchmarks.synthshapes import captions as cap
from benchmarks.synthshapes.cache import cache_dir, config_key, write_json_atomic
from benchmarks.synthshapes.dataset_writer import WORLD_VERSION
from benchmarks.synthshapes.tiny_clip import SPECS, init_state_dict
from benchmarks.synthshapes.world import COLOR_NAMES, render_shifted, sample_attributes

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
MAX_LOGIT_SCALE = math.log(100.0)
DEFAULT_STEPS = {"teacher": 400, "student": 600}
DEFAULT_LR = {"teacher": 1e-3, "student": 2e-3}   # 2e-3 diverges early for the wider teacher


@dataclass
class PretrainSettings:
    """Everything that determines a pretrained checkpoint (hashed into its file name)."""
    role: str
    steps: int
    batch_size: int = 256
    lr: float | None = None          # None: DEFAULT_LR[role]
    images_per_caption: int = 2
    noise_aug: float = 0.15          # per-image pixel noise, std drawn uniformly in [0, noise_aug] (see _batch)
    weight_decay: float = 0.1
    warmup: int = 50
    seed: int = 0
    bf16: bool = False   # bf16 autocast; pays off only on CPUs with native bf16 (see `bf16_is_fast`)

    def __post_init__(self) -> None:
        if self.lr is None:
            self.lr = DEFAULT_LR.get(self.role, 1e-3)
        if self.images_per_caption < 1 or self.batch_size % self.images_per_caption:
            raise ValueError(f"batch_size {self.batch_size} must be a multiple of images_per_caption "
                             f"{self.images_per_caption}")

    def as_dict(self) -> dict:
        return {**self.__dict__, "spec": SPECS[self.role].as_dict(), "world_version": WORLD_VERSION,
                "captions": list(cap.CAPTION_TEMPLATES)}


def bf16_is_fast() -> bool:
    """True on CPUs with native bf16 matrix units (avx512_bf16 / AMX); on plain AVX2, bf16 is ~5x slower."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return bool(re.search(r"\b(avx512_bf16|amx_bf16)\b", flags))


def normalize_images(images: torch.Tensor) -> torch.Tensor:
    """[0, 1] images -> CLIP-normalised tensors."""
    mean = torch.tensor(CLIP_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD).view(1, 3, 1, 1)
    return (images - mean) / std


def _param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        is_embedding = "embedding" in name
        if p.ndim < 2 or is_embedding or name == "logit_scale":
            no_decay.append(p)
        else:
            decay.append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def _lr_at(step: int, settings: PretrainSettings) -> float:
    if step < settings.warmup:
        return settings.lr * (step + 1) / settings.warmup
    progress = (step - settings.warmup) / max(1, settings.steps - settings.warmup)
    return 0.5 * settings.lr * (1 + math.cos(math.pi * min(1.0, progress)))


@lru_cache(maxsize=4)
def caption_token_ids(context_length: int) -> torch.Tensor:
    """Token ids of every caption of `captions.all_captions()` (tokenised once per process)."""
    import clip
    return clip.tokenize([row[-1] for row in cap.all_captions()], context_length=context_length)


def _batch(step: int, settings: PretrainSettings, caption_ids: torch.Tensor):
    """(images, caption token ids, matches) of one step; each caption is rendered images_per_caption times."""
    gen = torch.Generator().manual_seed(settings.seed * 1_000_003 + step)
    n_captions = settings.batch_size // settings.images_per_caption
    shape, color, size = sample_attributes(n_captions, gen)
    template = torch.randint(0, len(cap.CAPTION_TEMPLATES), (n_captions,), generator=gen)
    repeat = settings.images_per_caption
    img_shape, img_color, img_size = (t.repeat_interleave(repeat) for t in (shape, color, size))
    images = render_shifted(img_shape, img_color, img_size, gen, "clean")
    if settings.noise_aug > 0:
        # Without it the wider teacher passes more pixel noise through its patch embedding than the
        # student and ends up *less* robust to the downstream noisy shift, so it has nothing to teach.
        sigma = settings.noise_aug * torch.rand(images.shape[0], 1, 1, 1, generator=gen)
        images = (images + sigma * torch.randn(images.shape, generator=gen)).clamp(0, 1)
    images = normalize_images(images)
    rows = cap.caption_index(template, shape, color, size)
    matches = caption_matches(img_shape, img_color, img_size, template, shape, color, size)
    return images, caption_ids[rows], matches


def caption_matches(shape: torch.Tensor, color: torch.Tensor, size: torch.Tensor, template: torch.Tensor,
                    cap_shape: torch.Tensor | None = None, cap_color: torch.Tensor | None = None,
                    cap_size: torch.Tensor | None = None) -> torch.Tensor:
    """(n_images, n_captions) bool: caption j truly describes image i (same shape and colour; same size if
    the caption's template names one). Without cap_* the captions are the images' own (square matrix).

    Counting every true caption as a positive, instead of only the paired one, removes the false
    negatives that a batch of 256 over 100 colour x shape pairs is full of.
    """
    if cap_shape is None:
        cap_shape, cap_color, cap_size = shape, color, size
    names_size = torch.tensor(cap.TEMPLATE_MENTIONS_SIZE)[template]
    same = (shape[:, None] == cap_shape[None, :]) & (color[:, None] == cap_color[None, :])
    return same & (~names_size[None, :] | (size[:, None] == cap_size[None, :]))


def contrastive_loss(model, images: torch.Tensor, text_ids: torch.Tensor, matches: torch.Tensor) -> torch.Tensor:
    """Symmetric InfoNCE with soft targets spread over all true captions / all described images.

    `matches` is (n_images, n_captions); every image and every caption has at least one positive.
    """
    img = F.normalize(model.encode_image(images).float(), dim=-1)
    txt = F.normalize(model.encode_text(text_ids).float(), dim=-1)
    logits = model.logit_scale.exp().float() * img @ txt.t()
    pos = matches.float()
    image_to_text = F.cross_entropy(logits, pos / pos.sum(1, keepdim=True))
    text_to_image = F.cross_entropy(logits.t(), (pos / pos.sum(0, keepdim=True)).t())
    return 0.5 * (image_to_text + text_to_image)


@torch.no_grad()
def zero_shot_accuracy(model, per_class: int = 20, seed: int = 999, shift: str = "clean",
                       batch_size: int = 500) -> float:
    """100-way colour x shape zero-shot accuracy (%) on fresh images, prompt 'a photo of a {}.'."""
    import clip
    model.eval()
    device = model.logit_scale.device
    names = cap.zero_shot_classes()
    ids = clip.tokenize([cap.ZERO_SHOT_TEMPLATE.format(n) for n in names],
                        context_length=model.context_length).to(device)
    text = F.normalize(model.encode_text(ids).float(), dim=-1)
    labels = torch.arange(len(names)).repeat_interleave(per_class)
    shapes, colors = labels // len(COLOR_NAMES), labels % len(COLOR_NAMES)
    gen = torch.Generator().manual_seed(seed)
    correct = 0
    for start in range(0, len(labels), batch_size):
        sl = slice(start, start + batch_size)
        sizes = torch.randint(0, 3, (labels[sl].numel(),), generator=gen)
        images = normalize_images(render_shifted(shapes[sl], colors[sl], sizes, gen, shift)).to(device)
        feats = F.normalize(model.encode_image(images).float(), dim=-1)
        correct += (feats @ text.t()).argmax(1).cpu().eq(labels[sl]).sum().item()
    return 100.0 * correct / len(labels)


def checkpoint_paths(settings: PretrainSettings, cache: Path) -> tuple[Path, Path, Path]:
    """(state dict, metadata, partial-state) paths of this configuration in the cache."""
    stem = f"{settings.role}-{config_key(settings.as_dict())}"
    return cache / f"{stem}.pt", cache / f"{stem}.json", cache / f"{stem}.partial.pt"


def _save_atomic(obj, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def pretrain(settings: PretrainSettings, cache: str | os.PathLike | None = None, save_every: int = 50,
             print_every: int = 25, log: Callable[[str], None] = print, device: str = "cpu",
             eval_every: int = 0, eval_per_class: int = 20,
             grow_threads: tuple[int, int] | None = None) -> tuple[Path, dict]:
    """Train (or resume, or reuse) one tiny CLIP; returns (state dict path, metadata).

    `eval_every` > 0 also logs the 100-way zero-shot accuracy every that many steps (slow on CPU).
    `grow_threads` = (step, n): use n torch threads from that step on (when a pretraining beside this one
    is expected to have finished). Tied to a step, not to the other run's end, because the thread count
    changes float summation order: the same schedule gives the same weights, whatever the timing.
    """
    import json

    import clip
    if settings.role not in SPECS:
        raise ValueError(f"unknown role {settings.role!r} (expected one of {sorted(SPECS)})")
    folder = cache_dir(cache)
    final, meta_path, partial = checkpoint_paths(settings, folder)
    if final.is_file() and meta_path.is_file():
        meta = json.loads(meta_path.read_text())
        log(f"[pretrain] {settings.role}: reusing {final} (zero-shot {meta['zero_shot_acc']:.1f}%)")
        return final, meta

    torch.manual_seed(settings.seed)
    spec = SPECS[settings.role]
    model = clip.build_model(init_state_dict(spec, settings.seed)).to(device)
    model.train()
    optimizer = torch.optim.AdamW(_param_groups(model, settings.weight_decay), lr=settings.lr,
                                  betas=(0.9, 0.98), eps=1e-6, fused=True)
    curve: list[tuple[int, float]] = []
    step, elapsed = 0, 0.0
    if partial.is_file():
        state = torch.load(partial, map_location="cpu", weights_only=True)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        step, elapsed = int(state["step"]), float(state["elapsed"])
        log(f"[pretrain] {settings.role}: resuming from step {step} ({partial})")
    caption_ids = caption_token_ids(spec.context_length)
    log(f"[pretrain] {settings.role}: {sum(p.numel() for p in model.parameters()) / 1e6:.2f}M params, "
        f"{settings.steps} steps of batch {settings.batch_size}, {torch.get_num_threads()} threads")
    start = time.time() - elapsed
    while step < settings.steps:
        if grow_threads and step >= grow_threads[0] and torch.get_num_threads() != grow_threads[1]:
            torch.set_num_threads(grow_threads[1])
            log(f"[pretrain] {settings.role} step {step}: now {grow_threads[1]} threads")
        for group in optimizer.param_groups:
            group["lr"] = _lr_at(step, settings)
        images, text_ids, matches = (t.to(device) for t in _batch(step, settings, caption_ids))
        with torch.autocast(torch.device(device).type, dtype=torch.bfloat16, enabled=settings.bf16):
            loss = contrastive_loss(model, images, text_ids, matches)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, MAX_LOGIT_SCALE)
        step += 1
        if step % print_every == 0 or step == settings.steps:
            spent = time.time() - start
            eta = spent / step * (settings.steps - step) if step else 0.0
            log(f"[pretrain] {settings.role} step {step}/{settings.steps} loss {loss.item():.3f} "
                f"scale {model.logit_scale.exp().item():.1f} lr {_lr_at(step - 1, settings):.2e} "
                f"elapsed {spent:.0f}s eta {eta:.0f}s")
        if eval_every and step % eval_every == 0 and step < settings.steps:
            curve.append((step, zero_shot_accuracy(model, per_class=eval_per_class)))
            model.train()
            log(f"[pretrain] {settings.role} step {step}: 100-way zero-shot {curve[-1][1]:.1f}%")
        if step % save_every == 0 and step < settings.steps:
            _save_atomic({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "step": step,
                          "elapsed": time.time() - start}, partial)
    train_seconds = time.time() - start
    acc = zero_shot_accuracy(model, per_class=eval_per_class)
    state_dict = {k: v.detach().float().cpu().contiguous() for k, v in model.state_dict().items()}
    _save_atomic(state_dict, final)
    meta = {"settings": settings.as_dict(), "zero_shot_acc": acc, "train_seconds": round(train_seconds, 1),
            "path": str(final), "device": device, "threads": torch.get_num_threads(), "curve": curve}
    write_json_atomic(meta_path, meta)
    partial.unlink(missing_ok=True)
    log(f"[pretrain] {settings.role}: done in {train_seconds:.0f}s, 100-way zero-shot {acc:.1f}% -> {final}")
    return final, meta


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Pretrain a tiny SynthShapes CLIP contrastively.")
    parser.add_argument("role", choices=sorted(SPECS))
    parser.add_argument("--steps", type=int, default=None, help="default: 400 (teacher) / 600 (student)")
    parser.add_argument("--lr", type=float, default=None, help="default: 1e-3 (teacher) / 2e-3 (student)")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cache", default=None, help="cache folder (default $AME_CACHE or ~/.cache/ame/synthshapes)")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--grow-threads", nargs=2, type=int, metavar=("STEP", "N"), default=None,
                        help="use N threads from step STEP on (when a pretraining run beside this one ends)")
    parser.add_argument("--bf16", choices=["auto", "on", "off"], default="auto",
                        help="bf16 autocast (auto: only where the CPU has native bf16)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    settings = PretrainSettings(role=args.role, steps=args.steps or DEFAULT_STEPS[args.role],
                                batch_size=args.batch_size, seed=args.seed, lr=args.lr,
                                bf16=bf16_is_fast() if args.bf16 == "auto" else args.bf16 == "on")
    pretrain(settings, args.cache, grow_threads=tuple(args.grow_threads) if args.grow_threads else None)


if __name__ == "__main__":
    main()
