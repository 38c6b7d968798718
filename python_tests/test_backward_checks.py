"""Argument checks of the raw backward ops (torch.ops.hcam_ops.*_backward), which
the autograd functions call with saved tensors: a grad or saved tensor of the
wrong shape, or on another device than the features, raises a RuntimeError
naming it instead of reaching a kernel (an out-of-bounds read, or a host
pointer handed to a CUDA kernel)."""

import pytest
import torch
from conftest import real_cuda_only

import hcam_ops  # noqa: F401  (registers the ops)

ops = torch.ops.hcam_ops
# student_mix (spatial_mode 2), ratio 0.8, spatial_mask on, channel_mask off
FGD_ARGS = (0.5, 0.7, [0.1, 0.2, 0.3, 0.4, 0.5, 0.6], 2, 0.8, True, False)


# --- valid arguments of each backward, on one device ---------------------------


def cam_gather_args(device, gen):
    x = torch.randn(2, 5, 6, generator=gen).to(device)
    w = torch.randn(4, 6, generator=gen).to(device)
    index = torch.tensor([[0, 3, 1], [2, 2, 0]], device=device)
    return dict(grad=torch.randn(2, 3, 5, generator=gen).to(device), features=x, weight=w, index=index)


def cam_kl_args(device, gen):
    x = torch.randn(2, 5, 6, generator=gen).to(device)
    weights = [torch.randn(4, 6, generator=gen).to(device), torch.randn(3, 6, generator=gen).to(device)]
    indices = [torch.tensor([0, 3], device=device), torch.tensor([2, 1], device=device)]
    _, coef = ops.cam_kl(x, weights, indices, 1.0, 1e-6, "fine_to_coarse")
    return dict(grad=torch.ones(2, device=device), features=x, weights=weights, indices=indices, coef=coef)


def softmax_kl_args(device, gen):
    p = torch.randn(3, 4, 5, generator=gen).to(device)
    q = torch.randn(3, 4, 5, generator=gen).to(device)
    return dict(grad=torch.randn(3, 4, generator=gen).to(device), p=p, q=q)


def segment_mean_args(device, gen):
    x = torch.randn(2, 3, 4, 5, generator=gen).to(device)
    segments = torch.randint(0, 6, (2, 3, 4), generator=gen).to(device)
    _, counts = ops.segment_mean(x, segments, 6)
    return dict(grad=torch.randn(2, 6, 5, generator=gen).to(device), x=x, segments=segments, counts=counts)


def fgd_args(device, gen):
    s = torch.randn(2, 3, 4, 5, generator=gen).to(device)
    t = torch.randn(2, 3, 4, 5, generator=gen).to(device)
    fg = torch.rand(2, 4, 5, generator=gen).to(device)
    bg = 1 - fg
    fp = torch.rand(2, 1, 4, 5, generator=gen).to(device)
    _, col, row, sample = ops.fgd_loss(s, t, fg, bg, fp, *FGD_ARGS)
    return dict(
        grad=torch.rand(6, generator=gen).to(device),
        student=s,
        teacher=t,
        fg=fg,
        bg=bg,
        fp=fp,
        col=col,
        row=row,
        sample=sample,
    )


def cam_gather_backward(a):
    return ops.cam_gather_backward(a["grad"], a["features"], a["weight"], a["index"], [True, True])


def cam_kl_backward(a):
    return ops.cam_kl_backward(a["grad"], a["features"], a["weights"], a["indices"], a["coef"], [True, True])


def softmax_kl_backward(a):
    return ops.softmax_kl_backward(a["grad"], a["p"], a["q"], 1.0, "fine_to_coarse")


def segment_mean_backward(a):
    return ops.segment_mean_backward(a["grad"], a["x"], a["segments"], a["counts"])


def fgd_loss_backward(a):
    return ops.fgd_loss_backward(
        a["grad"], a["student"], a["teacher"], a["fg"], a["bg"], a["fp"], a["col"], a["row"], a["sample"], *FGD_ARGS
    )


OPS = {
    "cam_gather": (cam_gather_args, cam_gather_backward),
    "cam_kl": (cam_kl_args, cam_kl_backward),
    "softmax_kl": (softmax_kl_args, softmax_kl_backward),
    "segment_mean": (segment_mean_args, segment_mean_backward),
    "fgd_loss": (fgd_args, fgd_loss_backward),
}


def call_with(op, device, gen, **change):
    make, backward = OPS[op]
    args = make(device, gen)
    args.update({k: f(args[k]) for k, f in change.items()})
    return backward(args)


# --- shapes (every device) -------------------------------------------------------


@pytest.mark.parametrize("op", list(OPS))
def test_valid_arguments_pass(op, gen):
    call_with(op, "cpu", gen)


@pytest.mark.parametrize(
    "op, change, match",
    [
        (
            "softmax_kl",
            dict(grad=lambda g: g[:2]),
            r"softmax_kl_backward: grad must have the logits' shape without the last dim, \[3, 4\], got \[2, 4\]",
        ),
        ("softmax_kl", dict(grad=lambda g: g.reshape(12)), r"softmax_kl_backward: grad must have .* got \[12\]"),
        ("softmax_kl", dict(grad=lambda g: g[..., None]), r"softmax_kl_backward: grad must have .* got \[3, 4, 1\]"),
        ("softmax_kl", dict(grad=lambda g: g[0, 0]), r"softmax_kl_backward: grad must have .* got \[\]"),
        ("cam_gather", dict(grad=lambda g: g[:, :2]), r"cam_gather_backward: grad must be \[B, L, N\] = \[2, 3, 5\]"),
        ("cam_gather", dict(grad=lambda g: g[..., :4]), r"cam_gather_backward: grad must be \[B, L, N\]"),
        ("cam_kl", dict(coef=lambda c: c[:, :, :4]), r"coef must be \[B, L-1, N\]"),
        ("cam_kl", dict(coef=lambda c: c[:1]), r"coef must be \[B, L-1, N\]"),
        ("cam_kl", dict(grad=lambda g: g[:1]), r"grad must be \[B\]"),
        ("segment_mean", dict(grad=lambda g: g[:, :, :4]), r"segment_mean_backward: grad \[B, S, C\] and counts"),
        ("segment_mean", dict(counts=lambda c: c[:, :5]), r"segment_mean_backward: grad \[B, S, C\] and counts"),
        ("fgd_loss", dict(grad=lambda g: g[:5]), r"fgd_loss_backward: grad must hold 6 values"),
        ("fgd_loss", dict(fp=lambda m: m[:, :, :3]), r"fgd_loss: fp_mask must be \[B, H, W\] or \[B, 1, H, W\]"),
        ("fgd_loss", dict(col=lambda c: c[:, :3]), r"fgd_loss_backward: saved statistics do not match"),
    ],
)
def test_wrong_shape(op, change, match, gen):
    with pytest.raises(RuntimeError, match=match):
        call_with(op, "cpu", gen, **change)


def test_softmax_kl_grad_on_another_device(gen):
    # A grad on the meta device brings the call to the op's fake (its Meta
    # kernel), which checks devices as the kernels do: caught without a GPU.
    with pytest.raises(RuntimeError, match="softmax_kl_backward: grad is on meta, p_logits on cpu"):
        call_with("softmax_kl", "cpu", gen, grad=lambda g: g.to("meta"))


# --- devices (CUDA) --------------------------------------------------------------


def to_cpu(t):
    return t.cpu()


@real_cuda_only
@pytest.mark.parametrize(
    "op, name, match",
    [
        ("cam_gather", "grad", "cam_gather_backward: grad is on cpu, features on cuda:0"),
        ("cam_kl", "grad", "grad is on cpu, features on cuda:0"),
        ("cam_kl", "coef", "coef is on cpu, features on cuda:0"),
        ("softmax_kl", "grad", "softmax_kl_backward: grad is on cpu, p_logits on cuda:0"),
        ("segment_mean", "grad", "segment_mean_backward: grad is on cpu, x on cuda:0"),
        ("segment_mean", "counts", "segment_mean_backward: counts is on cpu, x on cuda:0"),
        ("fgd_loss", "grad", "fgd_loss_backward: grad is on cpu, student on cuda:0"),
        ("fgd_loss", "col", "fgd_loss_backward: col is on cpu, student on cuda:0"),
        ("fgd_loss", "sample", "fgd_loss_backward: sample is on cpu, student on cuda:0"),
        ("fgd_loss", "fp", "fgd_loss: fp_mask is on cpu, student on cuda:0"),
    ],
)
def test_host_tensor_with_cuda_features(op, name, match, gen):
    with pytest.raises(RuntimeError, match=match):
        call_with(op, "cuda", gen, **{name: to_cpu})


@real_cuda_only
@pytest.mark.parametrize(
    "op, name, match",
    [
        ("cam_gather", "grad", "cam_gather_backward: grad is on cuda:0, features on cpu"),
        ("cam_kl", "coef", "coef is on cuda:0, features on cpu"),
        ("softmax_kl", "grad", "softmax_kl_backward: grad is on cuda:0, p_logits on cpu"),
        ("segment_mean", "counts", "segment_mean_backward: counts is on cuda:0, x on cpu"),
        ("fgd_loss", "grad", "fgd_loss_backward: grad is on cuda:0, student on cpu"),
    ],
)
def test_cuda_tensor_with_host_features(op, name, match, gen):
    # A CUDA argument sends the call to the CUDA kernels even with host features.
    with pytest.raises(RuntimeError, match=match):
        call_with(op, "cpu", gen, **{name: lambda t: t.to("cuda:0")})
