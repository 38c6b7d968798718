"""The backward ops compute only the gradients autograd asks for (output_mask,
built from ctx.needs_input_grad): a detached input gets None and costs no
reduction, and the other input's gradient is unchanged."""

import pytest
import torch
from conftest import DEVICES

import hcam_ops


def _cam_gather(x, ws, gen):
    idx = torch.randint(0, ws[0].shape[0], (x.shape[0], 2), generator=gen).to(x.device)
    return hcam_ops.cam_gather(x, ws[0], idx)


def _cam_kl(x, ws, gen):
    idx = [torch.randint(0, w.shape[0], (x.shape[0],), generator=gen).to(x.device) for w in ws]
    return hcam_ops.hierarchical_cam_kl_loss(x, ws, idx, reduction="none")


def _arcface(reduction):
    def loss(x, ws, gen):
        y = (torch.rand(x.shape[0], ws[0].shape[0], generator=gen) < 0.4).to(x.device)
        return hcam_ops.multilabel_arcface_loss(x, ws[0], y, reduction=reduction, chunk_size=3)

    return loss


# name: (loss, features shape, weight shapes)
CASES = {
    "cam_gather": (_cam_gather, (3, 6, 5), [(4, 5)]),
    "cam_kl": (_cam_kl, (3, 5, 2, 3), [(4, 5), (3, 5), (2, 5)]),
    "arcface_mean": (_arcface("mean"), (3, 5), [(7, 5)]),
    "arcface_none": (_arcface("none"), (3, 5), [(7, 5)]),
}


def _grads(case, device, need_x, need_w):
    """d loss / d (features, weights) with only the inputs in need_* requiring
    grad; the same inputs and upstream gradient every call."""
    loss_fn, x_shape, w_shapes = CASES[case]
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(*x_shape, generator=gen, dtype=torch.float64).to(device).requires_grad_(need_x)
    ws = [torch.randn(*s, generator=gen, dtype=torch.float64).to(device).requires_grad_(need_w) for s in w_shapes]
    out = loss_fn(x, ws, gen)
    out.backward(torch.rand(out.shape, generator=gen, dtype=torch.float64).to(device))
    # The coarsest CAM-KL level is the detached teacher: it never gets a gradient.
    return x.grad, [w.grad for w in (ws[:-1] if case == "cam_kl" else ws)]


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("device", DEVICES)
def test_detached_weight_gets_none_and_features_grad_is_unchanged(case, device):
    gx_full, _ = _grads(case, device, True, True)
    gx, gws = _grads(case, device, True, False)
    assert all(g is None for g in gws)
    torch.testing.assert_close(gx, gx_full, rtol=0, atol=0)


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("device", DEVICES)
def test_detached_features_get_none_and_weight_grad_is_unchanged(case, device):
    _, gws_full = _grads(case, device, True, True)
    gx, gws = _grads(case, device, False, True)
    assert gx is None
    for g, g_full in zip(gws, gws_full, strict=True):
        torch.testing.assert_close(g, g_full, rtol=0, atol=0)


@pytest.mark.parametrize("device", DEVICES)
def test_backward_ops_leave_out_the_gradients_not_asked_for(device):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(3, 6, 5, generator=gen).to(device)
    w = torch.randn(4, 5, generator=gen).to(device)
    idx = torch.randint(0, 4, (3, 2), generator=gen).to(device)
    grad = torch.randn(3, 2, 6, generator=gen).to(device)
    ops = torch.ops.hcam_ops
    full = ops.cam_gather_backward(grad, x, w, idx, [True, True])
    dx, dw = ops.cam_gather_backward(grad, x, w, idx, [True, False])
    assert dw is None and torch.equal(dx, full[0])
    dx, dw = ops.cam_gather_backward(grad, x, w, idx, [False, True])
    assert dx is None and torch.equal(dw, full[1])
    assert ops.cam_gather_backward(grad, x, w, idx, [False, False]) == (None, None)

    ci = torch.randint(0, 4, (3,), generator=gen).to(device)
    _, coef = ops.cam_kl(x, [w, w], [ci, ci], 1.0, 1e-6, "fine_to_coarse")
    g = torch.rand(3, generator=gen).to(device)
    dx, dws = ops.cam_kl_backward(g, x, [w, w], [ci, ci], coef, [True, False])
    assert dws == [] and dx is not None
    dx, dws = ops.cam_kl_backward(g, x, [w, w], [ci, ci], coef, [False, True])
    assert dx is None and len(dws) == 1

    y = torch.rand(3, 4, generator=gen).to(device) < 0.5
    g = torch.rand(3, 4, generator=gen).to(device)
    gf, gw = ops.multilabel_arcface_backward(g, x[:, 0], w, y, 30.0, 0.5, False, 0, [True, False])
    assert gw is None and gf.shape == (3, 5)
    gf, gw = ops.multilabel_arcface_backward(g, x[:, 0], w, y, 30.0, 0.5, False, 0, [False, True])
    assert gf is None and gw.shape == (4, 5)
    # The forward's gradients for "mean"/"sum": an unasked one is empty.
    _, gf, gw, _ = ops.multilabel_arcface(x[:, 0], w, y, 30.0, 0.5, False, "mean", [True, False], False, 0)
    assert gf.shape == (3, 5) and gw.numel() == 0
