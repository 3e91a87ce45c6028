"""Text prompt learners of the supervised prompt-learning methods: the one home of their shared parts.

Every learner turns class names into the prompt embeddings ``[n_cls, L, D]`` that the CLIP text tower
reads: a start token, learnable context vectors, then the class-name words, ".", the end token and
padding. What is class-dependent is kept apart from what is learnt, so a trained context scores other
classes (the new classes of base-to-new, another dataset) once the class part is rebuilt:

- :class:`ClassTokenPrompts` (base class): the frozen per-class buffers ``token_prefix`` [n_cls, 1, D]
  (start token) and ``token_suffix`` [n_cls, L - 1 - n_ctx, D] (everything after the context), saved
  in checkpoints as the originals do, and the non-persistent ``tokenized_prompts`` [n_cls, L] (locates
  the end token). :meth:`ClassTokenPrompts.set_classnames` rebuilds all three for other class names and
  keeps the learnt context; loaders drop the saved buffers for the same reason.
- :class:`CoOpPromptLearner` (CoOp): a generic or class-specific (``CSC``) context; the class words at
  the end, middle or front (``CLASS_TOKEN_POSITION``).
- :class:`CoCoOpPromptLearner` (CoCoOp): a generic context shifted per image by the meta-network
  ``meta_net`` (``linear1`` -> ``relu`` -> ``linear2``) applied to the normalised image feature.
- :class:`MultiModalPromptLearner` (MaPLe): the text context, its projection ``proj`` to the visual
  width (the shallow visual prompt), deep text prompts ``compound_prompts_text.<k>`` and their
  projections ``compound_prompt_projections.<k>`` (the deep visual prompts).
- IVLP / PromptSRC's ``VLPromptLearner`` (``trainers.promptsrc_model``) builds on the same base.

Two rules decide the context length and its initial value when ``CTX_INIT`` is set:
:func:`coop_context` (CoOp, CoCoOp: the init text *is* the context, ``N_CTX`` is ignored) and
:func:`prompt_prefix_and_init` (IVLP, MaPLe, PromptSRC: the first ``n_ctx`` init tokens, used only
when ``n_ctx <= 4``; the whole init text stays in the prompt string).

Parameter and buffer names are those of the original implementations, so their checkpoints load. All
tensors are float32; mixed precision comes from the trainer's autocast.
"""
from __future__ import annotations

import copy
from collections import OrderedDict
from typing import List, Sequence, Tuple

import torch
from torch import nn

import clip
from clip.simple_tokenizer import get_tokenizer

CTX_INIT_MAX_TOKENS = 4  # IVLP / MaPLe / PromptSRC initialise ctx from CTX_INIT only when n_ctx <= 4
CTX_INIT_STD = 0.02  # normal(0, 0.02): the init of every random context and deep prompt
CLASS_TOKEN_POSITIONS = ("end", "middle", "front")
META_NET_REDUCTION = 16  # CoCoOp's meta-net hidden width = image feature width // 16


def prompt_prefix_and_init(ctx_init: str, n_ctx: int) -> Tuple[str, bool]:
    """``(prefix, init_from_words)``: the words before the class name and whether ``ctx`` copies them.

    IVLP / MaPLe / PromptSRC rule: with a non-empty ``ctx_init`` and ``n_ctx <= 4`` the prefix is
    ``ctx_init`` (underscores as spaces) and ``ctx`` starts as its first ``n_ctx`` token embeddings;
    otherwise the prefix is ``n_ctx`` times ``"X"`` and ``ctx`` is random normal(0, 0.02).
    """
    if ctx_init and n_ctx <= CTX_INIT_MAX_TOKENS:
        return ctx_init.replace("_", " "), True
    return " ".join(["X"] * n_ctx), False


def coop_context(ctx_init: str, n_ctx: int) -> Tuple[str, int, bool]:
    """``(prefix, n_ctx, init_from_words)`` by CoOp's rule (CoOp and CoCoOp).

    With a non-empty ``ctx_init`` the context *is* the init text: as many context vectors as it has
    tokens, initialised from their embeddings, whatever ``n_ctx`` says ("CoOp: CTX_INIT sets the
    context length" in docs/compatibility.md). Otherwise ``n_ctx`` random vectors and ``"X"`` words.
    """
    if ctx_init:
        text = ctx_init.replace("_", " ")
        return text, len(get_tokenizer().encode(text)), True
    return " ".join(["X"] * n_ctx), n_ctx, False


def class_prompt_texts(classnames: Sequence[str], prefix: str) -> List[str]:
    """One prompt string per class: ``"<prefix> <class name with spaces>."``."""
    return [f"{prefix} {name.replace('_', ' ')}." for name in classnames]


def random_context(*shape: int) -> torch.Tensor:
    """A context / deep-prompt tensor drawn from normal(0, 0.02)."""
    return torch.empty(*shape).normal_(0.0, CTX_INIT_STD)


class ClassTokenPrompts(nn.Module):
    """Base of the text prompt learners: the frozen per-class token buffers around ``n_ctx`` context slots.

    Keeps a reference to the CLIP token embedding (outside the module tree, so it is neither saved nor
    moved to the device: the originals' models do not hold it either) to rebuild the buffers for other
    class names with :meth:`set_classnames`.
    """

    def __init__(self, clip_model: nn.Module, n_ctx: int, prompt_prefix: str, classnames: Sequence[str]) -> None:
        super().__init__()
        context_length = clip_model.context_length
        if n_ctx < 1:
            raise ValueError(f"the text prompt learner needs at least one context token, got n_ctx={n_ctx}")
        if 1 + n_ctx >= context_length:
            raise ValueError(f"n_ctx={n_ctx} does not fit the context length {context_length}")
        self._token_embedding = (clip_model.token_embedding,)  # a tuple: not registered as a sub-module
        self.context_length = context_length
        self.width = clip_model.token_embedding.weight.shape[1]
        self.n_ctx = n_ctx
        self.prompt_prefix = prompt_prefix
        self.set_classnames(classnames)

    @torch.no_grad()
    def word_embeddings(self, token_ids: torch.Tensor) -> torch.Tensor:
        """Token embeddings (float32, no gradient) of ``token_ids``, on the embedding's device."""
        embedding = self._token_embedding[0]
        return embedding(token_ids.to(embedding.weight.device)).float()

    def context_from_words(self, text: str, n_ctx: int) -> torch.Tensor:
        """The embeddings [n_ctx, D] of the first ``n_ctx`` tokens of ``text`` (a context init)."""
        ids = clip.tokenize([text], context_length=self.context_length)
        return self.word_embeddings(ids)[0, 1:1 + n_ctx].clone()

    def set_classnames(self, classnames: Sequence[str]) -> None:
        """(Re)build ``token_prefix``, ``token_suffix`` and ``tokenized_prompts`` for ``classnames``.

        The learnt context is kept; the buffers land on the device of the current ones.
        """
        if not classnames:
            raise ValueError("the text prompt learner needs at least one class name")
        texts = class_prompt_texts(classnames, self.prompt_prefix)
        tokenized = clip.tokenize(texts, context_length=self.context_length)
        embeddings = self.word_embeddings(tokenized)
        current = self._buffers.get("token_prefix")
        device = current.device if current is not None else embeddings.device
        self.register_buffer("token_prefix", embeddings[:, :1].clone().to(device))
        self.register_buffer("token_suffix", embeddings[:, 1 + self.n_ctx:].clone().to(device))
        self.register_buffer("tokenized_prompts", tokenized.to(device), persistent=False)
        self.classnames = list(classnames)
        self.n_cls = len(classnames)

    def assemble(self, ctx: torch.Tensor) -> torch.Tensor:
        """Prompt embeddings [n_cls, L, D] = start token, ``ctx`` ([n_ctx, D] shared or [n_cls, n_ctx, D]),
        then each class's suffix."""
        if ctx.dim() == 2:
            ctx = ctx.unsqueeze(0).expand(self.n_cls, -1, -1)
        return torch.cat([self.token_prefix, ctx.to(self.token_prefix.dtype), self.token_suffix], dim=1)


class CoOpPromptLearner(ClassTokenPrompts):
    """CoOp's learner: ``ctx`` [n_ctx, D] (or [n_cls, n_ctx, D] with ``class_specific``), class words
    at the ``class_token_position``."""

    def __init__(self, classnames: Sequence[str], clip_model: nn.Module, n_ctx: int = 16, ctx_init: str = "",
                 class_specific: bool = False, class_token_position: str = "end", verbose: bool = True) -> None:
        if class_token_position not in CLASS_TOKEN_POSITIONS:
            raise ValueError(f"CLASS_TOKEN_POSITION must be one of {list(CLASS_TOKEN_POSITIONS)}, "
                             f"got {class_token_position!r}")
        prefix, n_ctx, init_from_words = coop_context(ctx_init, n_ctx)
        super().__init__(clip_model, n_ctx, prefix, classnames)
        # CoOp ignores CSC when CTX_INIT is given: the init words are one shared context.
        self.class_specific = bool(class_specific) and not init_from_words
        if init_from_words:
            ctx = self.context_from_words(prefix, n_ctx)
        elif self.class_specific:
            ctx = random_context(self.n_cls, n_ctx, self.width)
        else:
            ctx = random_context(n_ctx, self.width)
        self.ctx = nn.Parameter(ctx)
        self.class_token_position = class_token_position
        if verbose:
            if not init_from_words:
                print("Initializing class-specific contexts" if self.class_specific
                      else "Initializing a generic context")
            print(f'Initial context: "{prefix}"')
            print(f"Number of context words (tokens): {n_ctx}")

    def set_classnames(self, classnames: Sequence[str]) -> None:
        ctx = self._parameters.get("ctx")
        if ctx is not None and ctx.dim() == 3 and ctx.shape[0] != len(classnames):
            raise ValueError(f"a class-specific context (TRAINER.COOP.CSC True) holds one context per training "
                             f"class ({ctx.shape[0]}); it cannot score {len(classnames)} other classes")
        super().set_classnames(classnames)
        tokenizer = get_tokenizer()
        self.name_lens = [len(tokenizer.encode(name.replace("_", " "))) for name in classnames]

    def forward(self) -> torch.Tensor:
        """Prompt embeddings [n_cls, L, D] in label order."""
        if self.class_token_position == "end":
            return self.assemble(self.ctx)
        ctx = self.ctx if self.ctx.dim() == 3 else self.ctx.unsqueeze(0).expand(self.n_cls, -1, -1)
        ctx = ctx.to(self.token_prefix.dtype)
        half = self.n_ctx // 2
        prompts = []
        for i, name_len in enumerate(self.name_lens):
            prefix, suffix = self.token_prefix[i], self.token_suffix[i]
            name, rest = suffix[:name_len], suffix[name_len:]
            if self.class_token_position == "middle":
                parts = [prefix, ctx[i, :half], name, ctx[i, half:], rest]
            else:  # front
                parts = [prefix, name, ctx[i], rest]
            prompts.append(torch.cat(parts, dim=0))
        return torch.stack(prompts)


class CoCoOpPromptLearner(ClassTokenPrompts):
    """CoCoOp's learner: a shared ``ctx`` plus a per-image shift from ``meta_net``."""

    def __init__(self, classnames: Sequence[str], clip_model: nn.Module, n_ctx: int = 16, ctx_init: str = "",
                 verbose: bool = True) -> None:
        prefix, n_ctx, init_from_words = coop_context(ctx_init, n_ctx)
        super().__init__(clip_model, n_ctx, prefix, classnames)
        self.ctx = nn.Parameter(self.context_from_words(prefix, n_ctx) if init_from_words
                                else random_context(n_ctx, self.width))
        image_dim = clip_model.visual.output_dim
        hidden = max(image_dim // META_NET_REDUCTION, 1)
        self.meta_net = nn.Sequential(OrderedDict([
            ("linear1", nn.Linear(image_dim, hidden)),
            ("relu", nn.ReLU(inplace=True)),
            ("linear2", nn.Linear(hidden, self.width)),
        ]))
        if verbose:
            print(f'Initial context: "{prefix}"')
            print(f"Number of context words (tokens): {n_ctx}")

    def forward(self, image_features: torch.Tensor) -> torch.Tensor:
        """Per-image contexts [B, n_ctx, D] = ``ctx`` + meta_net(normalised image features) (one shift per
        image, added to every context token). :meth:`assemble` turns one of them into prompts."""
        shift = self.meta_net(image_features)
        return self.ctx.unsqueeze(0) + shift.unsqueeze(1)


class MultiModalPromptLearner(ClassTokenPrompts):
    """MaPLe's learner: text ``ctx`` and deep text prompts, and their projections to the vision tower.

    ``compound_prompt_projections`` start as copies of one freshly initialised Linear, as in MaPLe
    ("MaPLe: identical projection init" in docs/compatibility.md). With ``prompt_depth`` J there are
    J - 1 deep prompts of each kind (blocks 1 .. J - 1).
    """

    def __init__(self, classnames: Sequence[str], clip_model: nn.Module, n_ctx: int = 2,
                 ctx_init: str = "a photo of a", prompt_depth: int = 9, verbose: bool = True) -> None:
        if prompt_depth < 1:
            raise ValueError(f"MaPLe's PROMPT_DEPTH must be >= 1 (1 = shallow MaPLe), got {prompt_depth}")
        prefix, init_from_words = prompt_prefix_and_init(ctx_init, n_ctx)
        super().__init__(clip_model, n_ctx, prefix, classnames)
        self.ctx = nn.Parameter(self.context_from_words(prefix, n_ctx) if init_from_words
                                else random_context(n_ctx, self.width))
        vision_width = clip_model.visual.conv1.weight.shape[0]
        self.proj = nn.Linear(self.width, vision_width)
        self.compound_prompts_text = nn.ParameterList(
            [nn.Parameter(random_context(n_ctx, self.width)) for _ in range(prompt_depth - 1)])
        template = nn.Linear(self.width, vision_width)
        self.compound_prompt_projections = nn.ModuleList(
            [copy.deepcopy(template) for _ in range(prompt_depth - 1)])
        self.prompt_depth = prompt_depth
        if verbose:
            print("MaPLe design: Multi-modal Prompt Learning")
            print(f'Initial context: "{prefix}"')
            print(f"Number of MaPLe context words (tokens): {n_ctx}")

    def forward(self) -> Tuple[torch.Tensor, torch.Tensor, List[torch.Tensor], List[torch.Tensor]]:
        """``(text prompts [n_cls, L, D], shallow visual prompt [n_ctx, W], deep text prompts, deep
        visual prompts)``; deep prompt k enters block k + 1 of its tower."""
        deep_text = list(self.compound_prompts_text)
        deep_vision = [project(prompt) for project, prompt in zip(self.compound_prompt_projections, deep_text)]
        return self.assemble(self.ctx), self.proj(self.ctx), deep_text, deep_vision


__all__ = ["CLASS_TOKEN_POSITIONS", "CTX_INIT_MAX_TOKENS", "CTX_INIT_STD", "ClassTokenPrompts", "CoCoOpPromptLearner",
           "CoOpPromptLearner", "MultiModalPromptLearner", "class_prompt_texts", "coop_context",
           "prompt_prefix_and_init", "random_context"]
