"""SIGTERM (a scheduler's kill, ``torchrun`` stopping its workers) and
SIGINT (Ctrl-C) during training become an :class:`Interrupted` exception, so
the run unwinds: a checkpoint being written is abandoned and its temporary
file removed (``checkpoint.save``), and the engine says one line and exits
with 128 + the signal's number, as a shell reports a process a signal ended."""

from __future__ import annotations

import contextlib
import signal
import threading


class Interrupted(KeyboardInterrupt):
    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


@contextlib.contextmanager
def interruptible():
    """Within: the first SIGTERM or SIGINT raises :class:`Interrupted`;
    later ones are ignored while the run unwinds. The previous handlers come
    back on leaving. Outside the main thread (where Python cannot install
    handlers) it does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    raised = []

    def handler(signum, frame):
        if not raised:
            raised.append(signum)
            raise Interrupted(signum)

    old = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)
