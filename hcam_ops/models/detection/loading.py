"""A detector's local checkpoint: written in the package's one format
(:mod:`hcam_ops.checkpoint`), read back from it or from a bare state dict."""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from ... import checkpoint
from ..._cli import InputError
from .builders import SMALL_DETECTORS, build_detector, family, infer_num_classes


def save_checkpoint(
    path: str,
    detector: nn.Module,
    name: str,
    num_classes: int,
    classes: Sequence[str] | None = None,
    **build,
) -> None:
    """Writes what ``load_checkpoint`` (or :func:`hcam_ops.models.build_model`)
    needs to rebuild ``detector`` from the file alone: its name, the
    ``build_detector`` keywords (``num_classes`` with the background, sizes,
    widths) and the class names (without the background)."""
    family(name)
    config = {"num_classes": int(num_classes), **build}
    names = list(classes) if classes is not None else None
    checkpoint.save(checkpoint.model_checkpoint(name, config, detector.state_dict(), classes=names), path)


def load_checkpoint(path: str, name: str | None = None, num_classes: int | None = None, **overrides):
    """``(detector in eval mode, class names or None, metadata)``.

    ``path`` is a checkpoint of the package (everything is in it;
    ``overrides`` replace its build keywords, e.g. ``min_size``), or a bare
    state dict (``{"model": state_dict}`` too), which needs ``name``;
    ``num_classes`` is then read off the classifier's weight when not given."""
    ckpt = checkpoint.read(path, "checkpoint")
    classes, build = None, {}
    if checkpoint.is_model_checkpoint(ckpt):
        name = name or ckpt["model_name"]
        if name != ckpt["model_name"]:
            raise InputError("model", f"the checkpoint holds a {ckpt['model_name']}")
        family(name)
        build = dict(ckpt["model_config"])
        saved_classes = build.pop("num_classes")
        num_classes = num_classes or saved_classes
        classes, state = ckpt.get("classes"), ckpt["model"]
    else:
        state = ckpt.get("model", ckpt)
        if name is None:
            raise InputError("model", f"{path} is a bare state dict: name its detector")
        family(name)
        num_classes = num_classes or infer_num_classes(state, name)
        if name in SMALL_DETECTORS and "backbone.fpn.inner_blocks.0.0.weight" in state:
            # The one build choice a state dict shows: the FPN width.
            build["fpn_channels"] = int(state["backbone.fpn.inner_blocks.0.0.weight"].shape[0])
    build.update(overrides)
    detector = build_detector(name, num_classes, **build)
    try:
        detector.load_state_dict(state)
    except RuntimeError as e:
        lines = str(e).splitlines()
        first = (lines[1] if len(lines) > 1 else lines[0]).strip()
        first = first if len(first) <= 160 else first[:160] + "..."
        raise InputError("checkpoint", f"{path}: does not fit {name} with {num_classes} classes ({first})") from None
    detector.eval()
    return detector, classes, {"model_name": name, "num_classes": num_classes, "build": build}
