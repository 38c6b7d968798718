"""The one error type of hcam_ops.cam.detection: bad input, named by its
argument, in one line (the CLI turns the argument into its flag)."""

from __future__ import annotations


class DetCAMInputError(ValueError):
    """``argument: message`` on one line; ``.argument`` is the parameter's
    name (``image``, ``method``, ``target_layers``, ``score_thr``, ...)."""

    def __init__(self, argument: str, message: str):
        self.argument = argument
        self.message = " ".join(str(message).split())
        super().__init__(f"{argument}: {self.message}")
