"""Evaluators (``TEST.EVALUATOR``) and their registry."""
from dassl.evaluation.build import EVALUATOR_REGISTRY, build_evaluator  # noqa: F401
from dassl.evaluation.evaluator import Classification, EvaluatorBase  # noqa: F401
