"""Detector distillation as a task of the training CLI (``python -m
hcam_ops.train distill``; docs/distill.md): the data, the task and its
evaluation, and its tools beside it: ``python -m hcam_ops.train.distill.convert``
(the student alone) and ``python -m hcam_ops.train.distill.dump`` (what the
distillation sees, as pictures). The detectors and the Distiller live in
:mod:`hcam_ops.models.detection`, the losses in :mod:`hcam_ops.nn` and
:mod:`hcam_ops.distill`."""
