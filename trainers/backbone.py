"""The CLIP backbone of every trainer: load its weights, build it, check the input size, freeze it.

Every trainer (students, teachers, supervised prompt learners, zero-shot CLIP) gets its CLIP here, so
that weights are found, errors are worded and trainable parameters are reported the same way:

- :func:`load_clip_state_dict` reads an OpenAI-layout state dict by model name or file (``clip``'s
  resolver: an explicit file, ``./clip/<file>``, ``$CLIP_HOME``, ``~/.cache/clip``, else a checked
  download) and turns ``clip``'s errors into one ``UserError`` naming the config keys that chose it;
- :func:`build_clip` builds the model with a prompt design (``None``: a plain CLIP without prompts);
- :func:`load_backbone` does both for ``MODEL.BACKBONE.WEIGHTS`` / ``MODEL.BACKBONE.NAME``;
- :func:`check_input_size` stops a run whose ``INPUT.SIZE`` does not match the CLIP's resolution;
- :func:`freeze` sets ``requires_grad`` by a name rule and prints what will be trained.
"""
from __future__ import annotations

from typing import Callable, List, Mapping, Optional

from torch import nn

import clip
from dassl.utils import UserError

BACKBONE_KEYS = "MODEL.BACKBONE.WEIGHTS / MODEL.BACKBONE.NAME"
# A prompt design of ``None`` builds CLIP without any prompt tokens (zero-shot, frozen towers).
NO_PROMPTS: Optional[Mapping] = None


def load_clip_state_dict(name_or_path: str, config_keys: str) -> dict:
    """``clip.load_state_dict`` with one readable error that names the config keys that chose the weights."""
    if not name_or_path:
        raise UserError(f"No CLIP weights given: set {config_keys} (a model name such as ViT-B/16, or a file)")
    try:
        return clip.load_state_dict(name_or_path)
    except UserError:
        raise
    except (FileNotFoundError, RuntimeError, KeyError, ValueError, OSError) as error:
        raise UserError(f"Cannot load CLIP weights {name_or_path!r} (set by {config_keys}): {error}") from error


def build_clip(state_dict: dict, design_details: Optional[Mapping], source: str,
               take_tensors: bool = False) -> nn.Module:
    """``clip.build_model`` (float32) with a ``UserError`` naming the weights when they do not fit the design.

    ``take_tensors``: the model takes the state dict's tensors instead of copying them (one copy of the
    weights in memory instead of two while it is built); only for a dict that the caller then drops.
    """
    try:
        return clip.build_model(state_dict, design_details, take_tensors=take_tensors)
    except (ValueError, KeyError) as error:
        raise UserError(f"Cannot build CLIP from {source!r} with prompt design {design_details}: {error}") from error


def backbone_source(cfg) -> str:
    """The student / backbone weights: ``MODEL.BACKBONE.WEIGHTS`` when set, else ``MODEL.BACKBONE.NAME``.

    PromptKD always read ``./clip/ViT-B-16.pt`` (PromptKD quirk 4, docs/compatibility.md); here the
    configured name or file decides, and the resolver still looks in ``./clip/`` first.
    """
    source = cfg.MODEL.BACKBONE.WEIGHTS or cfg.MODEL.BACKBONE.NAME
    if not source:
        raise UserError("Set MODEL.BACKBONE.NAME (e.g. ViT-B/16) or MODEL.BACKBONE.WEIGHTS (a CLIP weights file).")
    return source


def load_backbone_state_dict(cfg) -> dict:
    """The state dict of the configured backbone, after one line saying which one it is."""
    source = backbone_source(cfg)
    weights = f", weights: {source}" if cfg.MODEL.BACKBONE.WEIGHTS else ""
    print(f"Loading CLIP (backbone: {cfg.MODEL.BACKBONE.NAME}{weights})")
    return load_clip_state_dict(source, BACKBONE_KEYS)


def load_backbone(cfg, design_details: Optional[Mapping] = NO_PROMPTS) -> nn.Module:
    """The configured backbone CLIP (float32, on CPU), built with ``design_details``."""
    return build_clip(load_backbone_state_dict(cfg), design_details, backbone_source(cfg))


def check_input_size(cfg, image_encoder: nn.Module, who: str) -> None:
    """Stop when ``INPUT.SIZE`` differs from the CLIP image tower's input resolution."""
    resolution = image_encoder.input_resolution
    if cfg.INPUT.SIZE[0] != resolution:
        raise UserError(f"INPUT.SIZE {tuple(cfg.INPUT.SIZE)} does not match the {who} CLIP's input resolution "
                        f"{resolution}; set INPUT.SIZE ({resolution}, {resolution})")


def freeze(model: nn.Module, is_trainable: Callable[[str], bool]) -> List[str]:
    """Train exactly the parameters whose names ``is_trainable`` accepts; print them; return their names."""
    print("Turning off gradients in both the image and the text encoder")
    for name, param in model.named_parameters():
        param.requires_grad_(is_trainable(name))
    trainable = sorted(name for name, param in model.named_parameters() if param.requires_grad)
    print(f"Parameters to be updated: {set(trainable)}")
    print(f"Parameters count: {len(trainable)}")
    return trainable
