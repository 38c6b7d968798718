"""Training that never saves garbage (docs/faults.md): each test injects one
fault into a tiny CPU run and checks what the engine does about it: a NaN
loss or gradient stops the run naming the batch (or is skipped and counted),
non-finite weights are never saved, numeric flags are checked when parsed,
a resumed run equals the uninterrupted one bit for bit, SIGTERM / SIGINT end
the run in one line without a half-written file, and a full disk names the
file and keeps the previous checkpoint."""

import csv
import errno
import os
import signal
import subprocess
import sys
import textwrap

import pytest

pytest.importorskip("timm", reason="the timm package is not installed here")
pytest.importorskip("skimage", reason="the skimage package is not installed here")
import torch  # noqa: E402
from _train_helpers import QUICK, TINY_HCAST, TINY_MULTILABEL, exits_with_one_line  # noqa: E402

from hcam_ops import checkpoint  # noqa: E402
from hcam_ops.train import cli, main, signals  # noqa: E402
from hcam_ops.train.engine import Task, fit  # noqa: E402
from hcam_ops.train.hierarchical.data import WithSegments  # noqa: E402
from hcam_ops.train.multilabel.data import SyntheticMultiLabel  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY_H = ["hierarchical", *TINY_HCAST, *QUICK]
TINY_M = ["multilabel", *TINY_MULTILABEL, *QUICK]


def _nan_item(monkeypatch, cls, bad_index, from_call):
    """Item ``bad_index`` of ``cls`` is NaN from the ``from_call``-th item
    drawn on (so the first epoch is clean)."""
    get, calls = cls.__getitem__, [0]

    def getitem(self, i):
        calls[0] += 1
        item = get(self, i)
        if i == bad_index and calls[0] > from_call:
            return (torch.full_like(item[0], float("nan")), *item[1:])
        return item

    monkeypatch.setattr(cls, "__getitem__", getitem)


def _epoch(path):
    return checkpoint.read(str(path))["epoch"]


def _finite(path):
    weights = checkpoint.read(str(path))["model"].values()
    return all(bool(torch.isfinite(v).all()) for v in weights if v.is_floating_point())


# -- 1. non-finite loss, gradient, weights -------------------------------------------


def test_nan_image_stops_hierarchical_naming_the_batch(tmp_path, monkeypatch):
    """The issue's run: one NaN image in the second epoch used to train on,
    exit 0 and overwrite best.pth with NaN weights."""
    _nan_item(monkeypatch, WithSegments, 5, from_call=16)
    out = tmp_path / "h"
    msg = exits_with_one_line(
        lambda: main([*TINY_H, "--epochs", "3", "--out", str(out)]), "non-finite loss", "epoch 1, step", "samples"
    )
    assert "5" in msg.split("samples")[1]
    assert _epoch(out / "last.pth") == 0 and _epoch(out / "best.pth") == 0
    assert _finite(out / "last.pth") and _finite(out / "best.pth")


def test_nan_image_stops_multilabel_in_one_line(tmp_path, monkeypatch):
    """Multi-label used to stop with a long traceback naming no batch."""
    _nan_item(monkeypatch, SyntheticMultiLabel, 2, from_call=0)
    exits_with_one_line(
        lambda: main([*TINY_M, "--epochs", "1", "--out", str(tmp_path / "m")]), "epoch 0, step", "samples"
    )
    assert not (tmp_path / "m" / "last.pth").exists()


def test_skip_counts_the_step_and_saves_finite_weights(tmp_path, monkeypatch):
    _nan_item(monkeypatch, WithSegments, 5, from_call=16)
    out = tmp_path / "h"
    main([*TINY_H, "--epochs", "2", "--on-nonfinite", "skip", "--out", str(out)])
    rows = list(csv.DictReader(open(out / "log.csv")))
    assert [r["train_skipped"] for r in rows] == ["0", "1"]
    assert all(float(r["train_loss"]) == float(r["train_loss"]) for r in rows)  # no NaN in the means
    assert _epoch(out / "last.pth") == 1 and _finite(out / "last.pth")


class Tiny(Task):
    """A task of the engine alone (no model of the package): a linear layer
    and a BatchNorm on 16 random points, ``fault(epoch, step, model)`` called
    in each step to inject one."""

    name, monitor, model_name, model_config = "tiny", "score", "tiny", {}

    def __init__(self, fault=None):
        self.fault, self.epoch, self.step = fault, 0, 0

    def build_model(self):
        return torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.BatchNorm1d(4), torch.nn.Linear(4, 1))

    def datasets(self):
        g = torch.Generator().manual_seed(0)
        x = torch.randn(16, 4, generator=g)
        data = torch.utils.data.TensorDataset(x, x.sum(1, keepdim=True))
        return data, data

    def train_sampler(self, dataset, world, seed):
        return None

    def train_step(self, model, bare, batch, device):
        x, y = batch
        loss = torch.nn.functional.mse_loss(model(x), y)
        if self.fault is not None:
            loss = self.fault(self, bare, loss)
        self.step += 1
        return {"loss": loss}, len(x)

    def evaluate(self, bare, loader, device, world):
        self.epoch += 1
        with torch.no_grad():
            return {"score": -sum(float(torch.nn.functional.mse_loss(bare(x), y)) for x, y in loader)}


def _fit(task, tmp_path, *flags):
    args = cli.parser().parse_args(["multilabel", "--epochs", "3", "--batch-size", "8", "--lr", "0.01", *flags])
    args.out, args.no_tensorboard, args.no_progress, args.patience = str(tmp_path / "t"), True, True, 0
    return fit(task, args)


def test_fgd_value_error_becomes_the_line_that_names_the_batch(tmp_path):
    """FGDLoss raises ValueError on non-finite terms itself (check_finite);
    it used to end distillation in a traceback that names no batch."""

    def fault(task, bare, loss):
        if task.epoch == 1 and task.step % 2 == 1:
            raise ValueError("FGDLoss: loss_fg not finite: student or teacher maps hold NaN or Inf")
        return loss

    exits_with_one_line(
        lambda: _fit(Tiny(fault), tmp_path), "FGDLoss: loss_fg not finite", "epoch 1, step 1", "samples"
    )
    assert _epoch(tmp_path / "t" / "last.pth") == 0


def test_nonfinite_gradient_stops_without_clipping(tmp_path):
    """--clip-grad 0: the gradient's norm is still checked (a finite loss
    can have an Inf gradient: sqrt at 0)."""

    def fault(task, bare, loss):
        return loss + (torch.sqrt(bare[0].weight[0, 0] * 0) if task.epoch == 1 else 0)

    exits_with_one_line(
        lambda: _fit(Tiny(fault), tmp_path, "--clip-grad", "0"), "non-finite gradient", "epoch 1, step 0"
    )
    assert _epoch(tmp_path / "t" / "last.pth") == 0 and _finite(tmp_path / "t" / "last.pth")


def test_nonfinite_weights_are_never_saved(tmp_path):
    """A finite loss and gradient but weights gone NaN (a BatchNorm
    statistic, here): last.pth keeps the previous epoch."""

    task = Tiny()

    def poison(bare):
        if task.epoch == 2:
            with torch.no_grad():
                bare[1].running_var.fill_(float("inf"))

    task.after_step = poison
    exits_with_one_line(lambda: _fit(task, tmp_path), "epoch 2 left non-finite weights", "1.running_var")
    assert _epoch(tmp_path / "t" / "last.pth") == 1 and _finite(tmp_path / "t" / "last.pth")


# -- 2. numeric flags ----------------------------------------------------------------


@pytest.mark.parametrize(
    "flag, value, text",
    [
        ("--clip-grad", "-1", "must be >= 0"),
        ("--epochs", "-1", "must be >= 0"),
        ("--workers", "-1", "must be >= 0"),
        ("--patience", "-1", "must be >= 0"),
        ("--warmup-epochs", "-2", "must be >= 0"),
        ("--plateau-patience", "-1", "must be >= 0"),
        ("--lr", "nan", "not a finite number"),
        ("--lr", "-0.1", "must be >= 0"),
        ("--weight-decay", "inf", "not a finite number"),
        ("--warmup-lr", "-1", "must be >= 0"),
        ("--min-lr", "-1", "must be >= 0"),
        ("--momentum", "-0.5", "must be >= 0"),
        ("--decay-epochs", "0", "must be > 0"),
        ("--decay-rate", "0", "must be > 0"),
        ("--dist-timeout", "0", "must be > 0"),
    ],
)
def test_engine_numeric_flags_are_checked_when_parsed(tmp_path, flag, value, text):
    """``--epochs -1`` used to be an AssertionError, ``--workers -1`` a
    traceback, ``--clip-grad -1`` trained uphill."""
    exits_with_one_line(lambda: main([*TINY_H, flag, value, "--out", str(tmp_path)]), f"argument {flag}", text)


# -- 3. exact resume -----------------------------------------------------------------


def _log_rows(path):
    return [{k: v for k, v in r.items() if k != "seconds"} for r in csv.DictReader(open(path))]


def _finish_and_compare(argv, whole, parts):
    """Resumes the interrupted run in ``parts`` to its end: log.csv (less the
    wall-clock column) and the final weights equal the uninterrupted run's in
    ``whole`` bit for bit."""
    main([*argv, "--out", str(parts), "--resume", str(parts / "last.pth")])
    assert _log_rows(parts / "log.csv") == _log_rows(whole / "log.csv")
    a, b = checkpoint.read(str(whole / "last.pth")), checkpoint.read(str(parts / "last.pth"))
    assert a["model"].keys() == b["model"].keys()
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k


def _kill(monkeypatch, where, n):
    """Ends the run as SIGTERM would, at ``where``: "step" (the ``n``-th
    step of this run) or "save" (between epoch ``n``'s log row and its
    checkpoint, the window that used to log an epoch twice)."""
    if where == "step":
        calls, backward = [0], torch.Tensor.backward

        def killed_backward(self, *a, **k):
            calls[0] += 1
            if calls[0] == n:
                raise signals.Interrupted(signal.SIGTERM)
            return backward(self, *a, **k)

        monkeypatch.setattr(torch.Tensor, "backward", killed_backward)
    else:
        save = checkpoint.save

        def killed_save(obj, path):
            if path.endswith("last.pth") and obj["epoch"] == n:
                raise signals.Interrupted(signal.SIGTERM)
            return save(obj, path)

        monkeypatch.setattr(checkpoint, "save", killed_save)


@pytest.mark.parametrize("task", ["hierarchical", "multilabel"])
def test_resume_equals_the_uninterrupted_run(tmp_path, monkeypatch, task):
    """Killed at several points and resumed each time: log.csv (less the
    wall-clock column) and the final weights equal the uninterrupted run's
    bit for bit. Used to diverge from the first resumed epoch (re-seeded RNG)
    and, killed between the log row and the checkpoint, to log that epoch
    twice. Mixup, random erasing, dropout and a weighted sampler's own
    generator draw random numbers in these runs."""
    if task == "hierarchical":
        argv = [*TINY_H, "--drop-path", "0.1"]
    else:
        argv = [*TINY_M, "--oversample", "rust", "--oversample-mode", "weighted"]
    argv += ["--epochs", "4"]
    whole = tmp_path / "whole"
    main([*argv, "--out", str(whole)])
    parts = tmp_path / "parts"
    # two steps per epoch: killed in epoch 1's first step, between epoch 2's
    # log row and checkpoint, in epoch 3's first step (the run resumed at 2)
    for where, n in (("step", 3), ("save", 2), ("step", 3)):
        with monkeypatch.context() as m:
            _kill(m, where, n)
            resume = ["--resume", str(parts / "last.pth")] if (parts / "last.pth").exists() else []
            with pytest.raises(SystemExit) as info:
                main([*argv, "--out", str(parts), *resume])
            assert info.value.code == 128 + signal.SIGTERM
    _finish_and_compare(argv, whole, parts)


# A run SIGKILLed (nothing unwinds, nothing is flushed) at a chosen point of
# its own process: the backward of its n-th step, or right after epoch n's log
# row, before that epoch's checkpoint.
_SIGKILL_RUNNER = textwrap.dedent(
    """
    import os, signal, sys
    import torch
    from hcam_ops import checkpoint
    from hcam_ops.train import cli

    where, n, argv = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
    if where == "step":
        calls, backward = [0], torch.Tensor.backward

        def killed_backward(self, *a, **k):
            calls[0] += 1
            if calls[0] == n:
                os.kill(os.getpid(), signal.SIGKILL)
            return backward(self, *a, **k)

        torch.Tensor.backward = killed_backward
    else:
        save = checkpoint.save

        def killed_save(obj, path):
            if path.endswith("last.pth") and obj["epoch"] == n:
                os.kill(os.getpid(), signal.SIGKILL)
            return save(obj, path)

        checkpoint.save = killed_save
    cli.main(argv)
    """
)


def test_sigkilled_runs_resume_to_the_uninterrupted_run(tmp_path):
    """Real kills, each in its own process (no exception unwinds, no state
    survives in memory): killed in epoch 1, between epoch 2's log row and its
    checkpoint, and in epoch 3, resumed from ``last.pth`` each time; log.csv
    (less the wall-clock column) and the final weights equal the
    uninterrupted run's bit for bit."""
    argv = [*TINY_H, "--drop-path", "0.1", "--epochs", "4"]
    whole = tmp_path / "whole"
    main([*argv, "--out", str(whole)])
    parts = tmp_path / "parts"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")])}
    for where, n in (("step", 3), ("save", 2), ("step", 3)):
        resume = ["--resume", str(parts / "last.pth")] if (parts / "last.pth").exists() else []
        run = [sys.executable, "-c", _SIGKILL_RUNNER, where, str(n), *argv, "--out", str(parts), *resume]
        done = subprocess.run(run, env=env, cwd=ROOT, capture_output=True, text=True, timeout=600)
        assert done.returncode == -signal.SIGKILL, done.stderr[-2000:]
        assert not [f for f in os.listdir(parts) if ".tmp" in f]
    _finish_and_compare(argv, whole, parts)


def test_resume_truncates_the_log_to_the_checkpoint(tmp_path):
    from hcam_ops.train.history import History

    h = History(str(tmp_path), resume=False, tensorboard=False)
    for e in range(3):
        h.append({"epoch": e, "loss": 1.0 / 3 + e})
    again = History(str(tmp_path), resume=True, tensorboard=False, upto=1)
    assert [r["epoch"] for r in again.rows] == [0, 1]
    rows = list(csv.DictReader(open(tmp_path / "log.csv")))
    assert [r["epoch"] for r in rows] == ["0", "1"] and float(rows[0]["loss"]) == 1.0 / 3


# -- 4. SIGTERM / SIGINT -------------------------------------------------------------

SLOW_SAVE = textwrap.dedent(
    """
    import sys, time, torch
    save = torch.save
    def slow(obj, f, *a, **k):
        if obj.get("epoch") == 1:
            with open(f, "wb") as fh:
                fh.write(b"half a checkpoint")
            print("SAVING", flush=True)
            time.sleep(60)
        return save(obj, f, *a, **k)
    torch.save = slow
    from hcam_ops.train import main
    main(sys.argv[1:])
    """
)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_during_a_checkpoint_write(tmp_path, sig):
    """A signal while last.pth of epoch 1 is being written (a slow
    torch.save): exit 128 + the signal, one line, no temporary file, and the
    previous last.pth (epoch 0) whole. SIGTERM used to leave the temporary
    file and no clean exit; Ctrl-C printed a traceback."""
    out = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.Popen(
        [sys.executable, "-c", SLOW_SAVE, *TINY_H, "--epochs", "3", "--out", str(out)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        for line in proc.stdout:
            if line.startswith("SAVING"):
                break
        proc.send_signal(sig)
        _, stderr = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 128 + sig, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: stopped by " + signal.Signals(sig).name), stderr
    assert sorted(os.listdir(out)) == ["args.json", "best.pth", "history.png", "last.pth", "log.csv"]
    assert _epoch(out / "last.pth") == 0


def test_save_removes_its_temporary_file_when_interrupted(tmp_path, monkeypatch):
    path = tmp_path / "last.pth"
    checkpoint.save({"epoch": 0}, str(path))

    def interrupted(obj, f, *a, **k):
        open(f, "wb").write(b"half")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", interrupted)
    with pytest.raises(KeyboardInterrupt):
        checkpoint.save({"epoch": 1}, str(path))
    assert os.listdir(tmp_path) == ["last.pth"] and checkpoint.read(str(path))["epoch"] == 0


# -- 5. full disk --------------------------------------------------------------------


@pytest.mark.parametrize(
    "error",
    [
        OSError(errno.ENOSPC, "No space left on device"),
        RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 4416 vs 4312"),
    ],
)
def test_full_disk_names_the_file_and_keeps_the_previous_checkpoint(tmp_path, monkeypatch, error):
    """A full disk, faked: torch.save writes part of the file and fails as
    torch does on a short write (a real small tmpfs needs mount rights this
    test machine does not give). It used to surface as 'inline_container.cc:672
    unexpected pos' with no file name."""
    out = tmp_path / "t"
    save = torch.save

    def full(obj, f, *a, **k):
        if obj.get("epoch") == 1:
            open(f, "wb").write(b"part")
            raise error
        return save(obj, f, *a, **k)

    monkeypatch.setattr(torch, "save", full)
    last = out / "last.pth"
    exits_with_one_line(lambda: _fit(Tiny(), tmp_path), f"no space left writing {last}", "the previous file is kept")
    assert sorted(p for p in os.listdir(out) if ".tmp" in p) == [] and _epoch(last) == 0


def test_nan_image_stops_the_student_alone_run(tmp_path, monkeypatch):
    """``distill --student-alone`` used to write a NaN last.pth and exit 0."""
    from hcam_ops.data.synthetic_detection import SyntheticDetection

    _nan_item(monkeypatch, SyntheticDetection, 1, from_call=0)
    out = tmp_path / "s"
    argv = ["distill", "--student-alone", "--image-size", "64", "--synthetic-size", "2", "--batch-size", "1"]
    argv += ["--epochs", "1", "--no-tensorboard", "--no-progress", "--out", str(out)]
    exits_with_one_line(lambda: main(argv), "non-finite loss", "samples 1")
    assert not (out / "last.pth").exists()
