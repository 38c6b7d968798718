"""hcam_ops.cam: Grad-CAM per class (pytorch-grad-cam), GAP-CAM through
cam_gather, attention rollout, overlays and the CLI."""

import pytest

pytest.importorskip("pytorch_grad_cam", reason="the grad-cam package is not installed here")
pytest.importorskip("timm", reason="the timm package is not installed here")
import timm  # noqa: E402
import torch  # noqa: E402
from _train_helpers import QUICK, TINY_HCAST, TINY_MULTILABEL  # noqa: E402
from PIL import Image  # noqa: E402

import hcam_ops  # noqa: E402
import hcam_ops.models  # noqa: E402,F401
from hcam_ops.cam import attention_rollout, class_cams, gap_cam, save_overlays  # noqa: E402


def _structured(gen, size=64):
    """A bright square on a dark textured background: not constant, not zeros."""
    img = 0.1 + 0.05 * torch.rand(3, size, size, generator=gen)
    img[:, size // 4 : size // 2, size // 2 : 3 * size // 4] = 0.9
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
    got = gap_cam(fmap, weight, cls, normalize=False, relu=False)
    want = torch.einsum("bchw,bc->bhw", fmap, weight[cls])
    torch.testing.assert_close(got, want)
    torch.testing.assert_close(gap_cam(fmap, weight, cls, normalize=False), want.clamp_min(0))
    both = gap_cam(fmap, weight, torch.tensor([[0, 1], [2, 3]]), size=(20, 28))
    assert both.shape == (2, 2, 20, 28) and both.min() >= 0 and both.max() <= 1 + 1e-6


def test_gap_cam_is_gradcam_on_a_gap_linear_head(gen):
    """With the ReLU, GAP-CAM equals pytorch-grad-cam's Grad-CAM on the last
    conv of a GAP + linear model (its gradients are w_k / (h w) everywhere),
    up to the two normalisations' eps (1e-6 against 1e-7) and float32 rounding."""
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    torch.manual_seed(0)
    conv = torch.nn.Conv2d(3, 16, 3, padding=1)
    head = torch.nn.Linear(16, 5)
    model = torch.nn.Sequential(conv, torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), head).eval()
    x = torch.randn(2, 3, 12, 14, generator=gen)
    cls = [1, 4]
    with GradCAM(model=model, target_layers=[conv]) as cam:
        want = torch.from_numpy(cam(input_tensor=x, targets=[ClassifierOutputTarget(k) for k in cls]))
    with torch.no_grad():
        got = gap_cam(conv(x), head.weight, torch.tensor(cls))
    assert want.flatten(1).amax(1).min() > 0.99  # both maps have positive evidence
    torch.testing.assert_close(got, want, rtol=0, atol=4e-6)
    raw = gap_cam(conv(x).detach(), head.weight.detach(), torch.tensor(cls), relu=False)
    assert (raw - got).abs().max() > 0.05  # without the ReLU the maps differ


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

    main(
        [
            "--model",
            "arc_psa_swin_tiny",
            "--checkpoint",
            str(tmp_path / "ck.pth"),
            "--image",
            str(tmp_path / "leaf.png"),
            "--out",
            str(tmp_path / "cli"),
            "--img-size",
            "64",
        ]
    )
    out = sorted(p.name for p in (tmp_path / "cli").iterdir())
    assert "cam.gif" in out and "scores.txt" in out and len([p for p in out if p.endswith(".png")]) == 6


def test_cli_reads_training_checkpoints_of_both_tasks(tmp_path, gen):
    """The checkpoint alone rebuilds the model (non-default config), for the
    hierarchical (H-CAST) task too."""
    from hcam_ops.cam.__main__ import main as cam_main
    from hcam_ops.train import main as train_main

    Image.fromarray((_structured(gen).permute(1, 2, 0).numpy() * 255).astype("uint8")).save(tmp_path / "img.png")
    run = tmp_path / "h"
    train_main(["hierarchical", *TINY_HCAST, *QUICK, "--epochs", "1", "--out", str(run)])
    cam_main(
        ["--checkpoint", str(run / "best.pth"), "--image", str(tmp_path / "img.png"), "--out", str(tmp_path / "hc")]
    )
    out = sorted(p.name for p in (tmp_path / "hc").iterdir())
    assert len([p for p in out if p.endswith(".png")]) == 3 and "cam.gif" in out  # one map per level
    levels = (tmp_path / "hc" / "scores.txt").read_text().splitlines()
    assert [line.split("\t")[0] for line in levels] == ["level 0", "level 1", "level 2"]
    assert levels[0].split("\t")[1].startswith("L0_")

    run = tmp_path / "m"
    train_main(["multilabel", *TINY_MULTILABEL, "--classes", "a,b,c", *QUICK, "--epochs", "1", "--out", str(run)])
    cam_main(
        ["--checkpoint", str(run / "best.pth"), "--image", str(tmp_path / "img.png"), "--out", str(tmp_path / "mc")]
    )
    out = sorted(p.name for p in (tmp_path / "mc").iterdir())
    assert [p for p in out if p.endswith(".png")] == ["cam_a.png", "cam_b.png", "cam_c.png"]


def test_cli_errors(tmp_path):
    from hcam_ops.cam.__main__ import main as cam_main

    with pytest.raises(SystemExit, match="--model is required"):
        cam_main(["--image", "x.png", "--out", str(tmp_path)])
    with pytest.raises(SystemExit, match="missing.pth: no such file"):
        cam_main(["--checkpoint", str(tmp_path / "missing.pth"), "--image", "x.png", "--out", str(tmp_path)])
    (tmp_path / "not.png").write_text("text")
    with pytest.raises(SystemExit, match="--image .*not.png: not a readable image"):
        cam_main(
            [
                "--model",
                "arc_psa_swin_tiny",
                "--image",
                str(tmp_path / "not.png"),
                "--out",
                str(tmp_path),
                "--img-size",
                "64",
            ]
        )
