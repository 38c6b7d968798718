"""What the multi-label models share: the three faces (``model(x)``,
``model(x, labels) -> (loss, logits)``, ``model.predict(x)``), their timm
pretrained configs (no weights anywhere: ``url`` empty, no hub id) and one
builder that goes through timm's ``build_model_with_cfg`` so every model
carries ``pretrained_cfg`` like timm's own."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.models import PretrainedCfg, build_model_with_cfg

from ._factory import refuse_pretrained

# The six classes of the Plant Pathology 2021 report (section 2.2), in its
# one-hot column order.
LEAF_CLASSES = ("scab", "healthy", "frog_eye_leaf_spot", "rust", "complex", "powdery_mildew")


@dataclass
class LeafPretrainedCfg(PretrainedCfg):
    """timm's pretrained config plus where a CAM looks: module paths, as timm's
    ``first_conv`` and ``classifier`` (read by
    ``hcam_ops.cam.classifier.default_target_layer``, which documents them).
    timm's own dataclass takes no other keys, hence the subclass."""

    cam_layer: str | tuple[str, ...] | None = None
    cam_reshape: str | None = None
    cam_neck_layer: str | tuple[str, ...] | None = None


def leaf_cfg(first_conv: str, classifier: str, size: int = 224, **kwargs) -> LeafPretrainedCfg:
    """A pretrained config without weights: the report normalises every model's
    input with the ImageNet statistics (section 3.2) and resizes, no crop."""
    cfg = {
        "url": "",
        "num_classes": len(LEAF_CLASSES),
        "input_size": (3, size, size),
        "pool_size": None,
        "crop_pct": 1.0,
        "interpolation": "bilinear",
        "mean": IMAGENET_DEFAULT_MEAN,
        "std": IMAGENET_DEFAULT_STD,
        "first_conv": first_conv,
        "classifier": classifier,
        "license": "bsd-3-clause",
        **kwargs,
    }
    return LeafPretrainedCfg(**cfg)


def create(cls, variant: str, pretrained: bool, **kwargs):
    """``cls(**kwargs)`` through timm's builder (so ``model.pretrained_cfg``
    is set, with the built input size); hub weights refused."""
    refuse_pretrained(variant, pretrained, "pass checkpoint_path=... (whole model) or backbone_checkpoint=...")
    model = build_model_with_cfg(cls, variant, pretrained=False, **kwargs)
    size = getattr(model, "img_size", None)
    if size is not None:
        h, w = (size, size) if isinstance(size, int) else size
        model.pretrained_cfg = {**model.pretrained_cfg, "input_size": (3, h, w)}
        model.default_cfg = model.pretrained_cfg
    return model


def bce_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The report's loss for its EfficientNet and EVA-CLIP baselines
    (``BCEWithLogitsLoss``), in float32 under autocast."""
    return F.binary_cross_entropy_with_logits(logits.float(), labels.float())


class MultiLabelFaces:
    """Mixed into the multi-label models: ``logits(x)`` (margin-free scores,
    what Grad-CAM and the metrics read) and ``predict(x)`` (probabilities)
    from timm's ``forward_features`` / ``forward_head``."""

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.logits(x).float())


def load_backbone(backbone: torch.nn.Module, path: str, skip: tuple[str, ...] = ()) -> None:
    """Local weights for a timm backbone (a timm / Hugging Face file or the
    original authors' format): the backbone module's own
    ``checkpoint_filter_fn`` converts them, the classifier is dropped, and a
    file that leaves any backbone parameter unset (other than those starting
    with ``skip``) is refused (a wrong file must not load silently)."""
    import importlib

    import timm

    state = timm.models.load_state_dict(path)
    module = importlib.import_module(type(backbone).__module__)
    if hasattr(module, "checkpoint_filter_fn"):
        state = module.checkpoint_filter_fn(state, backbone)
    own = backbone.state_dict()
    state = {k: v for k, v in state.items() if k in own and v.shape == own[k].shape}
    missing = [n for n, _ in backbone.named_parameters() if n not in state and not n.startswith(skip)]
    if missing:
        raise ValueError(
            f"{path}: does not fit the {type(backbone).__name__} backbone "
            f"({len(missing)} of its parameters missing or of another shape, e.g. {missing[0]})"
        )
    backbone.load_state_dict(state, strict=False)
