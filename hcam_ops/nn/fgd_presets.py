"""The published configurations of :class:`hcam_ops.nn.FGDLoss` by name, and
what a configuration implies for a training run."""

from __future__ import annotations

from ..ops.fgd_loss import FGD_LOSS_DEFAULTS

# FGD's relation term (``lambda_fgd`` of the published FeatureLoss): the one
# default of FGDLoss the fused op does not take (the GcBlocks are modules).
GLOBAL_WEIGHT = 5e-6

# FGD: the class defaults of the published FeatureLoss (the op's defaults,
# written once in hcam_ops.ops.fgd_loss), then the published configs' values
# for RetinaNet and FCOS. DistillBEV: its main published config (CenterPoint
# -> BEVDepth4D), which leaves the FP term and the multi-scale levels off
# (turn them on with overrides).
_FGD = {
    **{
        k: FGD_LOSS_DEFAULTS[k]
        for k in ("spatial_temperature", "channel_temperature", "fg_weight", "bg_weight", "attention_weight")
    },
    "global_weight": GLOBAL_WEIGHT,
}
PRESETS = {
    "fgd": _FGD,
    "fgd-retinanet": {**_FGD, "attention_weight": 5e-4},
    "fgd-fcos": dict(
        spatial_temperature=0.8,
        channel_temperature=0.8,
        fg_weight=1.6e-3,
        bg_weight=8e-4,
        attention_weight=8e-4,
        global_weight=8e-6,
    ),
    "distillbev": dict(
        spatial_temperature=0.5,
        channel_temperature=0.5,
        fg_weight=1.5e-3,
        bg_weight=4e-2,
        attention_weight=0.0,
        global_weight=0.0,
        channel_weight=0.25,
        spatial_weight=2.5e-3,
        spatial_attention="teacher",
        spatial_student_ratio=1.0,
        spatial_adapter=True,
        student_adaptation="1x1conv",
        teacher_adaptation="identity",
        masks="bev",
        scale_mask="combine_gt",
        fp_weight=0.0,
        fp_scale_mode="dfs",
    ),
}


def presets() -> tuple[str, ...]:
    """The preset names (``fgd``, ``fgd-retinanet``, ``fgd-fcos``, ``distillbev``)."""
    return tuple(PRESETS)


def effective_config(preset: str, overrides: dict | None = None) -> dict:
    """The FGDLoss keywords a run gets: the preset's, then the overrides."""
    return {**PRESETS[preset], **(overrides or {})}


def uses_heatmaps(preset: str, overrides: dict | None = None) -> bool:
    """Whether the loss reads teacher / ground-truth heatmaps: the effective
    config (preset + overrides) has a false-positive term (``fp_weight > 0``)
    or region weights. DistillBEV's published config has ``fp_weight = 0``:
    no heatmaps unless an override turns the term on."""
    c = effective_config(preset, overrides)
    return float(c.get("fp_weight") or 0) > 0 or c.get("region_weights") is not None


def has_skipped_levels(preset: str, overrides: dict | None = None) -> bool:
    """Whether FGDLoss leaves levels out of the first epochs
    (``multi_scale_epoch > 0``): their parameters get no gradient then, which
    DDP must be told (``find_unused_parameters``)."""
    return int(effective_config(preset, overrides).get("multi_scale_epoch", -1)) > 0
