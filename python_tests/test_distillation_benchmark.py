"""benchmarks/methods/distillation.py (issue 27): the hard synthetic set is
deterministic and exports as COCO; the sweep writes one ``{"run", "seed",
"map"}`` object per run and seed, trains the teacher once, and skips rows
already in its JSON; at a tiny size, for CI."""

import json
import os
import sys

import pytest

pytest.importorskip("timm", reason="the timm package is not installed here")
pytest.importorskip("torchvision", reason="the detectors need torchvision")
pytest.importorskip("torchmetrics", reason="the mAP needs torchmetrics")

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "benchmarks", "methods"))
import distillation  # noqa: E402

from hcam_ops.data.synthetic_detection import HARD_CLASSES, HardSyntheticDetection, rle_to_mask, to_coco  # noqa: E402


def test_hard_set_is_deterministic_and_exports_as_coco(tmp_path):
    a, b = HardSyntheticDetection(6, 64, seed=5, masks=True), HardSyntheticDetection(6, 64, seed=5, masks=True)
    counts = []
    for i in range(6):
        (ia, ta), (ib, tb) = a[i], b[i]
        assert ia.equal(ib) and ta["boxes"].equal(tb["boxes"]) and ta["labels"].equal(tb["labels"])
        assert ia.shape == (3, 64, 64) and 0 <= float(ia.min()) and float(ia.max()) <= 1
        assert ta["labels"].min() >= 1 and ta["labels"].max() <= len(HARD_CLASSES)
        # Boxes are the visible masks' boxes.
        for box, mask in zip(ta["boxes"].tolist(), ta["masks"]):
            rows, cols = mask.any(1).nonzero().flatten(), mask.any(0).nonzero().flatten()
            assert box == [float(cols[0]), float(rows[0]), float(cols[-1] + 1), float(rows[-1] + 1)]
        counts.append(len(ta["labels"]))
    assert max(counts) > 2
    assert not a[0][0].equal(HardSyntheticDetection(1, 64, seed=6)[0][0])
    coco = to_coco(a, str(tmp_path / "annotations.json"), image_dir=str(tmp_path))
    assert [c["name"] for c in coco["categories"]] == list(HARD_CLASSES)
    assert len(coco["annotations"]) == sum(counts)
    first = coco["annotations"][0]
    mask = rle_to_mask(first["segmentation"]["counts"], first["segmentation"]["size"])
    assert mask.sum() == first["area"] == a[0][1]["masks"][0].sum()
    assert (tmp_path / "000005.png").is_file()


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    root = tmp_path_factory.mktemp("distillation")
    argv = [
        "--runs", "student,fgd-auto", "--seeds", "3", "--epochs", "1", "--teacher-epochs", "1",
        "--train-images", "8", "--teacher-train-images", "8", "--val-images", "4", "--out", str(root),
        "--runs-dir", str(root / "runs"),
    ]  # fmt: skip
    return root, argv, distillation.main(argv)


def test_one_object_per_run_and_seed(sweep):
    root, _, results = sweep
    written = json.loads((root / "distillation.json").read_text())
    assert written == results
    assert [(r["run"], r["seed"]) for r in written] == [("teacher", 0), ("student", 3), ("fgd-auto", 3)]
    for r in written:
        assert set(r) == {"run", "seed", "map"}
        assert isinstance(r["seed"], int) and 0 <= r["map"] <= 1
    # The number is the last epoch's val_map of the run's own log; only best.pth is kept.
    run = root / "runs" / "student-seed3"
    assert written[1]["map"] == distillation.last_map(str(run / "log.csv"))
    assert (run / "best.pth").is_file() and not (run / "last.pth").exists()
    assert (root / "runs" / "data" / "train" / "annotations.json").is_file()


def test_rows_in_the_json_are_skipped(sweep):
    root, argv, results = sweep
    before = (root / "runs" / "student-seed3" / "log.csv").stat().st_mtime_ns
    again = distillation.main(argv)
    assert again == results
    assert (root / "runs" / "student-seed3" / "log.csv").stat().st_mtime_ns == before


def test_parallel_jobs_give_the_same_rows(sweep, tmp_path):
    """--jobs 2: the runs in spawned workers on one thread each, the teacher's
    dependants after it; the rows equal the sequential sweep's (one thread,
    same seeds: the same numbers)."""
    root, argv, results = sweep
    argv = [a if a != str(root) else str(tmp_path) for a in argv]
    argv[argv.index("--runs-dir") + 1] = str(tmp_path / "runs")
    parallel = distillation.main([*argv, "--jobs", "2"])
    assert json.loads((tmp_path / "distillation.json").read_text()) == parallel
    assert parallel[0]["run"] in ("teacher", "student")
    order = [r["run"] for r in parallel]
    assert order.index("teacher") < order.index("fgd-auto")
    assert sorted(parallel, key=lambda r: r["run"]) == sorted(results, key=lambda r: r["run"])


def test_figure_draws_the_runs_of_one_seed(sweep, tmp_path, capsys):
    """distillation_figure.py: the curves of the sweep's runs of seed 3 and the
    first/last-epoch balance table, the detection loss as the log has it."""
    pytest.importorskip("matplotlib", reason="the figure needs matplotlib")
    import distillation_figure

    root, _, _ = sweep
    out = tmp_path / "curves.png"
    distillation_figure.main(["--runs-dir", str(root / "runs"), "--seed", "3", "--out", str(out)])
    assert out.stat().st_size > 1000
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| ") and "epoch" not in line]
    assert [r.split(" | ")[0] for r in rows] == ["| student"] * 2 + ["| fgd-auto"] * 2  # first, last
    log = distillation_figure.read_log(str(root / "runs" / "fgd-auto-seed3" / "log.csv"))[0]
    det = log["train_classification"] + log["train_bbox_regression"]
    assert f"| {det:.3f} |" in rows[2] and "loss_fg" in rows[2] and "loss_fg" not in rows[0]
    with pytest.raises(SystemExit, match="no run of seed 9"):
        distillation_figure.main(["--runs-dir", str(root / "runs"), "--seed", "9", "--out", str(out)])


def test_a_failed_run_keeps_the_others_rows(tmp_path):
    """--jobs 2 with a teacher row but no teacher checkpoint: fgd-auto fails
    (one line naming it), the student's row is still written."""
    rows_json = tmp_path / "rows.json"  # --out may name the file itself
    rows_json.write_text(json.dumps([{"run": "teacher", "seed": 0, "map": 0.5}]))
    argv = [
        "--runs", "student,fgd-auto", "--seeds", "3", "--epochs", "1", "--train-images", "8", "--val-images", "4",
        "--out", str(rows_json), "--runs-dir", str(tmp_path / "runs"), "--jobs", "2",
    ]  # fmt: skip
    failure = r"1 run\(s\) failed: fgd-auto seed 3 \(CLIError: error: --teacher \S+: no such file\)$"
    with pytest.raises(SystemExit, match=failure):
        distillation.main(argv)
    rows = json.loads(rows_json.read_text())
    assert [(r["run"], r["seed"]) for r in rows] == [("teacher", 0), ("student", 3)]
    assert not (tmp_path / "distillation.json").exists()


def test_teacher_on_more_images(tmp_path):
    """The teacher trains on its own export, by default of 8x the students'
    images, whose first images are the students' (item i depends on
    (seed, i) only); the students keep theirs."""
    argv = [
        "--runs", "fgd-auto", "--seeds", "3", "--epochs", "1", "--teacher-epochs", "1", "--train-images", "2",
        "--val-images", "4", "--out", str(tmp_path), "--runs-dir", str(tmp_path / "r"),
    ]  # fmt: skip
    distillation.main(argv)
    runs = tmp_path / "r"
    assert json.loads((runs / "teacher" / "args.json").read_text())["data"] == str(runs / "data-teacher16")
    assert json.loads((runs / "fgd-auto-seed3" / "args.json").read_text())["data"] == str(runs / "data")
    big = json.loads((runs / "data-teacher16" / "train" / "annotations.json").read_text())
    small = json.loads((runs / "data" / "train" / "annotations.json").read_text())
    assert len(big["images"]) == 16 and len(small["images"]) == 2
    assert big["images"][:2] == small["images"]
    firsts = {i["id"] for i in small["images"]}
    assert [a for a in big["annotations"] if a["image_id"] in firsts] == small["annotations"]
    assert (runs / "data-teacher16" / "train" / big["images"][0]["file_name"]).read_bytes() == (
        runs / "data" / "train" / small["images"][0]["file_name"]
    ).read_bytes()


def test_jobs_must_be_positive(capsys):
    with pytest.raises(SystemExit):
        distillation.main(["--jobs", "0"])
    assert "argument --jobs: 0 must be > 0" in capsys.readouterr().err


def test_table_gives_mean_and_spread():
    results = [
        {"run": "student", "seed": 0, "map": 0.2},
        {"run": "student", "seed": 1, "map": 0.4},
        {"run": "teacher", "seed": 0, "map": 0.5},
    ]
    lines = distillation.table(results).splitlines()
    assert lines[2] == "| student | 2 | 0.3000 ± 0.1000 | 0.2000 - 0.4000 | 0: 0.2000, 1: 0.4000 |"
    assert lines[3] == "| teacher | 1 | 0.5000 (one seed) | - | 0: 0.5000 |"
