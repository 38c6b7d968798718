"""Checkpoints of both training tasks.

A checkpoint is a dict of tensors and plain data only (it loads with
``torch.load(weights_only=True)``, so a file from elsewhere runs no code)::

    format        "hcam_ops.train/1"
    task          "hierarchical" | "multilabel"
    model_name    the timm name, e.g. "cast_small"
    model_config  the keyword arguments of timm.create_model(model_name, ...)
    task_state    what the task needs to read the outputs (class names, hierarchy)
    model         the state dict (of the bare model, never the DDP wrapper)
    optimizer, scheduler, scaler   their state dicts
    epoch, best, stale, metrics    progress, the best monitored value, epochs since it

so :func:`build_model` rebuilds the model from the file alone. It is written
to a temporary file in the same folder and renamed: a run killed while saving
leaves the previous file whole.
"""

from __future__ import annotations

import os
from typing import Any

import torch

FORMAT = "hcam_ops.train/1"


def save(obj: dict[str, Any], path: str) -> None:
    tmp = f"{path}.tmp{os.getpid()}"
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def load(path: str, what: str = "--checkpoint") -> dict[str, Any]:
    """Loads with ``weights_only=True``; every failure is one line that names
    the file."""
    from .errors import CLIError, check_file

    check_file(path, what)
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001  (unpickling errors have many types)
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CLIError(f"{what} {path}: not a loadable checkpoint ({first})") from None
    if not isinstance(ckpt, dict):
        raise CLIError(f"{what} {path}: holds a {type(ckpt).__name__}, not a checkpoint dict")
    return ckpt


def is_training_checkpoint(ckpt: dict) -> bool:
    return ckpt.get("format") == FORMAT


def build_model(ckpt: dict, path: str = "checkpoint", **overrides):
    """The model a training checkpoint describes, with its weights loaded."""
    import timm

    from .. import models  # noqa: F401  (registers the timm names)
    from . import distill  # noqa: F401  (registers the detector names)
    from .errors import CLIError

    if not is_training_checkpoint(ckpt):
        raise CLIError(f"{path}: not a checkpoint of hcam_ops.train (no model name and config in it)")
    model = timm.create_model(ckpt["model_name"], **{**ckpt["model_config"], **overrides})
    model.load_state_dict(ckpt["model"])
    return model


def config_differences(ckpt: dict, task: str, model_name: str, model_config: dict) -> list[str]:
    """What a resumed run would build differently from the checkpoint."""
    diffs = []
    if ckpt.get("task") != task:
        diffs.append(f"task {ckpt.get('task')!r} != {task!r}")
    if ckpt.get("model_name") != model_name:
        diffs.append(f"model {ckpt.get('model_name')!r} != {model_name!r}")
    old = ckpt.get("model_config", {})
    for key in sorted(set(old) | set(model_config)):
        a, b = _plain(old.get(key)), _plain(model_config.get(key))
        if a != b:
            diffs.append(f"{key} {a!r} != {b!r}")
    return diffs


def _plain(v):
    """Tuples and lists compare alike (a config may come back as either)."""
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    if isinstance(v, dict):
        return {k: _plain(x) for k, x in v.items()}
    return v
