"""The Plant Pathology 2021 report's Swin models, registered with timm:
ArcPSASwin (section 6.4: Swin, its classifier removed and its last map
permuted to NCHW, the PSANFeatureModule of section 6.3, the multi-label
ArcFace head) and the Swin + focal-loss baseline.

Layer names follow the report's code (``backbone``, ``feature_module``,
``arcface_loss``; the module's ``conv1`` ... ``feature_path``), so its
checkpoints load with ``checkpoint_path=``.
"""

from __future__ import annotations

import timm
import torch
import torch.nn.functional as F
from timm.models import generate_default_cfgs, register_model
from torch import nn

from ..data.plant_pathology import LEAF_CLASSES
from ..nn.arcface import MultiLabelArcFaceLoss
from ..nn.psa import PolarizedSelfAttention, SequentialPSA
from ..nn.stn import make_stn
from ._factory import check_kwargs, create, leaf_cfg, load_backbone
from ._multilabel import MultiLabelFaces

__all__ = ["ArcPSASwin", "PSAFeatures", "PSANFeatureModule", "SwinFocal", "sigmoid_focal_loss"]


class PSANFeatureModule(nn.Module):
    """The report's feature module (section 6.3): conv1x1-BN-PReLU, PSA_s,
    conv1x1-BN-PReLU, global average pool, Linear(in, 768)-BN-PReLU,
    Linear(768, feature_dim)-BN-PReLU; convolutions Kaiming (fan-out),
    norms 1/0, linears N(0, 0.01), biases 0, as its ``_init_weights``."""

    def __init__(self, in_channels: int, feature_dim: int = 512, hidden: int = 768):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, in_channels, kernel_size=1)
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.relu1 = nn.PReLU()
        self.psa = SequentialPSA(in_channels, in_channels)
        self.conv2 = nn.Conv2d(in_channels, in_channels, kernel_size=1)
        self.bn2 = nn.BatchNorm2d(in_channels)
        self.relu2 = nn.PReLU()
        self.feature_path = nn.Sequential(
            nn.AdaptiveAvgPool2d((1, 1)),
            nn.Flatten(),
            nn.Linear(in_channels, hidden),
            nn.BatchNorm1d(hidden),
            nn.PReLU(),
            nn.Linear(hidden, feature_dim),
            nn.BatchNorm1d(feature_dim),
            nn.PReLU(),
        )
        self._init_weights()

    def _init_weights(self) -> None:
        # Over all submodules, the PSA's convolutions included (the report's
        # loop runs after PSA_s set its own init, and overrides it).
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def feature_map(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu1(self.bn1(self.conv1(x)))
        return self.relu2(self.bn2(self.conv2(self.psa(x))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.feature_path(self.feature_map(x))


def _conv_bn_prelu(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout), nn.PReLU(cout))


class PSAFeatures(nn.Module):
    """Our compact option (``neck="compact"``): conv1x1/BN/PReLU down to
    ``mid_chans`` -> the paper's PSA -> conv1x1/BN/PReLU -> global average
    pool -> Linear/BN/PReLU to ``feature_dim``. About a quarter of the
    report's module's parameters on a 1024-channel backbone."""

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


def _swin(name: str, img_size: int, in_chans: int, checkpoint_path: str | None, backbone_kwargs: dict | None):
    backbone = timm.create_model(
        name, pretrained=False, num_classes=0, img_size=img_size, in_chans=in_chans, **(backbone_kwargs or {})
    )
    if checkpoint_path:
        load_backbone(backbone, checkpoint_path)
    return backbone


class _SwinFaces(MultiLabelFaces):
    """What both Swin models add to the multi-label faces: the backbone's map
    ``[B, C, H, W]`` and the pooled features before the classifier."""

    def feature_map(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_features(x)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x), pre_logits=True)


class ArcPSASwin(_SwinFaces, nn.Module):
    """Swin backbone (classifier removed; its last NHWC map permuted to NCHW),
    the feature module, and a :class:`MultiLabelArcFaceLoss` head.

    ``model(x)`` returns the features ``[B, feature_dim]`` (as the report's
    model); ``model(x, labels)`` ``(loss, logits)`` (the fused ArcFace loss
    and the training logits, margin applied); ``model.predict(x)``
    margin-free probabilities; ``logits(x)`` the margin-free ``s * cos``.
    timm faces: ``forward_features`` (the NCHW map), ``forward_head``,
    ``reset_classifier``, ``get_classifier``.

    ``neck``: ``"psan"`` (the report's PSANFeatureModule, default) or
    ``"compact"`` (:class:`PSAFeatures`); ``stn``: ``None``, ``"report"`` or
    ``"pooled"`` (an STN in front, section 5.7's module); ``backbone_kwargs``
    go to timm's Swin (a smaller ``embed_dim`` and ``depths`` for tests).
    """

    def __init__(
        self,
        backbone: str = "swin_tiny_patch4_window7_224",
        num_classes: int = len(LEAF_CLASSES),
        img_size: int = 224,
        in_chans: int = 3,
        feature_dim: int = 512,
        neck: str = "psan",
        mid_chans: int = 512,
        scale: float = 30.0,
        margin: float = 0.5,
        easy_margin: bool = False,
        stn: str | bool | None = None,
        backbone_checkpoint: str | None = None,
        backbone_kwargs: dict | None = None,
        **kwargs,
    ):
        super().__init__()
        check_kwargs("ArcPSASwin", kwargs)
        self.num_classes, self.img_size, self.feature_dim = num_classes, img_size, feature_dim
        self.scale, self.margin, self.easy_margin = scale, margin, easy_margin
        self.stn = make_stn(stn, img_size, in_chans)
        self.backbone = _swin(backbone, img_size, in_chans, backbone_checkpoint, backbone_kwargs)
        self.num_features = self.backbone.num_features
        self.head_hidden_size = feature_dim
        if neck == "psan":
            self.feature_module = PSANFeatureModule(self.num_features, feature_dim)
        elif neck == "compact":
            self.feature_module = PSAFeatures(self.num_features, mid_chans, feature_dim)
        else:
            raise ValueError(f"ArcPSASwin: neck must be 'psan' or 'compact', got {neck!r}")
        self.arcface_loss = MultiLabelArcFaceLoss(feature_dim, num_classes, scale, margin, easy_margin)

    @property
    def neck(self) -> nn.Module:
        return self.feature_module

    @property
    def head(self) -> MultiLabelArcFaceLoss:
        return self.arcface_loss

    def get_classifier(self) -> nn.Module:
        return self.arcface_loss

    def reset_classifier(self, num_classes: int, global_pool=None) -> None:
        self.num_classes = num_classes
        self.arcface_loss = MultiLabelArcFaceLoss(
            self.feature_dim, num_classes, self.scale, self.margin, self.easy_margin
        )

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The backbone's last map, NCHW (after the STN, if any)."""
        if self.stn is not None:
            x = self.stn(x)
        return self.backbone.forward_features(x).permute(0, 3, 1, 2)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        f = self.feature_module(x)
        return f if pre_logits else self.arcface_loss.logits(f.float())

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None):
        f = self.features(x)
        return f if labels is None else self.arcface_loss(f.float(), labels)


def sigmoid_focal_loss(
    logits: torch.Tensor, labels: torch.Tensor, alpha: float = 0.25, gamma: float = 2.0, balanced: bool = True
) -> torch.Tensor:
    """Mean focal loss (Lin et al.) over all (sample, class) pairs.

    ``balanced=True``: ``alpha`` for positives, ``1 - alpha`` for negatives
    (torchvision's). ``balanced=False``: ``alpha`` for every pair, the
    report's ``FocalBCELoss`` (``alpha * (1 - exp(-bce)) ** gamma * bce``)."""
    y = labels.to(logits.dtype)
    ce = F.binary_cross_entropy_with_logits(logits, y, reduction="none")
    p = torch.sigmoid(logits)
    pt = p * y + (1 - p) * (1 - y)
    w = alpha * y + (1 - alpha) * (1 - y) if balanced else alpha
    return (w * (1 - pt) ** gamma * ce).mean()


class SwinFocal(_SwinFaces, nn.Module):
    """The report's baseline (section 6.6): Swin with a linear multi-label
    head and focal loss. ``model(x)`` returns the logits (the report applies
    its focal criterion to the model's output), ``model(x, labels)``
    ``(loss, logits)``. ``focal``: ``"report"`` (uniform alpha, default) or
    ``"balanced"`` (torchvision's)."""

    def __init__(
        self,
        backbone: str = "swin_tiny_patch4_window7_224",
        num_classes: int = len(LEAF_CLASSES),
        img_size: int = 224,
        in_chans: int = 3,
        focal: str = "report",
        alpha: float = 0.25,
        gamma: float = 2.0,
        backbone_checkpoint: str | None = None,
        backbone_kwargs: dict | None = None,
        **kwargs,
    ):
        super().__init__()
        check_kwargs("SwinFocal", kwargs)
        if focal not in ("report", "balanced"):
            raise ValueError(f"SwinFocal: focal must be 'report' or 'balanced', got {focal!r}")
        self.num_classes, self.img_size = num_classes, img_size
        self.focal, self.alpha, self.gamma = focal, alpha, gamma
        self.backbone = _swin(backbone, img_size, in_chans, backbone_checkpoint, backbone_kwargs)
        self.num_features = self.head_hidden_size = self.backbone.num_features
        self.fc = nn.Linear(self.num_features, num_classes)

    def get_classifier(self) -> nn.Module:
        return self.fc

    def reset_classifier(self, num_classes: int, global_pool=None) -> None:
        self.num_classes = num_classes
        self.fc = nn.Linear(self.num_features, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone.forward_features(x).permute(0, 3, 1, 2)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        f = x.mean((2, 3))
        return f if pre_logits else self.fc(f)

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None):
        logits = self.logits(x)
        if labels is None:
            return logits
        loss = sigmoid_focal_loss(logits.float(), labels, self.alpha, self.gamma, balanced=self.focal == "balanced")
        return loss, logits


_SWIN = {
    "tiny": "swin_tiny_patch4_window7_224",
    "base": "swin_base_patch4_window7_224",
    "base_384": "swin_base_patch4_window12_384",
    # The report's code builds its ArcFace model on this SwinV2-B (1024
    # channels at 384 px, as its text's Swin-B).
    "v2_base_384": "swinv2_base_window12to24_192to384",
}

# CAM layers: the report's last Swin block (NHWC), and the feature module's
# map after PSA for target="neck" (PSANFeatureModule's relu2, PSAFeatures'
# expand, whichever neck was built).
_SWIN_CAM = dict(cam_layer="backbone.layers.-1.blocks.-1", cam_reshape="nhwc")
_ARC = dict(
    first_conv="backbone.patch_embed.proj",
    classifier="arcface_loss",
    cam_neck_layer=("feature_module.relu2", "feature_module.expand"),
    **_SWIN_CAM,
)
default_cfgs = generate_default_cfgs(
    {
        "arc_psa_swin_tiny": leaf_cfg(**_ARC),
        "arc_psa_swin_base": leaf_cfg(**_ARC),
        "arc_psa_swin_base_384": leaf_cfg(size=384, **_ARC),
        "arc_psa_swinv2_base_384": leaf_cfg(size=384, **_ARC),
        "swin_focal_tiny": leaf_cfg(first_conv="backbone.patch_embed.proj", classifier="fc", **_SWIN_CAM),
    }
)


@register_model
def arc_psa_swin_tiny(pretrained: bool = False, **kwargs):
    return create(ArcPSASwin, "arc_psa_swin_tiny", pretrained, **{"backbone": _SWIN["tiny"], **kwargs})


@register_model
def arc_psa_swin_base(pretrained: bool = False, **kwargs):
    return create(ArcPSASwin, "arc_psa_swin_base", pretrained, **{"backbone": _SWIN["base"], **kwargs})


@register_model
def arc_psa_swin_base_384(pretrained: bool = False, **kwargs):
    """The report's trained configuration: Swin-B at 384 px (1024 channels
    into the feature module)."""
    kwargs = {"backbone": _SWIN["base_384"], "img_size": 384, **kwargs}
    return create(ArcPSASwin, "arc_psa_swin_base_384", pretrained, **kwargs)


@register_model
def arc_psa_swinv2_base_384(pretrained: bool = False, **kwargs):
    """The same on the SwinV2-B its code loads (window 24, 384 px)."""
    kwargs = {"backbone": _SWIN["v2_base_384"], "img_size": 384, **kwargs}
    return create(ArcPSASwin, "arc_psa_swinv2_base_384", pretrained, **kwargs)


@register_model
def swin_focal_tiny(pretrained: bool = False, **kwargs):
    return create(SwinFocal, "swin_focal_tiny", pretrained, **{"backbone": _SWIN["tiny"], **kwargs})
