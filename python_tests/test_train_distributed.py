"""Data parallelism: ``torchrun --nproc_per_node=2`` (gloo, CPU) trains as one
process does on the same global batch, and only rank 0 writes."""

import csv
import json
import os
import subprocess
import sys

import pytest

pytest.importorskip("timm", reason="the timm package is not installed here")
pytest.importorskip("skimage", reason="the skimage package is not installed here")
import torch  # noqa: E402
from _train_helpers import TINY_HCAST  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Tiny H-CAST (BatchNorm in its stem, so the synchronised statistics matter),
# CAM consistency and global KL on; SGD so a rounding difference in a gradient
# stays a rounding difference in the weights (Adam would rescale it), which
# makes equal weights after training the check that the gradients were equal.
# What would differ by design is off: repeated augmentation (several processes
# only), mixup pairs images within each process's
# batch, dropout draws per rank, and the published token count (the batch's
# largest superpixel id + 1) depends on the batch, hence --fixed-tokens.
ARGS = [
    "hierarchical",
    *TINY_HCAST,
    "--synthetic-size",
    "48",
    "--epochs",
    "2",
    "--opt",
    "sgd",
    "--lr",
    "0.05",
    "--sched",
    "none",
    "--unscale-lr",
    "--no-repeated-aug",
    "--fixed-tokens",
    "--mixup",
    "0",
    "--cutmix",
    "0",
    "--drop-path",
    "0",
    "--pool-drop",
    "0",
    "--cam-consist",
    "--cam-pairs",
    "adjacent",
    "--globalkl",
    "--no-tensorboard",
]


def _run(cmd, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def _log(path):
    return list(csv.DictReader(open(path)))


def test_two_processes_equal_one_on_the_same_global_batch(tmp_path):
    one = tmp_path / "one"
    two = tmp_path / "two"
    _run([sys.executable, "-m", "hcam_ops.train", *ARGS, "--batch-size", "16", "--out", str(one)], tmp_path)
    stdout = _run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node=2",
            "-m",
            "hcam_ops.train",
            *ARGS,
            "--batch-size",
            "8",
            "--out",
            str(two),
        ],
        tmp_path,
    )
    # one writer: one first line, one row per epoch
    assert stdout.count("hcam_ops.train hierarchical: device cpu, world size 2 (gloo)") == 1
    rows_one, rows_two = _log(one / "log.csv"), _log(two / "log.csv")
    assert [r["epoch"] for r in rows_two] == ["0", "1"]
    assert json.loads((two / "args.json").read_text())["world_size"] == 2
    for a, b in zip(rows_one, rows_two):
        for key in (
            "train_loss",
            "train_ce_l0",
            "train_ce_l2",
            "train_cam_loss",
            "train_gk_loss",
            "val_loss",
            "val_cam_iou",
        ):
            assert float(b[key]) == pytest.approx(float(a[key]), rel=1e-4, abs=1e-6), key
        for key in ("val_acc_l0", "val_top5_l1", "val_full_path_acc", "val_tice", "val_consistency"):
            assert float(b[key]) == float(a[key]), key
    # the per-sample predictions are gathered from both ranks, in dataset order
    pred_one, pred_two = _log(one / "predictions.csv"), _log(two / "predictions.csv")
    assert [r["index"] for r in pred_two] == [str(i) for i in range(len(pred_one))]
    for a, b in zip(pred_one, pred_two):
        for key in a:
            if key.endswith("_prob"):
                assert float(b[key]) == pytest.approx(float(a[key]), abs=1e-4), key
            else:
                assert b[key] == a[key], key
    w_one = torch.load(one / "last.pth", weights_only=True)["model"]
    w_two = torch.load(two / "last.pth", weights_only=True)["model"]
    assert w_one.keys() == w_two.keys()
    for k in w_one:
        if w_one[k].is_floating_point():
            torch.testing.assert_close(w_two[k], w_one[k], rtol=1e-4, atol=1e-5, msg=k)
        else:
            assert torch.equal(w_two[k], w_one[k]), k
