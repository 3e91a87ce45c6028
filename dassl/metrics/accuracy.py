"""Top-k accuracy of a batch of logits."""
from __future__ import annotations

from typing import List, Sequence, Union

import torch

__all__ = ["compute_accuracy"]


def compute_accuracy(
    output: Union[torch.Tensor, Sequence[torch.Tensor]],
    target: torch.Tensor,
    topk: Sequence[int] = (1,),
) -> List[torch.Tensor]:
    """Return, for each k in ``topk``, the percentage of rows whose target is among the top-k logits.

    ``output`` is ``[B, C]`` logits (a tuple/list uses its first element, as Dassl does); each result
    is a 1-element float tensor in percent.
    """
    if isinstance(output, (tuple, list)):
        output = output[0]
    maxk = max(topk)
    batch_size = target.size(0)
    _, pred = output.topk(maxk, dim=1, largest=True, sorted=True)
    correct = pred.t().eq(target.view(1, -1).expand_as(pred.t()))
    results = []
    for k in topk:
        hits = correct[:k].reshape(-1).float().sum(0, keepdim=True)
        results.append(hits.mul_(100.0 / batch_size))
    return results
