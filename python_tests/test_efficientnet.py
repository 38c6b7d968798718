"""The report's EfficientNet-B0 baseline and its grouped variant (section
5.2: group size 16 in the MBConv spatial convolutions, expansion 4), built
by timm's EfficientNet builder."""

import pytest

pytest.importorskip("timm", reason="the timm package is not installed here")
import timm  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from _multilabel_helpers import (  # noqa: E402
    faces_then_training,
    fits_a_handful,
    flush_denormals,  # noqa: E402,F401  (autouse)
    handful,
)
from timm.models.efficientnet import EfficientNet  # noqa: E402

import hcam_ops.models  # noqa: E402,F401

SMALL = {"channel_multiplier": 0.5, "depth_multiplier": 0.25}


def _model(name, **kw):
    torch.manual_seed(0)
    return timm.create_model(name, img_size=64, **kw)


def _spatial_convs(model):
    """The depthwise / grouped k x k convolutions of the MBConv blocks."""
    return [b.conv_dw for stage in model.blocks for b in stage]


def test_grouped_variant_is_the_reports():
    base, grouped = timm.create_model("efficientnet_b0_bce"), timm.create_model("efficientnet_b0_g16_bce")
    assert isinstance(grouped, EfficientNet)  # timm's own network, timm's layer names
    # Baseline: depthwise (one channel per group), expansion 6 after the first stage.
    assert all(c.groups == c.in_channels for c in _spatial_convs(base))
    # Grouped: 16 channels per group in every spatial convolution, expansion 4.
    assert all(c.in_channels // c.groups == 16 for c in _spatial_convs(grouped))
    for net, e in ((base, 6), (grouped, 4)):
        expansions = {b.conv_pw.out_channels // b.conv_pw.in_channels for stage in net.blocks[1:] for b in stage}
        assert expansions == {e}
    # Same stage widths and depths as B0; the report's Grad-CAM layer (its _conv_head).
    assert [s[-1].conv_pwl.out_channels for s in grouped.blocks[1:]] == [24, 40, 80, 112, 192, 320]
    assert [len(s) for s in grouped.blocks] == [len(s) for s in base.blocks] == [1, 2, 2, 3, 3, 4, 1]
    assert grouped.conv_head.out_channels == 1280 and grouped.classifier.out_features == 6


@pytest.mark.parametrize("name", ["efficientnet_b0_bce", "efficientnet_b0_g16_bce"])
def test_faces_loss_and_two_steps(name):
    m = _model(name, backbone_kwargs=SMALL)
    with faces_then_training(m) as (x, y, logits):
        assert logits.shape == (4, 6)  # model(x): the logits, as the report's
        loss, out = m(x, y)
        torch.testing.assert_close(loss, F.binary_cross_entropy_with_logits(out, y))


# Depthwise convolutions train slowly on CPUs: the baseline goes narrower
# (the grouped net needs 16 stem channels for its groups of 16).
@pytest.mark.parametrize(
    "name, width", [("efficientnet_b0_bce", 0.25), ("efficientnet_b0_g16_bce", SMALL["channel_multiplier"])]
)
def test_fits_a_handful_of_images(name, width):
    m = _model(name, backbone_kwargs={**SMALL, "channel_multiplier": width}, drop_rate=0.0, drop_path_rate=0.0)
    fits_a_handful(m, lr=1e-2)


def test_weights_are_local_only(tmp_path):
    with pytest.raises(ValueError, match="no hub weights"):
        timm.create_model("efficientnet_b0_g16_bce", pretrained=True)
    m = _model("efficientnet_b0_g16_bce", backbone_kwargs=SMALL).eval()
    torch.save(m.state_dict(), tmp_path / "g16.pth")
    again = _model("efficientnet_b0_g16_bce", backbone_kwargs=SMALL, checkpoint_path=str(tmp_path / "g16.pth")).eval()
    x, _ = handful(2)
    torch.testing.assert_close(again(x), m(x))
    # backbone_checkpoint=: timm's own B0 weights, all but the classifier; the
    # grouped net's shapes differ, and that file is refused rather than half-loaded.
    b0 = timm.create_model("efficientnet_b0")
    torch.save(b0.state_dict(), tmp_path / "timm_b0.pth")
    loaded = _model("efficientnet_b0_bce", backbone_checkpoint=str(tmp_path / "timm_b0.pth"))
    torch.testing.assert_close(loaded.conv_head.weight, b0.conv_head.weight)
    with pytest.raises(ValueError, match="does not fit"):
        _model("efficientnet_b0_g16_bce", backbone_checkpoint=str(tmp_path / "timm_b0.pth"))
