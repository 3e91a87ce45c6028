"""Running averages of scalars (batch time, losses) for progress lines."""
from __future__ import annotations

from collections import defaultdict
from typing import Any, Dict, Optional

__all__ = ["AverageMeter", "MetricMeter"]


def _to_float(value: Any) -> float:
    """Turn a 0-dim tensor (anything with ``.item()``) or a number into a float."""
    return float(value.item()) if hasattr(value, "item") else float(value)


class AverageMeter:
    """Keeps the latest value and the (count-weighted, or exponential) average."""

    def __init__(self, ema: bool = False) -> None:
        self.ema = ema
        self.reset()

    def reset(self) -> None:
        self.val = 0.0
        self.avg = 0.0
        self.sum = 0.0
        self.count = 0

    def update(self, val: Any, n: int = 1) -> None:
        val = _to_float(val)
        self.val = val
        self.sum += val * n
        self.count += n
        if self.ema:
            # The first update seeds the average, as in Dassl (avg starts at 0).
            self.avg = self.avg * 0.9 + self.val * 0.1
        else:
            self.avg = self.sum / self.count


class MetricMeter:
    """A group of named ``AverageMeter``s, printed as ``name val (avg)`` in insertion order."""

    def __init__(self, delimiter: str = " ") -> None:
        self.meters: Dict[str, AverageMeter] = defaultdict(AverageMeter)
        self.delimiter = delimiter

    def update(self, input_dict: Optional[Dict[str, Any]]) -> None:
        if input_dict is None:
            return
        if not isinstance(input_dict, dict):
            raise TypeError("Input to MetricMeter.update() must be a dictionary")
        for name, value in input_dict.items():
            self.meters[name].update(_to_float(value))

    def __str__(self) -> str:
        return self.delimiter.join(
            f"{name} {meter.val:.4f} ({meter.avg:.4f})" for name, meter in self.meters.items()
        )
