"""hcam_ops.fgd_loss against hcam_ops.reference.fgd_loss."""

import pytest
import torch
from conftest import DEVICES, DTYPES, assert_close, cuda_only, randn, run_on

import hcam_ops
from hcam_ops import reference as R
from hcam_ops.ops.fgd_loss import TERMS
from hcam_ops.reference.fgd_loss import attention

# (B, C, H, W): 1x1 maps, C = 1, C = 3, odd H and W, maps over several CPU
# tiles (64 positions) with a ragged last tile, and a large map.
SHAPES = [(1, 1, 1, 1), (2, 1, 5, 7), (3, 3, 9, 11), (2, 8, 16, 16), (1, 5, 33, 65), (2, 16, 60, 76)]
ALL_TERMS = dict(
    fg_weight=0.7, bg_weight=0.4, attention_weight=0.3, channel_weight=0.9, spatial_weight=1.3, fp_weight=0.6
)
MODES = ["teacher", "combined", "student_mix"]
WEIGHT_NAMES = ["fg_weight", "bg_weight", "attention_weight", "channel_weight", "spatial_weight", "fp_weight"]


def _inputs(shape, dtype, device, gen, layout="contiguous"):
    B, C, H, W = shape
    s = randn(B, C, H, W, gen=gen, dtype=dtype, device=device)
    t = randn(B, C, H, W, gen=gen, dtype=dtype, device=device) * 1.5
    if layout == "channels_last":
        s = s.contiguous(memory_format=torch.channels_last)
        t = t.contiguous(memory_format=torch.channels_last)
    elif layout == "strided":
        s = torch.cat([s, s], dim=3)[..., ::2]
        t = torch.cat([t, t], dim=3)[..., ::2]
    fg = torch.rand(B, H, W, generator=gen, dtype=torch.float64).to(device) * (
        torch.rand(B, H, W, generator=gen) < 0.4
    ).to(device)
    bg = (fg == 0).double() / (fg == 0).double().sum((1, 2), keepdim=True).clamp_min(1)
    return s.requires_grad_(), t, fg, bg.unsqueeze(1)


def _fp(fg, gen, shape4=False):
    """An fp mask as DistillBEV's 'average' scaling makes it: a few cells off the
    foreground, each 1 / count."""
    hit = (torch.rand(fg.shape, generator=gen) < 0.3).to(fg.device) & (fg == 0)
    fp = hit.double() / hit.double().sum((1, 2), keepdim=True).clamp_min(1)
    return fp.unsqueeze(1) if shape4 else fp


def _check(s, t, fg, bg, dtype, **kw):
    got = hcam_ops.fgd_loss(s, t, fg, bg, **kw)
    sd = s.detach().double().requires_grad_()
    want = R.fgd_loss(sd, t.double(), fg, bg, **kw)
    assert list(got) == list(TERMS)
    up = torch.rand(len(TERMS), generator=torch.Generator().manual_seed(7), dtype=torch.float64) + 0.5
    for k in TERMS:
        assert got[k].shape == () and got[k].dtype == s.dtype
        assert_close(got[k], want[k], dtype, k)
    (gs,) = torch.autograd.grad(sum(u * got[k] for u, k in zip(up.tolist(), TERMS)), s)
    (ws,) = torch.autograd.grad(sum(u * want[k] for u, k in zip(up.tolist(), TERMS)), sd)
    assert_close(gs, ws, dtype, "d student")


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("spatial_attention", MODES)
def test_parity(spatial_attention, shape, dtype, device, gen):
    s, t, fg, bg = _inputs(shape, dtype, device, gen)
    fp = _fp(fg, gen, shape4=shape[0] == 2)
    _check(s, t, fg, bg, dtype, spatial_attention=spatial_attention, fp_mask=fp, **ALL_TERMS)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", [(1, 1, 1, 1), (3, 3, 9, 11), (1, 5, 33, 65)], ids=str)
@pytest.mark.parametrize("spatial_mask, channel_mask", [(False, True), (True, False), (False, False)])
@pytest.mark.parametrize("spatial_attention", MODES)
def test_mask_switches(spatial_attention, spatial_mask, channel_mask, shape, dtype, device, gen):
    """DistillBEV's spatial_mask / channel_mask off: the fg and bg errors lose
    that weight, the fp error keeps both."""
    s, t, fg, bg = _inputs(shape, dtype, device, gen)
    kw = dict(spatial_mask=spatial_mask, channel_mask=channel_mask, spatial_attention=spatial_attention)
    _check(s, t, fg, bg, dtype, fp_mask=_fp(fg, gen), **kw, **ALL_TERMS)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("ratio", [0.0, 0.25, 1.0, 3.0])
def test_student_ratio(ratio, device, gen):
    s, t, fg, bg = _inputs((2, 5, 9, 13), torch.float64, device, gen)
    kw = dict(spatial_attention="student_mix", spatial_student_ratio=ratio)
    _check(s, t, fg, bg, torch.float64, fp_mask=_fp(fg, gen), **kw, **ALL_TERMS)


def test_student_mix_ratio_zero_is_teacher(gen):
    s, t, fg, bg = _inputs((2, 4, 7, 9), torch.float64, "cpu", gen)
    fp = _fp(fg, gen)
    a = hcam_ops.fgd_loss(s, t, fg, bg, fp_mask=fp, spatial_attention="student_mix", spatial_student_ratio=0.0)
    b = hcam_ops.fgd_loss(s, t, fg, bg, fp_mask=fp, spatial_attention="teacher")
    for k in TERMS:
        torch.testing.assert_close(a[k], b[k], rtol=1e-12, atol=0)


def test_no_fp_mask_gives_zero_fp_term(gen):
    s, t, fg, bg = _inputs((2, 3, 6, 5), torch.float32, "cpu", gen)
    out = hcam_ops.fgd_loss(s, t, fg, bg, **ALL_TERMS)
    assert list(out) == list(TERMS) and TERMS[-1] == "loss_fp"
    assert float(out["loss_fp"].detach()) == 0.0
    with_zero = hcam_ops.fgd_loss(s, t, fg, bg, fp_mask=torch.zeros_like(fg), **ALL_TERMS)
    for k in TERMS:
        torch.testing.assert_close(out[k], with_zero[k], rtol=0, atol=0)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("layout", ["channels_last", "strided"])
@pytest.mark.parametrize("spatial_attention", MODES)
def test_non_contiguous_maps(spatial_attention, layout, device, gen):
    s, t, fg, bg = _inputs((2, 6, 7, 10), torch.float32, device, gen, layout)
    assert not s.is_contiguous()
    fp = torch.cat([_fp(fg, gen)] * 2, dim=2)[..., ::2]  # a strided fp mask too
    assert not fp.is_contiguous()
    _check(s, t, fg, bg, torch.float32, spatial_attention=spatial_attention, fp_mask=fp, **ALL_TERMS)


@pytest.mark.parametrize("temps", [(0.5, 0.5), (0.1, 2.0), (3.0, 0.05)])
def test_temperatures_and_default_weights(temps, gen):
    s, t, fg, bg = _inputs((2, 12, 9, 14), torch.float64, "cpu", gen)
    _check(s, t, fg, bg, torch.float64, spatial_temperature=temps[0], channel_temperature=temps[1])


def test_each_term_alone(gen):
    """Each weight moves only its own term, and the gradient of one term is
    that term's alone (the upstream gradient is per term, not a sum)."""
    s, t, fg, bg = _inputs((2, 4, 6, 5), torch.float64, "cpu", gen)
    fp = _fp(fg, gen)
    for name, term in zip(WEIGHT_NAMES, TERMS):
        kw = {n: (1.0 if n == name else 0.0) for n in WEIGHT_NAMES}
        got = hcam_ops.fgd_loss(s, t, fg, bg, fp_mask=fp, spatial_attention="student_mix", **kw)
        want = R.fgd_loss(s, t, fg, bg, fp_mask=fp, spatial_attention="student_mix", **kw)
        assert all(float(got[k].detach()) == 0.0 for k in TERMS if k != term)
        assert float(got[term].detach()) != 0.0
        (a,) = torch.autograd.grad(got[term], s)
        (b,) = torch.autograd.grad(want[term], s)
        assert_close(a, b, torch.float64, term)


@pytest.mark.parametrize(
    "kw",
    [
        dict(spatial_attention="teacher"),
        dict(spatial_attention="teacher", spatial_mask=False),
        dict(spatial_attention="teacher", channel_mask=False),
        # r = 0: the student part vanishes, so finite differences see no stop-gradient
        dict(spatial_attention="student_mix", spatial_student_ratio=0.0),
    ],
    ids=str,
)
def test_gradcheck(kw, gen):
    """Every term, with an fp mask. "combined" and "student_mix" (r > 0)
    weight by the student's own attention behind a stop-gradient, which
    finite differences would see: test_finite_differences_detached_weight
    checks them with that weight held fixed."""
    s, t, fg, bg = _inputs((2, 3, 4, 5), torch.float64, "cpu", gen)
    fp = _fp(fg, gen)

    def f(s):
        out = hcam_ops.fgd_loss(s, t, fg, bg, fp_mask=fp, **kw, **ALL_TERMS)
        return torch.stack(list(out.values()))

    assert torch.autograd.gradcheck(f, (s,))


def _frozen_weight_terms(s, t, fg, bg, fp, w_s, c_t, spatial_mask, channel_mask):
    """The fg, bg and fp terms with the spatial weight w_s [B, H, W] a constant."""
    sq = (s - t) ** 2
    err = sq * (w_s[:, None] if spatial_mask else 1.0) * (c_t[:, :, None, None] if channel_mask else 1.0)
    err_fp = sq * w_s[:, None] * c_t[:, :, None, None]
    n = s.shape[0]
    w = ALL_TERMS
    return (
        w["fg_weight"] * (fg[:, None] * err).sum() / n
        + 2.0 * w["bg_weight"] * (bg.reshape(fg.shape)[:, None] * err).sum() / n
        + 3.0 * w["fp_weight"] * (fp[:, None] * err_fp).sum() / n
    )


@pytest.mark.parametrize("spatial_mask, channel_mask", [(True, True), (False, True), (True, False)])
@pytest.mark.parametrize("spatial_attention", ["combined", "student_mix"])
def test_finite_differences_detached_weight(spatial_attention, spatial_mask, channel_mask, gen):
    """The gradient of the fg, bg and fp terms in the modes with a detached
    student attention, against central differences (float64) of the same
    terms with that weight frozen at the evaluation point."""
    s, t, fg, bg = _inputs((2, 3, 4, 5), torch.float64, "cpu", gen)
    fp = _fp(fg, gen)
    kw = dict(
        spatial_attention=spatial_attention,
        spatial_student_ratio=0.7,
        spatial_mask=spatial_mask,
        channel_mask=channel_mask,
        **{**ALL_TERMS, "attention_weight": 0.0, "channel_weight": 0.0, "spatial_weight": 0.0},
    )
    out = hcam_ops.fgd_loss(s, t, fg, bg, fp_mask=fp, **kw)
    (got,) = torch.autograd.grad(out["loss_fg"] + 2.0 * out["loss_bg"] + 3.0 * out["loss_fp"], s)
    s0 = s.detach()
    a_t, c_t = attention(t, 0.5, 0.5)
    a_s, _ = attention(s0, 0.5, 0.5)
    w_s = torch.sqrt(a_t * a_s) if spatial_attention == "combined" else (a_t + 0.7 * a_s) / 1.7
    want = torch.empty_like(s0)
    eps = 1e-3  # the frozen terms are quadratic in s: central differences are exact up to rounding
    for i in range(s0.numel()):
        d = torch.zeros_like(s0).view(-1)
        d[i] = eps
        d = d.view_as(s0)
        hi = _frozen_weight_terms(s0 + d, t, fg, bg, fp, w_s, c_t, spatial_mask, channel_mask)
        lo = _frozen_weight_terms(s0 - d, t, fg, bg, fp, w_s, c_t, spatial_mask, channel_mask)
        want.view(-1)[i] = (hi - lo) / (2 * eps)
    torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-9)


def test_teacher_and_masks_get_no_gradient(gen):
    s, t, fg, bg = _inputs((2, 3, 4, 5), torch.float64, "cpu", gen)
    fp = _fp(fg, gen).requires_grad_()
    t.requires_grad_()
    fg.requires_grad_()
    out = hcam_ops.fgd_loss(s, t, fg, bg, fp_mask=fp, spatial_attention="student_mix", **ALL_TERMS)
    sum(out.values()).backward()
    assert s.grad is not None and t.grad is None and fg.grad is None and fp.grad is None


@pytest.mark.parametrize("with_fp", [True, False])
@pytest.mark.parametrize("spatial_mode", [0, 1, 2])
def test_opcheck(spatial_mode, with_fp, gen):
    s, t, fg, bg = _inputs((2, 3, 5, 7), torch.float32, "cpu", gen)
    fg, bg = fg.float(), bg.float()
    fp = _fp(fg, gen).float() if with_fp else None
    args = (0.5, 0.7, [0.1, 0.2, 0.3, 0.4, 0.5, 0.6], spatial_mode, 0.8, True, spatial_mode != 1)
    torch.library.opcheck(torch.ops.hcam_ops.fgd_loss.default, (s, t, fg, bg, fp, *args))
    _, col, row, sample = torch.ops.hcam_ops.fgd_loss(s.detach(), t, fg, bg, fp, *args)
    torch.library.opcheck(
        torch.ops.hcam_ops.fgd_loss_backward.default,
        (torch.rand(6), s.detach(), t, fg, bg, fp, col, row, sample, *args),
    )


@pytest.mark.compile
@pytest.mark.parametrize("spatial_attention", MODES)
def test_compile_fullgraph(spatial_attention, gen):
    s, t, fg, bg = _inputs((2, 4, 6, 7), torch.float32, "cpu", gen)
    fp = _fp(fg, gen).float()

    def step(s, t):
        out = hcam_ops.fgd_loss(
            s, t, fg, bg, spatial_attention=spatial_attention, fp_mask=fp, channel_mask=False, **ALL_TERMS
        )
        return out["loss_fg"] + 2.0 * out["loss_attention"] + out["loss_spatial"] + 3.0 * out["loss_fp"]

    compiled = torch.compile(step, fullgraph=True)
    a, b = compiled(s, t), step(s, t)
    torch.testing.assert_close(a, b)
    torch.testing.assert_close(torch.autograd.grad(a, s)[0], torch.autograd.grad(b, s)[0])


def test_empty_batch():
    s = torch.randn(0, 4, 5, 6, requires_grad=True)
    z = torch.zeros(0, 5, 6)
    out = hcam_ops.fgd_loss(s, torch.randn(0, 4, 5, 6), z, z, fp_mask=z, spatial_attention="student_mix", **ALL_TERMS)
    assert list(out) == list(TERMS)
    assert all(float(v.detach()) == 0.0 for v in out.values())
    (g,) = torch.autograd.grad(sum(out.values()), s)
    assert g.shape == s.shape


def test_unchecked_nan_propagates(gen):
    s, t, fg, bg = _inputs((2, 3, 4, 5), torch.float32, "cpu", gen)
    s = s.detach().clone()
    s[1, 0, 2, 2] = float("nan")
    out = hcam_ops.fgd_loss(s, t, fg, bg, check_finite=False, **ALL_TERMS)
    assert torch.isnan(out["loss_fg"] + out["loss_bg"])


@cuda_only
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", [(2, 7, 13, 17), (3, 64, 48, 40), (1, 3, 100, 152)], ids=str)
@pytest.mark.parametrize("spatial_mask", [True, False])
@pytest.mark.parametrize("spatial_attention", MODES)
def test_cuda_matches_cpu(spatial_attention, spatial_mask, shape, dtype, gen):
    s, t, fg, bg = _inputs(shape, dtype, "cpu", gen)
    fp = _fp(fg, gen)
    out = {}
    for device in ("cpu", "cuda"):
        with run_on(device) as dev:
            sd = s.detach().to(dev).requires_grad_()
            terms = hcam_ops.fgd_loss(
                sd,
                t.to(dev),
                fg.to(dev),
                bg.to(dev),
                fp_mask=fp.to(dev),
                spatial_attention=spatial_attention,
                spatial_mask=spatial_mask,
                channel_mask=not spatial_mask,
                **ALL_TERMS,
            )
            out[device] = (*terms.values(), torch.autograd.grad(sum(terms.values()), sd)[0])
    for a, b in zip(out["cuda"], out["cpu"]):
        assert_close(a.cpu(), b, dtype if dtype != torch.float64 else torch.float32, "cuda vs cpu")


def _distillbev_published(student_feat, teacher_feat, fg_mask, bg_mask, fp_mask, p):
    """qcraftai/distill-bev, mmdet3d/models/detectors/bevdet_distill.py,
    BEVDetDistill.fgd_distill_loss (lines 1084-1108, 1253-1286), transcribed
    for one level: fg_mask, bg_mask and fp_mask [B, 1, H, W] are the masks
    after the scale masks (fg_mask * scale_mask, fp_mask * fp_scale_mask);
    feat_criterion = MSELoss(reduction='none'), channel/spatial criterion =
    L1Loss(reduction='none'), spatial_wise_adaptation = identity."""
    B, C, H, W = student_feat.shape
    S_T, C_T, s_ratio = p["spatial_t"], p["channel_t"], p["spatial_student_ratio"]
    t_attention_mask = torch.mean(torch.abs(teacher_feat), [1], keepdim=True).view(B, -1)
    t_attention_mask = torch.softmax(t_attention_mask / S_T, dim=1) * H * W
    t_attention_mask = t_attention_mask.view(B, 1, H, W)
    s_attention_mask = torch.mean(torch.abs(student_feat), [1], keepdim=True).view(B, -1)
    s_attention_mask = torch.softmax(s_attention_mask / S_T, dim=1) * H * W
    s_attention_mask = s_attention_mask.view(B, 1, H, W)
    c_t_attention_mask = torch.mean(torch.abs(teacher_feat), [2, 3], keepdim=True).view(B, -1)
    c_t_attention_mask = torch.softmax(c_t_attention_mask / C_T, dim=1) * C
    c_t_attention_mask = c_t_attention_mask.view(B, C, 1, 1)
    if p["spatial_attention"] == "teacher":
        sum_attention_mask = t_attention_mask.detach()
    else:  # 'teacher_student'
        sum_attention_mask = ((t_attention_mask + s_attention_mask * s_ratio) / (1 + s_ratio)).detach()
    c_sum_attention_mask = c_t_attention_mask.detach()
    if p["spatial_mask"]:
        fg_mask = fg_mask * sum_attention_mask
        bg_mask = bg_mask * sum_attention_mask
    if p["channel_mask"]:
        fg_mask = fg_mask * c_sum_attention_mask
        bg_mask = bg_mask * c_sum_attention_mask
    mse = (student_feat - teacher_feat) ** 2
    out = {
        "kd_fg_feat_loss": (mse * fg_mask).sum() * p["fg_feat_loss_weight"] / B,
        "kd_bg_feat_loss": (mse * bg_mask).sum() * p["bg_feat_loss_weight"] / B,
    }
    if p["channel_mask"]:
        l1 = torch.abs(torch.mean(teacher_feat, [2, 3]) - torch.mean(student_feat, [2, 3]))
        out["kd_channel_loss"] = l1.sum() * p["channel_loss_weight"] / B
    if p["spatial_mask"]:
        t_pool = torch.mean(teacher_feat, [1], keepdim=True)
        s_pool = torch.mean(student_feat, [1], keepdim=True)
        out["kd_spatial_loss"] = torch.abs(t_pool - s_pool).sum() * p["spatial_loss_weight"] / B
    fp_mask = fp_mask * sum_attention_mask * c_sum_attention_mask
    out["kd_fp_bg_feat_loss"] = (mse * fp_mask).sum() * p["fp_weight"] / B
    return out


@pytest.mark.parametrize("spatial_mask, channel_mask", [(True, True), (False, True), (True, False)])
@pytest.mark.parametrize("spatial_attention", ["teacher", "teacher_student"])
def test_published_distillbev(spatial_attention, spatial_mask, channel_mask, gen):
    """Our op, student_mix (DistillBEV's 'teacher_student') with the fp term,
    against the published loss: values and the student's gradient."""
    s, t, fg, bg = _inputs((2, 6, 11, 13), torch.float64, "cpu", gen)
    fp = _fp(fg, gen, shape4=True)
    fg4, bg4 = fg.unsqueeze(1), bg
    p = dict(
        spatial_t=0.5,
        channel_t=0.5,
        spatial_student_ratio=0.6,
        fg_feat_loss_weight=1.5e-3,
        bg_feat_loss_weight=4e-2,
        channel_loss_weight=0.25,
        spatial_loss_weight=2.5e-3,
        fp_weight=4e-2,
        spatial_attention=spatial_attention,
        spatial_mask=spatial_mask,
        channel_mask=channel_mask,
    )
    want = _distillbev_published(s, t, fg4, bg4, fp, p)
    got = hcam_ops.fgd_loss(
        s,
        t,
        fg,
        bg,
        spatial_temperature=p["spatial_t"],
        channel_temperature=p["channel_t"],
        fg_weight=p["fg_feat_loss_weight"],
        bg_weight=p["bg_feat_loss_weight"],
        attention_weight=0.0,
        # the published code drops the pooled terms with their switch
        channel_weight=p["channel_loss_weight"] if channel_mask else 0.0,
        spatial_weight=p["spatial_loss_weight"] if spatial_mask else 0.0,
        spatial_attention="student_mix" if spatial_attention == "teacher_student" else "teacher",
        spatial_student_ratio=p["spatial_student_ratio"],
        spatial_mask=spatial_mask,
        channel_mask=channel_mask,
        fp_mask=fp,
        fp_weight=p["fp_weight"],
    )
    pairs = {
        "kd_fg_feat_loss": "loss_fg",
        "kd_bg_feat_loss": "loss_bg",
        "kd_channel_loss": "loss_channel",
        "kd_spatial_loss": "loss_spatial",
        "kd_fp_bg_feat_loss": "loss_fp",
    }
    for k, v in want.items():
        assert_close(got[pairs[k]], v, torch.float64, k)
    for k in set(pairs.values()) - {pairs[k] for k in want}:
        assert float(got[k].detach()) == 0.0
    assert float(want["kd_fp_bg_feat_loss"].detach()) > 0
    (a,) = torch.autograd.grad(sum(got.values()), s)
    (b,) = torch.autograd.grad(sum(want.values()), s)
    assert_close(a, b, torch.float64, "d student")


def test_published_fgd_defaults(gen):
    """The defaults against yzd-v/FGD mmdet/distillation/losses/fgd.py
    (FeatureLoss.get_attention, get_fea_loss, get_mask_loss) with its own
    default weights (temp 0.5, alpha_fgd 1e-3, beta_fgd 5e-4, gamma_fgd 1e-3)."""
    s, t, fg, bg = _inputs((2, 5, 9, 7), torch.float64, "cpu", gen)
    N, C, H, W = s.shape
    temp, alpha_fgd, beta_fgd, gamma_fgd = 0.5, 0.001, 0.0005, 0.001

    def get_attention(preds):
        value = torch.abs(preds)
        fea_map = value.mean(axis=1, keepdim=True)
        S_attention = (H * W * torch.softmax((fea_map / temp).view(N, -1), dim=1)).view(N, H, W)
        channel_map = value.mean(axis=2, keepdim=False).mean(axis=2, keepdim=False)
        return S_attention, C * torch.softmax(channel_map / temp, dim=1)

    S_t, C_t = get_attention(t)
    S_s, C_s = get_attention(s)
    Mask_fg, Mask_bg = fg.unsqueeze(1), bg.reshape(N, 1, H, W)
    fea_t = t * torch.sqrt(S_t.unsqueeze(1)) * torch.sqrt(C_t[:, :, None, None])
    fea_s = s * torch.sqrt(S_t.unsqueeze(1)) * torch.sqrt(C_t[:, :, None, None])
    fg_loss = ((fea_s * torch.sqrt(Mask_fg) - fea_t * torch.sqrt(Mask_fg)) ** 2).sum() / N
    bg_loss = ((fea_s * torch.sqrt(Mask_bg) - fea_t * torch.sqrt(Mask_bg)) ** 2).sum() / N
    mask_loss = torch.sum(torch.abs(C_s - C_t)) / N + torch.sum(torch.abs(S_s - S_t)) / N
    got = hcam_ops.fgd_loss(s, t, fg, bg)
    assert_close(got["loss_fg"], alpha_fgd * fg_loss, torch.float64, "fg")
    assert_close(got["loss_bg"], beta_fgd * bg_loss, torch.float64, "bg")
    assert_close(got["loss_attention"], gamma_fgd * mask_loss, torch.float64, "attention")
    assert all(float(got[k].detach()) == 0.0 for k in ("loss_channel", "loss_spatial", "loss_fp"))
