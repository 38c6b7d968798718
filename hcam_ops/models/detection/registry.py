"""Every detector of :mod:`hcam_ops.models.detection.builders`, registered
with timm on import, so :func:`hcam_ops.models.build_model` rebuilds one
from a checkpoint alone (``model_name`` + ``model_config``, the
``build_detector`` keywords)."""

from __future__ import annotations

from timm.models import register_model
from torch import nn

from .._factory import TIMM_KEYS, refuse_pretrained
from .builders import DETECTOR_NAMES, build_detector


def _entry(name: str):
    def fn(pretrained: bool = False, **kwargs) -> nn.Module:
        refuse_pretrained(name, pretrained, "load a local checkpoint (nothing is downloaded)")
        for k in TIMM_KEYS:
            kwargs.pop(k, None)
        return build_detector(name, **kwargs)

    fn.__name__ = fn.__qualname__ = name
    fn.__module__ = __name__
    fn.__doc__ = f"torchvision's {name} with random weights (hcam_ops.models.detection)."
    return fn


for _name in DETECTOR_NAMES:
    globals()[_name] = register_model(_entry(_name))
