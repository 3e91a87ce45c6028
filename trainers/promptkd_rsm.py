"""PromptKD + RSM (AME): PromptKD's student and KD loss plus ``TRAINER.RSM.WEIGHT * H(M)`` (trainers/rsm.py).

``TRAINER.RSM.WEIGHT 0`` gives exactly PromptKD's run with the same seed (the RSM module is built from
its own generator and kept in the checkpoint, but the term is skipped).
"""
from dassl.engine import TRAINER_REGISTRY
from trainers.promptkd import PromptKD


@TRAINER_REGISTRY.register()
class PromptKD_RSM(PromptKD):
    """PromptKD with the reconfigured-shared-manifold entropy term."""

    USES_RSM = True
