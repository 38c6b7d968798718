"""The multi-label Swin with the report's PSANFeatureModule and the ArcFace
head; the focal baseline; the PSA and STN modules; the multi-label training
CLI."""

import csv
import json
import math

import pytest

pytest.importorskip("timm", reason="the timm package is not installed here")
pytest.importorskip("torchmetrics", reason="the torchmetrics package is not installed here")
import timm  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
import torchvision  # noqa: E402
from _multilabel_helpers import (  # noqa: E402
    faces_then_training,
    fits_a_handful,
    flush_denormals,  # noqa: E402,F401  (autouse)
    handful,
    two_steps,
)

import hcam_ops  # noqa: E402
import hcam_ops.data.plant_pathology  # noqa: E402,F401
import hcam_ops.models  # noqa: E402,F401
from hcam_ops.models import PSANFeatureModule, sigmoid_focal_loss  # noqa: E402
from hcam_ops.models._factory import load_backbone  # noqa: E402
from hcam_ops.nn import STN, PolarizedSelfAttention  # noqa: E402
from hcam_ops.nn.psa import SequentialPSA  # noqa: E402
from hcam_ops.nn.stn import PooledSTN  # noqa: E402

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


def test_psan_feature_module_is_the_reports():
    """Section 6.3: layer names (so the report's checkpoints load), sizes and
    its _init_weights."""
    torch.manual_seed(0)
    m = PSANFeatureModule(64, feature_dim=32)
    keys = [k for k in m.state_dict() if not k.endswith(("running_mean", "running_var", "num_batches_tracked"))]
    assert keys == [
        "conv1.weight",
        "conv1.bias",
        "bn1.weight",
        "bn1.bias",
        "relu1.weight",
        "psa.conv_q_right.weight",
        "psa.conv_v_right.weight",
        "psa.conv_up.0.weight",
        "psa.conv_up.0.bias",
        "psa.conv_up.1.weight",
        "psa.conv_up.1.bias",
        "psa.conv_up.3.weight",
        "psa.conv_up.3.bias",
        "psa.conv_q_left.weight",
        "psa.conv_v_left.weight",
        "conv2.weight",
        "conv2.bias",
        "bn2.weight",
        "bn2.bias",
        "relu2.weight",
        "feature_path.2.weight",
        "feature_path.2.bias",
        "feature_path.3.weight",
        "feature_path.3.bias",
        "feature_path.4.weight",
        "feature_path.5.weight",
        "feature_path.5.bias",
        "feature_path.6.weight",
        "feature_path.6.bias",
        "feature_path.7.weight",
    ]
    path = m.feature_path
    assert (path[2].in_features, path[2].out_features, path[5].out_features) == (64, 768, 32)
    assert m.relu1.weight.numel() == 1 and m.psa.conv_up[0].out_channels == 64 // 2 // 4
    # Kaiming normal, fan-out, ReLU gain: std sqrt(2 / (out * 1 * 1)) = 0.177 for 64 outputs
    assert m.conv1.weight.std().item() == pytest.approx(math.sqrt(2 / 64), rel=0.1)
    assert m.conv2.bias.abs().max() == 0 and m.bn1.weight.eq(1).all() and m.bn2.bias.eq(0).all()
    assert path[2].weight.std().item() == pytest.approx(0.01, rel=0.1) and path[5].bias.abs().max() == 0
    assert m(torch.randn(3, 64, 5, 5)).shape == (3, 32)


def test_arc_psa_swin_default_is_the_reports_and_compact_is_an_option():
    m = _model()
    assert isinstance(m.feature_module, PSANFeatureModule) and m.stn is None
    assert m.feature_module.conv1.in_channels == m.backbone.num_features
    compact = _model(neck="compact", mid_chans=64, stn="report")
    assert isinstance(compact.feature_module, hcam_ops.models.PSAFeatures) and isinstance(compact.stn, STN)
    x, y = handful(4)
    two_steps(compact, x, y)
    # The report's trained model: Swin-B at 384 (1024 channels into the feature module).
    big = timm.create_model("arc_psa_swin_base_384", backbone_kwargs=TINY, img_size=64)
    assert big.backbone.pretrained_cfg["architecture"] == "swin_base_patch4_window12_384"
    assert big.pretrained_cfg["architecture"] == "arc_psa_swin_base_384"
    with pytest.raises(ValueError, match="neck must be"):
        _model(neck="bogus")


@pytest.mark.parametrize("name", ["arc_psa_swin_tiny", "swin_focal_tiny", "arc_psa_swinv2_base_384"])
def test_faces_and_two_steps(name):
    kw = {"window_size": 2} if "v2" in name else {}
    torch.manual_seed(0)
    m = timm.create_model(name, img_size=64, backbone_kwargs={**TINY, **kw})
    with faces_then_training(m) as (_, _, out):
        assert out.shape == ((4, 512) if name.startswith("arc") else (4, 6))  # ArcFace: features, as the report's
        assert m.pretrained_cfg["architecture"] == name


@pytest.mark.parametrize("name", ["arc_psa_swin_tiny", "swin_focal_tiny"])
def test_fits_a_handful_of_images(name):
    fits_a_handful(_model(name))


def test_focal_baseline_matches_torchvision_and_the_report(gen):
    logits = torch.randn(5, 6, generator=gen)
    y = (torch.rand(5, 6, generator=gen) < 0.4).float()
    want = torchvision.ops.sigmoid_focal_loss(logits, y, alpha=0.25, gamma=2.0, reduction="mean")
    torch.testing.assert_close(sigmoid_focal_loss(logits, y), want)
    # The report's FocalBCELoss: alpha * (1 - pt) ** gamma * bce, pt = exp(-bce), for every label.
    bce = F.binary_cross_entropy_with_logits(logits, y, reduction="none")
    report = (0.25 * (1 - torch.exp(-bce)) ** 2 * bce).mean()
    torch.testing.assert_close(sigmoid_focal_loss(logits, y, balanced=False), report)
    m = _model("swin_focal_tiny")
    x = torch.randn(2, 3, 64, 64, generator=gen)
    loss, out = m(x, y[:2])
    torch.testing.assert_close(loss, sigmoid_focal_loss(out, y[:2], balanced=False))
    loss, out = _model("swin_focal_tiny", focal="balanced")(x, y[:2])
    torch.testing.assert_close(loss, sigmoid_focal_loss(out, y[:2]))


def test_psa_modules(gen):
    x = torch.randn(2, 16, 5, 7, generator=gen)
    for psa in (PolarizedSelfAttention(16), SequentialPSA(16, 16)):
        out = psa(x)
        assert out.shape == x.shape
        # both branches only rescale: the output is x times weights in (0, 1)
        ratio = out / x
        assert ((ratio > 0) & (ratio < 1)).all()
    psa = SequentialPSA(16, 16)
    channel = psa.spatial_pool(x) / x  # one weight per (sample, channel)
    torch.testing.assert_close(channel, channel[..., :1, :1].expand_as(channel))
    spatial = psa.channel_pool(x) / x  # one weight per (sample, position)
    torch.testing.assert_close(spatial, spatial[:, :1].expand_as(spatial))
    torch.testing.assert_close(psa(x), psa.channel_pool(psa.spatial_pool(x)))


def test_stn_is_the_reports_sized_by_the_input(gen):
    assert STN(224).fc_loc[0].in_features == 10 * 52 * 52  # the report's hard-coded 27040
    assert STN(384).fc_loc[0].in_features == 10 * 92 * 92
    stn = STN(32)
    assert [type(m).__name__ for m in stn.localization] == ["Conv2d", "MaxPool2d", "ReLU"] * 2
    assert [stn.localization[0].out_channels, stn.localization[3].out_channels, stn.fc_loc[0].out_features] == [
        8,
        10,
        32,
    ]
    img = torch.rand(2, 3, 32, 32, generator=gen)
    identity = torch.tensor([[1.0, 0, 0], [0, 1.0, 0]]).expand(2, 2, 3)
    for module in (stn, PooledSTN()):
        torch.testing.assert_close(module.theta(img), identity)
        torch.testing.assert_close(module(img), img, atol=1e-5, rtol=1e-5)  # starts as the identity
    with pytest.raises(ValueError, match="built for"):
        stn(torch.rand(1, 3, 40, 40))
    with pytest.raises(ValueError, match="too small"):
        STN(12)


def test_pretrained_hub_weights_are_refused():
    with pytest.raises(ValueError, match="no hub weights"):
        timm.create_model("arc_psa_swin_tiny", pretrained=True)


def test_local_weights(tmp_path):
    """checkpoint_path= loads a whole model (timm's), backbone_checkpoint= a
    Swin file; a file that does not fit is refused, not half-loaded."""
    m = _model().eval()
    torch.save(m.state_dict(), tmp_path / "model.pth")
    again = timm.create_model(
        "arc_psa_swin_tiny", img_size=64, backbone_kwargs=TINY, checkpoint_path=str(tmp_path / "model.pth")
    ).eval()
    x, _ = handful(2)
    torch.testing.assert_close(again.logits(x), m.logits(x))
    torch.manual_seed(1)
    swin = timm.create_model("swin_tiny_patch4_window7_224", img_size=64, num_classes=1000, **TINY)
    torch.save(swin.state_dict(), tmp_path / "swin.pth")
    loaded = _model(backbone_checkpoint=str(tmp_path / "swin.pth"))
    torch.testing.assert_close(loaded.backbone.patch_embed.proj.weight, swin.patch_embed.proj.weight)
    torch.save({"other.weight": torch.zeros(3)}, tmp_path / "other.pth")
    with pytest.raises(ValueError, match="does not fit"):
        load_backbone(loaded.backbone, str(tmp_path / "other.pth"))


def test_multilabel_cli_two_tiny_epochs(tmp_path):
    from hcam_ops.train import main

    out = tmp_path / "ml"
    # The run's configuration, the same for the resumed epoch (oversampling and accumulation included).
    run = "--img-size 64 --batch-size 8 --synthetic-size 32 --oversample rust --accumulate 2 --no-progress".split()
    run += ["--backbone-kwargs", json.dumps(TINY), "--out", str(out)]
    report = main(["--task", "multilabel", *run, "--epochs", "2", "--tta"])
    assert set(report["per_class"]) == set(hcam_ops.data.plant_pathology.LEAF_CLASSES)
    assert 0 <= report["macro"]["f1"] <= 1
    rows = list(csv.DictReader(open(out / "log.csv")))
    assert len(rows) == 2
    for name in ("best.pth", "last.pth", "report.json", "test_metrics_heatmap.png", "test_f1_per_class.png"):
        assert (out / name).exists(), name
    for name in ("history.png", "loss_curve.png", "val_report.json", "test_metrics.csv"):
        assert (out / name).exists(), name
    assert {"train_loss", "val_loss", "val_macro_f1", "val_micro_f1", "val_map"} <= set(rows[0])
    # resume one more epoch (the oversampling, accumulation and config as before)
    main(["multilabel", *run, "--epochs", "3", "--patience", "0", "--resume", str(out / "last.pth")])
    assert [int(r["epoch"]) for r in csv.DictReader(open(out / "log.csv"))] == [0, 1, 2]
