"""Detector distillation on the training engine (``python -m
hcam_ops.distill.train``; docs/distill.md): the detectors (registered with
timm on import), the :class:`Distiller`, the data and the task."""

from . import detectors  # noqa: F401  (registers the model names with timm)
from .detectors import DETECTOR_NAMES, DISTILLER_NAME, FeatureTap, score_maps
from .distiller import Distiller, presets, student_state

__all__ = ["DETECTOR_NAMES", "DISTILLER_NAME", "Distiller", "FeatureTap", "presets", "score_maps", "student_state"]
