"""Bad input to the CAM-consistency loss: a clear error, never a crash; and the
stated policies for empty batches and non-finite features."""

import pytest
import torch
from conftest import assert_close, cuda_only, real_cuda_only, run_on

import hcam_ops
from hcam_ops import reference as R


@pytest.fixture
def good(gen):
    x = torch.randn(3, 10, 6, generator=gen, dtype=torch.float64, requires_grad=True)
    wf = torch.randn(5, 6, generator=gen, dtype=torch.float64, requires_grad=True)
    wc = torch.randn(2, 6, generator=gen, dtype=torch.float64)
    return x, wf, wc, torch.tensor([0, 4, 2]), torch.tensor([1, 0, 1])


def call(x, wf, wc, fi, ci, **kw):
    return hcam_ops.cam_kl_loss(x, wf, wc, fi, ci, **kw)


@pytest.mark.parametrize(
    "change, error, match",
    [
        (lambda a: {**a, "x": a["x"][0]}, ValueError, r"\[B, N, C\]"),
        (lambda a: {**a, "x": a["x"].detach().long()}, TypeError, "float16, bfloat16"),
        (lambda a: {**a, "wf": a["wf"][:, :4]}, ValueError, "4 channels, features have 6"),
        (lambda a: {**a, "wf": a["wf"].detach().long()}, TypeError, "fine_weight must be float"),
        (lambda a: {**a, "wf": a["wf"][0]}, ValueError, r"\[K, C\]"),
        (lambda a: {**a, "fi": torch.tensor([0, 5, 2])}, IndexError, r"class 5, outside \[0, 5\)"),
        (lambda a: {**a, "ci": torch.tensor([-1, 0, 1])}, IndexError, "class -1"),
        (lambda a: {**a, "fi": torch.tensor([0, 4, 2], dtype=torch.int32)}, TypeError, "int64"),
        (lambda a: {**a, "fi": torch.tensor([0, 4])}, ValueError, "B = 3"),
        (lambda a: {**a, "fi": torch.tensor([[0], [4], [2]])}, ValueError, r"\[B\]"),
        (lambda a: {**a, "wf": a["wf"].detach().to("meta")}, ValueError, "is on meta"),
        (lambda a: {**a, "kw": {"direction": "up"}}, ValueError, "direction must be one of"),
        (lambda a: {**a, "kw": {"reduction": "mean"}}, ValueError, "reduction must be one of"),
        (lambda a: {**a, "kw": {"temperature": 0.0}}, ValueError, "temperature must be positive"),
        (lambda a: {**a, "kw": {"temperature": float("nan")}}, ValueError, "temperature must be positive"),
        (lambda a: {**a, "kw": {"eps": -1.0}}, ValueError, "eps must be"),
        (lambda a: {**a, "x": a["x"][:, :0]}, ValueError, "no spatial positions"),
        (lambda a: {**a, "x": a["x"][:, :, :0], "wf": a["wf"][:, :0], "wc": a["wc"][:, :0]}, ValueError, "no channels"),
    ],
)
def test_bad_input_raises(good, change, error, match):
    x, wf, wc, fi, ci = good
    a = change({"x": x, "wf": wf, "wc": wc, "fi": fi, "ci": ci, "kw": {}})
    with pytest.raises(error, match=match):
        call(a["x"], a["wf"], a["wc"], a["fi"], a["ci"], **a["kw"])


def test_level_count(good):
    x, wf, wc, fi, ci = good
    with pytest.raises(ValueError, match="2 to 5 levels"):
        hcam_ops.hierarchical_cam_kl_loss(x, [wf], [fi])
    with pytest.raises(ValueError, match="2 to 5 levels"):
        hcam_ops.hierarchical_cam_kl_loss(x, [wf] * 6, [fi] * 6)
    with pytest.raises(ValueError, match="one of each per level"):
        hcam_ops.hierarchical_cam_kl_loss(x, [wf, wc], [fi])


def test_cpu_kernel_checks_indices_itself(good):
    """check_index=False skips the Python check; the CPU kernel still raises."""
    x, wf, wc, fi, ci = good
    with pytest.raises(RuntimeError, match=r"class index 7 of sample 1 at level 0 is outside \[0, 5\)"):
        call(x, wf, wc, torch.tensor([0, 7, 2]), ci, check_index=False)


def test_direct_op_call_checks_shapes(good):
    x, wf, wc, fi, ci = good
    with pytest.raises(RuntimeError, match=r"features must be \[B, N, C\]"):
        torch.ops.hcam_ops.cam_kl(x[0], [wf, wc], [fi, ci], 1.0, 1e-6, "fine_to_coarse")
    with pytest.raises(RuntimeError, match="direction must be"):
        torch.ops.hcam_ops.cam_kl(x, [wf, wc], [fi, ci], 1.0, 1e-6, "sideways")
    with pytest.raises(RuntimeError, match="needs 2 to 5 levels"):
        torch.ops.hcam_ops.cam_kl(x, [wf], [fi], 1.0, 1e-6, "fine_to_coarse")


@pytest.mark.parametrize("reduction", ["batchmean", "sum", "none"])
def test_empty_batch_is_zero_loss(reduction):
    x = torch.randn(0, 10, 6, dtype=torch.float64, requires_grad=True)
    wf = torch.randn(5, 6, dtype=torch.float64, requires_grad=True)
    wc = torch.randn(2, 6, dtype=torch.float64)
    e = torch.zeros(0, dtype=torch.long)
    loss = call(x, wf, wc, e, e, reduction=reduction)
    assert loss.shape == ((0,) if reduction == "none" else ())
    assert torch.all(loss == 0)
    gx, gw = torch.autograd.grad(loss.sum(), [x, wf])
    assert gx.shape == x.shape and torch.all(gw == 0)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_features_poison_only_their_sample(good, bad):
    x, wf, wc, fi, ci = good
    x = x.detach().clone()
    x[1, 3, 2] = bad
    loss = call(x, wf, wc, fi, ci, reduction="none")
    assert torch.isnan(loss[1])
    keep = torch.tensor([0, 2])
    ref = R.cam_kl_loss(x[keep], wf, wc, fi[keep], ci[keep], reduction="none")
    assert_close(loss[keep], ref, torch.float64, "finite samples")
    assert torch.isnan(call(x, wf, wc, fi, ci))


def test_constant_cam_row(good):
    """All positions equal: the min-max map is all zeros, P is uniform."""
    x, wf, wc, fi, ci = good
    x = x.detach()[:, :1].expand(3, 10, 6).clone().requires_grad_()
    loss = call(x, wf, wc, fi, ci)
    ref = R.cam_kl_loss(x, wf, wc, fi, ci)
    assert_close(loss, ref, torch.float64, "loss")
    assert loss.item() == pytest.approx(0.0, abs=1e-12)


@real_cuda_only
def test_cuda_device_mix():
    x = torch.randn(2, 8, 4, device="cuda")
    wf = torch.randn(3, 4)
    with pytest.raises(ValueError, match="is on cpu"):
        call(x, wf, wf.cuda(), torch.tensor([0, 1], device="cuda"), torch.tensor([0, 1], device="cuda"))


@cuda_only
def test_cuda_unchecked_index():
    with run_on("cuda") as dev:
        x = torch.randn(2, 8, 4, device=dev)
        w = torch.randn(3, 4, device=dev)
        idx = torch.tensor([0, 9], device=dev)
        with pytest.raises(IndexError, match="class 9"):
            call(x, w, w, idx, idx)
        # Unchecked on CUDA: the sample with the bad class is NaN, never a bad read.
        loss = call(x, w, w, idx, torch.tensor([0, 1], device=dev), reduction="none", check_index=False)
    assert torch.isfinite(loss[0]) and torch.isnan(loss[1])
