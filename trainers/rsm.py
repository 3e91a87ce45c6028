"""RSM: the entropy of a reconfigured shared manifold (AME; paper Eq. 4-6).

Given image features V (N x D_v) and text features W (C x D_w), two small projections map them into a
common R-dimensional space: ``phi_v`` (1x1 convolutions over an (N, D_v, 1, 1) view: Conv -> ReLU -> Conv,
"convolution-based") and ``phi_w`` (Linear -> ReLU -> Linear, "MLP-based"). Their outputs are stacked
row-wise, text rows first, into M ((C + N) x R). Then

    s_t = mean_r M[t, r]          (Eq. 4)
    p   = softmax(s) over the C + N rows
    H(M) = - sum_t p_t log p_t    (Eq. 5)

and a distillation trainer adds ``omega * H(M)`` to its loss (Eq. 6). The projections are trained with
the student and never used at test time. ``H`` is computed in float32 whatever the autocast dtype.

Two opt-in variants (``TRAINER.RSM``, both off by default, so the default is the paper's term). In the
paper's own training regime on SynthShapes (README, "SynthShapes in the paper's regime") the faithful term
collapses: within a few epochs at omega 50 the softmax puts all its mass on one row (H -> 0, max p -> 1),
reached by inflating that row's mean, and the student is worse than its host. Each variant removes one
cause of that failure:

- ``SCORE_TEMPERATURE`` tau > 0, scale-free scores: ``s_t = cos(M[t], 1) / tau`` (the row mean of the
  L2-normalised row times sqrt(R), divided by tau), so every score lies in [-1/tau, 1/tau]. H(M) keeps a
  floor above 0 and can no longer be lowered by growing a row's norm, only by turning rows; the gradient
  that reaches the student stays bounded.
- ``CLASS_ALIGNED`` tau > 0, an entropy aligned with the classes instead of over all rows: each image row
  i is assigned to the text rows, ``q_i = softmax_c(cos(M[C + i], M[c]) / tau)``, and the term is

      H_aligned = mean_i H(q_i) - H(mean_i q_i)

  The first part asks every image to settle on one class row (images gather at a class centre, the
  structure the paper's analysis describes); the second, subtracted, keeps the batch spread over many
  classes, which rules out the measured collapse onto a single row. It lies in [-log C, log C].

The RSM parameters are initialised from a dedicated ``torch.Generator``: building the module does not
touch the global RNG, so a run with the term switched off is identical to the host trainer's run.

:class:`RSMTerm` is what a distillation trainer uses: built from ``TRAINER.RSM`` (validated once, with
errors naming the key), it owns the feature choice, the weight omega, the module it builds, the step's
term ``omega * H(M)`` and the summary the training log prints (``kd``/``rsm``/``H``/``max_p``).
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Dict, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from dassl.engine.distributed import gather_with_grad
from dassl.utils import UserError
from trainers.config import default_config


def manifold_scores(manifold: torch.Tensor) -> torch.Tensor:
    """Row means of M (Eq. 4), in float32 with autocast disabled."""
    if manifold.dim() != 2:
        raise ValueError(f"manifold must be a 2-D (rows x features) tensor, got shape {tuple(manifold.shape)}")
    with torch.autocast(device_type=manifold.device.type, enabled=False):
        return manifold.float().mean(dim=1)


def manifold_entropy(manifold: torch.Tensor, return_max_prob: bool = False):
    """Entropy H(M) of the softmax over the row means of M (Eq. 4-5), in float32.

    With ``return_max_prob`` it returns ``(H, max_t p_t)``; ``max p`` is detached (a diagnostic: a value
    near 1 means the manifold collapsed onto one row). H lies in [0, log(rows)].
    """
    entropy, max_prob = entropy_of_scores(manifold_scores(manifold))
    return (entropy, max_prob) if return_max_prob else entropy


def bounded_scores(manifold: torch.Tensor, temperature: float) -> torch.Tensor:
    """Scale-free row scores ``cos(M[t], 1) / temperature`` in float32 (the ``SCORE_TEMPERATURE`` variant)."""
    with torch.autocast(device_type=manifold.device.type, enabled=False):
        rows = F.normalize(manifold.float(), dim=1)
        return rows.mean(dim=1) * math.sqrt(rows.shape[1]) / temperature


def entropy_of_scores(scores: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """``(H(softmax(scores)), max p)`` over a 1-D score vector, float32; max p is detached."""
    with torch.autocast(device_type=scores.device.type, enabled=False):
        log_p = F.log_softmax(scores.float(), dim=0)
        p = log_p.exp()
        return -(p * log_p).sum(), p.max().detach()


def class_aligned_entropy(text_rows: torch.Tensor, image_rows: torch.Tensor,
                          temperature: float) -> Tuple[torch.Tensor, torch.Tensor]:
    """``(mean_i H(q_i) - H(mean_i q_i), mean_i max_c q_i(c))`` with ``q_i = softmax_c(cos(v_i, w_c) / tau)``
    for image rows v_i and text rows w_c of the manifold (the ``CLASS_ALIGNED`` variant), in float32."""
    with torch.autocast(device_type=image_rows.device.type, enabled=False):
        similarity = F.normalize(image_rows.float(), dim=1) @ F.normalize(text_rows.float(), dim=1).t()
        log_q = F.log_softmax(similarity / temperature, dim=1)
        q = log_q.exp()
        per_image = -(q * log_q).sum(dim=1).mean()
        marginal = q.mean(dim=0)
        spread = -(marginal * marginal.clamp_min(1e-12).log()).sum()
        return per_image - spread, q.max(dim=1).values.mean().detach()


def manifold_max_prob(manifold: torch.Tensor) -> torch.Tensor:
    """Largest row probability ``max_t p_t`` of M (detached, float32)."""
    return manifold_entropy(manifold, return_max_prob=True)[1]


def _uniform_init_(tensor: torch.Tensor, fan_in: int, generator: torch.Generator) -> None:
    """PyTorch's default Linear/Conv init, U(-1/sqrt(fan_in), 1/sqrt(fan_in)), drawn from ``generator``."""
    bound = 1.0 / math.sqrt(fan_in)
    with torch.no_grad():
        values = torch.rand(tensor.shape, generator=generator, dtype=torch.float32) * (2 * bound) - bound
        tensor.copy_(values)


def make_generator(seed: Optional[int]) -> torch.Generator:
    """A CPU generator seeded with ``seed`` (a fresh random seed when ``seed`` is None or negative)."""
    if seed is None or seed < 0:
        seed = int.from_bytes(os.urandom(8), "little") & ((1 << 63) - 1)
    generator = torch.Generator(device="cpu")
    generator.manual_seed(int(seed))
    return generator


class RSM(nn.Module):
    """Projections ``phi_v`` / ``phi_w`` and the manifold entropy H(M).

    Args:
        image_dim: width D_v of the image features V.
        text_dim: width D_w of the text features W.
        dim: manifold width R.
        hidden: inner width of both projections (0 means ``dim``).
        normalize: L2-normalise V and W before projecting.
        generator: source of the initial weights (a seeded one makes runs reproducible); the global RNG
            is never consumed.
    """

    def __init__(
        self,
        image_dim: int,
        text_dim: int,
        dim: int = 64,
        hidden: int = 0,
        normalize: bool = True,
        generator: Optional[torch.Generator] = None,
    ) -> None:
        super().__init__()
        hidden = hidden or dim
        self.normalize = normalize
        # Build inside fork_rng so that the default initialisers do not advance the global CPU RNG;
        # the weights are then overwritten from the dedicated generator.
        with torch.random.fork_rng(devices=[]):
            self.phi_v = nn.Sequential(
                nn.Conv2d(image_dim, hidden, kernel_size=1),
                nn.ReLU(inplace=True),
                nn.Conv2d(hidden, dim, kernel_size=1),
            )
            self.phi_w = nn.Sequential(
                nn.Linear(text_dim, hidden),
                nn.ReLU(inplace=True),
                nn.Linear(hidden, dim),
            )
        generator = generator if generator is not None else make_generator(None)
        for layer in (self.phi_v[0], self.phi_v[2], self.phi_w[0], self.phi_w[2]):
            fan_in = layer.weight[0].numel()
            _uniform_init_(layer.weight, fan_in, generator)
            _uniform_init_(layer.bias, fan_in, generator)

    def project_images(self, image_features: torch.Tensor) -> torch.Tensor:
        """phi_v(V): (N, D_v) -> (N, R) through 1x1 convolutions."""
        if self.normalize:
            image_features = F.normalize(image_features, dim=-1)
        weight_dtype = self.phi_v[0].weight.dtype
        x = image_features.to(weight_dtype).reshape(image_features.shape[0], -1, 1, 1)
        return self.phi_v(x).flatten(1)

    def project_texts(self, text_features: torch.Tensor) -> torch.Tensor:
        """phi_w(W): (C, D_w) -> (C, R)."""
        if self.normalize:
            text_features = F.normalize(text_features, dim=-1)
        return self.phi_w(text_features.to(self.phi_w[0].weight.dtype))

    def manifold(self, image_features: torch.Tensor, text_features: torch.Tensor) -> torch.Tensor:
        """M = [phi_w(w_1) .. phi_w(w_C), phi_v(v_1) .. phi_v(v_N)] ((C + N) x R), text rows first."""
        projected_texts = self.project_texts(text_features)
        projected_images = self.project_images(image_features)
        return torch.cat([projected_texts.float(), projected_images.float()], dim=0)

    def entropy_and_max_prob(
        self, image_features: torch.Tensor, text_features: torch.Tensor
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        """``(H(M), max_t p_t)`` for one batch; H carries gradients, max p is detached."""
        return manifold_entropy(self.manifold(image_features, text_features), return_max_prob=True)

    def forward(self, image_features: torch.Tensor, text_features: torch.Tensor) -> torch.Tensor:
        """H(M) for image features V (N x D_v) and text features W (C x D_w)."""
        return manifold_entropy(self.manifold(image_features, text_features))


IMAGE_FEATURES = ("projected", "backbone")
VARIANT_KEYS = ("SCORE_TEMPERATURE", "CLASS_ALIGNED")   # the opt-in variants (module docstring); 0 = off
CONFIG_KEY = "TRAINER.RSM"


@dataclass(frozen=True)
class RSMTerm:
    """The RSM term of a distillation step, configured by ``TRAINER.RSM`` (see the module docstring).

    ``weight`` is omega; at 0 the module is still built (same checkpoint keys, from its own generator)
    but :meth:`loss` returns ``None`` and the step is the host trainer's step exactly.
    """

    weight: float
    dim: int
    hidden: int
    normalize: bool
    image_feature: str  # "projected": after the student's projector; "backbone": the CLIP image features
    seed: Optional[int] = None
    score_temperature: float = 0.0  # > 0: the SCORE_TEMPERATURE variant (module docstring)
    class_aligned: float = 0.0      # > 0: the CLASS_ALIGNED variant, with this temperature

    @classmethod
    def from_cfg(cls, cfg) -> "RSMTerm":
        """The term of ``cfg.TRAINER.RSM``; a ``UserError`` naming the key when a value is out of range."""
        rsm_cfg = cfg.TRAINER.RSM
        if rsm_cfg.IMAGE_FEATURE not in IMAGE_FEATURES:
            raise UserError(f"{CONFIG_KEY}.IMAGE_FEATURE must be one of {list(IMAGE_FEATURES)}, "
                            f"got {rsm_cfg.IMAGE_FEATURE!r}")
        for key, value, ok, rule in (("WEIGHT", rsm_cfg.WEIGHT, rsm_cfg.WEIGHT >= 0, ">= 0"),
                                     ("DIM", rsm_cfg.DIM, rsm_cfg.DIM > 0, "> 0"),
                                     ("HIDDEN", rsm_cfg.HIDDEN, rsm_cfg.HIDDEN >= 0, ">= 0 (0 means DIM)"),
                                     *((key, rsm_cfg[key], rsm_cfg[key] >= 0, ">= 0 (0: off)") for key in VARIANT_KEYS)):
            if not ok:
                raise UserError(f"{CONFIG_KEY}.{key} must be {rule}, got {value}")
        chosen = [key for key in VARIANT_KEYS if rsm_cfg[key] > 0]
        if len(chosen) > 1:
            raise UserError(f"{CONFIG_KEY}: {' and '.join(chosen)} are alternative variants of the term; set one of "
                            "them (the other 0)")
        return cls(weight=float(rsm_cfg.WEIGHT), dim=int(rsm_cfg.DIM), hidden=int(rsm_cfg.HIDDEN),
                   normalize=bool(rsm_cfg.NORMALIZE), image_feature=rsm_cfg.IMAGE_FEATURE, seed=cfg.SEED,
                   score_temperature=float(rsm_cfg.SCORE_TEMPERATURE), class_aligned=float(rsm_cfg.CLASS_ALIGNED))

    @property
    def active(self) -> bool:
        """Whether the term is added to the loss (omega > 0)."""
        return self.weight > 0

    def build_module(self, projected_dim: int, backbone_dim: int, text_dim: int) -> RSM:
        """The projections for the chosen image feature, initialised from a generator seeded with SEED."""
        image_dim = projected_dim if self.image_feature == "projected" else backbone_dim
        return RSM(image_dim=image_dim, text_dim=text_dim, dim=self.dim, hidden=self.hidden,
                   normalize=self.normalize, generator=make_generator(self.seed))

    def describe(self) -> str:
        """One log line: weight, width, feature and whether the term is on."""
        state = "on" if self.active else "off (WEIGHT 0: module kept, term skipped)"
        return (f"RSM: weight {self.weight}, dim {self.dim}, image features {self.image_feature}, "
                f"{self.variant} -> {state}")

    @property
    def variant(self) -> str:
        """Which entropy the term computes: the paper's or one of the opt-in variants."""
        if self.score_temperature > 0:
            return f"variant SCORE_TEMPERATURE {self.score_temperature:g}"
        if self.class_aligned > 0:
            return f"variant CLASS_ALIGNED {self.class_aligned:g}"
        return "the paper's H(M)"

    def loss(self, module: RSM, backbone_features: torch.Tensor, projected_features: torch.Tensor,
             text_features: torch.Tensor) -> Optional[Tuple[torch.Tensor, Dict[str, torch.Tensor]]]:
        """``(omega * H(M), {"rsm": omega * H, "H": H, "max_p": max p})`` for one batch, or ``None`` when off.

        The summary holds detached tensors; the trainer turns them into numbers when it logs.
        """
        if not self.active:
            return None
        image_features = projected_features if self.image_feature == "projected" else backbone_features
        # Under several processes M holds the image rows of the whole global batch, as in one process.
        image_features = gather_with_grad(image_features)
        if self.class_aligned > 0:
            entropy, max_prob = class_aligned_entropy(module.project_texts(text_features),
                                                      module.project_images(image_features), self.class_aligned)
        elif self.score_temperature > 0:
            scores = bounded_scores(module.manifold(image_features, text_features), self.score_temperature)
            entropy, max_prob = entropy_of_scores(scores)
        else:
            entropy, max_prob = module.entropy_and_max_prob(image_features, text_features)
        weighted = self.weight * entropy
        return weighted, {"rsm": weighted.detach(), "H": entropy.detach(), "max_p": max_prob}


def describe_unused_keys(cfg) -> Optional[str]:
    """A note naming the ``TRAINER.RSM`` keys that differ from their defaults, for a trainer without RSM."""
    defaults = default_config().TRAINER.RSM
    changed = [f"{key}={cfg.TRAINER.RSM[key]!r}" for key in sorted(defaults)
               if key in cfg.TRAINER.RSM and cfg.TRAINER.RSM[key] != defaults[key]]
    if not changed:
        return None
    return (f"Note: {CONFIG_KEY} keys are set ({', '.join(changed)}) but trainer {cfg.TRAINER.NAME} has no RSM "
            f"term: they have no effect (use a *_RSM trainer, e.g. PromptKD_RSM)")
