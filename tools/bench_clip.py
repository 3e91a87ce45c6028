"""Time our CLIP ``encode_image`` against open_clip's on the same random weights.

Both models are built from one random OpenAI-layout state dict (default the
ViT-B/16 shapes), then timed forward-only (no grad) and forward+backward
(gradients w.r.t. the input image and all weights), with optional bf16/fp16
autocast. Prints a table with the median time per iteration and the ratio
ours / open_clip (< 1 means ours is faster).

    python tools/bench_clip.py --device cpu --batch-size 2 --iters 3
    python tools/bench_clip.py --device cuda --batch-size 64 --dtype bf16
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from contextlib import nullcontext
from typing import Callable, List

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from clip.model import architecture_from_state_dict, build_model  # noqa: E402
from clip.random_weights import PRESETS, preset_state_dict  # noqa: E402

AUTOCAST_DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def build_open_clip(state_dict: dict) -> torch.nn.Module:
    """open_clip's QuickGELU CLIP with the architecture of ``state_dict``, loaded from it."""
    from open_clip.model import CLIP as OpenClipCLIP, CLIPTextCfg, CLIPVisionCfg

    arch = architecture_from_state_dict(state_dict)
    model = OpenClipCLIP(
        arch["embed_dim"],
        vision_cfg=CLIPVisionCfg(layers=arch["vision_layers"], width=arch["vision_width"],
                                 patch_size=arch["vision_patch_size"],
                                 image_size=arch["image_resolution"]),
        text_cfg=CLIPTextCfg(context_length=arch["context_length"], vocab_size=arch["vocab_size"],
                             width=arch["transformer_width"], heads=arch["transformer_heads"],
                             layers=arch["transformer_layers"]),
        quick_gelu=True)
    model.load_state_dict(state_dict)
    return model.eval()


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_pair(fns: List[Callable[[], None]], device: torch.device, warmup: int,
              iters: int) -> List[float]:
    """Median seconds per call of each function, calls interleaved (fair on a busy machine)."""
    for _ in range(warmup):
        for fn in fns:
            fn()
    _sync(device)
    times: List[List[float]] = [[] for _ in fns]
    for _ in range(iters):
        for fn, bucket in zip(fns, times):
            start = time.perf_counter()
            fn()
            _sync(device)
            bucket.append(time.perf_counter() - start)
    return [statistics.median(bucket) for bucket in times]


def make_steps(encode: Callable, params: List[torch.nn.Parameter], image: torch.Tensor,
               device: torch.device, dtype_name: str):
    autocast_dtype = AUTOCAST_DTYPES[dtype_name]

    def context():
        if autocast_dtype is None:
            return nullcontext()
        return torch.autocast(device_type=device.type, dtype=autocast_dtype)

    def forward():
        with torch.no_grad(), context():
            encode(image)

    def forward_backward():
        for p in params:
            p.grad = None
        leaf = image.detach().requires_grad_(True)
        with context():
            out = encode(leaf)
        out.float().pow(2).mean().backward()

    return forward, forward_backward


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="ViT-B/16", choices=sorted(PRESETS))
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--dtype", default="fp32", choices=sorted(AUTOCAST_DTYPES),
                        help="fp32, or bf16/fp16 autocast (weights stay fp32)")
    parser.add_argument("--iters", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = leave as is)")
    parser.add_argument("--no-backward", action="store_true", help="time the forward pass only")
    args = parser.parse_args(argv)

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    state_dict = preset_state_dict(args.model)
    ours = build_model(state_dict).to(device)
    theirs = build_open_clip(state_dict).to(device)
    del state_dict
    resolution = ours.visual.input_resolution
    image = torch.randn(args.batch_size, 3, resolution, resolution, device=device)

    steps = [make_steps(model.encode_image, list(model.parameters()), image, device, args.dtype)
             for model in (ours, theirs)]
    forward_times = time_pair([s[0] for s in steps], device, args.warmup, args.iters)
    backward_times = [None, None] if args.no_backward else \
        time_pair([s[1] for s in steps], device, args.warmup, args.iters)
    rows = list(zip(("ours", "open_clip"), forward_times, backward_times))

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({torch.get_num_threads()} threads)"
    print(f"encode_image {args.model}, batch {args.batch_size}, {args.dtype}, {name}, "
          f"median of {args.iters} (warm-up {args.warmup})")
    print(f"{'model':<10} {'forward ms':>12} {'fwd+bwd ms':>12}")
    for label, fwd, bwd in rows:
        bwd_text = "-" if bwd is None else f"{bwd * 1e3:.1f}"
        print(f"{label:<10} {fwd * 1e3:>12.1f} {bwd_text:>12}")
    (_, our_fwd, our_bwd), (_, ref_fwd, ref_bwd) = rows
    ratio_bwd = "-" if our_bwd is None else f"{our_bwd / ref_bwd:.3f}"
    print(f"{'ratio':<10} {our_fwd / ref_fwd:>12.3f} {ratio_bwd:>12}   (ours / open_clip; < 1 = ours faster)")


if __name__ == "__main__":
    main()
