"""hcam_ops.nn.CAMConsistencyLoss: the module a hierarchical classifier uses."""

import pytest
import torch
from conftest import assert_close
from torch import nn

from hcam_ops import reference as R
from hcam_ops.nn import CAMConsistencyLoss


class TwoHeads(nn.Module):
    def __init__(self, C=12, Kf=7, Kc=3):
        super().__init__()
        self.backbone = nn.Linear(5, C)
        self.fine = nn.Linear(C, Kf)
        self.coarse = nn.Linear(C, Kc)

    def forward(self, x):  # x [B, N, 5] -> tokens [B, N, C], logits per head
        tokens = self.backbone(x)
        pooled = tokens.mean(1)
        return tokens, self.fine(pooled), self.coarse(pooled)


def test_logits_pick_argmax_and_targets_are_used_as_given(gen):
    torch.manual_seed(0)
    model = TwoHeads().double()
    loss_fn = CAMConsistencyLoss(model.fine, model.coarse, temperature=0.5)
    x = torch.randn(4, 9, 5, generator=gen, dtype=torch.float64)
    tokens, lf, lc = model(x)
    got = loss_fn(tokens, lf, lc)
    want = R.cam_kl_loss(tokens, model.fine.weight, model.coarse.weight, lf.argmax(1), lc.argmax(1), temperature=0.5)
    assert_close(got, want, torch.float64, "argmax")
    tf, tc = torch.tensor([0, 6, 2, 2]), torch.tensor([1, 1, 0, 2])
    assert_close(
        loss_fn(tokens, tf, tc),
        R.cam_kl_loss(tokens, model.fine.weight, model.coarse.weight, tf, tc, temperature=0.5),
        torch.float64,
        "targets",
    )


def test_trains_the_fine_head_and_backbone_not_the_coarse_head(gen):
    torch.manual_seed(0)
    model = TwoHeads()
    loss_fn = CAMConsistencyLoss(model.fine, model.coarse)
    tokens, lf, lc = model(torch.randn(4, 9, 5, generator=gen))
    loss_fn(tokens, lf, lc).backward()
    assert model.fine.weight.grad is not None and model.backbone.weight.grad.abs().sum() > 0
    assert model.coarse.weight.grad is None
    # The heads stay the model's: no duplicate parameters or state.
    assert list(loss_fn.parameters()) == [] and loss_fn.state_dict() == {}


def test_conv_heads_and_three_levels(gen):
    x = torch.randn(2, 8, 4, 4, generator=gen, dtype=torch.float64)
    heads = [nn.Conv2d(8, k, 1).double() for k in (6, 4, 2)]
    loss_fn = CAMConsistencyLoss(*heads, direction="coarse_to_fine")
    sel = [torch.tensor([5, 1]), torch.tensor([0, 3]), torch.tensor([1, 1])]
    want = R.hierarchical_cam_kl_loss(x, [h.weight for h in heads], sel, direction="coarse_to_fine")
    assert_close(loss_fn(x, *sel), want, torch.float64, "three levels")


def test_reduced_precision_features_with_float32_heads(gen):
    model = TwoHeads()
    loss_fn = CAMConsistencyLoss(model.fine, model.coarse)
    tokens = torch.randn(3, 9, 12, generator=gen).bfloat16().requires_grad_()
    loss = loss_fn(tokens, torch.tensor([0, 1, 2]), torch.tensor([0, 1, 2]))
    loss.backward()
    assert loss.dtype == torch.bfloat16 and model.fine.weight.grad.dtype == torch.float32


def test_errors():
    with pytest.raises(TypeError, match="nn.Linear or a 1x1"):
        CAMConsistencyLoss(nn.Linear(3, 2), nn.Conv2d(3, 2, 3))
    loss_fn = CAMConsistencyLoss(nn.Linear(3, 2), nn.Linear(3, 2))
    with pytest.raises(ValueError, match="2 heads but 1 selectors"):
        loss_fn(torch.randn(2, 4, 3), torch.tensor([0, 1]))
