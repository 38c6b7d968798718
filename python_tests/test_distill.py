"""hcam_ops.distill: heatmaps and region masks against their loop references."""

import pytest
import torch

from hcam_ops import distill
from hcam_ops.reference import distill as R


def test_gaussian_heatmaps(gen):
    centers = torch.rand(6, 2, generator=gen) * torch.tensor([11.0, 7.0])
    sigmas = torch.rand(6, generator=gen) * 2 + 0.3
    labels = torch.tensor([0, 2, 2, 1, 0, 2])
    got = distill.gaussian_heatmaps(centers, sigmas, labels, 4, (7, 11))
    want = R.gaussian_heatmaps(centers, sigmas, labels, 4, (7, 11))
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    assert (got[3] == 0).all()  # a class with no object


def test_centernet_heatmaps_peak_at_centres():
    boxes = [torch.tensor([[32.0, 32.0, 96.0, 160.0], [150.0, 10.0, 200.0, 40.0]]), torch.zeros(0, 4)]
    labels = [torch.tensor([1, 0]), torch.zeros(0, dtype=torch.long)]
    hm = distill.centernet_heatmaps(boxes, labels, 3, (256, 256), (64, 64))
    assert hm.shape == (2, 3, 64, 64) and (hm[1] == 0).all()
    assert hm[0, 1, 24, 16] == 1.0 and hm[0, 0, 6, 43] == 1.0  # floor of the centres in cells
    assert hm.max() == 1.0 and (hm >= 0).all()


def test_gaussian_radius_matches_centernet_on_a_known_box():
    # CenterNet's formula for a 10 x 20 box at IoU 0.7: min of its three roots.
    r = distill.gaussian_radius(torch.tensor(10.0), torch.tensor(20.0), 0.7)
    assert 2.0 < float(r) < 4.0


@pytest.mark.parametrize("shape", [(2, 5, 6), (2, 3, 5, 6)])
def test_region_masks(shape, gen):
    t = torch.rand(shape, generator=gen)
    g = torch.rand(shape, generator=gen)
    got = distill.region_masks(t, g, 0.4)
    want = R.region_masks(t, g, 0.4)
    for k in distill.REGIONS:
        assert torch.equal(got[k], want[k]), k
    total = sum(m.int() for m in got.values())
    assert (total == 1).all()  # a partition


def test_region_weights(gen):
    t, g = torch.rand(2, 4, 4, generator=gen), torch.rand(2, 4, 4, generator=gen)
    w = distill.region_weights(t, g, 0.5, {"tp": 2.0, "fn": 3.0, "tn": 0.5})
    m = distill.region_masks(t, g, 0.5)
    want = 2.0 * m["tp"] + 1.0 * m["fp"] + 3.0 * m["fn"] + 0.5 * m["tn"]
    torch.testing.assert_close(w, want.float())
    with pytest.raises(ValueError, match="unknown regions"):
        distill.region_weights(t, g, 0.5, {"good": 1.0})
