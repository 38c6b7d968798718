"""hcam_ops.cam: Grad-CAM per class (pytorch-grad-cam), GAP-CAM through
cam_gather, attention rollout, overlays and the CLI."""

import pytest

pytest.importorskip("pytorch_grad_cam", reason="the grad-cam package is not installed here")
pytest.importorskip("timm", reason="the timm package is not installed here")
import timm  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

import hcam_ops  # noqa: E402
import hcam_ops.models  # noqa: E402,F401
from hcam_ops.cam import attention_rollout, class_cams, gap_cam, save_overlays  # noqa: E402


def _structured(gen, size=64):
    """A bright square on a dark textured background: not constant, not zeros."""
    img = 0.1 + 0.05 * torch.rand(3, size, size, generator=gen)
    img[:, size // 4: size // 2, size // 2: 3 * size // 4] = 0.9
    return img


@pytest.mark.parametrize("name", ["arc_psa_swin_tiny", "swin_focal_tiny"])
def test_gradcam_one_map_per_class(name, gen):
    torch.manual_seed(0)
    model = timm.create_model(name, img_size=64)
    x = _structured(gen).unsqueeze(0).repeat(2, 1, 1, 1)
    cams = class_cams(model, x)
    assert cams.shape == (2, 6, 64, 64)
    assert cams.min() >= 0 and cams.max() <= 1
    # An untrained model's class can have only negative evidence, which
    # Grad-CAM's ReLU turns into an all-zero map; most classes must vary.
    varies = cams.flatten(2).std(-1) > 0
    assert varies.float().mean() >= 0.6
    first, second = [int(k) for k in torch.nonzero(varies[0])[:2, 0]]
    assert not torch.allclose(cams[0, first], cams[0, second])  # classes are computed separately


def test_gap_cam_matches_the_head(gen):
    fmap = torch.randn(2, 8, 5, 7, generator=gen)
    weight = torch.randn(4, 8, generator=gen)
    cls = torch.tensor([1, 3])
    got = gap_cam(fmap, weight, cls, normalize=False)
    want = torch.einsum("bchw,bc->bhw", fmap, weight[cls])
    torch.testing.assert_close(got, want)
    both = gap_cam(fmap, weight, torch.tensor([[0, 1], [2, 3]]), size=(20, 28))
    assert both.shape == (2, 2, 20, 28) and both.min() >= 0 and both.max() <= 1 + 1e-6


def test_attention_rollout(gen):
    torch.manual_seed(0)
    vit = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=64)
    rel = attention_rollout(vit, _structured(gen).unsqueeze(0))
    assert rel.shape == (1, 4, 4) and float(rel.max()) == 1.0 and float(rel.min()) == 0.0


def test_overlays_and_cli(tmp_path, gen):
    img = _structured(gen)
    paths = save_overlays(img, torch.rand(3, 64, 64, generator=gen), ["a", "b", "c"], str(tmp_path / "o"))
    assert [p.rsplit("/", 1)[-1] for p in paths] == ["cam_a.png", "cam_b.png", "cam_c.png", "cam.gif"]
    assert Image.open(paths[-1]).n_frames == 3
    Image.fromarray((img.permute(1, 2, 0).numpy() * 255).astype("uint8")).save(tmp_path / "leaf.png")
    torch.manual_seed(0)
    model = timm.create_model("arc_psa_swin_tiny", img_size=64)
    torch.save({"model": model.state_dict()}, tmp_path / "ck.pth")
    from hcam_ops.cam.__main__ import main

    main(["--checkpoint", str(tmp_path / "ck.pth"), "--image", str(tmp_path / "leaf.png"), "--out",
          str(tmp_path / "cli"), "--img-size", "64"])
    out = sorted(p.name for p in (tmp_path / "cli").iterdir())
    assert "cam.gif" in out and "scores.txt" in out and len([p for p in out if p.endswith(".png")]) == 6
