"""hcam_ops.superpixels on generated, structured images."""

import numpy as np
import pytest

pytest.importorskip("skimage", reason="the skimage package is not installed here")
pytest.importorskip("cv2", reason="the cv2 package is not installed here")
import torch

from hcam_ops.superpixels import Superpixels, WithSuperpixels


def _image(gen, size=224):
    """Four colour quadrants with a texture and noise: strong edges at the middle lines."""
    img = torch.zeros(3, size, size)
    h = size // 2
    img[0, :h, :h], img[1, :h, h:], img[2, h:, :h] = 0.9, 0.8, 0.85
    img[:, h:, h:] = 0.3
    img += 0.1 * torch.sin(torch.arange(size) / 3.0).view(1, 1, -1)
    return (img + 0.03 * torch.rand(3, size, size, generator=gen)).clamp(0, 1)


def _quadrant(size=224):
    ys, xs = np.meshgrid(np.arange(size), np.arange(size), indexing="ij")
    return (ys >= size // 2) * 2 + (xs >= size // 2)


@pytest.mark.parametrize("method", ["seeds", "slic"])
def test_segments_follow_the_edges(method, gen):
    seg = Superpixels(196, method)(_image(gen))
    assert seg.shape == (224, 224) and seg.dtype == torch.int64
    ids = seg.numpy()
    n = ids.max() + 1
    assert 100 <= n <= 256 and set(np.unique(ids)) == set(range(n))  # consecutive ids
    quad = _quadrant()
    purity = [np.bincount(quad[ids == s], minlength=4).max() / (ids == s).sum() for s in range(n)]
    assert np.mean(np.array(purity) > 0.9) > 0.9  # superpixels rarely straddle an edge


def test_max_segments_merges_ids(gen):
    seg = Superpixels(196, "slic", max_segments=50)(_image(gen))
    assert int(seg.max()) < 50


def test_pil_and_array_inputs_and_bad_input(gen):
    arr = (_image(gen, 64).permute(1, 2, 0).numpy() * 255).astype(np.uint8)
    from PIL import Image

    a = Superpixels(16, "slic")(arr)
    b = Superpixels(16, "slic")(Image.fromarray(arr))
    assert torch.equal(a, b)
    with pytest.raises(ValueError, match=r"\[3, H, W\]"):
        Superpixels()(torch.rand(1, 8, 8))
    with pytest.raises(ValueError, match="method"):
        Superpixels(method="quickshift")


def test_dataset_wrapper_batches(gen):
    base = [(_image(gen, 64), i) for i in range(4)]
    ds = WithSuperpixels(base, Superpixels(16, "seeds"))
    images, segments, targets = next(iter(torch.utils.data.DataLoader(ds, batch_size=4)))
    assert images.shape == (4, 3, 64, 64) and segments.shape == (4, 64, 64) and targets.tolist() == [0, 1, 2, 3]
    assert abs(float(images.mean())) < 3  # normalised


def test_contrib_cv2_wins_the_install():
    """grad-cam pulls opencv-python-headless beside our opencv-contrib-python-headless;
    both install a cv2 package and the last unpacked wins (scripts/setup.sh puts
    the contrib files back). The plain build has an empty cv2.ximgproc, so this
    asks for SEEDS itself: without it SEEDS would silently become SLIC."""
    import importlib.metadata as md

    try:
        md.version("opencv-contrib-python-headless")
    except md.PackageNotFoundError:
        pytest.skip("opencv-contrib-python-headless is not installed here (the train extra brings it)")
    import cv2

    assert hasattr(getattr(cv2, "ximgproc", None), "createSuperpixelSEEDS"), (
        "cv2 is not the contrib build: reinstall opencv-contrib-python-headless"
    )
    assert Superpixels(196, "seeds").method == "seeds"
