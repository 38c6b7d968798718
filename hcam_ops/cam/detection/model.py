"""DetCAMModel: a torchvision detector as pytorch-grad-cam sees a model (mmdet's
det_cam_visualizer DetCAMModel).

``forward`` takes the batch tensor a CAM method passes (``[B, 3, H, W]`` in
[0, 1], RGB) and hands the detector a list of images: the detector does its
own preprocessing (normalisation, resizing, padding) and maps its boxes back to
the input size (mmdet's ``rescale=True``). Two modes:

- predict mode (default): per image a dict of ``boxes`` ``[N, 4]`` xyxy,
  ``labels`` int64, ``scores`` and, for Mask R-CNN, ``masks`` ``[N, H, W]``
  probabilities, keeping ``scores > score_thr``; no autograd.
- loss mode (``set_return_loss(True)``): ``[losses]``, the detector's loss
  dict against the boxes given to ``set_input_data`` / ``set_targets``, with
  autograd, for the gradient methods; keys start with ``loss`` for every
  family (RetinaNet's ``classification`` becomes ``loss_classification``).

The mode alone decides the detector's train/eval state: predict mode is
``eval()`` everywhere; loss mode is ``train()`` (torchvision detectors only
return losses in training mode) with every batch-norm and dropout module kept
in eval, so a CAM never updates running statistics nor sees batch statistics
of one repeated image. ``train()``/``eval()`` on the wrapper re-apply the mode
(pytorch-grad-cam calls ``model.eval()``; that must not cancel loss mode).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from .errors import DetCAMInputError

# Modules whose behaviour differs between train and eval other than "return
# losses": these stay in eval in loss mode.
_EVAL_IN_LOSS_MODE = (nn.modules.batchnorm._BatchNorm, nn.modules.dropout._DropoutNd)


def image_to_tensor(image) -> torch.Tensor:
    """``[3, H, W]`` float in [0, 1] from a numpy ``[H, W, 3]`` RGB array
    (uint8, or float in [0, 1]) or a tensor ``[3, H, W]`` / ``[1, 3, H, W]``
    (uint8, or float in [0, 1])."""
    if isinstance(image, np.ndarray):
        if image.ndim != 3 or image.shape[2] != 3:
            raise DetCAMInputError("image", f"expected an RGB array [H, W, 3], got shape {tuple(image.shape)}")
        tensor = torch.from_numpy(np.array(image)).permute(2, 0, 1)  # a copy: the array may be read-only
    elif isinstance(image, torch.Tensor):
        tensor = image[0] if image.dim() == 4 and image.shape[0] == 1 else image
        if tensor.dim() != 3 or tensor.shape[0] != 3:
            raise DetCAMInputError(
                "image", f"expected a tensor [3, H, W] (or [1, 3, H, W]), got shape {tuple(image.shape)}"
            )
    else:
        raise DetCAMInputError("image", f"expected a numpy array or a tensor, got {type(image).__name__}")
    if tensor.shape[1] < 2 or tensor.shape[2] < 2:
        raise DetCAMInputError("image", f"too small: {tuple(tensor.shape[1:])}")
    if tensor.dtype == torch.uint8:
        return tensor.float() / 255.0
    if not tensor.is_floating_point():
        raise DetCAMInputError("image", f"expected uint8 or float values, got {tensor.dtype}")
    tensor = tensor.float()
    if tensor.numel() and (tensor.min() < 0 or tensor.max() > 1):
        raise DetCAMInputError("image", "float images must be in [0, 1] (uint8 images in [0, 255])")
    return tensor


class DetCAMModel(nn.Module):
    """Wraps ``detector`` (Faster R-CNN, Mask R-CNN, RetinaNet, FCOS, or any
    torchvision ``GeneralizedRCNN``-like detector with a ``transform``).
    ``class_names`` name labels ``1..K`` (label 0 is the background)."""

    def __init__(self, detector: nn.Module, score_thr: float = 0.3, class_names: Sequence[str] | None = None):
        super().__init__()
        if not hasattr(detector, "transform") or not hasattr(detector, "backbone"):
            raise DetCAMInputError(
                "detector",
                f"expected a torchvision detector (with .transform and .backbone), got {type(detector).__name__}",
            )
        if not 0.0 <= score_thr < 1.0:
            raise DetCAMInputError("score_thr", f"must be in [0, 1), got {score_thr}")
        self.detector = detector
        self.score_thr = float(score_thr)
        self.class_names = list(class_names) if class_names is not None else None
        self.return_loss = False
        self.input_tensor: torch.Tensor | None = None
        self._targets: dict | None = None
        self._valid_fraction = (1.0, 1.0)
        # The detector pads its batch (to a multiple of 32): feature maps cover
        # the padded canvas, so CAMs must be cropped to the image's share of it.
        self._hook = detector.transform.register_forward_hook(self._record_padding)
        self._apply_mode()

    # -- modes -----------------------------------------------------------------

    def set_return_loss(self, return_loss: bool) -> None:
        self.return_loss = bool(return_loss)
        self._apply_mode()

    def train(self, mode: bool = True):
        super().train(mode)
        if "detector" in self._modules:
            self._apply_mode()
        return self

    def _apply_mode(self) -> None:
        if not self.return_loss:
            self.detector.eval()
            return
        self.detector.train()
        for module in self.detector.modules():
            if isinstance(module, _EVAL_IN_LOSS_MODE):
                module.eval()

    @property
    def has_masks(self) -> bool:
        roi_heads = getattr(self.detector, "roi_heads", None)
        return roi_heads is not None and roi_heads.has_mask()

    @property
    def device(self) -> torch.device:
        return next(self.detector.parameters()).device

    # -- inputs ------------------------------------------------------------------

    def set_input_data(self, image, boxes=None, labels=None, masks=None) -> torch.Tensor:
        """Stores ``image`` (see ``image_to_tensor``) as the default input,
        and in loss mode the reference ``boxes`` / ``labels`` (``masks`` for
        Mask R-CNN) the losses are computed against. Returns ``[1, 3, H, W]``."""
        tensor = image_to_tensor(image)
        if self.return_loss:
            if boxes is None or labels is None:
                raise DetCAMInputError("boxes", "loss mode needs the reference boxes and labels")
            self.set_targets(boxes, labels, masks)
        self.input_tensor = tensor[None]
        return self.input_tensor

    def set_targets(self, boxes, labels, masks=None) -> None:
        boxes = torch.as_tensor(np.asarray(boxes, dtype=np.float32)).reshape(-1, 4)
        labels = torch.as_tensor(np.asarray(labels, dtype=np.int64)).reshape(-1)
        if len(boxes) != len(labels):
            raise DetCAMInputError("labels", f"{len(labels)} labels for {len(boxes)} boxes")
        target = {"boxes": boxes, "labels": labels}
        if self.has_masks:
            if masks is None:
                raise DetCAMInputError("masks", "Mask R-CNN's losses need a mask per reference box")
            masks = torch.as_tensor(np.asarray(masks))
            if masks.dim() != 3 or len(masks) != len(boxes):
                raise DetCAMInputError("masks", f"expected [{len(boxes)}, H, W], got {tuple(masks.shape)}")
            target["masks"] = (masks > 0.5).to(torch.uint8)
        self._targets = target

    # -- forward -----------------------------------------------------------------

    def forward(self, x: torch.Tensor | None = None):
        x = self.input_tensor if x is None else x
        if x is None:
            raise DetCAMInputError("image", "no input: call set_input_data first or pass a batch")
        if x.dim() != 4 or x.shape[1] != 3:
            raise DetCAMInputError("image", f"expected a batch [B, 3, H, W], got shape {tuple(x.shape)}")
        self._apply_mode()
        x = x.to(self.device)
        if self.return_loss:
            return [self._losses(x)]
        with torch.no_grad():
            outputs = self.detector(list(x))
        return [self._keep(o) for o in outputs]

    def _losses(self, x: torch.Tensor) -> dict:
        if self._targets is None:
            raise DetCAMInputError("boxes", "loss mode needs reference boxes: call set_targets or set_input_data")
        targets = [{k: v.to(x.device) for k, v in self._targets.items()} for _ in range(len(x))]
        with torch.enable_grad():
            if not x.requires_grad:
                # Make every activation part of the graph, even those of a
                # frozen stem (trainable_layers < 5), so target layers get gradients.
                x = x.detach().requires_grad_(True)
            # R-CNN losses sample proposals at random: a fixed seed (in a forked
            # RNG, the caller's stream untouched) makes gradient CAMs repeatable.
            devices = [x.device.index or 0] if x.is_cuda else []
            with torch.random.fork_rng(devices=devices):
                torch.manual_seed(0)
                losses = self.detector(list(x), targets)
        # RetinaNet and FCOS name their terms "classification", ...: prefix them
        # so that every loss dict reads as one ("loss_*", mmdet's convention).
        return {k if k.startswith("loss") else f"loss_{k}": v for k, v in losses.items()}

    def _keep(self, output: dict) -> dict:
        keep = output["scores"] > self.score_thr
        result = {"boxes": output["boxes"][keep], "labels": output["labels"][keep], "scores": output["scores"][keep]}
        if "masks" in output:
            result["masks"] = output["masks"][keep][:, 0]
        return result

    def detect(self, image) -> dict:
        """Predict-mode detections of one image as numpy arrays (``boxes``,
        ``labels``, ``scores``, and ``masks`` where the model has them), sorted
        by score; the mode is restored afterwards."""
        previous = self.return_loss
        self.set_return_loss(False)
        try:
            output = self.forward(image_to_tensor(image)[None])[0]
        finally:
            self.set_return_loss(previous)
        order = torch.argsort(output["scores"], descending=True)
        return {k: v[order].cpu().numpy() for k, v in output.items()}

    # -- padding -------------------------------------------------------------------

    def _record_padding(self, module, inputs, output) -> None:
        image_list = output[0]
        h, w = image_list.image_sizes[0]
        H, W = image_list.tensors.shape[-2:]
        self._valid_fraction = (h / H, w / W)

    def valid_fraction(self) -> tuple[float, float]:
        """The share ``(h, w)`` of the detector's padded input that the (first)
        image covers, as of the last forward."""
        return self._valid_fraction

    def class_name(self, label: int) -> str:
        if self.class_names is not None and 1 <= label <= len(self.class_names):
            return self.class_names[label - 1]
        return f"class {label}"

    def release(self) -> None:
        """Removes the padding hook from the detector (the wrapper keeps working,
        without the padding crop)."""
        self._hook.remove()
        self._valid_fraction = (1.0, 1.0)
