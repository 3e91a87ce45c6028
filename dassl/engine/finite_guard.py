"""Stop training at the first NaN / inf in the loss or the trainable weights.

A diverged step must never become a result: NaN weights evaluate to chance accuracy (every logit
NaN -> class 0), and a run would otherwise save them as "best" and report them with exit 0.

How the check stays cheap:
- after every optimiser step, one small batch of device operations: the max-abs of every trainable
  tensor through ``torch._foreach_norm(..., inf)`` (one fused kernel per device and dtype on CUDA),
  stacked with the step's loss, then ``isfinite``. Max-abs is used rather than a sum or 2-norm
  because it cannot overflow for finite weights, and NaN / inf propagate through it;
- the verdict stays on the device: the first bad step (epoch, batch) and the index of the first bad
  tensor are latched there with ``torch.where``, so no host synchronisation is added per step;
- the host reads the latch (`poll`, one sync) only where the trainer synchronises anyway: at the
  progress lines (which already read the loss values) and at the end of every epoch, *before* any
  evaluation or checkpoint. On the CPU a read costs nothing, so there it happens after every step and
  the run stops at the bad step itself.

The latch names the *first* bad step and tensor even when it is read later; weights updated after it
are never saved, because every epoch ends with a poll before the engine writes anything.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import torch

from dassl.utils.tools import UserError

__all__ = ["NonFiniteError", "NonFiniteFinding", "FiniteGuard", "LOSS_NAME"]

LOSS_NAME = "the loss"
_BATCH_BITS = 32  # epoch and batch index packed into one int64: epoch << 32 | batch


class NonFiniteError(UserError):
    """Training produced a NaN / inf loss or weight; nothing of the bad epoch was saved."""


@dataclass(frozen=True)
class NonFiniteFinding:
    """Where the first non-finite value appeared: 0-based epoch and batch, tensor name, its value
    (the loss itself, or a parameter's max-abs: NaN or +inf, the sign of an infinite weight is not kept)."""

    epoch: int
    batch: int
    tensor: str
    value: float

    def describe_value(self) -> str:
        if math.isnan(self.value):
            return "NaN"
        return "inf" if self.value > 0 else "-inf"


class FiniteGuard:
    """Latches the first non-finite loss / trainable tensor of a run on the device (see module doc)."""

    def __init__(self, device, poll_every_step: Optional[bool] = None) -> None:
        self.device = torch.device(device)
        self.poll_every_step = self.device.type == "cpu" if poll_every_step is None else poll_every_step
        self._pending_loss: Optional[torch.Tensor] = None
        self._latch: Optional[torch.Tensor] = None  # int64 [found, epoch << 32 | batch, tensor index]
        self._value: Optional[torch.Tensor] = None  # float32 value of the first bad tensor's max-abs
        self._names: List[str] = []

    def _ensure_state(self) -> None:
        if self._latch is None:
            self._latch = torch.zeros(3, dtype=torch.int64, device=self.device)
            self._value = torch.zeros((), dtype=torch.float32, device=self.device)

    def note_loss(self, loss: torch.Tensor) -> None:
        """Remember the loss of the current step (checked with the weights after the optimiser step)."""
        self._pending_loss = loss.detach()

    def record(self, named_params: Sequence[Tuple[str, torch.Tensor]], epoch: int, batch: int) -> None:
        """Check the pending loss and `named_params` on the device; latch the first bad one."""
        self._ensure_state()
        params = [(name, p.detach()) for name, p in named_params if p.numel() > 0]
        self._names = [LOSS_NAME] + [name for name, _ in params]
        loss = self._pending_loss
        self._pending_loss = None
        loss_value = (loss.float().sum() if loss is not None
                      else torch.zeros((), dtype=torch.float32, device=self.device))
        values = [loss_value.to(self.device).reshape(())]
        if params:
            norms = torch._foreach_norm([p for _, p in params], math.inf)
            values.extend(n.float().to(self.device).reshape(()) for n in norms)
        stacked = torch.stack(values)
        bad = ~torch.isfinite(stacked)
        first = bad.to(torch.int64).argmax().reshape(1)
        newly_bad = bad.any() & (self._latch[0] == 0)
        where = torch.full((1,), (int(epoch) << _BATCH_BITS) | int(batch), dtype=torch.int64, device=self.device)
        candidate = torch.cat([torch.ones(1, dtype=torch.int64, device=self.device), where, first])
        self._latch = torch.where(newly_bad, candidate, self._latch)
        self._value = torch.where(newly_bad, stacked.index_select(0, first).reshape(()), self._value)

    def poll(self) -> Optional[NonFiniteFinding]:
        """Read the latch (one host synchronisation); the first finding of the run, or None."""
        if self._latch is None:
            return None
        found, where, index = self._latch.tolist()
        if not found:
            return None
        name = self._names[index] if index < len(self._names) else f"tensor #{index}"
        return NonFiniteFinding(epoch=where >> _BATCH_BITS, batch=where & ((1 << _BATCH_BITS) - 1),
                                tensor=name, value=float(self._value.item()))

    def after_step(self, named_params: Sequence[Tuple[str, torch.Tensor]], epoch: int,
                   batch: int) -> Optional[NonFiniteFinding]:
        """`record`, then `poll` when polling every step (CPU); returns a finding or None."""
        self.record(named_params, epoch, batch)
        return self.poll() if self.poll_every_step else None
