"""The multi-label Swin with PSA and the ArcFace head; the focal baseline;
PSA and STN modules; the multi-label training CLI."""

import csv
import json

import pytest

pytest.importorskip("timm", reason="the timm package is not installed here")
pytest.importorskip("torchmetrics", reason="the torchmetrics package is not installed here")
import timm  # noqa: E402
import torch  # noqa: E402
import torchvision  # noqa: E402

import hcam_ops  # noqa: E402
import hcam_ops.models  # noqa: E402,F401
from hcam_ops.models import sigmoid_focal_loss  # noqa: E402
from hcam_ops.nn import STN, PolarizedSelfAttention  # noqa: E402

TINY = {"embed_dim": 24, "depths": [1, 1, 1, 1], "num_heads": [1, 1, 2, 2]}


def _model(name="arc_psa_swin_tiny", **kw):
    torch.manual_seed(0)
    return timm.create_model(name, img_size=64, backbone_kwargs=TINY, **kw)


def test_forward_backward_shapes(gen):
    m = _model()
    x = torch.randn(4, 3, 64, 64, generator=gen)
    y = (torch.rand(4, 6, generator=gen) < 0.4).float()
    assert m(x).shape == (4, 512)
    loss, logits = m(x, y)
    assert loss.shape == () and logits.shape == (4, 6)
    loss.backward()
    assert all(p.grad is not None for p in m.parameters() if p.requires_grad)
    probs = m.predict(x)
    assert probs.shape == (4, 6) and ((probs >= 0) & (probs <= 1)).all()


def test_head_loss_is_the_functional_op(gen):
    m = _model().eval()
    x = torch.randn(3, 3, 64, 64, generator=gen)
    y = (torch.rand(3, 6, generator=gen) < 0.5).float()
    loss, _ = m(x, y)
    want = hcam_ops.multilabel_arcface_loss(m.features(x), m.head.weight, y, scale=30.0, margin=0.5)
    torch.testing.assert_close(loss, want)
    ref = hcam_ops.reference.multilabel_arcface_loss(m.features(x).double(), m.head.weight.double(), y.double())
    torch.testing.assert_close(loss.double(), ref, rtol=1e-4, atol=1e-6)


def test_focal_baseline_matches_torchvision(gen):
    logits = torch.randn(5, 6, generator=gen)
    y = (torch.rand(5, 6, generator=gen) < 0.4).float()
    want = torchvision.ops.sigmoid_focal_loss(logits, y, alpha=0.25, gamma=2.0, reduction="mean")
    torch.testing.assert_close(sigmoid_focal_loss(logits, y), want)
    m = _model("swin_focal_tiny")
    loss, out = m(torch.randn(2, 3, 64, 64, generator=gen), y[:2])
    assert loss.shape == () and out.shape == (2, 6)


def test_psa_and_stn(gen):
    x = torch.randn(2, 16, 5, 7, generator=gen)
    psa = PolarizedSelfAttention(16)
    out = psa(x)
    assert out.shape == x.shape
    # both branches only rescale: the output is x times weights in (0, 1)
    ratio = out / x
    assert ((ratio > 0) & (ratio < 1)).all()
    stn = STN()
    img = torch.rand(2, 3, 32, 32, generator=gen)
    torch.testing.assert_close(stn.theta(img), torch.tensor([[1.0, 0, 0], [0, 1.0, 0]]).expand(2, 2, 3))
    assert stn(img).shape == img.shape


def test_pretrained_hub_weights_are_refused():
    with pytest.raises(ValueError, match="no hub weights"):
        timm.create_model("arc_psa_swin_tiny", pretrained=True)


def test_multilabel_cli_two_tiny_epochs(tmp_path):
    from hcam_ops.train import main

    out = tmp_path / "ml"
    report = main(
        [
            "--task",
            "multilabel",
            "--img-size",
            "64",
            "--epochs",
            "2",
            "--batch-size",
            "8",
            "--synthetic-size",
            "32",
            "--oversample",
            "rust",
            "--accumulate",
            "2",
            "--out",
            str(out),
            "--no-progress",
            "--tta",
            "--backbone-kwargs",
            json.dumps(TINY),
        ]
    )
    assert set(report["per_class"]) == set(hcam_ops.models.LEAF_CLASSES)
    assert 0 <= report["macro"]["f1"] <= 1
    rows = list(csv.DictReader(open(out / "log.csv")))
    assert len(rows) == 2
    for name in ("best.pth", "last.pth", "report.json", "metrics_heatmap.png", "f1_per_class.png", "history.png"):
        assert (out / name).exists(), name
    assert {"train_loss", "val_loss", "val_macro_f1", "val_micro_f1", "val_map"} <= set(rows[0])
    # resume one more epoch (the oversampling, accumulation and config as before)
    main(
        [
            "multilabel",
            "--img-size",
            "64",
            "--epochs",
            "3",
            "--batch-size",
            "8",
            "--synthetic-size",
            "32",
            "--oversample",
            "rust",
            "--accumulate",
            "2",
            "--out",
            str(out),
            "--no-progress",
            "--patience",
            "0",
            "--backbone-kwargs",
            json.dumps(TINY),
            "--resume",
            str(out / "last.pth"),
        ]
    )
    assert [int(r["epoch"]) for r in csv.DictReader(open(out / "log.csv"))] == [0, 1, 2]
