"""CAMs for object detectors (docs/detection_cam.md): what mmdet's
det_cam_visualizer does, for torchvision's Faster R-CNN, Mask R-CNN,
RetinaNet and FCOS, on pytorch-grad-cam.

- ``DetCAMModel``: the detector as a CAM method sees a model (predict mode:
  filtered detections; loss mode: losses against reference boxes).
- ``FPNReshapeTransform``: FPN levels -> one map (abs, resize, concatenate).
- ``FPNAblationLayer``: AblationCAM across FPN levels.
- ``DetBoxScoreTarget``: losses, or IoU + score (+ mask Dice) of matched boxes.
- ``DetCAMVisualizer``: methods by name (``METHODS``: the detector tools'
  part of hcam_ops.cam.methods), smoothing, per-box normalisation, pictures.
  ``python -m hcam_ops.cam.detect`` is the CLI.
"""

from ...models.detection import DETECTOR_NAMES, build_detector, load_checkpoint, save_checkpoint
from ..methods import DETECTOR_METHODS as METHODS
from ..methods import GRADIENT_FREE_METHODS, GRADIENT_METHODS, FeatmapAM
from .ablation import FPNAblationLayer, locate
from .drawing import class_colours, draw_detections, normalize_in_boxes, overlay_cam
from .errors import DetCAMInputError
from .layers import default_target_layers, resolve_target_layers
from .model import DetCAMModel, image_to_tensor
from .reshape import FPNReshapeTransform
from .targets import DetBoxScoreTarget
from .visualizer import DetCAMVisualizer, Explanation, canonical_method

__all__ = [
    "DETECTOR_NAMES",
    "GRADIENT_FREE_METHODS",
    "GRADIENT_METHODS",
    "METHODS",
    "DetBoxScoreTarget",
    "DetCAMInputError",
    "DetCAMModel",
    "DetCAMVisualizer",
    "Explanation",
    "FPNAblationLayer",
    "FPNReshapeTransform",
    "FeatmapAM",
    "build_detector",
    "canonical_method",
    "class_colours",
    "default_target_layers",
    "draw_detections",
    "image_to_tensor",
    "load_checkpoint",
    "locate",
    "normalize_in_boxes",
    "overlay_cam",
    "resolve_target_layers",
    "save_checkpoint",
]
