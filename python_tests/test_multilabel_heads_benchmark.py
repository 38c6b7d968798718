"""benchmarks/methods/multilabel_heads.py (issue item 5): the generated set,
one JSON object per head and seed, the table; at a tiny size, for CI."""

import json
import os
import sys

import pytest
import torch

pytest.importorskip("torchvision", reason="the focal head is torchvision's")
pytest.importorskip("torchmetrics", reason="the metrics are torchmetrics'")

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "benchmarks", "methods"))
import multilabel_heads  # noqa: E402


@pytest.fixture(scope="module")
def heads_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("multilabel_heads")
    argv = ["--seeds", "4", "--epochs", "1", "--train-size", "96", "--eval-size", "64", "--out", str(root)]
    return root, multilabel_heads.main(argv)


def test_one_object_per_head_and_seed(heads_run):
    root, results = heads_run
    written = json.loads((root / "multilabel_heads.json").read_text())
    assert written == results
    assert [(r["run"], r["seed"]) for r in written] == [("arcface", 4), ("bce", 4), ("focal", 4)]
    for r in written:
        assert set(r) == set(multilabel_heads.KEYS)
        assert {"run", "seed", "macro_f1", "map"} <= set(r)
        assert all(0 <= r[k] <= 1 for k in ("macro_f1", "map", "macro_f1_tuned"))
        assert list(r["ap"]) == list(multilabel_heads.CLASSES)
        assert all(0 <= v <= 1 for v in r["ap"].values())
        assert r["epochs"] == 1


def test_sweep_writes_its_own_file(tmp_path, monkeypatch):
    monkeypatch.setattr(multilabel_heads, "SWEEP", ((10.0, 0.2),))
    argv = "--sweep --seeds 5 --epochs 1 --train-size 64 --eval-size 32".split() + ["--out", str(tmp_path)]
    results = multilabel_heads.main(argv)
    assert json.loads((tmp_path / "multilabel_heads_sweep.json").read_text()) == results
    assert [(r["run"], r["seed"]) for r in results] == [("arcface-s10-m0.2", 5)]
    assert not (tmp_path / "multilabel_heads.json").exists()


def test_generated_set():
    """Deterministic; every image has a label, healthy never comes with a
    disease, and the rare class is the rarest (the report's frequencies)."""
    x, y = multilabel_heads.make_split(400, 7)
    x2, y2 = multilabel_heads.make_split(400, 7)
    assert torch.equal(x, x2) and torch.equal(y, y2)
    assert x.shape == (400, 3, multilabel_heads.IMG, multilabel_heads.IMG)
    assert 0 <= x.min() and x.max() <= 1
    assert (y.sum(1) >= 1).all()
    healthy = y[:, multilabel_heads.CLASSES.index("healthy")] == 1
    assert (y[healthy].sum(1) == 1).all()
    assert int(y.mean(0).argmin()) == multilabel_heads.CLASSES.index(multilabel_heads.RARE)


def test_table_gives_mean_and_spread():
    ap = dict.fromkeys(multilabel_heads.CLASSES, 0.5)
    results = [
        {"run": "bce", "seed": 0, "macro_f1": 0.2, "macro_f1_tuned": 0.3, "map": 0.6, "ap": ap},
        {"run": "bce", "seed": 1, "macro_f1": 0.4, "macro_f1_tuned": 0.5, "map": 0.8, "ap": ap},
    ]
    line = multilabel_heads.table(results).splitlines()[2]
    assert line == "| bce | 2 | 0.300 ± 0.100 | 0.400 ± 0.100 | 0.700 ± 0.100 | 0.500 ± 0.000 | 0.500 ± 0.000 |"


def test_diagnose_writes_its_own_file(tmp_path):
    argv = "--diagnose --heads arcface,bce --seeds 6 --epochs 1 --train-size 64 --eval-size 32".split()
    results = multilabel_heads.main([*argv, "--out", str(tmp_path)])
    assert json.loads((tmp_path / "multilabel_heads_diagnose.json").read_text()) == results
    arcface, bce = results
    assert (arcface["run"], bce["run"]) == ("arcface", "bce")
    assert list(arcface["recall"]) == list(multilabel_heads.CLASSES)
    assert all(-1 <= v <= 1 for v in arcface["cos_positive"].values())
    assert "cos_positive" not in bce
    for r in results:
        assert 0 <= r["macro_f1_fine_grid"] <= 1
        assert len(r["fine_thresholds"]) == len(multilabel_heads.CLASSES)
    assert all(-1 < t < 1 for t in arcface["fine_thresholds"].values())  # cosines
