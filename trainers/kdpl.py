"""KDPL: a prompt learner trained without labels by distillation from a larger zero-shot CLIP (Mistretta et
al., "Improving Zero-shot Generalization of Learned Prompts via Unsupervised Knowledge Distillation",
ECCV 2024), and KDPL_RSM, the same with the RSM entropy term of trainers/rsm.py.

KDPL is not a prompt architecture: it replaces the cross-entropy of a *host* prompt learner by a
distillation loss. The student is the host's model, built, frozen, optimised and saved exactly as the
host trainer does (same checkpoint folder and keys, same precision key ``TRAINER.<HOST>.PREC``):

| ``TRAINER.KDPL.HOST`` | student | also registered as |
|---|---|---|
| ``CoOp`` (default) | CoOp's text context (``trainers.coop``) | ``CoOp_KDPL`` (KDPL's name) |
| ``CoCoOp`` | CoCoOp's image-conditioned context (``trainers.cocoop``) | ``CoCoOp_KDPL`` (KDPL's name) |
| ``IVLP`` | IVLP / PromptSRC-style deep prompts on both towers (``trainers.ivlp``) | ``IVLP_KDPL`` |
| ``MaPLe`` | MaPLe's coupled prompts (``trainers.maple``) | ``MaPLe_KDPL`` (KDPL's name) |

``--trainer KDPL`` (or ``KDPL_RSM``) picks the host from ``TRAINER.KDPL.HOST``; the ``<Host>_KDPL`` /
``<Host>_KDPL_RSM`` names fix it. KDPL's PromptSRC and VPT hosts are not available.

Teacher (``trainers.kdpl_teacher``): a frozen CLIP without prompts, ViT-L/14 by default
(``TRAINER.KDPL.TEACHER`` / ``TEACHER_WEIGHTS``), one hand-written prompt per class encoded once. It is
built when training starts, so evaluation-only runs never load it.

Step (labels are read from the batch but never used):

    z_T = exp(student logit_scale) * norm(teacher image features) @ teacher text features.T
    z_S = the student's logits over the same classes
    loss = 0.5 * KL(p_T || p_S) + 0.5 * KL(p_S || p_T)      (softmax at temperature 1, batchmean)

- class-aware (default): the classes are the dataset's training classes, the teacher's prompts use
  the dataset's template;
- class-agnostic (``TRAINER.KDPL.CLASS_AGNOSTIC True``): the classes are the names of
  ``TRAINER.KDPL.CLASS_LIST`` with the prompt ``"a photo of a {}."``; every step keeps the
  ``K_MAX`` names with the largest teacher softmax averaged over the batch (over the whole batch of
  all processes when several train together) and rebuilds the student's class prompts for them. The
  student returns to the dataset's classes after each epoch, so checkpoints and evaluations always use
  those (``trainers.kdpl_classes``).

Protocol: the inductive one of the hosts (``trainers.supervised``): ``DATASET.NUM_SHOTS`` images of
the ``DATASET.SUBSAMPLE_CLASSES`` classes; with ``base`` the final model is scored on the base and the
new classes and results.json gets protocol ``base2new`` (plus ``host``, ``class_agnostic`` and
``teacher``).

KDPL_RSM adds ``TRAINER.RSM.WEIGHT * H(M)`` with M built from the student's image features (those
that enter its logits) and the student's prompted text features of the step's classes. The RSM
projections sit at ``<trained module>.rsm`` (the whole model, or CoOp's prompt learner), so they are
trained and saved with the student; with ``WEIGHT 0`` the run equals KDPL's. CoCoOp's text features
differ per image, so KDPL_RSM does not take that host. Choices and differences from KDPL's code:
docs/compatibility.md, section 6 ("KDPL").
"""
from __future__ import annotations

from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from dassl.engine import TRAINER_REGISTRY
from dassl.engine.distributed import all_reduce_sum
from dassl.utils import UserError
from datasets.templates import get_template
from trainers.backbone import check_input_size
from trainers.cocoop import CoCoOp
from trainers.coop import CoOp
from trainers.ivlp import IVLP
from trainers.kdpl_classes import batch_class_probabilities, effective_k, names_at, read_class_list, top_classes
from trainers.kdpl_teacher import (CLASS_AGNOSTIC_TEMPLATE, ZeroShotTeacher, build_zero_shot_teacher, class_prompts,
                                   teacher_source)
from trainers.maple import MaPLe
from trainers.rsm import RSMTerm
from trainers.supervised import SupervisedPromptTrainer

DEFAULT_HOST = "CoOp"
StudentOutputs = Tuple[torch.Tensor, Optional[torch.Tensor], Optional[torch.Tensor]]


def symmetric_kl(student_logits: torch.Tensor,
                 teacher_logits: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(0.5 * forward + 0.5 * reverse, forward, reverse)`` with forward = KL(p_T || p_S) and reverse =
    KL(p_S || p_T), p = softmax at temperature 1, each summed over classes and divided by the batch size.

    Computed in float32 with autocast off. Gradients reach the student through both terms.
    """
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(f"student and teacher logits differ in shape: {tuple(student_logits.shape)} vs "
                         f"{tuple(teacher_logits.shape)}")
    with torch.autocast(device_type=student_logits.device.type, enabled=False):
        log_p_student = F.log_softmax(student_logits.float(), dim=1)
        log_p_teacher = F.log_softmax(teacher_logits.float(), dim=1)
        forward = F.kl_div(log_p_student, log_p_teacher, reduction="batchmean", log_target=True)
        reverse = F.kl_div(log_p_teacher, log_p_student, reduction="batchmean", log_target=True)
    return 0.5 * forward + 0.5 * reverse, forward, reverse


# --------------------------------------------------------------------------- the student's outputs per host
def scaled_cosine(model: nn.Module, image_features: torch.Tensor, text_features: torch.Tensor) -> torch.Tensor:
    """``exp(logit_scale) * norm(image_features) @ text_features.T`` (text features already normalised)."""
    image = F.normalize(image_features, dim=-1)
    return model.logit_scale.exp() * image @ text_features.to(image.dtype).t()


def prompted_clip_outputs(model: nn.Module, image: torch.Tensor) -> StudentOutputs:
    """CoOp / IVLP students (``PromptedCLIP``): logits, unnormalised image features, normalised text features."""
    text_features = model.class_features()
    image_features = model.encode_image(image)
    return scaled_cosine(model, image_features, text_features), image_features, text_features


def maple_outputs(model: nn.Module, image: torch.Tensor) -> StudentOutputs:
    """MaPLe students: the text pass also yields the visual prompts the image tower takes."""
    text_features, shallow_vision, deep_vision = model.class_features()
    encoder = model.image_encoder
    image_features = encoder(image.to(encoder.conv1.weight.dtype), shallow_vision, deep_vision)
    return scaled_cosine(model, image_features, text_features), image_features, text_features


def cocoop_outputs(model: nn.Module, image: torch.Tensor) -> StudentOutputs:
    """CoCoOp students: logits only (their text features differ per image)."""
    return model(image), None, None


# --------------------------------------------------------------------------- trainers
@TRAINER_REGISTRY.register()
class KDPL(SupervisedPromptTrainer):
    """KDPL on a host prompt learner; see the module docstring.

    ``KDPL`` and ``KDPL_RSM`` themselves are never instantiated: constructing them returns the host
    class that ``TRAINER.KDPL.HOST`` names (``CoOp_KDPL``, ...), which inherits the host trainer's
    model, trainable rule, checkpoint layout and precision key, and this class's distillation step.
    """

    USES_RSM = False
    HOST = ""  # the host's name; set by the host classes below
    STUDENT_OUTPUTS: Callable[[nn.Module, torch.Tensor], StudentOutputs] = staticmethod(prompted_clip_outputs)

    def __new__(cls, *args, **kwargs):
        if not cls.HOST:
            cfg = args[0] if args else kwargs["cfg"]
            cls = host_class(cls, cfg.TRAINER.KDPL.HOST)
        return object.__new__(cls)

    # ----------------------------------------------------------------- configuration
    def check_cfg(self, cfg) -> None:
        super().check_cfg(cfg)
        kdpl = cfg.TRAINER.KDPL
        # Only a <Host>_KDPL name can differ from HOST: it fixes the host and accepts HOST's default value only.
        if kdpl.HOST not in (self.HOST, DEFAULT_HOST):
            raise UserError(f"Trainer {cfg.TRAINER.NAME} distils into a {self.HOST} student, but TRAINER.KDPL.HOST "
                            f"is {kdpl.HOST!r}: drop the key, or use --trainer "
                            f"{'KDPL_RSM' if self.USES_RSM else 'KDPL'} to choose the host with it")
        teacher_source(cfg)  # a name that cannot be loaded stops the run now
        self.class_list: Optional[List[str]] = None
        self.k = 0
        if kdpl.CLASS_AGNOSTIC:
            if self.HOST == "CoOp" and cfg.TRAINER.COOP.CSC and not cfg.TRAINER.COOP.CTX_INIT:
                raise UserError("TRAINER.COOP.CSC True learns one context per training class, so it cannot score "
                                "the class list of TRAINER.KDPL.CLASS_AGNOSTIC True: set TRAINER.COOP.CSC False")
            self.class_list = read_class_list(kdpl.CLASS_LIST)
            self.k = effective_k(kdpl.K_MAX, len(self.class_list))
            clamped = f" (TRAINER.KDPL.K_MAX {kdpl.K_MAX} clamped to the list size)" if self.k < kdpl.K_MAX else ""
            print(f"KDPL class-agnostic: {len(self.class_list)} class names from {kdpl.CLASS_LIST}, "
                  f"{self.k} per batch{clamped}")
        self.rsm_term: Optional[RSMTerm] = None
        self._rsm_prefix: Optional[str] = None
        if self.USES_RSM:
            self.rsm_term = RSMTerm.from_cfg(cfg)
            if self.rsm_term.image_feature != "projected":
                raise UserError(f"TRAINER.RSM.IMAGE_FEATURE {self.rsm_term.image_feature!r} does not apply to "
                                f"{cfg.TRAINER.NAME}: its student has no projector after the CLIP image tower, so "
                                f"the manifold takes the image features that enter the logits; set it to 'projected'")

    # ----------------------------------------------------------------- model
    def build_model(self) -> None:
        self.teacher: Optional[ZeroShotTeacher] = None  # built when training starts (kdpl_teacher)
        super().build_model()
        if self.rsm_term is not None:
            print(self.rsm_term.describe())

    def build_custom_clip(self, cfg, classnames: Sequence[str]) -> nn.Module:
        """The host's student; KDPL_RSM attaches the RSM projections to the module the host trains."""
        model = super().build_custom_clip(cfg, classnames)
        if self.rsm_term is not None:
            self.model = model  # trained_module() reads it; build_model assigns the same object
            dim = model.image_encoder.output_dim
            module = self.rsm_term.build_module(projected_dim=dim, backbone_dim=dim,
                                                text_dim=model.text_encoder.text_projection.shape[1])
            self.trained_module().rsm = module
            owner = next(name for name, sub in model.named_modules() if sub is module)
            self._rsm_prefix = f"{owner}."
        return model

    def is_trainable(self, name: str) -> bool:
        if self._rsm_prefix is not None and name.startswith(self._rsm_prefix):
            return True
        return super().is_trainable(name)

    @property
    def rsm_module(self) -> nn.Module:
        return self.trained_module().rsm

    def kdpl_teacher(self) -> ZeroShotTeacher:
        """The zero-shot teacher, built on first use with the text features of the classes it scores."""
        if self.teacher is None:
            cfg = self.cfg
            if self.class_list is not None:
                names, template = self.class_list, CLASS_AGNOSTIC_TEMPLATE
            else:
                names = self.classnames
                try:
                    template = get_template(cfg.DATASET.NAME)
                except KeyError as error:
                    raise UserError(f"KDPL's teacher needs a prompt template for DATASET.NAME {cfg.DATASET.NAME!r}: "
                                    f"{error.args[0]}") from error
            teacher = build_zero_shot_teacher(cfg, class_prompts(names, template), device=self.device)
            check_input_size(cfg, teacher.visual, "teacher")
            if self.device.type == "cuda" and self.precision.autocast_dtype is not None:
                teacher.cast_image_tower(self.precision.autocast_dtype)
            self.teacher = teacher
        return self.teacher

    def before_train(self) -> None:
        self.kdpl_teacher()  # a missing or unfit teacher stops the run before anything else
        super().before_train()

    # ----------------------------------------------------------------- training
    def student_outputs(self, image: torch.Tensor) -> StudentOutputs:
        """(logits over the student's current classes, image features, text features) of the student."""
        return type(self).STUDENT_OUTPUTS(self.model, image)

    def teacher_logits(self, image: torch.Tensor) -> torch.Tensor:
        """The teacher's logits over all its classes, scaled by the student's ``exp(logit_scale)``."""
        with self.precision.autocast():
            return self.kdpl_teacher().logits(image, self.model.logit_scale.exp())

    def select_classes(self, teacher_logits: torch.Tensor) -> torch.Tensor:
        """Class-agnostic mode: the indices of the ``K_MAX`` classes of largest batch-averaged teacher softmax."""
        return top_classes(all_reduce_sum(batch_class_probabilities(teacher_logits)), self.k)

    def use_dataset_classes(self) -> None:
        """Give the student the dataset's classes back (after class-agnostic steps switched them)."""
        if list(self.model.prompt_learner.classnames) != list(self.classnames):
            self.model.set_classnames(self.classnames)

    def forward_backward(self, batch) -> Dict[str, float]:
        image, _ = self.parse_batch_train(batch)  # labels are never used
        teacher_logits = self.teacher_logits(image)
        if self.class_list is not None:
            selected = self.select_classes(teacher_logits)
            teacher_logits = teacher_logits[:, selected]
            self.model.set_classnames(names_at(self.class_list, selected))
        with self.precision.autocast():
            logits, image_features, text_features = self.student_outputs(image)
            loss_kd, forward, reverse = symmetric_kl(logits, teacher_logits)
            rsm = None
            if self.rsm_term is not None:
                # The term gathers the whole global batch's image rows itself.
                rsm = self.rsm_term.loss(self.rsm_module, image_features, image_features, text_features)
        loss = loss_kd
        summary = {"kl_fwd": forward.item(), "kl_rev": reverse.item()}
        if rsm is not None:
            loss_rsm, rsm_summary = rsm
            loss = loss_kd + loss_rsm
            summary.update({"kd": loss_kd.item(), **{key: value.item() for key, value in rsm_summary.items()}})
        self.model_backward_and_update(loss)
        if self.batch_idx + 1 == self.num_batches:
            self.update_lr()
        return {"loss": loss.item(), **summary}

    def run_epoch(self) -> None:
        try:
            super().run_epoch()
        finally:
            self.use_dataset_classes()

    # ----------------------------------------------------------------- evaluation and results
    def test(self, split: Optional[str] = None) -> float:
        self.use_dataset_classes()
        return super().test(split)

    def results_extra(self) -> dict:
        kdpl = self.cfg.TRAINER.KDPL
        return {**super().results_extra(), "host": self.HOST, "class_agnostic": bool(kdpl.CLASS_AGNOSTIC),
                "teacher": kdpl.TEACHER_WEIGHTS or kdpl.TEACHER}


@TRAINER_REGISTRY.register()
class KDPL_RSM(KDPL):
    """KDPL plus the RSM entropy term; see the module docstring."""

    USES_RSM = True


@TRAINER_REGISTRY.register()
class CoOp_KDPL(KDPL, CoOp):
    """KDPL with CoOp's student (KDPL's ``CoOp_KDPL``)."""

    HOST = "CoOp"


@TRAINER_REGISTRY.register()
class CoCoOp_KDPL(KDPL, CoCoOp):
    """KDPL with CoCoOp's student (KDPL's ``CoCoOp_KDPL``)."""

    HOST = "CoCoOp"
    STUDENT_OUTPUTS = staticmethod(cocoop_outputs)


@TRAINER_REGISTRY.register()
class IVLP_KDPL(KDPL, IVLP):
    """KDPL with IVLP's student (deep prompts on both towers, PromptSRC's layout)."""

    HOST = "IVLP"


@TRAINER_REGISTRY.register()
class MaPLe_KDPL(KDPL, MaPLe):
    """KDPL with MaPLe's student (KDPL's ``MaPLe_KDPL``)."""

    HOST = "MaPLe"
    STUDENT_OUTPUTS = staticmethod(maple_outputs)


@TRAINER_REGISTRY.register()
class CoOp_KDPL_RSM(KDPL_RSM, CoOp):
    """KDPL_RSM with CoOp's student."""

    HOST = "CoOp"


@TRAINER_REGISTRY.register()
class IVLP_KDPL_RSM(KDPL_RSM, IVLP):
    """KDPL_RSM with IVLP's student."""

    HOST = "IVLP"


@TRAINER_REGISTRY.register()
class MaPLe_KDPL_RSM(KDPL_RSM, MaPLe):
    """KDPL_RSM with MaPLe's student."""

    HOST = "MaPLe"
    STUDENT_OUTPUTS = staticmethod(maple_outputs)


KDPL_HOSTS: Dict[str, type] = {"CoOp": CoOp_KDPL, "CoCoOp": CoCoOp_KDPL, "IVLP": IVLP_KDPL, "MaPLe": MaPLe_KDPL}
KDPL_RSM_HOSTS: Dict[str, type] = {"CoOp": CoOp_KDPL_RSM, "IVLP": IVLP_KDPL_RSM, "MaPLe": MaPLe_KDPL_RSM}


def host_class(variant: type, host: str) -> type:
    """The trainer class of ``variant`` (``KDPL`` or ``KDPL_RSM``) for ``TRAINER.KDPL.HOST`` ``host``."""
    hosts = KDPL_RSM_HOSTS if variant.USES_RSM else KDPL_HOSTS
    if host not in hosts:
        why = (" (CoCoOp's text features differ per image, so the RSM manifold has no text rows)"
               if variant.USES_RSM and host in KDPL_HOSTS else "")
        raise UserError(f"TRAINER.KDPL.HOST must be one of {list(hosts)} for {variant.__name__}, got {host!r}{why}")
    return hosts[host]


__all__ = ["CoCoOp_KDPL", "CoOp_KDPL", "CoOp_KDPL_RSM", "IVLP_KDPL", "IVLP_KDPL_RSM", "KDPL", "KDPL_HOSTS", "KDPL_RSM",
           "KDPL_RSM_HOSTS", "MaPLe_KDPL", "MaPLe_KDPL_RSM", "host_class", "symmetric_kl"]
