"""The engine's schedulers: each one's state survives a weights_only
checkpoint, and a resumed schedule continues where it stopped."""

import io
import types

import pytest

pytest.importorskip("timm", reason="the timm package is not installed here")
import torch  # noqa: E402

from hcam_ops.train.engine import _scheduler  # noqa: E402

ARGS = dict(epochs=6, warmup_epochs=1, warmup_lr=1e-6, min_lr=0.0, decay_epochs=2, decay_rate=0.1, plateau_patience=1)
METRICS = [0.5, 0.4, 0.3, 0.6, 0.2, 0.1]


def _run(sched, epochs, state=None, updates_per_epoch=3):
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    s = _scheduler(opt, types.SimpleNamespace(sched=sched, **ARGS), updates_per_epoch)
    start = 0
    if state is not None:
        opt.load_state_dict(state["opt"])
        s.load_state_dict(state["sched"])
        start = state["epoch"]
    lrs = []
    for e in range(start, epochs):
        for u in range(updates_per_epoch):
            s.step_update(num_updates=e * updates_per_epoch + u + 1)
        s.step(e + 1, METRICS[e])
        lrs.append(opt.param_groups[0]["lr"])
    buf = io.BytesIO()
    torch.save({"opt": opt.state_dict(), "sched": s.state_dict(), "epoch": epochs}, buf)
    buf.seek(0)
    return lrs, torch.load(buf, weights_only=True)


@pytest.mark.parametrize("sched", ["cosine", "step", "plateau"])
def test_resumed_schedule_continues(sched):
    whole, _ = _run(sched, 6)
    first, state = _run(sched, 3)
    rest, _ = _run(sched, 6, state)
    assert first + rest == pytest.approx(whole)
    assert len(set(whole)) > 1  # the learning rate did change


def test_plateau_reduces_on_the_monitored_metric():
    lrs, _ = _run("plateau", 6)
    # best 0.5 at epoch 0; 0.4 and 0.3 are two bad epochs with patience 1 -> one reduction
    assert lrs[0] == lrs[1] == 1e-3 and lrs[2] == pytest.approx(1e-4)


def test_each_task_keeps_its_own_engine_defaults():
    """argparse shares a parent parser's options between subcommands; each
    task's defaults must stay its own."""
    from hcam_ops.train.cli import parser

    ap = parser()
    h, m = ap.parse_args(["hierarchical"]), ap.parse_args(["multilabel"])
    assert (h.out, m.out) == ("runs/hcast", "runs/multilabel")
    assert h.epochs != m.epochs or h.lr != m.lr
