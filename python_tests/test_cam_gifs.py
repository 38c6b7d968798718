"""The report's pictures (sections 5.3, 5.8, 6.5): per-class Grad-CAM GIFs
of the EfficientNet head convolution and of ArcPSASwin's last Swin block
(Score-CAM and the library's other methods by name), EVA-CLIP per-layer
attention and rollout GIFs; every frame labelled, one frame per class even
when maps are equal."""

import pytest

pytest.importorskip("pytorch_grad_cam", reason="the grad-cam package is not installed here")
pytest.importorskip("timm", reason="the timm package is not installed here")
import numpy as np  # noqa: E402
import timm  # noqa: E402
import torch  # noqa: E402
from _multilabel_helpers import flush_denormals  # noqa: E402,F401  (autouse)
from PIL import Image  # noqa: E402

import hcam_ops.models  # noqa: E402,F401
from hcam_ops import checkpoint  # noqa: E402
from hcam_ops.cam import class_cams, save_overlays  # noqa: E402
from hcam_ops.cam.attention_gif import attention_frames, save_attention_gif  # noqa: E402
from hcam_ops.cam.classifier import default_target_layer  # noqa: E402
from hcam_ops.cam.methods import cam_methods  # noqa: E402
from hcam_ops.cam.overlay import caption_band  # noqa: E402
from hcam_ops.cam.rollout import attention_maps, attention_rollout, layer_maps  # noqa: E402
from hcam_ops.data.plant_pathology import LEAF_CLASSES  # noqa: E402

SWIN = {"embed_dim": 24, "depths": [1, 1, 1, 1], "num_heads": [1, 1, 2, 2]}
EVA = {"patch_size": 16, "embed_dim": 48, "depth": 2, "num_heads": 2}
EFF = {"channel_multiplier": 0.5, "depth_multiplier": 0.25}


def _leaf(gen, size=64):
    """A textured leaf-green square with two spots: not constant, not zeros."""
    img = 0.1 + 0.05 * torch.rand(3, size, size, generator=gen)
    img[1, 8:56, 8:56] = 0.7
    img[:, 20:28, 30:38] = torch.tensor([0.6, 0.3, 0.1]).view(3, 1, 1)
    img[:, 40:46, 14:20] = 0.9
    return img


def _normalise(img):
    mean, std = torch.tensor([0.485, 0.456, 0.406]), torch.tensor([0.229, 0.224, 0.225])
    return ((img - mean.view(3, 1, 1)) / std.view(3, 1, 1)).unsqueeze(0)


def _assert_labelled(paths, texts):
    """One PNG per text, each captioned with exactly that text; a GIF with one
    frame per text."""
    pngs, gif = paths[:-1], paths[-1]
    assert len(pngs) == len(texts) and gif.endswith(".gif")
    assert Image.open(gif).n_frames == len(texts)
    for path, text in zip(pngs, texts):
        frame = np.asarray(Image.open(path).convert("RGB"))
        band = np.asarray(caption_band(text, frame.shape[1]))
        assert np.array_equal(frame[: band.shape[0]], band), f"{path} is not captioned {text!r}"


def test_frames_are_labelled_one_per_class_even_when_maps_are_equal(tmp_path, gen):
    img = _leaf(gen)
    same = torch.rand(1, 64, 64, generator=gen).expand(3, 64, 64)
    paths = save_overlays(img, same, ["rust", "scab", "complex"], str(tmp_path), scores=[0.9, 0.2, 0.5])
    assert [p.rsplit("/", 1)[-1] for p in paths] == ["cam_rust.png", "cam_scab.png", "cam_complex.png", "cam.gif"]
    _assert_labelled(paths, ["1/3 rust  p=0.90", "2/3 scab  p=0.20", "3/3 complex  p=0.50"])
    with pytest.raises(ValueError, match="3 maps but 2 names"):
        save_overlays(img, same, ["a", "b"], str(tmp_path))


def test_efficientnet_gradcam_on_the_head_convolution(tmp_path, gen):
    torch.manual_seed(0)
    model = timm.create_model("efficientnet_b0_g16_bce", img_size=64, backbone_kwargs=EFF)
    layer, reshape = default_target_layer(model)
    assert layer is model.conv_head and reshape is None  # the report's model._conv_head
    img = _leaf(gen)
    cams = class_cams(model, _normalise(img))
    assert cams.shape == (1, 6, 64, 64) and cams.min() >= 0 and cams.max() <= 1
    paths = save_overlays(img, cams[0], list(LEAF_CLASSES), str(tmp_path))
    _assert_labelled(paths, [f"{k + 1}/6 {c}" for k, c in enumerate(LEAF_CLASSES)])


def test_arc_psa_swin_gradcam_on_the_last_swin_block_and_other_methods(gen):
    torch.manual_seed(0)
    model = timm.create_model("arc_psa_swin_tiny", img_size=64, backbone_kwargs=SWIN)
    layer, reshape = default_target_layer(model)
    assert layer is model.backbone.layers[-1].blocks[-1] and reshape is not None
    assert default_target_layer(model, "neck")[0] is model.feature_module.relu2
    assert {"gradcam", "scorecam", "gradcam++", "eigencam", "layercam"} <= set(cam_methods())
    x = _normalise(_leaf(gen))
    for method, target in (("gradcam", None), ("scorecam", None), ("gradcam", "neck")):
        cams = class_cams(model, x, classes=[1, 3], method=method, target_layer=target)
        assert cams.shape == (1, 2, 64, 64) and cams.min() >= 0 and cams.max() <= 1, (method, target)
    with pytest.raises(ValueError, match="method must be one of"):
        class_cams(model, x, method="bogus")


def test_eva_attention_gif_layers_heads_and_rollout(tmp_path, gen):
    torch.manual_seed(0)
    model = timm.create_model("eva_clip_stn_bce", img_size=64, backbone_kwargs=EVA)
    img = _leaf(gen)
    maps, names = attention_frames(model, _normalise(img), heads=True)
    assert names == [
        "layer_01",
        "layer_01_head_1",
        "layer_01_head_2",
        "layer_02",
        "layer_02_head_1",
        "layer_02_head_2",
        "rollout",
    ]
    assert maps.shape == (7, 4, 4) and maps.amin((1, 2)).eq(0).all() and maps.amax((1, 2)).eq(1).all()
    assert not torch.equal(maps[1], maps[2])  # the heads are kept apart
    paths = save_attention_gif(model, img, str(tmp_path), prefix="leaf")
    _assert_labelled(paths, ["1/3 layer_01", "2/3 layer_02", "3/3 rollout"])
    # The extraction leaves the model as it was: fused attention, no hooks.
    assert all(m.fused_attn for m in model.modules() if hasattr(m, "fused_attn"))
    assert not any(m._forward_hooks for m in model.modules())
    cams = class_cams(model, _normalise(img), classes=[0])  # Grad-CAM on the tokens works too
    assert cams.shape == (1, 1, 64, 64)


def test_layer_maps_are_each_layers_class_token_attention_and_the_gif_frames(gen):
    """layer_maps: per image and layer, the class token's attention to the
    patches (the heads fused, or each head), min-max scaled; the GIF's frames
    are those maps and the rollout, for its one image."""
    torch.manual_seed(0)
    model = timm.create_model("eva_clip_stn_bce", img_size=64, backbone_kwargs=EVA).eval()
    x = torch.cat([_normalise(_leaf(gen)), _normalise(_leaf(gen).flip(-1))])
    attns = attention_maps(model, x)
    prefix = model.num_prefix_tokens
    assert prefix == 1 and len(attns) == 2

    def scaled(rows):  # [..., patches] -> [..., 4, 4], each map min-max scaled
        lo, hi = rows.amin(-1, keepdim=True), rows.amax(-1, keepdim=True)
        return ((rows - lo) / (hi - lo)).unflatten(-1, (4, 4))

    rows = torch.stack([a[:, :, 0, prefix:] for a in attns.values()], dim=1)  # [B, L, heads, patches]
    for fusion, want in (("mean", rows.mean(2)), ("max", rows.amax(2)), (None, rows)):
        got, names = layer_maps(model, x, head_fusion=fusion)
        assert names == list(attns)
        torch.testing.assert_close(got, scaled(want), msg=str(fusion))
    fused, _ = layer_maps(model, x[:1])
    heads, _ = layer_maps(model, x[:1], head_fusion=None)
    frames, names = attention_frames(model, x[:1], heads=True)
    assert names[:3] == ["layer_01", "layer_01_head_1", "layer_01_head_2"] and len(frames) == 7
    want = [fused[0, 0], *heads[0, 0], fused[0, 1], *heads[0, 1], attention_rollout(model, x[:1])[0]]
    torch.testing.assert_close(frames, torch.stack(want), rtol=0, atol=0)
    frames, names = attention_frames(model, x[1:], head_fusion="max", discard_ratio=0.5)
    want = [layer_maps(model, x[1:], "max")[0][0], attention_rollout(model, x[1:], 0.5, head_fusion="max")]
    torch.testing.assert_close(frames, torch.cat(want), rtol=0, atol=0)
    assert names == ["layer_01", "layer_02", "rollout"]


def _training_checkpoint(model, name, config, path):
    checkpoint.save(
        dict(
            format=checkpoint.FORMAT,
            task="multilabel",
            model_name=name,
            model_config=config,
            task_state={"classes": list(LEAF_CLASSES)},
            model={k: v for k, v in model.state_dict().items()},
        ),
        str(path),
    )


def test_cli_gifs_from_training_checkpoints(tmp_path, gen):
    from hcam_ops.cam.__main__ import main as cam_main
    from hcam_ops.cam.attention_gif import main as attention_main

    Image.fromarray((_leaf(gen).permute(1, 2, 0).numpy() * 255).astype("uint8")).save(tmp_path / "leaf.png")
    config = dict(num_classes=6, img_size=64, backbone_kwargs=EFF)
    torch.manual_seed(0)
    _training_checkpoint(
        timm.create_model("efficientnet_b0_bce", **config), "efficientnet_b0_bce", config, tmp_path / "e.pth"
    )
    cam_main(
        ["--checkpoint", str(tmp_path / "e.pth"), "--image", str(tmp_path / "leaf.png"), "--out", str(tmp_path / "e")]
    )
    out = sorted(p.name for p in (tmp_path / "e").iterdir())
    assert out == sorted([f"cam_{c}.png" for c in LEAF_CLASSES] + ["cam.gif", "scores.txt"])
    assert Image.open(tmp_path / "e" / "cam.gif").n_frames == 6
    config = dict(num_classes=6, img_size=64, backbone_kwargs=EVA)
    _training_checkpoint(
        timm.create_model("eva_clip_stn_bce", **config), "eva_clip_stn_bce", config, tmp_path / "v.pth"
    )
    paths = attention_main(
        ["--checkpoint", str(tmp_path / "v.pth"), "--image", str(tmp_path / "leaf.png"), "--out", str(tmp_path / "v")]
    )
    assert paths[-1].endswith("leaf.gif") and Image.open(paths[-1]).n_frames == 3
    with pytest.raises(SystemExit, match="--discard-ratio 1.5"):
        attention_main(["--model", "x", "--image", "x.png", "--out", str(tmp_path), "--discard-ratio", "1.5"])
    with pytest.raises(SystemExit, match="no attention modules"):
        attention_main(
            ["--checkpoint", str(tmp_path / "e.pth"), "--image", str(tmp_path / "leaf.png"), "--out", str(tmp_path)]
        )
