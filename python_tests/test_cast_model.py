"""The H-CAST model: shapes, gradients, the intermediates contract, timm
registration, and the CAM-consistency loss wired into a training step."""

import pytest

pytest.importorskip("timm", reason="the timm package is not installed here")
import timm  # noqa: E402
import torch
import torch.nn.functional as F

import hcam_ops
from hcam_ops.models import HCAST, clusters_to_grid

SMALL = dict(
    num_classes=(6, 3),
    img_size=64,
    num_segments=20,
    embed_dim=48,
    depths=(1, 1, 1, 1),
    num_heads=4,
    num_clusters=(8, 4, 2, 1),
)


def _grid_segments(B, size, cell):
    """Square superpixels of `cell` pixels: ids row-major over the cells."""
    n = size // cell
    ids = (torch.arange(size) // cell)[:, None] * n + (torch.arange(size) // cell)[None, :]
    return ids.expand(B, size, size).contiguous()


def test_shapes_and_intermediates(gen):
    torch.manual_seed(0)
    m = HCAST(**SMALL).eval()
    x = torch.randn(2, 3, 64, 64, generator=gen)
    seg = _grid_segments(2, 64, 16)  # 16 segments of 20: four are padding
    logits, inter = m(x, seg, return_intermediates=True)
    assert [tuple(l.shape) for l in logits] == [(2, 6), (2, 3)]
    assert inter["tokens"].shape == (2, 20, 48) and inter["segment_mask"].sum(1).tolist() == [16, 16]
    assert inter["segments"].shape == (2, 8, 8)
    sizes = [20, 8, 4, 2, 1]
    for i in range(1, 5):
        assert inter[f"centroid{i}"].shape == (2, sizes[i], 48)
        assert inter[f"assign{i}"].shape == (2, sizes[i - 1], sizes[i])
        assert inter[f"indices{i}"].shape == (2, sizes[i])
    # padding segments get no assignment and are never seeds
    pad = ~inter["segment_mask"]
    assert (inter["assign1"][pad] == 0).all()
    assert inter["segment_mask"].gather(1, inter["indices1"]).all()
    torch.testing.assert_close(inter["assign1"][~pad].sum(-1), torch.ones(int((~pad).sum())))
    assert all(torch.isfinite(l).all() for l in logits)


def test_cam_maps_back_to_the_grid(gen):
    torch.manual_seed(0)
    m = HCAST(**SMALL).eval()
    x = torch.randn(1, 3, 64, 64, generator=gen)
    _, inter = m(x, _grid_segments(1, 64, 16), return_intermediates=True)
    cam = hcam_ops.cam_gather(inter["centroid1"], m.heads[0].weight, torch.tensor([2]))  # [1, 8]
    grid = clusters_to_grid(cam, inter)
    assert grid.shape == (1, 8, 8)
    seg_values = (inter["assign1"] @ cam.unsqueeze(-1)).squeeze(-1)
    torch.testing.assert_close(grid[0, 0, 0], seg_values[0, 0])  # cell (0, 0) lies in segment 0
    torch.testing.assert_close(grid[0, 7, 7], seg_values[0, 15])


def test_gradients_reach_every_parameter(gen):
    torch.manual_seed(0)
    m = HCAST(**SMALL)
    x = torch.randn(2, 3, 64, 64, generator=gen)
    logits, inter = m(x, _grid_segments(2, 64, 16), return_intermediates=True)
    cam = hcam_ops.cam_kl_loss(
        inter["centroid1"], m.heads[0].weight, m.heads[1].weight, logits[0].argmax(1), logits[1].argmax(1)
    )
    (sum(l.logsumexp(1).sum() for l in logits) + cam).backward()
    missing = [n for n, p in m.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert missing == []


def test_timm_registration_and_local_checkpoint(tmp_path, gen):
    for name in ("hcast_small", "hcast_base", "cast_small_cam", "cast_base_cam"):
        assert name in timm.list_models("*cast*")
    kw = {k: v for k, v in SMALL.items() if k != "embed_dim"}
    m = timm.create_model("cast_small_cam", **kw).eval()
    assert m.return_intermediates and m.embed_dim == 384
    path = tmp_path / "ckpt.pth"
    torch.save(m.state_dict(), path)
    m2 = timm.create_model("cast_small_cam", checkpoint_path=str(path), **kw).eval()
    x, seg = torch.randn(1, 3, 64, 64, generator=gen), _grid_segments(1, 64, 16)
    torch.testing.assert_close(m(x, seg)[0][0], m2(x, seg)[0][0])
    with pytest.raises(ValueError, match="no hub weights"):
        timm.create_model("hcast_small", pretrained=True)


def test_bad_input():
    m = HCAST(**SMALL)
    with pytest.raises(ValueError, match="segments must be"):
        m(torch.randn(1, 3, 64, 64), torch.zeros(1, 32, 32, dtype=torch.long))
    with pytest.raises(ValueError, match="token grid"):
        m(torch.randn(1, 3, 96, 96), torch.zeros(1, 96, 96, dtype=torch.long))
    with pytest.raises(TypeError, match="unexpected arguments"):
        HCAST(**SMALL, depth=3)


def test_cam_consistency_train_step_reduces_the_loss():
    """CE on both levels plus 0.1 * the CAM-KL loss on centroid1 (coarse
    detached inside the op): a few Adam steps on a fixed synthetic batch lower
    the total."""
    torch.manual_seed(0)
    m = HCAST(**SMALL)
    g = torch.Generator().manual_seed(3)
    fine = torch.arange(8) % 6
    coarse = fine // 2
    x = torch.randn(8, 3, 64, 64, generator=g) * 0.5 + fine.view(-1, 1, 1, 1).float() / 3
    seg = _grid_segments(8, 64, 16)
    opt = torch.optim.AdamW(m.parameters(), lr=2e-3)
    losses = []
    for _ in range(6):
        logits, inter = m(x, seg, return_intermediates=True)
        cam = hcam_ops.cam_kl_loss(
            inter["centroid1"], m.heads[0].weight, m.heads[1].weight, logits[0].argmax(1), logits[1].argmax(1)
        )
        loss = F.cross_entropy(logits[0], fine) + F.cross_entropy(logits[1], coarse) + 0.1 * cam
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < losses[0]
