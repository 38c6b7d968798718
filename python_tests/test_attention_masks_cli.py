"""python -m hcam_ops.cam --method cls-attention | attnpool: the per-head
maps, their masks and the fused mask drawn over the image, the head scores
in heads.txt, and one-line errors; through the one registry of methods."""

import pytest

pytest.importorskip("pytorch_grad_cam", reason="the grad-cam package is not installed here")
pytest.importorskip("timm", reason="the timm package is not installed here")
import numpy as np  # noqa: E402
import timm  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from hcam_ops.cam import attention_masks, class_cams  # noqa: E402
from hcam_ops.cam.__main__ import main  # noqa: E402
from hcam_ops.cam.methods import MASK_METHODS, METHODS, mask_methods, normalise  # noqa: E402


def _image(tmp_path, gen, size=64):
    """A bright square on a dark textured background, saved as a PNG."""
    img = 0.1 + 0.05 * torch.rand(3, size, size + 16, generator=gen)
    img[:, 16:40, 24:56] = 0.9
    path = tmp_path / "square.png"
    Image.fromarray((img.permute(1, 2, 0).numpy() * 255).astype("uint8")).save(path)
    return str(path)


# A ViT-Tiny at 64 px: the model every mask test runs.
VIT = ("--model", "vit_tiny_patch16_224", "--img-size", "64")


def _run(tmp_path, image, *args):
    torch.manual_seed(0)  # the model's random weights
    main(["--image", image, "--out", str(tmp_path / "out"), *args])
    return tmp_path / "out"


def test_the_registry_resolves_the_mask_methods():
    assert mask_methods() == ["attnpool", "clsattention"]
    for spelling in ("cls-attention", "cls_attention", "CLSAttention", "attnpool", "attn-pool"):
        assert normalise(spelling) in MASK_METHODS and normalise(spelling) not in METHODS
    with pytest.raises(ValueError, match=r"^class_cams: 'cls-attention' draws attention masks, not class maps"):
        class_cams(torch.nn.Linear(2, 2), torch.zeros(1, 3, 8, 8), method="cls-attention")


def test_cls_attention_draws_heads_masks_and_the_fused_mask(tmp_path, gen, capsys):
    image = _image(tmp_path, gen)
    out = _run(tmp_path, image, *VIT, "--method", "cls-attention")
    heads = [f"head_{k}" for k in range(3)]
    want = {f"clsattention_{n}.png" for n in heads + [f"{h}_mask" for h in heads] + ["fused"]}
    assert {p.name for p in out.iterdir()} == want | {"clsattention.gif", "heads.txt"}
    assert Image.open(out / "clsattention.gif").n_frames == 7
    assert Image.open(out / "clsattention_fused.png").width == 80  # drawn on the photo as it is
    # heads.txt: the IoU of each head's mask with the heads' consensus, the chosen one marked.
    torch.manual_seed(0)
    model = timm.create_model("vit_tiny_patch16_224", num_classes=6, img_size=64).eval()
    from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
    from torchvision.transforms.functional import normalize, resize, to_tensor

    x = normalize(
        to_tensor(resize(Image.open(image).convert("RGB"), [64, 64])), IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
    )
    masks = attention_masks(model, x[None])
    lines = (out / "heads.txt").read_text().splitlines()
    chosen = int(masks.heads[0])
    assert lines[:3] == [
        f"head_{k}\t{float(masks.scores[0, k]):.4f}" + ("\tchosen" if k == chosen else "") for k in range(3)
    ]
    assert lines[3] == "fused\tLOCATE: minmax(mean of the chosen head masks)"
    assert "wrote 8 files" in capsys.readouterr().out


def test_fixed_heads_as_locate(tmp_path, gen):
    image = _image(tmp_path, gen)
    out = _run(
        tmp_path,
        image,
        *VIT,
        "--method",
        "cls_attention",
        "--heads",
        "0,2",
    )
    assert (out / "heads.txt").read_text().splitlines() == [
        "head_0\tchosen",
        "head_1",
        "head_2\tchosen",
        "fused\tLOCATE: minmax(mean of the chosen head masks)",
    ]


def test_attnpool_on_timms_clip_resnet(tmp_path, gen):
    """timm's resnet50_clip ends in timm's AttentionPool2d (32 heads, a 4 x 4
    map at 128 px); it has no class-token attention, so the fused mask is
    the pool mask."""
    image = _image(tmp_path, gen)
    out = _run(tmp_path, image, "--model", "resnet50_clip", "--img-size", "128", "--method", "attnpool")
    names = {p.name for p in out.iterdir()}
    assert {"attnpool_pool_head_0.png", "attnpool_pool_head_31_mask.png", "attnpool_pool_mask.png"} <= names
    assert "attnpool_fused.png" in names and len(names) == 32 * 2 + 2 + 2  # + the GIF and heads.txt
    assert (out / "heads.txt").read_text() == "fused\tthe pool mask (no class-token attention to fuse it with)\n"
    # The fused mask is the pool mask: the two frames are the same picture but for the caption.
    fused, pool = (np.array(Image.open(out / f"attnpool_{n}.png")) for n in ("fused", "pool_mask"))
    band = fused.shape[0] - 64  # the caption above the 64-row photo
    assert (fused[band:] == pool[band:]).all() and not (fused[:band] == pool[:band]).all()


def test_errors_are_one_line(tmp_path, gen):
    image = _image(tmp_path, gen)
    with pytest.raises(SystemExit, match=r"^error: --method cls-attention: cls-attention needs a timm ViT-style"):
        _run(tmp_path, image, "--model", "resnet50_clip", "--img-size", "64", "--method", "cls-attention")
    with pytest.raises(SystemExit, match=r"^error: --method attnpool: attnpool needs an AttentionPool2d"):
        _run(tmp_path, image, *VIT, "--method", "attnpool")
    with pytest.raises(SystemExit, match=r"^error: --heads 0,5: 5 is not one of the 3 heads$"):
        _run(
            tmp_path,
            image,
            *VIT,
            "--method",
            "cls-attention",
            "--heads",
            "0,5",
        )
    with pytest.raises(SystemExit, match=r"^error: --heads: for --method cls-attention or attnpool, not gradcam$"):
        _run(tmp_path, image, "--model", "vit_tiny_patch16_224", "--method", "gradcam", "--heads", "0")
    with pytest.raises(SystemExit, match=r"^error: --heads '1,1': head indices from 0, each once$"):
        _run(tmp_path, image, "--model", "vit_tiny_patch16_224", "--method", "cls-attention", "--heads", "1,1")
    with pytest.raises(SystemExit, match=r"--method 'attention': one of .*, attnpool, clsattention$"):
        _run(tmp_path, image, "--model", "vit_tiny_patch16_224", "--method", "attention")
