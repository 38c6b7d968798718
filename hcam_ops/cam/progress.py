"""pytorch-grad-cam draws its own tqdm bars (AblationCAM, ScoreCAM: one per
box with ``--per-box``). In a log file they are pages of carriage returns, so
the CAM CLIs show them on a terminal only."""

from __future__ import annotations

import contextlib
import sys


@contextlib.contextmanager
def bars_only_on_a_tty(stream=None):
    """Within: every ``tqdm.tqdm`` made through the ``tqdm`` module (as
    pytorch-grad-cam makes them) is disabled unless ``stream`` (stderr) is a
    terminal. The module's class comes back on leaving."""
    import tqdm

    stream = sys.stderr if stream is None else stream
    if stream.isatty():
        yield
        return
    original = tqdm.tqdm

    class Quiet(original):
        def __init__(self, *args, **kwargs):
            kwargs["disable"] = True
            super().__init__(*args, **kwargs)

    tqdm.tqdm = Quiet
    try:
        yield
    finally:
        tqdm.tqdm = original
