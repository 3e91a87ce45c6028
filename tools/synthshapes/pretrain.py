"""Contrastive pretraining of the tiny SynthShapes CLIPs on freshly rendered captioned images.

Our own loop on our own `clip` model: symmetric InfoNCE with a learnable logit scale (init 1/0.07,
clamped at 100), fused AdamW (lr 1e-3, betas 0.9/0.98, weight decay 0.1 except embeddings, gains,
biases and the scale), linear warm-up then cosine, bf16 autocast on CPU. Every step draws its batch
from a generator seeded by (seed, step), so a resumed run sees exactly the batches it would have seen.

Writes into the cache folder (see `cache.py`):
  <role>-<key>.pt      the OpenAI-layout float32 state dict (loadable by `clip.load_state_dict`)
  <role>-<key>.json    settings, timings and the 100-way zero-shot accuracy
  <role>-<key>.partial.pt   resumable training state while a run is unfinished

    python -m tools.synthshapes.pretrain teacher --steps 450
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

from tools.synthshapes import captions as cap
from tools.synthshapes.cache import cache_dir, config_key, write_json_atomic
from tools.synthshapes.dataset_writer import WORLD_VERSION
from tools.synthshapes.tiny_clip import SPECS, init_state_dict
from tools.synthshapes.world import COLOR_NAMES, SHAPES, render_shifted, sample_attributes

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
MAX_LOGIT_SCALE = math.log(100.0)
DEFAULT_STEPS = {"teacher": 450, "student": 700}


@dataclass
class PretrainSettings:
    """Everything that determines a pretrained checkpoint (hashed into its file name)."""
    role: str
    steps: int
    batch_size: int = 256
    lr: float = 1e-3
    weight_decay: float = 0.1
    warmup: int = 50
    seed: int = 0
    bf16: bool = False   # bf16 autocast; pays off only on CPUs with native bf16 (see `bf16_is_fast`)

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
    gen = torch.Generator().manual_seed(settings.seed * 1_000_003 + step)
    shape, color, size = sample_attributes(settings.batch_size, gen)
    template = torch.randint(0, len(cap.CAPTION_TEMPLATES), (settings.batch_size,), generator=gen)
    images = normalize_images(render_shifted(shape, color, size, gen, "clean"))
    rows = cap.caption_index(template, shape, color, size)
    return images, caption_ids[rows], caption_matches(shape, color, size, template)


def caption_matches(shape: torch.Tensor, color: torch.Tensor, size: torch.Tensor,
                    template: torch.Tensor) -> torch.Tensor:
    """(n, n) bool: caption j truly describes image i (same shape and colour; same size if it names one).

    Counting every true caption as a positive, instead of only the paired one, removes the false
    negatives that a batch of 256 over 100 colour x shape pairs is full of.
    """
    names_size = torch.tensor(cap.TEMPLATE_MENTIONS_SIZE)[template]
    same = (shape[:, None] == shape[None, :]) & (color[:, None] == color[None, :])
    return same & (~names_size[None, :] | (size[:, None] == size[None, :]))


def contrastive_loss(model, images: torch.Tensor, text_ids: torch.Tensor, matches: torch.Tensor) -> torch.Tensor:
    """Symmetric InfoNCE with soft targets spread over all true captions / all described images."""
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
             eval_every: int = 0, eval_per_class: int = 20) -> tuple[Path, dict]:
    """Train (or resume, or reuse) one tiny CLIP; returns (state dict path, metadata).

    `eval_every` > 0 also logs the 100-way zero-shot accuracy every that many steps (slow on CPU).
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
    parser.add_argument("--steps", type=int, default=None, help="default: 450 (teacher) / 700 (student)")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cache", default=None, help="cache folder (default $AME_CACHE or ~/.cache/ame/synthshapes)")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--bf16", choices=["auto", "on", "off"], default="auto",
                        help="bf16 autocast (auto: only where the CPU has native bf16)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    settings = PretrainSettings(role=args.role, steps=args.steps or DEFAULT_STEPS[args.role],
                                batch_size=args.batch_size, seed=args.seed,
                                bf16=bf16_is_fast() if args.bf16 == "auto" else args.bf16 == "on")
    pretrain(settings, args.cache)


if __name__ == "__main__":
    main()
