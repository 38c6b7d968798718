"""What the timm-registered models share: timm's own keyword arguments, and
no hub weights (a local checkpoint only)."""

from __future__ import annotations

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
