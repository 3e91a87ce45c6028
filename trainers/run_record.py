"""The evaluation record of a distillation run: what was measured, on which weights, and what it means.

A run evaluates model states (the weights after epoch ``e``) on splits. Under PromptKD's protocols:

- base2novel and base_only: ``val`` holds the base classes' test images and ``test`` the new classes'
  test images; an entry of results.json is ``{"epoch", "base", "new", "hm"}`` = (val, test, their
  harmonic mean);
- cross: ``val`` and ``test`` are the same target test set, so one measurement serves both, and an
  entry is ``{"epoch", "accuracy"}``.

The trainer feeds the record (``add``) and asks it what is still missing for an entry (``missing``);
"best" is the earliest epoch with the highest val (base) accuracy, which is the checkpoint the engine
saves as ``model-best.pth.tar`` (it replaces the best only on a strict improvement).

With ``TRAINER.PROMPTKD.SELECT_HOLDOUT`` the record also keeps, per epoch, the student's agreement with
the teacher on held-out training images (``add_agreement``); the "agreement-selected" epoch is the
earliest epoch with the highest agreement, which is the checkpoint the trainer keeps as
``model-agreement.pth.tar`` (replaced only on a strict improvement, as model-best). The record is plain
data (``state_dict`` / ``load_state_dict``), so a resumed run continues it.
"""
from __future__ import annotations

from typing import Dict, List, Optional

from datasets.protocols import DISTILL_PROTOCOLS
from trainers.results import base2novel_entry, cross_entry

SPLITS = ("val", "test")


def _earliest_best(history: Dict[int, float]) -> Optional[int]:
    """The earliest epoch with the highest value in ``history`` (None when it is empty)."""
    if not history:
        return None
    return max(history, key=lambda epoch: (history[epoch], -epoch))


class RunRecord:
    """Accuracies per (epoch of the weights, split) for one distillation run."""

    def __init__(self, protocol: str) -> None:
        if protocol not in DISTILL_PROTOCOLS:
            raise ValueError(f"unknown protocol {protocol!r}; expected one of {DISTILL_PROTOCOLS}")
        self.protocol = protocol
        self._accuracy: Dict[int, Dict[str, float]] = {}
        self._agreement: Dict[int, float] = {}

    # ----------------------------------------------------------------- feeding
    def add(self, epoch: int, split: str, accuracy: float) -> None:
        """Record the accuracy of the weights after ``epoch`` on ``split``."""
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
        splits = SPLITS if self.protocol == "cross" else (split,)  # cross: val and test are one set
        for name in splits:
            self._accuracy.setdefault(int(epoch), {})[name] = float(accuracy)

    def add_agreement(self, epoch: int, agreement: float) -> None:
        """Record the held-out agreement (%) of the student with the teacher after ``epoch``."""
        self._agreement[int(epoch)] = float(agreement)

    # ----------------------------------------------------------------- reading
    def get(self, epoch: int, split: str) -> Optional[float]:
        """The recorded accuracy, or None when that state was not evaluated on that split."""
        return self._accuracy.get(int(epoch), {}).get(split)

    def missing(self, epoch: int) -> List[str]:
        """The splits a results entry for ``epoch`` still needs."""
        needed = ("test",) if self.protocol == "cross" else SPLITS
        return [split for split in needed if self.get(epoch, split) is None]

    @property
    def val_by_epoch(self) -> Dict[int, float]:
        """Val (base) accuracy per epoch, for the epochs that were validated."""
        return {epoch: acc["val"] for epoch, acc in sorted(self._accuracy.items()) if "val" in acc}

    @property
    def best_epoch(self) -> Optional[int]:
        """The earliest epoch with the highest val accuracy (None before any validation)."""
        return _earliest_best(self.val_by_epoch)

    @property
    def agreement_by_epoch(self) -> Dict[int, float]:
        """Held-out agreement with the teacher per epoch (empty when the option is off)."""
        return dict(sorted(self._agreement.items()))

    @property
    def agreement_epoch(self) -> Optional[int]:
        """The earliest epoch with the highest held-out agreement (None before any was measured)."""
        return _earliest_best(self._agreement)

    def selected_entry(self, epoch: int) -> dict:
        """The results.json entry of the agreement-selected weights: :meth:`entry` plus ``agreement``."""
        if int(epoch) not in self._agreement:
            raise ValueError(f"epoch {epoch} has no recorded agreement")
        return {**self.entry(epoch), "agreement": round(self._agreement[int(epoch)], 4)}

    def entry(self, epoch: int) -> dict:
        """The results.json entry of the weights after ``epoch`` (every needed split must be recorded)."""
        absent = self.missing(epoch)
        if absent:
            raise ValueError(f"epoch {epoch} was not evaluated on {absent}")
        if self.protocol == "cross":
            return cross_entry(epoch, self.get(epoch, "test"))
        return base2novel_entry(epoch, self.get(epoch, "val"), self.get(epoch, "test"))

    # ----------------------------------------------------------------- persistence
    def state_dict(self) -> dict:
        """Plain data for a resume checkpoint."""
        return {"protocol": self.protocol,
                "accuracy": {str(epoch): dict(acc) for epoch, acc in self._accuracy.items()},
                "agreement": {str(epoch): value for epoch, value in self._agreement.items()}}

    def load_state_dict(self, state: dict) -> None:
        """Continue a record saved by :meth:`state_dict` (same protocol)."""
        if state.get("protocol") != self.protocol:
            raise ValueError(f"the saved record is for protocol {state.get('protocol')!r}, not {self.protocol!r}")
        self._accuracy = {int(epoch): {k: float(v) for k, v in acc.items()}
                          for epoch, acc in state.get("accuracy", {}).items()}
        self._agreement = {int(epoch): float(value) for epoch, value in state.get("agreement", {}).items()}
