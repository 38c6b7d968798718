"""The one error type of hcam_ops.cam.detection: bad input, named by its
argument, in one line (the CLI turns the argument into its flag)."""

from __future__ import annotations

from ..._cli import InputError


class DetCAMInputError(InputError):
    """``argument: message`` on one line; ``.argument`` is the parameter's
    name (``image``, ``method``, ``target_layers``, ``score_thr``, ...).
    The detectors themselves (:mod:`hcam_ops.models.detection`) raise the
    base :class:`~hcam_ops._cli.InputError`."""
