"""Progress where no terminal is: the training engine's lines (step, loss,
rate, ETA) and the CAM CLIs' silencing of pytorch-grad-cam's own bars."""

import io
import os
import re
import sys

sys.path.insert(0, os.path.dirname(__file__))

import pytest  # noqa: E402
from _train_helpers import TINY_HCAST  # noqa: E402

from hcam_ops.cam.progress import bars_only_on_a_tty  # noqa: E402
from hcam_ops.train import main as train_main  # noqa: E402


def test_training_without_a_terminal_prints_progress_lines(tmp_path, capsys):
    # pytest's captured stderr is not a terminal: no bar, so lines instead.
    argv = ["hierarchical", *TINY_HCAST, "--synthetic-size", "16", "--batch-size", "4", "--no-tensorboard"]
    train_main([*argv, "--epochs", "1", "--log-every", "2", "--out", str(tmp_path / "run")])
    lines = [l for l in capsys.readouterr().err.splitlines() if l.startswith("epoch 0 step")]
    assert [l.split(":")[0] for l in lines] == ["epoch 0 step 2/4", "epoch 0 step 4/4"], lines
    for line in lines:
        assert re.fullmatch(r"epoch 0 step \d/4: loss \d+\.\d{4}, \d+\.\d\d steps/s, ETA \d+ s", line), line


@pytest.mark.parametrize("flags", [["--no-progress"], ["--log-every", "0"]])
def test_progress_lines_can_be_turned_off(tmp_path, capsys, flags):
    argv = ["hierarchical", *TINY_HCAST, "--synthetic-size", "8", "--batch-size", "4", "--no-tensorboard"]
    train_main([*argv, "--epochs", "1", *flags, "--out", str(tmp_path / "run")])
    assert "step" not in capsys.readouterr().err


class _Terminal(io.StringIO):
    def isatty(self):
        return True


def test_grad_cam_bars_only_on_a_terminal():
    import pytorch_grad_cam.ablation_cam as ablation
    import tqdm

    original = tqdm.tqdm
    log = io.StringIO()
    with bars_only_on_a_tty(log):
        # pytorch-grad-cam reaches tqdm through the module, as here.
        assert ablation.tqdm.tqdm is not original
        for _ in ablation.tqdm.tqdm(range(3), file=log):
            pass
    assert log.getvalue() == "" and tqdm.tqdm is original
    terminal = _Terminal()
    with bars_only_on_a_tty(terminal):
        assert tqdm.tqdm is original
        for _ in tqdm.tqdm(range(3), file=terminal):
            pass
    assert "3/3" in terminal.getvalue()
