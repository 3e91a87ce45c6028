"""The class list of class-agnostic KDPL and the per-batch choice of the classes a step distils over.

Class-agnostic KDPL (``TRAINER.KDPL.CLASS_AGNOSTIC True``) does not use the dataset's class names:
teacher and student score every image against a large list of names, and each step keeps only the
``K_MAX`` names the teacher finds most probable for the batch:

- :func:`read_class_list` reads ``TRAINER.KDPL.CLASS_LIST``. Three formats are recognised: KDPL's
  CSV (a header row with a ``ClassName`` column; any file ending in ``.csv``), ImageNet's
  ``classnames.txt`` of the CoOp layout (``<wnid> <name>`` lines, read without the WordNet ids), and
  plain text with one name a line. Blank lines are skipped and repeated names kept once (a name
  listed twice would only take two of the K slots).
- :func:`batch_class_probabilities` and :func:`top_classes` choose the step's classes: the softmax of
  the teacher logits over the whole list, averaged over the images of the batch, and its ``k`` largest
  entries (``k`` clamped to the list size by :func:`effective_k`).

This repository ships no list: KDPL's 20,930-name ``classnames_dictionay.csv`` belongs to KDPL. Point
the key at that file, at ``$DATA/imagenet/classnames.txt`` (1,000 names) or at a list of your own.
"""
from __future__ import annotations

import csv
import os
import re
from typing import List, Sequence

import torch
import torch.nn.functional as F

from dassl.utils import UserError

CONFIG_KEY = "TRAINER.KDPL.CLASS_LIST"
CSV_COLUMN = "ClassName"  # the column of KDPL's classnames_dictionay.csv
IMAGENET_LINE = re.compile(r"^n\d{8}\s+(\S.*)$")  # "<wnid> <class name>" (ImageNet's classnames.txt)


def _names_from_csv(path: str) -> List[str]:
    with open(path, newline="", encoding="utf-8") as stream:
        reader = csv.DictReader(stream)
        if not reader.fieldnames or CSV_COLUMN not in reader.fieldnames:
            raise UserError(f"{CONFIG_KEY} {path}: a .csv class list needs a {CSV_COLUMN!r} column (KDPL's format); "
                            f"its header is {reader.fieldnames}")
        return [row[CSV_COLUMN] or "" for row in reader]


def _names_from_text(path: str) -> List[str]:
    with open(path, encoding="utf-8") as stream:
        lines = [line.strip() for line in stream]
    lines = [line for line in lines if line]
    matches = [IMAGENET_LINE.match(line) for line in lines]
    if lines and all(matches):
        return [match.group(1).strip() for match in matches]
    return lines


def read_class_list(path: str) -> List[str]:
    """The class names in ``path`` (see the module docstring for the formats), in file order, each once."""
    if not path:
        raise UserError(f"TRAINER.KDPL.CLASS_AGNOSTIC True needs a list of class names: set {CONFIG_KEY} to a text "
                        f"file (one name a line), ImageNet's classnames.txt or KDPL's classnames_dictionay.csv")
    if not os.path.isfile(path):
        raise UserError(f"{CONFIG_KEY}: file not found: {os.path.abspath(path)}")
    try:
        raw = _names_from_csv(path) if path.lower().endswith(".csv") else _names_from_text(path)
    except UnicodeDecodeError as error:
        raise UserError(f"{CONFIG_KEY} {path} is not UTF-8 text: {error}") from error
    names = list(dict.fromkeys(name.strip() for name in raw if name.strip()))
    if not names:
        raise UserError(f"{CONFIG_KEY} {path} holds no class names")
    return names


def effective_k(k_max: int, num_names: int) -> int:
    """The number of classes a step keeps: ``K_MAX``, or the whole list when it is shorter."""
    if k_max < 1:
        raise UserError(f"TRAINER.KDPL.K_MAX must be >= 1, got {k_max}")
    return min(int(k_max), int(num_names))


def batch_class_probabilities(teacher_logits: torch.Tensor) -> torch.Tensor:
    """Sum over the batch of the teacher's softmax over the class list (float32, [num_names]).

    A sum, not the mean, so that the rows of several processes can be added before dividing by the
    global batch size; the ranking of :func:`top_classes` is the same for both.
    """
    with torch.autocast(device_type=teacher_logits.device.type, enabled=False):
        return F.softmax(teacher_logits.float(), dim=1).sum(dim=0)


def top_classes(class_scores: torch.Tensor, k: int) -> torch.Tensor:
    """Indices of the ``k`` largest entries of ``class_scores`` ([num_names]), largest first."""
    if class_scores.dim() != 1:
        raise ValueError(f"class scores must be one value per class, got shape {tuple(class_scores.shape)}")
    return torch.topk(class_scores, k=min(k, class_scores.numel()), largest=True, sorted=True).indices


def names_at(names: Sequence[str], indices: torch.Tensor) -> List[str]:
    """``names`` at ``indices`` (a 1-D index tensor), in index order."""
    return [names[i] for i in indices.tolist()]


__all__ = ["CONFIG_KEY", "batch_class_probabilities", "effective_k", "names_at", "read_class_list", "top_classes"]
