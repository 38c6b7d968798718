"""The Plant Pathology 2021 report's EVA-CLIP models (sections 5.6-5.9),
registered with timm: an EVA-CLIP vision tower (timm's ``Eva``, built with
``pretrained=False``) with the report's head (dropout 0.5, LayerNorm,
Linear) and BCE, and the same with the report's STN in front (section 5.7).

The tower is the report's ``eva_giant_patch14_224`` (the EVA-CLIP-g vision
tower its code loads from a local ``clip_ft_in1k`` file) unless ``tower=``
names another timm EVA, e.g. ``eva02_base_patch16_clip_224``. Layer names
follow the report's code (``stn``, ``base_model``, ``dropout``,
``classifier``), so its checkpoints load with ``checkpoint_path=``;
``backbone_checkpoint=`` loads tower weights alone.
"""

from __future__ import annotations

import timm
import torch
from timm.models import generate_default_cfgs, register_model
from timm.models.eva import Eva
from torch import nn

from ..data.plant_pathology import LEAF_CLASSES
from ..nn.stn import make_stn
from ._factory import check_kwargs, create, leaf_cfg, load_backbone
from ._multilabel import MultiLabelFaces, bce_loss

__all__ = ["EvaCLIP"]

REPORT_TOWER = "eva_giant_patch14_224"


class EvaCLIP(MultiLabelFaces, nn.Module):
    """``stn`` (optional) -> EVA tower (its classifier removed) -> the report's
    head. ``model(x)`` logits, ``model(x, labels)`` ``(BCE loss, logits)``,
    ``model.predict(x)`` probabilities; timm's ``forward_features`` (the
    tower's tokens), ``forward_head``, ``reset_classifier``.

    ``stn``: ``None``, ``"report"`` (the report's module, sized for
    ``img_size``) or ``"pooled"``; ``backbone_kwargs`` go to the tower (a
    small ``embed_dim`` / ``depth`` / ``num_heads`` for tests)."""

    def __init__(
        self,
        tower: str = REPORT_TOWER,
        num_classes: int = len(LEAF_CLASSES),
        img_size: int = 224,
        in_chans: int = 3,
        drop_rate: float = 0.5,
        stn: str | bool | None = None,
        backbone_checkpoint: str | None = None,
        backbone_kwargs: dict | None = None,
        **kwargs,
    ):
        super().__init__()
        check_kwargs("EvaCLIP", kwargs)
        self.num_classes, self.img_size, self.drop_rate = num_classes, img_size, drop_rate
        if not timm.is_model(tower) or timm.models.model_entrypoint(tower).__module__ != Eva.__module__:
            raise ValueError(f"EvaCLIP: tower {tower!r} is not a timm EVA model (e.g. {REPORT_TOWER})")
        self.stn = make_stn(stn, img_size, in_chans)
        self.base_model = timm.create_model(
            tower, pretrained=False, num_classes=0, img_size=img_size, in_chans=in_chans, **(backbone_kwargs or {})
        )
        if backbone_checkpoint:
            load_backbone(self.base_model, backbone_checkpoint)
        self.num_features = self.head_hidden_size = self.base_model.num_features
        self.num_prefix_tokens = self.base_model.num_prefix_tokens  # read by attention rollout
        self.dropout = nn.Dropout(drop_rate)
        self.classifier = self._classifier(num_classes)

    def _classifier(self, num_classes: int) -> nn.Sequential:
        return nn.Sequential(nn.LayerNorm(self.num_features), nn.Linear(self.num_features, num_classes))

    def get_classifier(self) -> nn.Module:
        return self.classifier

    def reset_classifier(self, num_classes: int, global_pool=None) -> None:
        self.num_classes = num_classes
        self.classifier = self._classifier(num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The tower's tokens ``[B, prefix + patches, C]`` (after the STN, if any)."""
        if self.stn is not None:
            x = self.stn(x)
        return self.base_model.forward_features(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        f = self.base_model.forward_head(x, pre_logits=True)  # the tower's pooling and fc_norm
        return f if pre_logits else self.classifier(self.dropout(f))

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None):
        logits = self.logits(x)
        return logits if labels is None else (bce_loss(logits, labels), logits)


# cam_layer: the tower's last block's input norm, its tokens laid back on the
# patch grid.
_CFG = dict(
    first_conv="base_model.patch_embed.proj",
    classifier="classifier.1",
    cam_layer="base_model.blocks.-1.norm1",
    cam_reshape="tokens",
)
default_cfgs = generate_default_cfgs({"eva_clip_bce": leaf_cfg(**_CFG), "eva_clip_stn_bce": leaf_cfg(**_CFG)})


@register_model
def eva_clip_bce(pretrained: bool = False, **kwargs) -> EvaCLIP:
    """The report's EVA-CLIP baseline (BCE)."""
    return create(EvaCLIP, "eva_clip_bce", pretrained, **kwargs)


@register_model
def eva_clip_stn_bce(pretrained: bool = False, **kwargs) -> EvaCLIP:
    """The report's EVA-CLIP with its STN front end (section 5.7)."""
    return create(EvaCLIP, "eva_clip_stn_bce", pretrained, **{"stn": "report", **kwargs})
