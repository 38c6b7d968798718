"""The optional EMA of the weights (published: timm's ``ModelEma``, decay
0.99996, updated after every optimizer step), held by the task.

The engine calls the task's ``after_step`` after each optimizer step (not on
accumulation micro-batches), which updates the average, as the published
loop does after its loss scaler's step.

timm's ``ModelEmaV3`` with ``exclude_buffers=True``: each parameter is
averaged once per step and BatchNorm statistics are copied. (The published
``ModelEma`` walks the state dict, where the aliased ``blocks{i}`` views list
every transformer block twice, so those were averaged twice per step, i.e.
with decay squared; this one does not repeat that.)
"""

from __future__ import annotations

import torch


class TaskEma:
    def __init__(self, decay: float, state: dict | None = None):
        self.decay = decay
        self.state = state  # a resumed EMA's weights, applied on attach
        self.ema = None
        self.updates = 0

    @property
    def module(self) -> torch.nn.Module | None:
        return None if self.ema is None else self.ema.module

    def attach(self, model: torch.nn.Module) -> None:
        """Starts the average from ``model`` (the bare model, on its device)."""
        if self.ema is not None:
            return
        from timm.utils import ModelEmaV3

        self.ema = ModelEmaV3(model, decay=self.decay, exclude_buffers=True)
        if self.state is not None:
            self.ema.module.load_state_dict(self.state)

    def update(self, model: torch.nn.Module) -> None:
        self.ema.update(model)
        self.updates += 1

    def state_dict(self) -> dict | None:
        if self.ema is None:
            return self.state
        return {k: v.detach().cpu() for k, v in self.ema.module.state_dict().items()}
