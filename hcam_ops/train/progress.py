"""Progress where no bar can be drawn: when stderr is not a terminal (a log
file, a batch scheduler, ``nohup``), a line every ``every`` steps with the
step, the running loss, the rate and the epoch's ETA, so long epochs are never
silent between the banner and the epoch's row."""

from __future__ import annotations

import sys
import time


class ProgressLines:
    def __init__(self, epoch: int, steps: int, every: int, enabled: bool):
        self.epoch, self.steps, self.every = epoch, steps, every
        self.enabled = enabled and every > 0
        self.start = time.monotonic()

    def step(self, i: int, loss: float) -> None:
        """After step ``i`` (0-based) of the epoch, with the running mean loss."""
        done = i + 1
        if not self.enabled or (done % self.every and done != self.steps):
            return
        elapsed = max(time.monotonic() - self.start, 1e-9)
        rate = done / elapsed
        eta = (self.steps - done) / rate
        print(
            f"epoch {self.epoch} step {done}/{self.steps}: loss {loss:.4f}, {rate:.2f} steps/s, ETA {eta:.0f} s",
            file=sys.stderr,
            flush=True,
        )
