"""The report's EVA-CLIP baseline and its STN variant (sections 5.6-5.7): a
timm EVA tower built without weights, the report's head, BCE."""

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
from timm.models.eva import Eva  # noqa: E402

import hcam_ops.models  # noqa: E402,F401
from hcam_ops.models.eva_clip import REPORT_TOWER  # noqa: E402
from hcam_ops.nn import STN  # noqa: E402

# The report's tower (EVA-g) with a small width and depth: the same code path.
SMALL = {"patch_size": 16, "embed_dim": 48, "depth": 2, "num_heads": 2}


def _model(name, **kw):
    torch.manual_seed(0)
    return timm.create_model(name, img_size=64, backbone_kwargs=SMALL, **kw)


def test_tower_and_head_are_the_reports():
    assert REPORT_TOWER == "eva_giant_patch14_224"  # its code: eva_giant_patch14_224.clip_ft_in1k
    m = _model("eva_clip_bce")
    assert isinstance(m.base_model, Eva) and m.stn is None
    assert m.base_model.pretrained_cfg["architecture"] == REPORT_TOWER
    assert isinstance(m.base_model.head, torch.nn.Identity)  # its classifier removed
    assert m.dropout.p == 0.5
    assert [type(c).__name__ for c in m.classifier] == ["LayerNorm", "Linear"]
    assert m.classifier[1].in_features == 48 and m.classifier[1].out_features == 6
    s = _model("eva_clip_stn_bce")
    assert isinstance(s.stn, STN) and s.stn.img_size == (64, 64)
    other = _model("eva_clip_bce", tower="eva02_base_patch16_clip_224")
    assert other.base_model.pretrained_cfg["architecture"] == "eva02_base_patch16_clip_224"
    with pytest.raises(ValueError, match="not a timm EVA model"):
        timm.create_model("eva_clip_bce", tower="resnet18", img_size=64)


def test_stn_starts_as_the_identity():
    """With the STN at its identity start, the STN model computes what the
    plain one computes with the same tower and head."""
    stn, plain = _model("eva_clip_stn_bce").eval(), _model("eva_clip_bce").eval()
    missing, unexpected = plain.load_state_dict(stn.state_dict(), strict=False)
    assert not missing and all(k.startswith("stn.") for k in unexpected)
    x, _ = handful(3)
    torch.testing.assert_close(stn(x), plain(x), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("name", ["eva_clip_bce", "eva_clip_stn_bce"])
def test_faces_loss_and_two_steps(name):
    m = _model(name)
    with faces_then_training(m) as (x, y, logits):
        assert logits.shape == (4, 6)
        loss, out = m(x, y)
        torch.testing.assert_close(loss, F.binary_cross_entropy_with_logits(out, y))
        assert m.forward_features(x).shape == (4, 1 + 16, 48)  # class token + 4 x 4 patches


@pytest.mark.parametrize("name", ["eva_clip_bce", "eva_clip_stn_bce"])
def test_fits_a_handful_of_images(name):
    fits_a_handful(_model(name, drop_rate=0.0))


def test_weights_are_local_only(tmp_path):
    with pytest.raises(ValueError, match="no hub weights"):
        timm.create_model("eva_clip_stn_bce", pretrained=True)
    m = _model("eva_clip_stn_bce").eval()
    torch.save(m.base_model.state_dict(), tmp_path / "tower.pth")
    loaded = _model("eva_clip_bce", backbone_checkpoint=str(tmp_path / "tower.pth"))
    torch.testing.assert_close(loaded.base_model.blocks[0].attn.proj.weight, m.base_model.blocks[0].attn.proj.weight)
    torch.save(m.state_dict(), tmp_path / "model.pth")
    again = _model("eva_clip_stn_bce", checkpoint_path=str(tmp_path / "model.pth")).eval()
    x, _ = handful(2)
    torch.testing.assert_close(again(x), m(x))
