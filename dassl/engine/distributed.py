"""Data-parallel training on several processes (``torchrun --nproc_per_node N train.py ...``).

What a multi-process run is, in this engine:
- every process holds a full copy of the trainer; each trains on its share of every global batch
  (``DATALOADER.TRAIN_X.BATCH_SIZE`` is the global batch; each process gets batch / N, see
  `dassl.data.samplers`) and evaluates a disjoint shard of the test images (the evaluator gathers
  the predictions, so every image counts once);
- after every backward pass the gradients of the trainable parameters are averaged over the
  processes (`average_gradients`, one all-reduce per bucket) before any optimiser steps, so every
  process applies the same update and the weights stay identical everywhere;
- BatchNorm layers of the registered models are replaced by `CrossProcessBatchNorm`
  (``DISTRIBUTED.SYNC_BN``, on by default), which normalises with the statistics of the global batch;
- rank 0 logs and writes files (`dassl.utils.distributed`); the others wait at barriers.

Why the gradients are averaged here rather than by wrapping models in
``torch.nn.parallel.DistributedDataParallel``: DDP synchronises gradients only for computations that
go through the wrapper's ``forward``, while the trainers call their modules' own methods (the
student's ``encode``, PromptSRC's ``training_losses``); and what these trainers train (prompts, a
projector) is small, so overlapping the all-reduce with the backward pass would save nothing. The
result is the same as DDP's: the mean over processes of each process's gradient.

Why that mean equals the gradient one process computes on the whole global batch B (N processes,
b = B / N images each): a loss that is a mean over the local batch, L_r = (1/b) sum_{i in r} l_i,
averaged over the processes gives (1/N) sum_r L_r = (1/B) sum_i l_i, the global mean; so does a loss
normalised by the local batch size times a constant (PromptKD's KD loss divides a sum over the batch
by b x C: (1/N) sum_r S_r / (b C) = sum_r S_r / (B C)). Terms that couple the samples of a batch
need the whole batch: BatchNorm (`CrossProcessBatchNorm`) and any statistic over the batch's rows,
for which `gather_with_grad` returns the global batch with gradients routed back to each process.

Everything here is a no-op in a single-process run (no torchrun, or ``--nproc_per_node 1``): no
process group is created and the run is exactly the single-device one.
"""
from __future__ import annotations

import os
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple, TypeVar

import torch
import torch.distributed as dist
import torch.nn as nn
from torch.nn.modules.batchnorm import _BatchNorm

from dassl.utils import UserError
from dassl.utils.distributed import (all_gather_objects, broadcast_object, group_active, is_main_process,
                                     local_rank, process_rank, world_size)
from dassl.utils.failure import expected_failure_line

__all__ = ["init_distributed", "shutdown_distributed", "describe_run", "run_on_main", "require_agreement",
           "average_gradients", "broadcast_module_states", "CrossProcessBatchNorm", "convert_batchnorm",
           "gather_with_grad", "all_reduce_sum"]

T = TypeVar("T")
_BUCKET_BYTES = 64 * 2 ** 20  # all-reduce / broadcast flattened tensors in chunks of this size


# --------------------------------------------------------------------------- process group
def init_distributed(use_cuda: bool) -> int:
    """Join the process group torchrun describes (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
    ``MASTER_ADDR``/``MASTER_PORT``); returns the world size.

    NCCL with device ``cuda:LOCAL_RANK`` when CUDA is asked for (``USE_CUDA``) and available, gloo on
    the CPU otherwise. With one process (no torchrun, or ``--nproc_per_node 1``) nothing is done.
    """
    size = world_size()
    if size <= 1 or group_active():
        return size
    missing = [name for name in ("RANK", "MASTER_ADDR", "MASTER_PORT") if not os.environ.get(name)]
    if missing:
        raise UserError(f"WORLD_SIZE is {size} but {', '.join(missing)} not set: start a multi-process run with "
                        "torchrun --nproc_per_node N train.py ... (README, 'Multi-GPU and large runs')")
    if use_cuda and torch.cuda.is_available():
        gpu = local_rank()
        visible = torch.cuda.device_count()
        if gpu >= visible:
            raise UserError(f"process with LOCAL_RANK {gpu} has no GPU of its own ({visible} visible): use "
                            f"torchrun --nproc_per_node {visible} or fewer on this machine")
        torch.cuda.set_device(gpu)
        dist.init_process_group("nccl", device_id=torch.device("cuda", gpu))
    else:
        dist.init_process_group("gloo")
    return size


def shutdown_distributed() -> None:
    """Leave the process group (if any), so that a process can end or start another run cleanly."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def describe_run() -> str:
    """One log line for a multi-process run: world size, backend, this process's device."""
    backend = dist.get_backend() if group_active() else "none"
    devices = "one GPU per process (cuda:LOCAL_RANK)" if backend == "nccl" else "CPU"
    return (f"Distributed run: world size: {world_size()}; backend {backend}, {devices}; rank {process_rank()} "
            "logs and writes the files")


def run_on_main(fn: Callable[[], T]) -> Optional[T]:
    """Call `fn` on rank 0 only; if it fails, every process fails with its message.

    Used for what only rank 0 does but every process depends on (taking the run lock): the other
    processes raise a `UserError` naming rank 0's failure instead of waiting for it forever.
    Returns `fn`'s result on rank 0 and None elsewhere (just `fn()` in a single-process run).
    """
    if not group_active():
        return fn()
    result: Optional[T] = None
    error: Optional[BaseException] = None
    if is_main_process():
        try:
            result = fn()
        except Exception as exc:  # noqa: BLE001  (shared with the other ranks, then re-raised)
            error = exc
    message = None
    if error is not None:
        message = expected_failure_line(error) or f"{type(error).__name__}: {error}"
    message = broadcast_object(message)
    if error is not None:
        raise error
    if message is not None:
        raise UserError(f"rank 0 stopped the run: {message}")
    return result


def require_agreement(value: Any, describe: Callable[[List[Any]], str]) -> None:
    """Raise a `UserError` (``describe(values in rank order)``) unless every process has the same `value`."""
    values = all_gather_objects(value)
    if any(v != values[0] for v in values[1:]):
        raise UserError(describe(values))


# --------------------------------------------------------------------------- tensors
def _buckets(tensors: Sequence[torch.Tensor]) -> Iterable[List[torch.Tensor]]:
    """Consecutive groups of tensors with one device and dtype, each at most ~_BUCKET_BYTES."""
    groups: Dict[Tuple[torch.device, torch.dtype], List[torch.Tensor]] = {}
    for tensor in tensors:
        groups.setdefault((tensor.device, tensor.dtype), []).append(tensor)
    for group in groups.values():
        bucket: List[torch.Tensor] = []
        size = 0
        for tensor in group:
            bucket.append(tensor)
            size += tensor.numel() * tensor.element_size()
            if size >= _BUCKET_BYTES:
                yield bucket
                bucket, size = [], 0
        if bucket:
            yield bucket


def _flat_collective(tensors: Sequence[torch.Tensor], collective: Callable[[torch.Tensor], None]) -> None:
    """Apply `collective` (in place) to the flattened concatenation of each bucket, then copy back."""
    for bucket in _buckets(tensors):
        flat = torch.cat([t.reshape(-1) for t in bucket])
        collective(flat)
        offset = 0
        for tensor in bucket:
            count = tensor.numel()
            tensor.copy_(flat[offset:offset + count].view_as(tensor))
            offset += count


def average_gradients(parameters: Iterable[torch.Tensor]) -> None:
    """Replace each parameter's gradient by its mean over the processes (no-op for one process).

    Parameters without a gradient are skipped; every process runs the same code, so they skip the
    same ones. Called between the backward pass and the optimiser step (`TrainerBase.model_update`).
    """
    if not group_active():
        return
    grads = [p.grad for p in parameters if p.grad is not None]
    if not grads:
        return
    if any(g.is_sparse for g in grads):
        raise NotImplementedError("sparse gradients cannot be averaged across processes")
    size = world_size()

    def mean(flat: torch.Tensor) -> None:
        dist.all_reduce(flat)
        flat.div_(size)

    with torch.no_grad():
        _flat_collective(grads, mean)


def broadcast_module_states(modules: Iterable[nn.Module]) -> None:
    """Copy rank 0's parameters and buffers into every process's modules (no-op for one process).

    Done once after the models are built (as DDP does), so that all processes start from the same
    weights even in an unseeded run.
    """
    if not group_active():
        return
    tensors = []
    for module in modules:
        tensors.extend(p.data for p in module.parameters())
        tensors.extend(b for b in module.buffers())
    with torch.no_grad():
        _flat_collective(tensors, lambda flat: dist.broadcast(flat, src=0))


class _AllReduceSum(torch.autograd.Function):
    """Sum over the processes; the backward pass sums the gradients too (every process's loss
    depends on the sum, so each input receives the gradient of all of them)."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        total = tensor.clone()
        dist.all_reduce(total)
        return total

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        total = grad.contiguous().clone()
        dist.all_reduce(total)
        return total


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Differentiable sum of `tensor` over the processes (`tensor` itself for one process)."""
    if not group_active():
        return tensor
    return _AllReduceSum.apply(tensor)


class _GatherRows(torch.autograd.Function):
    """Concatenate every process's rows in rank order; the backward pass gives each process the
    summed gradient of its own rows."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        tensor = tensor.contiguous()
        parts = [torch.empty_like(tensor) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, tensor)
        ctx.rows = tensor.shape[0]
        ctx.rank = dist.get_rank()
        return torch.cat(parts, dim=0)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        total = grad.contiguous().clone()
        dist.all_reduce(total)
        start = ctx.rank * ctx.rows
        return total[start:start + ctx.rows]


def gather_with_grad(rows: torch.Tensor) -> torch.Tensor:
    """The global batch's rows (every process's `rows`, rank order) with gradients flowing back.

    For a loss term computed over the rows of the whole batch (e.g. a statistic of the batch's
    features): every process computes the same global term, the backward pass sums each row's
    gradient over the processes, and the engine's gradient averaging divides by N, so the update is
    the one a single process computes on the whole batch. Every process must pass the same number of
    rows (training batches are split evenly). Returns `rows` itself for one process.
    """
    if not group_active():
        return rows
    sizes = all_gather_objects(tuple(rows.shape))
    if any(size != sizes[0] for size in sizes):
        raise ValueError(f"gather_with_grad needs the same shape on every process, got {sizes}")
    return _GatherRows.apply(rows)


# --------------------------------------------------------------------------- BatchNorm
class CrossProcessBatchNorm(_BatchNorm):
    """BatchNorm whose training-mode statistics are those of the global batch (all processes).

    The same parameters, buffers and state-dict keys as ``nn.BatchNorm{1,2,3}d`` (checkpoints are
    interchangeable). In training mode with several processes it all-reduces the per-channel sum and
    count, then the sum of squared deviations from the global mean (two passes, as precise as one
    process's BatchNorm), through a differentiable all-reduce, so outputs, gradients and running
    statistics equal those of one process on the whole batch. Otherwise it is plain BatchNorm.
    Works with gloo on the CPU and NCCL on CUDA (``nn.SyncBatchNorm`` refuses CPU tensors).
    """

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected at least 2-D input (batch, channels, ...), got {input.dim()}-D")

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        if not (self.training and group_active()):
            return super().forward(input)
        self._check_input_dim(input)
        channels = input.shape[1]
        dims = [0] + list(range(2, input.dim()))
        shape = [1, channels] + [1] * (input.dim() - 2)
        with torch.autocast(device_type=input.device.type, enabled=False):
            x = input.float()
            local_count = torch.full((1,), float(x.numel() // channels), device=x.device)
            sums = all_reduce_sum(torch.cat([x.sum(dim=dims), local_count]))
            count = sums[-1].detach()
            mean = sums[:-1] / count
            centred = x - mean.view(shape)
            var = all_reduce_sum((centred * centred).sum(dim=dims)) / count  # biased, as BatchNorm normalises
            out = centred * torch.rsqrt(var + self.eps).view(shape)
            if self.affine:
                out = out * self.weight.float().view(shape) + self.bias.float().view(shape)
        if self.track_running_stats:
            self._update_running_stats(mean.detach(), var.detach(), float(count))
        return out if torch.is_autocast_enabled(input.device.type) else out.to(input.dtype)

    @torch.no_grad()
    def _update_running_stats(self, mean: torch.Tensor, var: torch.Tensor, count: float) -> None:
        self.num_batches_tracked.add_(1)
        factor = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
        unbiased = var * (count / max(count - 1.0, 1.0))
        self.running_mean.mul_(1.0 - factor).add_(mean.to(self.running_mean.dtype), alpha=factor)
        self.running_var.mul_(1.0 - factor).add_(unbiased.to(self.running_var.dtype), alpha=factor)


def convert_batchnorm(module: nn.Module) -> Tuple[nn.Module, int]:
    """Replace every BatchNorm layer in `module` by a `CrossProcessBatchNorm` sharing its parameters
    and buffers (so optimisers, checkpoints and the trainer's references stay valid).

    Returns the (possibly new) module and the number of layers converted.
    """
    if isinstance(module, _BatchNorm) and not isinstance(module, CrossProcessBatchNorm):
        converted = CrossProcessBatchNorm(module.num_features, eps=module.eps, momentum=module.momentum,
                                          affine=module.affine, track_running_stats=module.track_running_stats)
        if module.affine:
            converted.weight = module.weight
            converted.bias = module.bias
        if module.track_running_stats:
            converted.running_mean = module.running_mean
            converted.running_var = module.running_var
            converted.num_batches_tracked = module.num_batches_tracked
        converted.train(module.training)
        return converted, 1
    count = 0
    for name, child in list(module.named_children()):
        new_child, n = convert_batchnorm(child)
        if new_child is not child:
            setattr(module, name, new_child)
        count += n
    return module, count
