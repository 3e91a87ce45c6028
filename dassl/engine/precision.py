"""Device choice and numeric precision, kept in one place so trainers never branch on them.

`select_device` picks the device once from ``cfg.USE_CUDA``. `Precision` wraps the forward pass in
autocast and the backward / optimiser step in a gradient scaler where the mode needs one.
Master weights always stay float32. In a multi-process run (torchrun) each process uses the GPU of
its ``LOCAL_RANK``.
"""
from __future__ import annotations

import contextlib
from typing import Any, Dict, Optional

import torch

from dassl.utils.distributed import group_active, local_rank

PRECISION_MODES = ("fp32", "fp16", "bf16", "amp")
_AUTOCAST_DTYPES = {"fp16": torch.float16, "amp": torch.float16, "bf16": torch.bfloat16}


def select_device(use_cuda: bool) -> torch.device:
    """CUDA when requested and available; otherwise CPU (a requested-but-missing GPU is logged).

    With several processes the device is ``cuda:<LOCAL_RANK>``, one GPU per process.
    """
    if use_cuda and torch.cuda.is_available():
        if group_active():
            return torch.device("cuda", local_rank())
        return torch.device("cuda")
    if use_cuda:
        print("USE_CUDA is True but no CUDA device is available: running on CPU")
    return torch.device("cpu")


class Precision:
    """Numeric precision of a training run.

    Modes: ``fp32`` (plain), ``fp16`` and ``amp`` (float16 autocast + gradient scaling; ``amp`` is
    PromptSRC's name for the same thing), ``bf16`` (bfloat16 autocast, no scaling needed).
    Autocast is used on CUDA only; on CPU every mode runs as fp32 (logged once).
    """

    def __init__(self, mode: str = "fp32", device: Any = "cpu"):
        if mode not in PRECISION_MODES:
            raise ValueError(f"Precision mode must be one of {list(PRECISION_MODES)}, got {mode!r}")
        self.requested_mode = mode
        self.device = torch.device(device)
        if self.device.type != "cuda" and mode != "fp32":
            print(f"Precision {mode} was requested but the device is {self.device.type}: using fp32")
            mode = "fp32"
        self.mode = mode
        self.scaler: Optional[torch.amp.GradScaler] = None
        if mode in ("fp16", "amp"):
            self.scaler = torch.amp.GradScaler("cuda")

    @property
    def autocast_dtype(self) -> Optional[torch.dtype]:
        """The autocast dtype, or None when computing in float32."""
        return _AUTOCAST_DTYPES.get(self.mode)

    def autocast(self):
        """Context manager for the forward pass (a no-op for fp32 / CPU)."""
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.autocast_dtype)

    def backward(self, loss: torch.Tensor) -> None:
        """``loss.backward()``, scaled when a gradient scaler is active."""
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
        else:
            loss.backward()

    def step(self, optimizer: torch.optim.Optimizer) -> None:
        """``optimizer.step()``, through the scaler (which skips steps with inf/NaN gradients)."""
        if self.scaler is not None:
            self.scaler.step(optimizer)
        else:
            optimizer.step()

    def update(self) -> None:
        """Adjust the loss scale once per iteration, after every optimiser has stepped."""
        if self.scaler is not None:
            self.scaler.update()

    def state_dict(self) -> Dict[str, Any]:
        """The scaler state (empty for modes without a scaler); plain data."""
        return {"mode": self.mode, "scaler": self.scaler.state_dict() if self.scaler is not None else None}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        if self.scaler is not None and state and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])

    def __repr__(self) -> str:
        return f"Precision(mode={self.mode!r}, device={self.device})"
