"""benchmarks/methods/ (issue 27): the CAM-consistency sweep writes one JSON
object per run and seed with the engine's final validation metrics, and its
figure script draws the per-level CAMs of two runs; at one epoch, for CI."""

import json
import os
import sys

import pytest

pytest.importorskip("timm", reason="the timm package is not installed here")
pytest.importorskip("cv2", reason="the superpixels need OpenCV")

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "benchmarks", "methods"))
import cam_consistency  # noqa: E402
import cam_consistency_figure  # noqa: E402


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    root = tmp_path_factory.mktemp("cam_consistency")
    argv = ["--weights", "off,0.1", "--seeds", "3", "--epochs", "1", "--out", str(root), "--runs", str(root / "runs")]
    results = cam_consistency.main(argv)
    return root, results


def test_one_object_per_run_and_seed(sweep):
    root, results = sweep
    written = json.loads((root / "cam_consistency.json").read_text())
    assert written == results
    assert [(r["run"], r["seed"]) for r in written] == [("off", 3), ("on-0.1", 3)]
    for r in written:
        assert set(r) == {"run", "seed", "full_path_acc", "consistency", "cam_iou", "top1"}
        assert all(0 <= r[k] <= 1 for k in ("full_path_acc", "consistency", "cam_iou"))
        assert len(r["top1"]) == 3  # the synthetic set's three levels
    # The metrics are the last epoch's row of the run's own log.
    row = cam_consistency.last_validation(str(root / "runs" / "off-seed3" / "log.csv"))
    assert row["cam_iou"] == written[0]["cam_iou"]


def test_table_gives_mean_and_spread():
    results = [
        {"run": "off", "seed": 0, "full_path_acc": 0.2, "consistency": 0.5, "cam_iou": 0.6, "top1": [0.1, 0.5]},
        {"run": "off", "seed": 1, "full_path_acc": 0.4, "consistency": 0.7, "cam_iou": 0.8, "top1": [0.3, 0.5]},
    ]
    line = cam_consistency.table(results).splitlines()[2]
    assert line == "| off | 2 | 0.300 ± 0.100 | 0.600 ± 0.100 | 0.700 ± 0.100 | 0.200 ± 0.100 / 0.500 ± 0.000 |"


def test_figure(sweep, tmp_path):
    root, _ = sweep
    out = tmp_path / "cams.png"
    runs = root / "runs"
    cam_consistency_figure.main(
        ["--off", str(runs / "off-seed3"), "--on", str(runs / "on-0.1-seed3"), "--images", "2", "--out", str(out)]
    )
    assert out.stat().st_size > 10_000
