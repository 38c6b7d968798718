"""Models built on the hcam_ops kernels, registered with timm on import:
``cast_small``, ``cast_small_deep``, ``cast_base``, ``cast_base_deep`` (CAST /
H-CAST as published, one to three hierarchical heads) and their ``*_cam``
variants (:class:`CASTWithCAM`, returning the intermediates);
``arc_psa_swin_tiny``, ``arc_psa_swin_base``, ``arc_psa_swin_base_384`` and the
baseline ``swin_focal_tiny``."""

from ._factory import build_model
from .arc_psa_swin import ArcPSASwin, PSAFeatures, SwinFocal, sigmoid_focal_loss
from .cast import (
    CAST,
    CASTWithCAM,
    ConvStem,
    clusters_to_grid,
    load_for_finetuning,
    read_checkpoint,
    split_outputs,
)
from .graph_pool import GraphPool, GraphPoolBlock, cast_seeds

__all__ = [
    "CAST",
    "ArcPSASwin",
    "build_model",
    "CASTWithCAM",
    "ConvStem",
    "GraphPool",
    "GraphPoolBlock",
    "PSAFeatures",
    "SwinFocal",
    "cast_seeds",
    "clusters_to_grid",
    "load_for_finetuning",
    "read_checkpoint",
    "sigmoid_focal_loss",
    "split_outputs",
]

# Plant Pathology 2021 (docs/plant_pathology.md): the report's other systems,
# registered with timm on import: efficientnet_b0_bce, efficientnet_b0_g16_bce,
# eva_clip_bce, eva_clip_stn_bce, arc_psa_swinv2_base_384.
from .arc_psa_swin import PSANFeatureModule  # noqa: E402
from .efficientnet import EfficientNetBCE  # noqa: E402
from .eva_clip import EvaCLIP  # noqa: E402

__all__ += ["EfficientNetBCE", "EvaCLIP", "PSANFeatureModule"]

# Detectors (torchvision's, with random weights) and the distiller, registered
# with timm on import: hcam_ops.models.detection.
from . import detection  # noqa: E402

__all__ += ["detection"]
