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

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Tiny H-CAST (BatchNorm in its stem, so the synchronised statistics matter),
# CAM consistency and global KL on; SGD so a rounding difference in a gradient
# stays a rounding difference in the weights (Adam would rescale it).
ARGS = [
    "hierarchical",
    "--img-size",
    "64",
    "--embed-dim",
    "48",
    "--depths",
    "1,1,1,1",
    "--num-heads",
    "4",
    "--num-clusters",
    "16,8,4,2",
    "--num-segments",
    "16",
    "--max-segments",
    "24",
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
    "--cam-consist",
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
        for key in ("train_loss", "train_ce", "train_cam_loss", "train_gk_loss", "val_loss", "val_cam_iou"):
            assert float(b[key]) == pytest.approx(float(a[key]), rel=1e-4, abs=1e-6), key
        for key in ("val_acc_l0", "val_full_path_acc", "val_consistency"):
            assert float(b[key]) == float(a[key]), key
    w_one = torch.load(one / "last.pth", weights_only=True)["model"]
    w_two = torch.load(two / "last.pth", weights_only=True)["model"]
    assert w_one.keys() == w_two.keys()
    for k in w_one:
        if w_one[k].is_floating_point():
            torch.testing.assert_close(w_two[k], w_one[k], rtol=1e-4, atol=1e-5, msg=k)
        else:
            assert torch.equal(w_two[k], w_one[k]), k
