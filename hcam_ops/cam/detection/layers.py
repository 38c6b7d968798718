"""Target layers by name: ``neck`` and ``backbone`` as mmdet calls them, or
any dotted module path of the detector (``backbone.body.layer4``,
``backbone.fpn.layer_blocks.0``, ...).

- ``neck``: the module whose output is the FPN levels. For torchvision's
  ``BackboneWithFPN`` that is the whole ``backbone`` (body then FPN) rather
  than ``backbone.fpn``: same output, but AblationCAM swaps the target layer
  for its ablation layer, and swapping the whole backbone spares one ResNet
  forward per ablated batch.
- ``backbone``: the feature extractor before the FPN (``backbone.body``, its
  stages as levels).

Defaults: ``neck`` for gradient-free methods; the body's last stage (one map)
for gradient methods, which cannot take several levels.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from .errors import DetCAMInputError

ALIASES = ("neck", "backbone")


def _strip(name: str) -> str:
    # mmdet's tool evaluates "model.detector.<name>": accept those prefixes.
    for prefix in ("model.", "detector."):
        if name.startswith(prefix):
            name = name[len(prefix) :]
    return name


def module_path(detector: nn.Module, name: str) -> str:
    """The dotted path in ``detector`` that ``name`` stands for."""
    name = _strip(name.strip())
    backbone = getattr(detector, "backbone", None)
    has_fpn = backbone is not None and hasattr(backbone, "body") and hasattr(backbone, "fpn")
    if name == "neck":
        if not has_fpn:
            raise DetCAMInputError("target_layers", f"'neck': {type(detector).__name__} has no FPN backbone")
        return "backbone"
    if name == "backbone" and has_fpn:
        return "backbone.body"
    return name


def resolve_target_layers(detector: nn.Module, names: Sequence[str]) -> list[tuple[str, nn.Module]]:
    """``[(name, module)]`` for each name; unknown names raise one error that
    lists where to look."""
    if isinstance(names, str):
        names = [names]
    if not names:
        raise DetCAMInputError("target_layers", "no layer given")
    found = []
    for name in names:
        if not isinstance(name, str):
            raise DetCAMInputError("target_layers", f"expected layer names, got {type(name).__name__}")
        if not name.strip():
            raise DetCAMInputError("target_layers", "empty layer name")
        path = module_path(detector, name)
        try:
            module = detector.get_submodule(path)
        except AttributeError:
            children = ", ".join(n for n, _ in detector.named_children())
            raise DetCAMInputError(
                "target_layers",
                f"{name!r}: no such module in {type(detector).__name__}; use neck, backbone or a dotted path "
                f"under its children ({children}), e.g. backbone.body.layer4",
            ) from None
        found.append((name, module))
    return found


def default_target_layers(detector: nn.Module, needs_gradients: bool) -> list[str]:
    if not needs_gradients:
        return ["neck"]
    body = detector.get_submodule("backbone.body")
    last = list(body.named_children())[-1][0]
    return [f"backbone.body.{last}"]
