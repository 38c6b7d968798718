"""The Plant Pathology 2021 report's EfficientNet models (sections 5.1-5.5),
registered with timm: EfficientNet-B0 with a BCE multi-label head, and its
grouped variant (section 5.2, after Graphcore's "How we made EfficientNet
more efficient"): group size 16 in every MBConv spatial (depthwise)
convolution instead of 1, expansion factor 4 instead of 6 to pay for it.

Both are timm's own ``EfficientNet`` built by timm's block builder (the
group size is the builder's ``group_size``), so state dicts keep timm's
layer names; the subclass adds the multi-label faces.
"""

from __future__ import annotations

from functools import partial

import torch
from timm.models import generate_default_cfgs, register_model
from timm.models._efficientnet_builder import decode_arch_def, resolve_act_layer, resolve_bn_args, round_channels
from timm.models.efficientnet import EfficientNet
from torch import nn

from ..data.plant_pathology import LEAF_CLASSES
from ._factory import create, leaf_cfg, load_backbone
from ._multilabel import MultiLabelFaces, bce_loss

__all__ = ["EfficientNetBCE"]

# timm's EfficientNet-B0 stages (efficientnet.py, _gen_efficientnet); the
# expansion factor of the inverted-residual stages is filled in.
_B0_STAGES = (
    "ds_r1_k3_s1_e1_c16_se0.25",
    "ir_r2_k3_s2_e{e}_c24_se0.25",
    "ir_r2_k5_s2_e{e}_c40_se0.25",
    "ir_r3_k3_s2_e{e}_c80_se0.25",
    "ir_r3_k5_s1_e{e}_c112_se0.25",
    "ir_r4_k5_s2_e{e}_c192_se0.25",
    "ir_r1_k3_s1_e{e}_c320_se0.25",
)


class EfficientNetBCE(MultiLabelFaces, EfficientNet):
    """timm's EfficientNet with the report's multi-label faces:
    ``model(x)`` logits, ``model(x, labels)`` ``(BCE loss, logits)``,
    ``model.predict(x)`` probabilities. ``conv_head`` is the report's Grad-CAM
    layer (its ``model._conv_head``)."""

    def __init__(self, *args, img_size: int = 224, **kwargs):
        super().__init__(*args, **kwargs)
        self.img_size = img_size  # any size runs; this is what pretrained_cfg records

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None):
        logits = self.logits(x)
        return logits if labels is None else (bce_loss(logits, labels), logits)


def _create(
    variant: str,
    pretrained: bool,
    expansion: int = 6,
    group_size: int | None = None,
    channel_multiplier: float = 1.0,
    depth_multiplier: float = 1.0,
    backbone_kwargs: dict | None = None,
    backbone_checkpoint: str | None = None,
    **kwargs,
):
    # backbone_kwargs: the multi-label CLI's one knob for every family (here
    # the builder's multipliers, e.g. a narrow, shallow net for tests).
    kwargs = {**(backbone_kwargs or {}), **kwargs}
    channel_multiplier = kwargs.pop("channel_multiplier", channel_multiplier)
    depth_multiplier = kwargs.pop("depth_multiplier", depth_multiplier)
    # B0's widths (multiples of 8) are kept: with expansion 4 every grouped
    # convolution then has a multiple of 32 channels, so group size 16 fits.
    round_chs_fn = partial(round_channels, multiplier=channel_multiplier, divisor=8)
    arch_def = [[stage.format(e=expansion)] for stage in _B0_STAGES]
    model_kwargs = dict(
        block_args=decode_arch_def(arch_def, depth_multiplier, group_size=group_size),
        num_features=round_chs_fn(1280),
        stem_size=32,
        round_chs_fn=round_chs_fn,
        act_layer=resolve_act_layer(kwargs, "swish"),
        norm_layer=kwargs.pop("norm_layer", None) or partial(nn.BatchNorm2d, **resolve_bn_args(kwargs)),
        # The report builds B0 with efficientnet_pytorch's defaults: dropout
        # 0.2 before the classifier, drop-connect 0.2.
        drop_rate=kwargs.pop("drop_rate", 0.2),
        drop_path_rate=kwargs.pop("drop_path_rate", 0.2),
        num_classes=kwargs.pop("num_classes", len(LEAF_CLASSES)),
        **kwargs,
    )
    model = create(EfficientNetBCE, variant, pretrained, **model_kwargs)
    if backbone_checkpoint:
        # e.g. timm's efficientnet_b0 weights: everything but the classifier
        # (the grouped variant's shapes differ, and such a file is refused).
        load_backbone(model, backbone_checkpoint, skip=("classifier.",))
    return model


# cam_layer: the report's Grad-CAM layer, the head convolution.
_CFG = dict(first_conv="conv_stem", classifier="classifier", cam_layer="conv_head")
default_cfgs = generate_default_cfgs(
    {"efficientnet_b0_bce": leaf_cfg(**_CFG), "efficientnet_b0_g16_bce": leaf_cfg(**_CFG)}
)


@register_model
def efficientnet_b0_bce(pretrained: bool = False, **kwargs) -> EfficientNetBCE:
    """The report's baseline: EfficientNet-B0 (depthwise MBConv, expansion 6), BCE."""
    return _create("efficientnet_b0_bce", pretrained, **kwargs)


@register_model
def efficientnet_b0_g16_bce(pretrained: bool = False, **kwargs) -> EfficientNetBCE:
    """The report's grouped EfficientNet-B0: group size 16, expansion 4, BCE."""
    return _create("efficientnet_b0_g16_bce", pretrained, **{"expansion": 4, "group_size": 16, **kwargs})
