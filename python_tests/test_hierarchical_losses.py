"""The H-CAST loss terms against plain transcriptions of their formulas, and
hierarchical mixup: one lambda and one pairing for every level."""

import math

import numpy as np
import pytest

pytest.importorskip("timm", reason="the timm package is not installed here")
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import hcam_ops  # noqa: E402
from hcam_ops import reference as R  # noqa: E402
from hcam_ops.train.hierarchical.data import synthetic_hierarchy  # noqa: E402
from hcam_ops.train.hierarchical.losses import (  # noqa: E402
    cam_consistency,
    global_kl,
    hierarchical_loss,
    level_loss,
)
from hcam_ops.train.hierarchical.mixup import HierarchicalMixup  # noqa: E402


def _gk_by_hand(logits, targets):
    """L_gk written out: per sample, p = softmax over [coarsest .. finest]
    logits concatenated, q = the targets concatenated the same way and divided
    by their sum, KL(q || p) = sum_j q_j (log q_j - log p_j) with 0 log 0 = 0;
    then the batch mean (KLDivLoss batchmean)."""
    B = logits[0].shape[0]
    total = 0.0
    for b in range(B):
        z = [float(v) for lg in reversed(logits) for v in lg[b]]
        t = [float(v) for tg in reversed(targets) for v in tg[b]]
        m = max(z)
        lse = m + math.log(sum(math.exp(v - m) for v in z))
        s = sum(abs(v) for v in t)
        total += sum((q / s) * (math.log(q / s) - (v - lse)) for q, v in zip(t, z) if q > 0)
    return total / B


@pytest.mark.parametrize("soft", [False, True])
def test_global_kl_is_the_published_formula(soft, gen):
    levels = (7, 4, 2)
    logits = [torch.randn(5, n, generator=gen, dtype=torch.float64) for n in levels]
    if soft:  # mixed targets: two classes per level with weights lam, 1 - lam (plus smoothing)
        targets = [0.9 * torch.rand(5, n, generator=gen, dtype=torch.float64).softmax(1) + 0.1 / n for n in levels]
    else:
        targets = [F.one_hot(torch.randint(0, n, (5,), generator=gen), n).double() for n in levels]
    got = global_kl(logits, targets)
    # float64 inputs stay float64 (H-CAST's formula in float64, to rounding)
    assert got.dtype == torch.float64
    assert float(got) == pytest.approx(_gk_by_hand(logits, targets), rel=1e-12)
    # the order of the levels does not change it (published: coarsest first)
    assert float(global_kl(logits[::-1], targets[::-1])) == pytest.approx(float(got), rel=1e-6)


def test_global_kl_widens_low_precision_to_float32(gen):
    levels = (7, 4, 2)
    logits = [torch.randn(5, n, generator=gen, dtype=torch.float64) for n in levels]
    targets = [F.one_hot(torch.randint(0, n, (5,), generator=gen), n).double() for n in levels]
    for dtype in (torch.bfloat16, torch.float16, torch.float32):
        low = [lg.to(dtype) for lg in logits]
        got = global_kl(low, targets)
        assert got.dtype == torch.float32
        assert float(got) == pytest.approx(_gk_by_hand(low, targets), rel=1e-5)


def test_level_losses_are_timms():
    from timm.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy

    g = torch.Generator().manual_seed(0)
    logits, y = torch.randn(6, 5, generator=g), torch.randint(0, 5, (6,), generator=g)
    soft = torch.rand(6, 5, generator=g).softmax(1)
    torch.testing.assert_close(level_loss(logits, soft), SoftTargetCrossEntropy()(logits, soft))
    torch.testing.assert_close(level_loss(logits, y, 0.1), LabelSmoothingCrossEntropy(0.1)(logits, y))


def test_hierarchical_loss_adds_its_terms(gen):
    levels = [6, 3, 2]
    heads = [torch.nn.Linear(8, n) for n in levels]
    feats = torch.randn(4, 5, 8, generator=gen)
    logits = [torch.randn(4, n, generator=gen) for n in levels]
    labels = [torch.randint(0, n, (4,), generator=gen) for n in levels]
    inter = {"centroid1": feats}
    parts = hierarchical_loss(heads, logits, inter, labels, levels, smoothing=0.1, gk_weight=0.5, cam_weight=0.1)
    ce = sum(F.cross_entropy(lg, y, label_smoothing=0.1) for lg, y in zip(logits, labels))
    gk = global_kl(logits, [F.one_hot(y, n).float() for y, n in zip(labels, levels)])
    cam = hcam_ops.cam_kl_loss(feats, heads[0].weight, heads[1].weight, logits[0].argmax(1), logits[1].argmax(1))
    torch.testing.assert_close(parts["loss"], ce + 0.5 * gk + 0.1 * cam)
    torch.testing.assert_close(parts["ce_l2"], F.cross_entropy(logits[2], labels[2], label_smoothing=0.1))
    # seed 000 by default: the species/family pair only; "adjacent": every pair
    torch.testing.assert_close(parts["cam_loss"], cam)
    both = cam_consistency(heads, logits, feats, "adjacent")
    want = R.hierarchical_cam_kl_loss(feats, [h.weight for h in heads], [lg.argmax(1) for lg in logits])
    torch.testing.assert_close(both, want, rtol=1e-5, atol=1e-6)
    assert float(both.detach()) > float(cam.detach())


def _parent_matrix(h, l):
    return F.one_hot(h.parents[l], h.num_classes[l + 1]).float()  # [K_l, K_{l+1}]


@pytest.mark.parametrize("mode", ["batch", "elem", "pair"])
@pytest.mark.parametrize("which", ["mixup", "cutmix"])
def test_mixup_keeps_levels_consistent(mode, which, gen):
    """Every level's mixed target is that of its finer level summed into the
    parents: one lambda and one pairing for all levels, equal to the images'."""
    h = synthetic_hierarchy((8, 4, 2))
    np.random.seed(3)
    fine = torch.randint(0, 8, (6,), generator=gen)
    x = torch.rand(6, 3, 16, 16, generator=gen)
    original = x.clone()
    alphas = dict(mixup_alpha=1.0, cutmix_alpha=0.0) if which == "mixup" else dict(mixup_alpha=0.0, cutmix_alpha=1.0)
    mix = HierarchicalMixup(h.num_classes, **alphas, mode=mode, label_smoothing=0.0)
    mixed, targets = mix(x, h.labels(fine))
    assert mixed.data_ptr() == x.data_ptr()  # in place, as timm
    for l in range(2):
        torch.testing.assert_close(targets[l] @ _parent_matrix(h, l), targets[l + 1])
    # the lambda each sample's targets carry is the one its image was mixed with
    lam = targets[0].gather(1, fine[:, None])[:, 0]
    partner = fine.flip(0)
    lam = torch.where(partner == fine, torch.ones_like(lam), lam)
    for b in range(6):
        if partner[b] == fine[b]:
            continue
        if which == "mixup":
            want = lam[b] * original[b] + (1 - lam[b]) * original.flip(0)[b]
            torch.testing.assert_close(mixed[b], want)
        else:
            kept = (mixed[b] == original[b]).all(0).float().mean()
            assert float(kept) == pytest.approx(float(lam[b]), abs=1.5 / 16)
    assert not torch.equal(mixed, original)


def test_mixup_smoothing_and_odd_batches(gen):
    h = synthetic_hierarchy((8, 4, 2))
    mix = HierarchicalMixup(h.num_classes, mixup_alpha=0.8, cutmix_alpha=1.0, label_smoothing=0.1)
    fine = torch.randint(0, 8, (5,), generator=gen)
    x = torch.rand(5, 3, 16, 16, generator=gen)
    before = x.clone()
    _, targets = mix(x, h.labels(fine))  # odd: timm pairs images, so no mixing
    assert torch.equal(x, before)
    for t, y, n in zip(targets, h.labels(fine), h.num_classes):
        torch.testing.assert_close(t, F.one_hot(y, n).float() * 0.9 + 0.1 / n)
