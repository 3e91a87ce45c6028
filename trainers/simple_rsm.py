"""Simple + RSM (AME): the Simple host plus ``TRAINER.RSM.WEIGHT * H(M)`` (trainers/rsm.py)."""
from dassl.engine import TRAINER_REGISTRY
from trainers.simple import Simple


@TRAINER_REGISTRY.register()
class Simple_RSM(Simple):
    """Simple with the reconfigured-shared-manifold entropy term."""

    USES_RSM = True
