"""Multi-label Swin with a PSA feature module and a multi-label ArcFace head
(leaf-disease style fine-grained multi-label classification), registered
with timm, plus a Swin + focal-loss baseline."""

from __future__ import annotations

import timm
import torch
import torch.nn.functional as F
from timm.models import register_model
from torch import nn

from ..nn.arcface import MultiLabelArcFaceLoss
from ..nn.psa import PolarizedSelfAttention
from ..nn.stn import STN
from ._factory import check_kwargs, refuse_pretrained

LEAF_CLASSES = ("scab", "healthy", "frog_eye_leaf_spot", "rust", "complex", "powdery_mildew")


def _conv_bn_prelu(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout), nn.PReLU(cout))


class PSAFeatures(nn.Module):
    """conv1x1/BN/PReLU -> PSA_s -> conv1x1/BN/PReLU -> global average pool ->
    Linear/BN/PReLU projection to ``feature_dim``."""

    def __init__(self, in_chans: int, mid_chans: int = 512, feature_dim: int = 512):
        super().__init__()
        self.reduce = _conv_bn_prelu(in_chans, mid_chans)
        self.psa = PolarizedSelfAttention(mid_chans)
        self.expand = _conv_bn_prelu(mid_chans, mid_chans)
        self.project = nn.Sequential(
            nn.Linear(mid_chans, feature_dim), nn.BatchNorm1d(feature_dim), nn.PReLU(feature_dim)
        )

    def feature_map(self, x: torch.Tensor) -> torch.Tensor:
        return self.expand(self.psa(self.reduce(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.project(self.feature_map(x).mean((2, 3)))


def _swin(name: str, img_size: int, checkpoint_path: str | None, backbone_kwargs: dict | None = None):
    backbone = timm.create_model(name, pretrained=False, num_classes=0, img_size=img_size, **(backbone_kwargs or {}))
    if checkpoint_path:
        timm.models.load_checkpoint(backbone, checkpoint_path, strict=False)
    return backbone


class ArcPSASwin(nn.Module):
    """Swin backbone (classifier removed; its last NHWC map permuted to NCHW),
    the PSA feature module, and a :class:`MultiLabelArcFaceLoss` head.

    ``forward(x)`` returns the features ``[B, feature_dim]``;
    ``forward(x, labels)`` returns ``(loss, logits)`` (the fused ArcFace loss
    and the training logits); ``predict(x)`` margin-free probabilities;
    ``logits(x)`` the margin-free scores ``s * cos`` (for Grad-CAM).
    ``backbone_kwargs`` go to timm's Swin (e.g. a smaller ``embed_dim`` and
    ``depths`` for tests).
    """

    def __init__(
        self,
        backbone: str = "swin_tiny_patch4_window7_224",
        num_classes: int = len(LEAF_CLASSES),
        img_size: int = 224,
        feature_dim: int = 512,
        mid_chans: int = 512,
        scale: float = 30.0,
        margin: float = 0.5,
        stn: bool = False,
        backbone_checkpoint: str | None = None,
        backbone_kwargs: dict | None = None,
        **kwargs,
    ):
        super().__init__()
        check_kwargs("ArcPSASwin", kwargs)
        self.num_classes = num_classes
        self.stn = STN() if stn else None
        self.backbone = _swin(backbone, img_size, backbone_checkpoint, backbone_kwargs)
        self.neck = PSAFeatures(self.backbone.num_features, mid_chans, feature_dim)
        self.head = MultiLabelArcFaceLoss(feature_dim, num_classes, scale=scale, margin=margin)

    def feature_map(self, x: torch.Tensor) -> torch.Tensor:
        """The backbone's last map, NCHW."""
        if self.stn is not None:
            x = self.stn(x)
        return self.backbone.forward_features(x).permute(0, 3, 1, 2)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.neck(self.feature_map(x))

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None):
        f = self.features(x)
        return f if labels is None else self.head(f.float(), labels)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.head.logits(self.features(x).float())

    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.logits(x))


def sigmoid_focal_loss(
    logits: torch.Tensor, labels: torch.Tensor, alpha: float = 0.25, gamma: float = 2.0
) -> torch.Tensor:
    """Mean focal loss (Lin et al.) over all (sample, class) pairs."""
    y = labels.to(logits.dtype)
    ce = F.binary_cross_entropy_with_logits(logits, y, reduction="none")
    p = torch.sigmoid(logits)
    pt = p * y + (1 - p) * (1 - y)
    w = alpha * y + (1 - alpha) * (1 - y)
    return (w * (1 - pt) ** gamma * ce).mean()


class SwinFocal(nn.Module):
    """The baseline: Swin with a linear multi-label head and focal loss; the
    same interface as :class:`ArcPSASwin`."""

    def __init__(
        self,
        backbone: str = "swin_tiny_patch4_window7_224",
        num_classes: int = len(LEAF_CLASSES),
        img_size: int = 224,
        backbone_checkpoint: str | None = None,
        backbone_kwargs: dict | None = None,
        **kwargs,
    ):
        super().__init__()
        check_kwargs("SwinFocal", kwargs)
        self.num_classes = num_classes
        self.backbone = _swin(backbone, img_size, backbone_checkpoint, backbone_kwargs)
        self.fc = nn.Linear(self.backbone.num_features, num_classes)

    def feature_map(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone.forward_features(x).permute(0, 3, 1, 2)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.feature_map(x).mean((2, 3))

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x))

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None):
        if labels is None:
            return self.features(x)
        logits = self.fc(self.features(x))
        return sigmoid_focal_loss(logits, labels), logits.detach()

    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.logits(x))


def _create(cls, pretrained: bool, name: str, **kwargs):
    refuse_pretrained(name, pretrained, "pass checkpoint_path=... (whole model) or backbone_checkpoint=... (Swin only)")
    return cls(**kwargs)


_SWIN = {
    "tiny": "swin_tiny_patch4_window7_224",
    "base": "swin_base_patch4_window7_224",
    "base_384": "swin_base_patch4_window12_384",
}


@register_model
def arc_psa_swin_tiny(pretrained: bool = False, **kwargs):
    return _create(ArcPSASwin, pretrained, "arc_psa_swin_tiny", **{"backbone": _SWIN["tiny"], **kwargs})


@register_model
def arc_psa_swin_base(pretrained: bool = False, **kwargs):
    return _create(ArcPSASwin, pretrained, "arc_psa_swin_base", **{"backbone": _SWIN["base"], **kwargs})


@register_model
def arc_psa_swin_base_384(pretrained: bool = False, **kwargs):
    return _create(
        ArcPSASwin, pretrained, "arc_psa_swin_base_384", **{"backbone": _SWIN["base_384"], "img_size": 384, **kwargs}
    )


@register_model
def swin_focal_tiny(pretrained: bool = False, **kwargs):
    return _create(SwinFocal, pretrained, "swin_focal_tiny", **{"backbone": _SWIN["tiny"], **kwargs})
