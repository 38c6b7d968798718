"""The package's one checkpoint format, and its one atomic save.

A checkpoint is a dict of tensors and plain data only (it loads with
``torch.load(weights_only=True)``, so a file from elsewhere runs no code)::

    format        "hcam_ops/1"
    model_name    a timm name (every model and detector of hcam_ops.models is
                  registered with timm), e.g. "cast_small", "fcos_resnet18_fpn"
    model_config  the keyword arguments of timm.create_model(model_name, ...)
    model         the state dict (of the bare model, never a DDP wrapper)

and, as the writer needs: ``classes`` (class names, detectors), ``task``,
``task_state``, ``optimizer``, ``scheduler``, ``scaler``, ``epoch``,
``best``, ``stale``, ``metrics`` (training runs). So
:func:`hcam_ops.models.build_model` rebuilds the model from the file alone.

Files of the two earlier formats, ``hcam_ops.train/1`` (the same layout) and
``hcam_ops.detection/1`` (``num_classes`` and ``build`` instead of
``model_config``), are read as this one.
"""

from __future__ import annotations

import errno
import os
from typing import Any

import torch

from ._cli import CLIError, InputError, check_file

FORMAT = "hcam_ops/1"
_TRAIN_V1 = "hcam_ops.train/1"
_DETECTION_V1 = "hcam_ops.detection/1"


def model_checkpoint(model_name: str, model_config: dict, model: dict, **extra: Any) -> dict[str, Any]:
    """The dict of a checkpoint: the format, the timm name and keywords that
    rebuild the model, its state dict, and ``extra`` entries."""
    return {"format": FORMAT, "model_name": model_name, "model_config": dict(model_config), "model": model, **extra}


def save(obj: dict[str, Any], path: str) -> None:
    """Writes ``obj`` to a temporary file in the same folder (made if
    missing), then renames it: a run killed while saving leaves the previous
    file whole, and a reader never sees half a file. Whatever stops the
    write (an error, ``KeyboardInterrupt``, ``SystemExit``) removes the
    temporary file; a full disk, which torch reports as ``unexpected pos``
    without a file name, is one :class:`~hcam_ops._cli.CLIError` line that
    names the file."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp{os.getpid()}"
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    except (OSError, RuntimeError) as e:
        reason = _write_failure(e)
        if reason is None:
            raise
        kept = "the previous file is kept" if os.path.exists(path) else "nothing was written"
        raise CLIError(f"{reason} writing {path}; {kept}") from None
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _write_failure(e: Exception) -> str | None:
    """What stopped a write, in words; None for an error that is no write failure."""
    if isinstance(e, OSError):
        if e.errno in (errno.ENOSPC, errno.EDQUOT):
            return "no space left"
        return f"{e.strerror or type(e).__name__}"
    text = str(e)
    # torch's zip writer on a short write (a full disk): "... inline_container.cc:672] . unexpected pos ..."
    if "unexpected pos" in text or "file write failed" in text:
        return "no space left"
    return None


def read(path: str, argument: str = "checkpoint") -> dict[str, Any]:
    """The dict in ``path``, loaded with ``weights_only=True`` and, when it is
    a checkpoint of an earlier format, upgraded to this one; any failure is
    an :class:`~hcam_ops._cli.InputError` that names ``argument`` and the
    file. A bare state dict comes back as it is."""
    if not os.path.isfile(path):
        raise InputError(argument, f"{path}: no such file")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001  (unpickling errors have many types)
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise InputError(argument, f"{path}: not a loadable checkpoint ({first})") from None
    if not isinstance(ckpt, dict):
        raise InputError(argument, f"{path}: holds a {type(ckpt).__name__}, not a checkpoint dict")
    return upgrade(ckpt)


def load(path: str, what: str = "--checkpoint") -> dict[str, Any]:
    """:func:`read` for a command line: every failure is one
    :class:`~hcam_ops._cli.CLIError` line that names the flag and the file."""
    check_file(path, what)
    try:
        return read(path, what)
    except InputError as e:
        raise CLIError(f"{what} {e.message}") from None


def upgrade(ckpt: dict[str, Any]) -> dict[str, Any]:
    """A checkpoint of an earlier format in this one (anything else as it is)."""
    fmt = ckpt.get("format")
    if fmt == _TRAIN_V1:
        return {**ckpt, "format": FORMAT}
    if fmt == _DETECTION_V1:
        rest = {k: v for k, v in ckpt.items() if k not in ("format", "num_classes", "build")}
        config = {"num_classes": int(ckpt["num_classes"]), **dict(ckpt.get("build") or {})}
        return {**rest, "format": FORMAT, "model_config": config}
    return ckpt


def is_model_checkpoint(ckpt: dict) -> bool:
    """Whether ``ckpt`` names its model (format, timm name and config)."""
    return ckpt.get("format") == FORMAT and "model_name" in ckpt and "model_config" in ckpt


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
