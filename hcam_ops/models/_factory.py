"""What the timm-registered models share: timm's own keyword arguments, no
hub weights (a local checkpoint only), the multi-label models' pretrained
configs (no weights anywhere: ``url`` empty, no hub id), one builder through
timm's ``build_model_with_cfg`` (so every model carries ``pretrained_cfg``
like timm's own), a loader of local backbone weights, and the rebuilding of
any model from a checkpoint of the package."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.models import PretrainedCfg, build_model_with_cfg

from ..data.plant_pathology import LEAF_CLASSES

# What timm.create_model passes to every model's constructor.
TIMM_KEYS = ("pretrained_cfg", "pretrained_cfg_overlay", "cache_dir")


def check_kwargs(owner: str, kwargs: dict) -> None:
    """Drops timm's keys; anything else left is a caller's typo."""
    for key in TIMM_KEYS:
        kwargs.pop(key, None)
    if kwargs:
        raise TypeError(f"{owner}: unexpected arguments {sorted(kwargs)}")


def refuse_pretrained(name: str, pretrained: bool, hint: str = "pass checkpoint_path=... to timm.create_model") -> None:
    if pretrained:
        raise ValueError(
            f"{name}: no hub weights here; build with pretrained=False and {hint} to load a local checkpoint"
        )


def build_model(ckpt: dict, path: str = "checkpoint", **overrides):
    """The model a checkpoint of the package describes (:mod:`hcam_ops.checkpoint`:
    its timm ``model_name`` and ``model_config``; ``overrides`` replace
    config entries), with its weights loaded. Every model and detector of
    :mod:`hcam_ops.models` is registered with timm when the package is
    imported, so any of them rebuilds from the file alone."""
    import timm

    from .. import checkpoint
    from .._cli import CLIError

    if not checkpoint.is_model_checkpoint(ckpt):
        raise CLIError(f"{path}: not a checkpoint of hcam_ops (no model name and config in it)")
    name, config = ckpt["model_name"], ckpt["model_config"]
    if not isinstance(name, str) or not timm.is_model(name) or not _ours(name):
        raise CLIError(f"{path}: model {name!r} is not one of the models hcam_ops registers")
    if not isinstance(config, dict):
        raise CLIError(f"{path}: its model_config is a {type(config).__name__}, not a dict")
    refused = sorted(k for k in config if k in FILE_OR_NETWORK_KEYS)
    if refused:
        raise CLIError(f"{path}: model_config key {refused[0]!r} is refused (it would fetch or read weights elsewhere)")
    try:
        model = timm.create_model(name, **{**config, **overrides})
    except TypeError as e:  # a key the model does not take (check_kwargs)
        raise CLIError(f"{path}: model_config of {name}: {e}") from None
    model.load_state_dict(ckpt["model"])
    return model


# What a checkpoint's model_config may never hold: keys that make timm (or a
# model's builder) download weights or read another file.
FILE_OR_NETWORK_KEYS = (
    "pretrained",
    "pretrained_cfg",
    "pretrained_cfg_overlay",
    "checkpoint_path",
    "cache_dir",
    "backbone_checkpoint",
)


def _ours(name: str) -> bool:
    """Whether the timm name was registered by a module of this package."""
    import timm

    return timm.models.model_entrypoint(name).__module__.startswith(f"{__package__.split('.')[0]}.")


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


def load_backbone(backbone: torch.nn.Module, path: str, skip: tuple[str, ...] = ()) -> None:
    """Local weights for a timm backbone (a timm / Hugging Face file or the
    original authors' format): the backbone module's own
    ``checkpoint_filter_fn`` converts them, the classifier is dropped, and a
    file that leaves any backbone parameter unset (other than those starting
    with ``skip``) is refused (a wrong file must not load silently)."""
    import importlib

    import timm

    try:  # weights_only: a file from elsewhere runs no code
        state = timm.models.load_state_dict(path, weights_only=True)
    except Exception as e:  # noqa: BLE001  (unpickling and safetensors errors have many types)
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ValueError(f"{path}: not a loadable weights file ({first})") from None
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
