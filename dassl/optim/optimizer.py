"""``build_optimizer``: torch optimisers configured from ``cfg.OPTIM`` with Dassl's defaults."""
from __future__ import annotations

import warnings
from typing import Any, Iterable, List, Optional, Union

import torch
import torch.nn as nn

from dassl.utils.tools import UnknownChoiceError

__all__ = ["AVAI_OPTIMS", "build_optimizer"]

AVAI_OPTIMS = ["adam", "amsgrad", "sgd", "rmsprop", "radam", "adamw"]


def _unwrap(model: nn.Module) -> nn.Module:
    """Return the wrapped module of DataParallel / DistributedDataParallel, else the model."""
    if isinstance(model, (nn.DataParallel, nn.parallel.DistributedDataParallel)):
        return model.module
    return model


def _staged_param_groups(model: nn.Module, optim_cfg: Any) -> List[dict]:
    """Two groups: children named in ``NEW_LAYERS`` get ``LR``, the rest ``LR * BASE_LR_MULT``."""
    if not isinstance(model, nn.Module):
        raise TypeError("OPTIM.STAGED_LR needs an nn.Module (its named children are split into groups)")
    model = _unwrap(model)
    new_layers = optim_cfg.NEW_LAYERS
    if isinstance(new_layers, str):
        new_layers = [new_layers]
    if not new_layers:
        warnings.warn("OPTIM.STAGED_LR is on but OPTIM.NEW_LAYERS is empty: every layer gets the base lr")
    known = {name for name, _ in model.named_children()}
    missing = [name for name in new_layers if name not in known]
    if missing:
        raise ValueError(f"OPTIM.NEW_LAYERS names unknown child modules {missing}; children are {sorted(known)}")
    base_params, new_params = [], []
    for name, module in model.named_children():
        (new_params if name in new_layers else base_params).extend(module.parameters())
    return [
        {"params": base_params, "lr": optim_cfg.LR * optim_cfg.BASE_LR_MULT},
        {"params": new_params},
    ]


def build_optimizer(
    model: Union[nn.Module, Iterable[Any]],
    optim_cfg: Any,
    param_groups: Optional[List[dict]] = None,
) -> torch.optim.Optimizer:
    """Build the optimiser named by ``optim_cfg.NAME`` (one of ``AVAI_OPTIMS``).

    Parameters come from ``param_groups`` if given, else from the staged-lr split
    (``STAGED_LR``), else from ``model.parameters()`` (or ``model`` itself when it is an iterable).
    Frozen parameters may be included: they never get a gradient, so they are never updated.
    """
    name = optim_cfg.NAME
    if name not in AVAI_OPTIMS:
        raise UnknownChoiceError(f"OPTIM.NAME must be one of {AVAI_OPTIMS}, but got {name!r}")
    lr = optim_cfg.LR
    weight_decay = optim_cfg.WEIGHT_DECAY
    betas = (optim_cfg.ADAM_BETA1, optim_cfg.ADAM_BETA2)

    if param_groups is not None:
        if optim_cfg.STAGED_LR:
            warnings.warn("OPTIM.STAGED_LR is ignored because param_groups were given")
        params: Any = param_groups
    elif optim_cfg.STAGED_LR:
        params = _staged_param_groups(model, optim_cfg)
    elif isinstance(model, nn.Module):
        params = model.parameters()
    else:
        params = model

    if name == "sgd":
        return torch.optim.SGD(
            params,
            lr=lr,
            momentum=optim_cfg.MOMENTUM,
            weight_decay=weight_decay,
            dampening=optim_cfg.SGD_DAMPNING,
            nesterov=optim_cfg.SGD_NESTEROV,
        )
    if name in ("adam", "amsgrad"):
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay, betas=betas, amsgrad=name == "amsgrad")
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, betas=betas)
    if name == "rmsprop":
        return torch.optim.RMSprop(
            params, lr=lr, momentum=optim_cfg.MOMENTUM, weight_decay=weight_decay, alpha=optim_cfg.RMSPROP_ALPHA
        )
    # radam: torch's RAdam (falls back to an SGD-with-momentum step while the variance is
    # intractable, like Dassl's own RAdam with degenerated_to_sgd=True).
    return torch.optim.RAdam(params, lr=lr, weight_decay=weight_decay, betas=betas)
