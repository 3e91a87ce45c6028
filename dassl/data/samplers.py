"""`build_sampler`: the two samplers the CoOp-family codebases use (Dassl's names)."""
from __future__ import annotations

from torch.utils.data import RandomSampler, Sampler, SequentialSampler

AVAILABLE_SAMPLERS = ["RandomSampler", "SequentialSampler"]
DASSL_ONLY_SAMPLERS = ["RandomDomainSampler", "SeqDomainSampler", "RandomClassSampler"]


def build_sampler(sampler_type: str, cfg=None, data_source=None, batch_size: int = 32,
                  n_domain: int = 0, n_ins: int = 16) -> Sampler:
    """`RandomSampler` (fresh permutation per epoch from torch's global RNG) or `SequentialSampler`."""
    if sampler_type == "RandomSampler":
        return RandomSampler(data_source)
    if sampler_type == "SequentialSampler":
        return SequentialSampler(data_source)
    if sampler_type in DASSL_ONLY_SAMPLERS:
        raise NotImplementedError(
            f"Sampler {sampler_type!r} exists in Dassl but not in this engine; use one of {AVAILABLE_SAMPLERS}")
    raise ValueError(f"Unknown sampler type: {sampler_type!r} (expected one of {AVAILABLE_SAMPLERS})")
