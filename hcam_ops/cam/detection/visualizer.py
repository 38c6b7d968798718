"""DetCAMVisualizer (mmdet's det_cam_visualizer class of that name): a CAM
method by name (the detector tools' part of hcam_ops.cam.methods) on a
``DetCAMModel``, the box score target, smoothing, and pictures.

One image at a time: ``explain`` detects (predict mode, ``score_thr``, top
``topk``), then computes the CAM that explains those detections:

- gradient-free methods run the detector in predict mode and score its
  detections against the reference boxes (``DetBoxScoreTarget``);
- gradient methods switch the wrapper to loss mode with the reference boxes as
  ground truth, and back to predict mode afterwards, whatever happens.

pytorch-grad-cam registers its hooks when a method is built; here they live
only while a CAM is computed (mmdet's ``switch_activations_and_grads``,
scoped): the detection pass and anything else the model does in between runs
without them. ``aug_smooth`` is done here rather than by pytorch-grad-cam:
its flips would move the objects away from the reference boxes, so the boxes
(and masks) are flipped with the image.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from pytorch_grad_cam import AblationCAM
from pytorch_grad_cam.activations_and_gradients import ActivationsAndGradients
from pytorch_grad_cam.utils.find_layers import replace_layer_recursive

from ..methods import DETECTOR_METHODS, GRADIENT_METHODS, normalise
from .ablation import FPNAblationLayer
from .drawing import class_colours, draw_detections, normalize_in_boxes, overlay_cam
from .errors import DetCAMInputError
from .layers import default_target_layers, resolve_target_layers
from .model import DetCAMModel, image_to_tensor
from .reshape import FPNReshapeTransform, normalize_max_shape
from .targets import DetBoxScoreTarget

# pytorch-grad-cam's default test-time augmentation: both flips times three
# brightness factors.
AUG_FLIPS = (False, True)
AUG_FACTORS = (0.9, 1.0, 1.1)


def canonical_method(name: str) -> str:
    """The registry key for ``name`` (any spelling hcam_ops.cam.methods'
    ``normalise`` accepts), one of the detector tools' methods."""
    if not isinstance(name, str):
        raise DetCAMInputError("method", f"expected a name, got {type(name).__name__}")
    key = normalise(name)
    if key not in DETECTOR_METHODS:
        raise DetCAMInputError("method", f"unknown method {name!r}; choose one of {', '.join(DETECTOR_METHODS)}")
    return key


@dataclass
class Explanation:
    """A CAM and the detections it explains (numpy, image coordinates)."""

    cam: np.ndarray  # [H, W] float32 in [0, 1]
    boxes: np.ndarray  # [N, 4] xyxy
    labels: np.ndarray  # [N] int64
    scores: np.ndarray  # [N]
    masks: np.ndarray | None = None  # [N, H, W]


class DetCAMVisualizer:
    """``method``: a name of ``DETECTOR_METHODS``; ``target_layers``: names (see
    ``layers``) or modules, default by method; ``max_shape``: the FPN reshape
    size rule; ``batch_size`` and ``ratio_channels_to_ablate``: AblationCAM's;
    ``match_iou_thr``: the box score target's."""

    def __init__(
        self,
        model: DetCAMModel,
        method: str = "ablationcam",
        target_layers: Sequence | None = None,
        max_shape=(20, 20),
        batch_size: int = 16,
        ratio_channels_to_ablate: float = 1.0,
        match_iou_thr: float = 0.5,
        ablation_value: float = -1000.0,
    ):
        if not isinstance(model, DetCAMModel):
            raise DetCAMInputError("model", f"expected a DetCAMModel, got {type(model).__name__}")
        self.model = model
        self.method = canonical_method(method)
        self.needs_grad = self.method in GRADIENT_METHODS
        if batch_size < 1:
            raise DetCAMInputError("batch_size", f"must be >= 1, got {batch_size}")
        if not 0.0 < ratio_channels_to_ablate <= 1.0:
            raise DetCAMInputError("ratio_channels_to_ablate", f"must be in (0, 1], got {ratio_channels_to_ablate}")
        self.match_iou_thr = float(match_iou_thr)
        detector = model.detector
        if target_layers is None:
            target_layers = default_target_layers(detector, self.needs_grad)
        elif isinstance(target_layers, (str, torch.nn.Module)):
            target_layers = [target_layers]
        named = [(n, m) for n, m in resolve_target_layers(detector, [t for t in target_layers if isinstance(t, str)])]
        modules = [t for t in target_layers if isinstance(t, torch.nn.Module)]
        self.target_layer_names = [n for n, _ in named] + [type(m).__name__ for m in modules]
        self.target_layers = [m for _, m in named] + modules
        self.reshape_transform = FPNReshapeTransform(
            normalize_max_shape(max_shape),
            is_need_grad=self.needs_grad,
            valid_region=model.valid_fraction,
            layer_name=" / ".join(repr(n) for n in self.target_layer_names),
        )
        cls = DETECTOR_METHODS[self.method]
        if cls is AblationCAM:
            self.ablation_layer = FPNAblationLayer(ablation_value)
            self.cam = AblationCAM(
                model,
                self.target_layers,
                reshape_transform=self.reshape_transform,
                ablation_layer=self.ablation_layer,
                batch_size=batch_size,
                ratio_channels_to_ablate=ratio_channels_to_ablate,
            )
        else:
            self.ablation_layer = None
            self.cam = cls(model, self.target_layers, reshape_transform=self.reshape_transform)
        # Hooks are attached per call (see _compute).
        self.cam.activations_and_grads.release()
        self.views_used = 0

    # -- detections ------------------------------------------------------------------

    def detect(self, image, topk: int = 0) -> dict:
        """The model's detections above its ``score_thr``, best first, at most
        ``topk`` (0: all); an image without any raises an error naming
        ``score_thr``."""
        detections = self.model.detect(image)
        if len(detections["scores"]) == 0:
            raise DetCAMInputError(
                "score_thr",
                f"no detections above score_thr={self.model.score_thr}: nothing to explain "
                "(lower the threshold, or check the checkpoint and the image)",
            )
        if topk and topk > 0:
            detections = {k: v[:topk] for k, v in detections.items()}
        return detections

    # -- CAMs --------------------------------------------------------------------------

    def __call__(self, image, boxes, labels, masks=None, aug_smooth: bool = False, eigen_smooth: bool = False):
        """The ``[H, W]`` CAM (float32 in [0, 1]) explaining the reference
        ``boxes`` / ``labels`` (``masks``: Mask R-CNN) of ``image``."""
        tensor = image_to_tensor(image).to(self.model.device)[None]
        boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
        labels = np.asarray(labels, dtype=np.int64).reshape(-1)
        if len(boxes) == 0:
            raise DetCAMInputError("boxes", "no reference boxes to explain")
        if not aug_smooth:
            self.views_used = 1
            return self._compute(tensor, boxes, labels, masks, eigen_smooth)
        W = tensor.shape[-1]
        cams = []
        for flip in AUG_FLIPS:
            for factor in AUG_FACTORS:
                augmented = tensor * factor
                b, m = boxes, masks
                if flip:
                    augmented = augmented.flip(-1)
                    b = boxes.copy()
                    b[:, [0, 2]] = W - boxes[:, [2, 0]]
                    m = None if masks is None else np.ascontiguousarray(np.asarray(masks)[..., ::-1])
                cam = self._compute(augmented, b, labels, m, eigen_smooth)
                # A view where the detector no longer finds the boxes gives
                # AblationCAM a zero reference score (0/0): leave that view out.
                if np.isfinite(cam).all():
                    cams.append(cam[:, ::-1] if flip else cam)
        if not cams:
            raise DetCAMInputError("aug_smooth", "no augmented view kept the reference detections")
        self.views_used = len(cams)  # how many of the 6 views were averaged
        return _rescale(np.mean(cams, axis=0))

    def explain(self, image, topk: int = 10, aug_smooth: bool = False, eigen_smooth: bool = False) -> Explanation:
        """Detect, then the CAM of the (top ``topk``) detections together."""
        det = self.detect(image, topk)
        masks = det.get("masks")
        cam = self(image, det["boxes"], det["labels"], masks, aug_smooth=aug_smooth, eigen_smooth=eigen_smooth)
        return Explanation(cam, det["boxes"], det["labels"], det["scores"], masks)

    def explain_each(self, image, topk: int = 10, aug_smooth: bool = False, eigen_smooth: bool = False):
        """One ``Explanation`` per detection, each CAM explaining that box alone."""
        det = self.detect(image, topk)
        masks = det.get("masks")
        out = []
        for i in range(len(det["boxes"])):
            m = None if masks is None else masks[i : i + 1]
            cam = self(image, det["boxes"][i : i + 1], det["labels"][i : i + 1], m, aug_smooth, eigen_smooth)
            out.append(Explanation(cam, det["boxes"][i : i + 1], det["labels"][i : i + 1], det["scores"][i : i + 1], m))
        return out

    def _compute(self, tensor, boxes, labels, masks, eigen_smooth) -> np.ndarray:
        model = self.model
        target = DetBoxScoreTarget(boxes, labels, masks if not self.needs_grad else None, self.match_iou_thr)
        if self.needs_grad:
            model.set_return_loss(True)
            model.set_targets(boxes, labels, masks if model.has_masks else None)
        self.cam.activations_and_grads = ActivationsAndGradients(model, self.target_layers, self.reshape_transform)
        try:
            with torch.enable_grad() if self.needs_grad else torch.no_grad():
                cam = self.cam.forward(tensor, [target], eigen_smooth)
        finally:
            self.cam.activations_and_grads.release()
            model.set_return_loss(False)
            model.zero_grad(set_to_none=True)
            self._restore_target_layers()
        return np.asarray(cam[0], dtype=np.float32)

    def _restore_target_layers(self) -> None:
        # AblationCAM swaps each target layer for the ablation layer and back;
        # an error in between would leave the detector without its layer.
        if self.ablation_layer is None:
            return
        for layer in self.target_layers:
            if not any(m is layer for m in self.model.modules()):
                replace_layer_recursive(self.model, self.ablation_layer, layer)

    # -- pictures --------------------------------------------------------------------

    def show_cam(
        self,
        image,
        boxes,
        labels,
        cam: np.ndarray,
        scores=None,
        with_norm_in_bboxes: bool = False,
        image_weight: float = 0.5,
    ) -> np.ndarray:
        """uint8 RGB: ``cam`` (normalised inside the boxes with
        ``with_norm_in_bboxes``) over ``image``, with the boxes, class names
        and scores drawn in per-class colours."""
        if with_norm_in_bboxes:
            cam = normalize_in_boxes(cam, boxes)
        picture = overlay_cam(image, cam, image_weight)
        num = max([int(v) for v in labels] + [len(self.model.class_names or [])]) + 1
        return draw_detections(picture, boxes, labels, scores, self.model.class_name, class_colours(num))


def _rescale(cam: np.ndarray) -> np.ndarray:
    cam = cam - cam.min()
    high = cam.max()
    return (cam / high if high > 0 else cam).astype(np.float32)
