"""hcam_ops.nn.FGDLoss against the published FGD and DistillBEV losses
(transcribed here from the published formulas, not from our reference)."""

import inspect
import math

import pytest
import torch
import torch.nn.functional as F

import hcam_ops
from hcam_ops import reference as R
from hcam_ops.distill import false_positive_masks
from hcam_ops.nn import FGDLoss, GcBlock
from hcam_ops.nn.fgd import PRESETS, FGDLevel


def _boxes():
    return [
        torch.tensor([[10.0, 20.0, 120.0, 90.0]], dtype=torch.float64),
        torch.tensor([[0.0, 0.0, 50.0, 60.0], [100.0, 100.0, 200.0, 220.0]], dtype=torch.float64),
    ]


# -- FGD (yzd-v/FGD mmdet/distillation/losses/fgd.py, FeatureLoss) -------------------------------------------------


def _published_fgd_masks(boxes, img_hw, H, W, dtype):
    """FGD's per-image loop: floor/ceil cells, 1/area with the +1, max on overlap, bg normalised."""
    fg = torch.zeros(len(boxes), H, W, dtype=dtype)
    bg = torch.ones(len(boxes), H, W, dtype=dtype)
    for i, b in enumerate(boxes):
        b = b.to(dtype)
        x1, x2 = b[:, 0] / img_hw[1] * W, b[:, 2] / img_hw[1] * W
        y1, y2 = b[:, 1] / img_hw[0] * H, b[:, 3] / img_hw[0] * H
        wmin, wmax = torch.floor(x1).int(), torch.ceil(x2).int()
        hmin, hmax = torch.floor(y1).int(), torch.ceil(y2).int()
        area = 1.0 / (hmax + 1 - hmin).to(dtype) / (wmax + 1 - wmin).to(dtype)
        for j in range(len(b)):
            cell = fg[i][hmin[j] : hmax[j] + 1, wmin[j] : wmax[j] + 1]
            fg[i][hmin[j] : hmax[j] + 1, wmin[j] : wmax[j] + 1] = torch.maximum(cell, area[j].to(dtype))
        bg[i] = torch.where(fg[i] > 0, 0.0, 1.0).to(dtype)
        if bg[i].sum():
            bg[i] /= bg[i].sum()
    return fg, bg


def _published_fgd(level, preds_s, preds_t, boxes, img_hw, temp, alpha, beta, gamma, lam):
    if level.align is not None:
        preds_s = level.align(preds_s)
    N, C, H, W = preds_s.shape

    def att(p):
        v = p.abs()
        s = (H * W * F.softmax((v.mean(1, keepdim=True) / temp).view(N, -1), dim=1)).view(N, H, W)
        c = C * F.softmax(v.mean(2).mean(2) / temp, dim=1)
        return s, c

    s_t, c_t = att(preds_t)
    s_s, c_s = att(preds_s)
    fg, bg = _published_fgd_masks(boxes, img_hw, H, W, preds_s.dtype)
    w = torch.sqrt(s_t[:, None]) * torch.sqrt(c_t[:, :, None, None])
    fea_t, fea_s = preds_t * w, preds_s * w
    fg_loss = ((fea_s * fg[:, None].sqrt() - fea_t * fg[:, None].sqrt()) ** 2).sum() / N
    bg_loss = ((fea_s * bg[:, None].sqrt() - fea_t * bg[:, None].sqrt()) ** 2).sum() / N
    mask_loss = (c_s - c_t).abs().sum() / N + (s_s - s_t).abs().sum() / N

    def pool(x, conv):
        m = F.softmax(conv(x).view(N, 1, H * W), dim=2).unsqueeze(-1)
        return torch.matmul(x.view(N, C, H * W).unsqueeze(1), m).view(N, C, 1, 1)

    out_s = preds_s + level.channel_add_conv_s(pool(preds_s, level.conv_mask_s))
    out_t = preds_t + level.channel_add_conv_t(pool(preds_t, level.conv_mask_t))
    rela = ((out_s - out_t) ** 2).sum() / N
    return alpha * fg_loss + beta * bg_loss + gamma * mask_loss + lam * rela


def test_defaults_are_fgds():
    """FGD's FeatureLoss: temp 0.5, alpha 1e-3, beta 5e-4, gamma 1e-3, lambda 5e-6."""
    published = dict(
        spatial_temperature=0.5,
        channel_temperature=0.5,
        fg_weight=1e-3,
        bg_weight=5e-4,
        attention_weight=1e-3,
        global_weight=5e-6,
    )
    module = inspect.signature(FGDLoss).parameters
    op = inspect.signature(hcam_ops.fgd_loss).parameters
    for k, v in published.items():
        assert module[k].default == v, k
        if k != "global_weight":  # the op has no global term
            assert op[k].default == v, k
    assert PRESETS["fgd"] == published
    assert PRESETS["fgd-retinanet"]["attention_weight"] == 5e-4  # the published RetinaNet configs
    assert PRESETS["fgd-fcos"]["spatial_temperature"] == 0.8
    with pytest.raises(ValueError, match="unknown preset 'kd'"):
        FGDLoss.from_preset("kd", 8, 8)


def test_state_dict_is_fgds_feature_loss():
    """Per level, the published FeatureLoss's parameters, names and shapes."""
    m = FGDLoss([128, 256], [256, 256])
    want = {
        "conv_mask_s.weight": (1, 256, 1, 1),
        "conv_mask_s.bias": (1,),
        "conv_mask_t.weight": (1, 256, 1, 1),
        "conv_mask_t.bias": (1,),
    }
    for side in ("s", "t"):
        want |= {
            f"channel_add_conv_{side}.0.weight": (128, 256, 1, 1),
            f"channel_add_conv_{side}.0.bias": (128,),
            f"channel_add_conv_{side}.1.weight": (128, 1, 1),
            f"channel_add_conv_{side}.1.bias": (128, 1, 1),
            f"channel_add_conv_{side}.3.weight": (256, 128, 1, 1),
            f"channel_add_conv_{side}.3.bias": (256,),
        }
    level1 = {k: tuple(v.shape) for k, v in m.levels[1].state_dict().items()}
    assert level1 == want
    level0 = {k: tuple(v.shape) for k, v in m.levels[0].state_dict().items()}
    assert level0 == want | {"align.weight": (256, 128, 1, 1), "align.bias": (256,)}
    assert m.levels[0].conv_mask_s is not m.levels[0].conv_mask_t


def _published_feature_loss_keys(student_channels, teacher_channels):
    """The parameter names and shapes of the published FGD FeatureLoss
    (yzd-v/FGD, mmdet/distillation/losses/fgd.py), transcribed: align where
    the channels differ, and both GcBlocks always, whatever lambda_fgd."""
    C, h = teacher_channels, teacher_channels // 2
    keys = (
        {}
        if student_channels == teacher_channels
        else {"align.weight": (C, student_channels, 1, 1), "align.bias": (C,)}
    )
    keys |= {"conv_mask_s.weight": (1, C, 1, 1), "conv_mask_s.bias": (1,)}
    keys |= {"conv_mask_t.weight": (1, C, 1, 1), "conv_mask_t.bias": (1,)}
    for side in ("s", "t"):
        keys |= {
            f"channel_add_conv_{side}.0.weight": (h, C, 1, 1),
            f"channel_add_conv_{side}.0.bias": (h,),
            f"channel_add_conv_{side}.1.weight": (h, 1, 1),
            f"channel_add_conv_{side}.1.bias": (h, 1, 1),
            f"channel_add_conv_{side}.3.weight": (C, h, 1, 1),
            f"channel_add_conv_{side}.3.bias": (C,),
        }
    return keys


@pytest.mark.parametrize("global_weight", [5e-6, 0.0])
@pytest.mark.parametrize("channels", [(128, 256), (256, 256)], ids=str)
def test_a_published_state_dict_loads_strictly(channels, global_weight, gen):
    """The published FeatureLoss always has its GcBlocks; a level without the
    global term drops them on load, one with it loads them."""
    s_ch, t_ch = channels
    m = FGDLoss([s_ch], [t_ch], global_weight=global_weight)
    published = {
        f"levels.0.{k}": torch.randn(shape, generator=gen)
        for k, shape in _published_feature_loss_keys(s_ch, t_ch).items()
    }
    result = m.load_state_dict(published, strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    loaded = m.state_dict()
    for k, v in published.items():
        if global_weight > 0 or not k.split(".", 2)[2].startswith(FGDLevel.GC_BLOCK_KEYS):
            assert torch.equal(loaded[k], v), k
        else:
            assert k not in loaded
    with pytest.raises(RuntimeError, match="Unexpected key"):  # other stray keys still fail a strict load
        m.load_state_dict(published | {"levels.0.extra": torch.zeros(1)}, strict=True)


@pytest.mark.parametrize("preset", ["fgd", "fgd-retinanet"])
def test_fgd_equals_the_published_loss_and_gradients(preset, gen):
    """Two levels (one with align), masks from boxes: our terms sum to FGD's
    loss, and the student, align and both GcBlocks get FGD's gradients; the
    teacher map gets none."""
    torch.manual_seed(0)
    m = FGDLoss.from_preset(preset, [6, 8], [8, 8]).double()
    for level in m.levels:  # leave the zero init, so the relation term depends on every parameter
        for p in level.parameters():
            torch.nn.init.normal_(p, std=0.3)
    s = [
        torch.randn(2, 6, 14, 10, generator=gen, dtype=torch.float64, requires_grad=True),
        torch.randn(2, 8, 7, 5, generator=gen, dtype=torch.float64, requires_grad=True),
    ]
    t = [
        torch.randn(2, 8, 14, 10, generator=gen, dtype=torch.float64, requires_grad=True),
        torch.randn(2, 8, 7, 5, generator=gen, dtype=torch.float64, requires_grad=True),
    ]
    out = m(s, t, boxes=_boxes(), img_shape=(224, 160))
    assert set(out) == {
        "loss_fg",
        "loss_bg",
        "loss_attention",
        "loss_channel",
        "loss_spatial",
        "loss_fp",
        "loss_global",
    }
    ours = sum(out.values())
    p = PRESETS[preset]
    args = (p["spatial_temperature"], p["fg_weight"], p["bg_weight"], p["attention_weight"], p["global_weight"])
    theirs = sum(_published_fgd(m.levels[i], s[i], t[i].detach(), _boxes(), (224, 160), *args) for i in range(2))
    torch.testing.assert_close(ours, theirs, rtol=1e-10, atol=1e-14)
    params = [*s, *m.parameters()]
    g_ours = torch.autograd.grad(ours, params)
    g_theirs = torch.autograd.grad(theirs, params)
    for a, b in zip(g_ours, g_theirs):
        torch.testing.assert_close(a, b, rtol=1e-8, atol=1e-12)
    ours2 = sum(m(s, t, boxes=_boxes(), img_shape=(224, 160)).values())
    ours2.backward()
    assert t[0].grad is None and t[1].grad is None
    assert m.levels[0].conv_mask_t.weight.grad is not None  # the teacher's block learns, as published


def test_gc_block_starts_as_identity():
    block = GcBlock(6)
    x = torch.randn(2, 6, 5, 4)
    torch.testing.assert_close(block(x), x)
    w = torch.softmax(block.conv_mask(x).flatten(2), -1)
    torch.testing.assert_close(block.context(x).flatten(1), (x.flatten(2) * w).sum(-1))


# -- DistillBEV (qcraftai/distill-bev bevdet_distill.py, distill_type 'fgd') --------------------------------------


def _published_bev_masks(boxes, H, W, cell_w, cell_h):
    """Cell (h, w) is the corner point (w * cell_w, h * cell_h); strictly inside
    an axis-aligned box; fg scale sqrt(cell area / box area) from the first box."""
    B = len(boxes)
    fg = torch.zeros(B, H, W, dtype=torch.float64)
    scale = torch.zeros(B, H, W, dtype=torch.float64)
    for i, b in enumerate(boxes):
        for j in reversed(range(len(b))):  # the lowest index wins: write it last
            x1, y1, x2, y2 = b[j].double().tolist()
            cx, cy, dx, dy = (x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1
            for h in range(H):
                for w in range(W):
                    if abs(w * cell_w - cx) < dx / 2 and abs(h * cell_h - cy) < dy / 2:
                        fg[i, h, w] = 1.0
                        scale[i, h, w] = math.sqrt(cell_w * cell_h / (dx * dy))
    return fg, scale


def _published_distillbev(level, s, t, boxes, img_hw, kw, fp=None, fp_scale=None, fp_weight=0.0):
    """One level of the published fgd_distill_loss with scale_mask='combine_gt'."""
    s = level.align(s) if level.align is not None else s
    B, C, H, W = s.shape
    fgm, fg_scale = _published_bev_masks(boxes, H, W, img_hw[1] / W, img_hw[0] / H)
    bgm = (fgm == 0).double()
    n_bg = H * W - fgm.sum((1, 2), keepdim=True)
    if fp is not None:
        bgm = bgm * (fp == 0)
        n_bg = n_bg - fp.sum((1, 2), keepdim=True)
    bg_scale = (1.0 / n_bg).expand(B, H, W)
    sc = torch.maximum(fg_scale, bg_scale)
    fgm, bgm = (fgm * sc)[:, None], (bgm * sc)[:, None]
    T = kw["spatial_temperature"]
    a_t = F.softmax(t.abs().mean(1).view(B, -1) / T, dim=1).view(B, 1, H, W) * H * W
    a_s = F.softmax(s.abs().mean(1).view(B, -1) / T, dim=1).view(B, 1, H, W) * H * W
    c_t = F.softmax(t.abs().mean((2, 3)) / kw["channel_temperature"], dim=1).view(B, C, 1, 1) * C
    r = kw.get("spatial_student_ratio", 1.0)
    S = a_t.detach() if kw["spatial_attention"] == "teacher" else ((a_t + r * a_s) / (1 + r)).detach()
    d = (s - t) ** 2
    loss = (d * fgm * S * c_t.detach()).sum() * kw["fg_weight"] / B
    loss = loss + (d * bgm * S * c_t.detach()).sum() * kw["bg_weight"] / B
    loss = loss + (t.mean((2, 3)) - s.mean((2, 3))).abs().sum() * kw["channel_weight"] / B
    pooled = level.spatial_adaptation(s.mean(1, keepdim=True))
    loss = loss + (t.mean(1, keepdim=True) - pooled).abs().sum() * kw["spatial_weight"] / B
    if fp is not None:
        loss = loss + (d * (fp * fp_scale)[:, None] * S * c_t).sum() * fp_weight / B
    return loss


@pytest.mark.parametrize("spatial_attention", ["teacher", "student_mix"])
def test_distillbev_equals_the_published_loss(spatial_attention, gen):
    m = FGDLoss.from_preset(
        "distillbev", 6, 8, spatial_attention=spatial_attention, spatial_student_ratio=0.7, student_adaptation="1x1conv"
    ).double()
    s = torch.randn(2, 6, 9, 11, generator=gen, dtype=torch.float64, requires_grad=True)
    t = torch.randn(2, 8, 9, 11, generator=gen, dtype=torch.float64)
    boxes = [
        torch.tensor([[13.0, 7.0, 61.0, 40.0]], dtype=torch.float64),
        torch.tensor([[3.0, 3.0, 30.0, 29.0], [20.0, 10.0, 77.0, 70.0]], dtype=torch.float64),
    ]
    out = m(s, t, boxes=boxes, img_shape=(72, 88))
    kw = {**PRESETS["distillbev"], "spatial_attention": spatial_attention, "spatial_student_ratio": 0.7}
    theirs = _published_distillbev(m.levels[0], s, t, boxes, (72, 88), kw)
    torch.testing.assert_close(sum(out.values()), theirs, rtol=1e-10, atol=1e-14)
    ga = torch.autograd.grad(sum(out.values()), [s, *m.parameters()])
    gb = torch.autograd.grad(theirs, [s, *m.parameters()])
    for a, b in zip(ga, gb):
        torch.testing.assert_close(a, b, rtol=1e-8, atol=1e-12)


def _published_fp(heat_t, heat_g, fg, thr):
    """add_fp_as_fg, mode 'teacher', scale 'average': max over classes, the
    ground truth resized to the teacher's size and the result to the mask's
    (max-pooled down, repeated up), FP = gt < thr and teacher > thr outside
    the foreground, scale 1 / #FP."""
    t = heat_t.amax(1, keepdim=True)
    g = heat_g.amax(1, keepdim=True)
    if g.shape[-1] > t.shape[-1]:
        g = F.max_pool2d(g, g.shape[-1] // t.shape[-1])
    fp = ((g < thr) & (t > thr)).float()
    if fp.shape[-1] > fg.shape[-1]:
        fp = F.max_pool2d(fp, fp.shape[-1] // fg.shape[-1])
    elif fp.shape[-1] < fg.shape[-1]:
        r = fg.shape[-1] // fp.shape[-1]
        fp = fp.repeat_interleave(r, 2).repeat_interleave(r, 3)
    fp = ((fg[:, None] == 0) & (fp > 0)).double()[:, 0]
    scale = torch.zeros_like(fp)
    for b in range(fp.shape[0]):
        scale[b][fp[b] > 0] = 1.0 / fp[b].sum()
    return fp, scale


def test_distillbev_false_positive_term_from_fp_epoch(gen):
    m = FGDLoss.from_preset("distillbev", 4, 4, fp_weight=0.5, fp_epoch=2, fp_scale_mode="average").double()
    s = torch.randn(2, 4, 8, 8, generator=gen, dtype=torch.float64, requires_grad=True)
    t = torch.randn(2, 4, 8, 8, generator=gen, dtype=torch.float64)
    boxes = [torch.tensor([[4.0, 4.0, 20.0, 30.0]]).double(), torch.tensor([[10.0, 0.0, 31.0, 12.0]]).double()]
    heat_t = torch.rand(2, 3, 16, 16, generator=gen, dtype=torch.float64)
    heat_g = torch.rand(2, 3, 32, 32, generator=gen, dtype=torch.float64) * 0.2
    kw = dict(boxes=boxes, img_shape=(32, 32), teacher_heatmap=heat_t, gt_heatmap=heat_g)
    m.set_epoch(1)
    assert float(m(s, t, **kw)["loss_fp"].detach()) == 0.0
    m.set_epoch(2)
    out = m(s, t, **kw)
    assert float(out["loss_fp"].detach()) > 0
    fg, _ = _published_bev_masks(boxes, 8, 8, 4.0, 4.0)
    fp, fp_scale = _published_fp(heat_t, heat_g, fg, 0.1)
    assert fp.sum() > 0 and not bool((fp.bool() & fg.bool()).any())
    theirs = _published_distillbev(m.levels[0], s, t, boxes, (32, 32), PRESETS["distillbev"], fp, fp_scale, 0.5)
    torch.testing.assert_close(sum(out.values()), theirs, rtol=1e-10, atol=1e-14)


def test_bev_masks_through_the_module_follow_the_op(gen):
    """bev_boxes on a grid whose cells follow each level's size (the published
    osf = grid_size // W); bg extension and every scale_mask against the op's
    own output; the FP term and the 'dfs' scale with FGD masks (ours)."""
    boxes = [torch.tensor([[1.0, 2.0, 0.0, 6.0, 3.0, 1.5, 0.4]], dtype=torch.float64), torch.zeros(0, 7).double()]
    grid = ((-8.0, -8.0, -3.0, 8.0, 8.0, 3.0), None)
    m = FGDLoss.from_preset("distillbev", [4, 4], [4, 4], student_adaptation="identity").double()
    s = [torch.randn(2, 4, 8, 8, generator=gen).double(), torch.randn(2, 4, 4, 4, generator=gen).double()]
    maps = m.maps(s, s, bev_boxes=boxes, bev_grid=grid)
    for level, size in zip(maps, (8, 4)):
        fg, bg = hcam_ops.bev_masks_from_boxes(boxes, (-8.0, -8.0), 16.0 / size, (size, size))
        torch.testing.assert_close(level["fg"], fg.float())
        torch.testing.assert_close(level["bg"], bg.float())
        assert level["fg"][0].sum() > 0
    for mode, op_mode in (("separate_gt", "separate"), ("bg_only", "bg_only"), ("none", "none")):
        m = FGDLoss.from_preset("distillbev", 4, 4, scale_mask=mode, bg_extend_length=2.0, bg_extend_weight=0.3)
        (level,) = m.maps(s[0].float(), s[0].float(), bev_boxes=boxes, bev_grid=((-8.0, -8.0), 2.0))
        fg, bg = hcam_ops.bev_masks_from_boxes(
            boxes, (-8.0, -8.0), 2.0, (8, 8), scale_mask=op_mode, bg_extend_length=2.0, bg_extend_weight=0.3
        )
        torch.testing.assert_close(level["fg"], fg.float(), msg=mode)
        torch.testing.assert_close(level["bg"], bg.float(), msg=mode)
    small = [torch.tensor([[0.0, 0.0, 4.0, 4.0]]), torch.tensor([[6.0, 2.0, 9.0, 5.0]])]
    fgd = FGDLoss(4, 4, fp_weight=1.0, fp_scale_mode="dfs", output_threshold=0.5)
    heat = torch.zeros(2, 1, 8, 8)
    heat[:, 0, 6:8, 6:8] = 0.9
    (level,) = fgd.maps(
        s[0].float(),
        s[0].float(),
        boxes=small,
        img_shape=(16, 16),
        teacher_heatmap=heat,
        gt_heatmap=torch.zeros(2, 1, 8, 8),
    )
    fg, bg = hcam_ops.fgd_masks_from_boxes(small, (16, 16), (8, 8))
    fp = (heat[:, 0] > 0.5) & (fg == 0)
    assert fp.sum() == 8
    torch.testing.assert_close(level["fp"], fp.float() / fp.sum((1, 2), keepdim=True))  # one 2x2 component per image
    keep = (bg > 0) & ~fp
    torch.testing.assert_close(level["bg"], (keep / keep.sum((1, 2), keepdim=True)).float())


def test_gaussian_foreground_through_the_module():
    boxes = [torch.tensor([[0.5, 0.5, 5.0, 3.0, 0.0]], dtype=torch.float64)]
    m = FGDLoss.from_preset("distillbev", 4, 4, foreground_mask="gauss", scale_mask="separate_extend")
    x = torch.randn(1, 4, 8, 8)
    (level,) = m.maps(x, x, bev_boxes=boxes, bev_grid=((-4.0, -4.0), 1.0))
    heat, scale2 = hcam_ops.distill.gaussian_foreground(boxes, (-4.0, -4.0), 1.0, (8, 8))
    gt_fg, _ = hcam_ops.bev_masks_from_boxes(boxes, (-4.0, -4.0), 1.0, (8, 8), scale_mask="none")
    bg_scale = 1.0 / (64 - (gt_fg != 0).sum())
    torch.testing.assert_close(level["fg"], (heat * scale2).float())
    torch.testing.assert_close(level["bg"], ((heat == 0) * bg_scale).float())
    with pytest.raises(ValueError, match="needs a Gaussian foreground_mask"):
        FGDLoss.from_preset("distillbev", 4, 4, scale_mask="separate_extend").maps(
            x, x, bev_boxes=boxes, bev_grid=((-4.0, -4.0), 1.0)
        )


def test_levels_before_multi_scale_epoch_get_zero_gradients(gen):
    """DDP needs a gradient for every parameter: the idle levels' are zero."""
    m = FGDLoss([4, 6], [4, 4], multi_scale_epoch=2)
    s = [torch.randn(1, 4, 6, 6, generator=gen, requires_grad=True), torch.randn(1, 6, 3, 3, generator=gen)]
    t = [torch.randn(1, 4, 6, 6, generator=gen), torch.randn(1, 4, 3, 3, generator=gen)]
    sum(m(s, t, boxes=[torch.tensor([[2.0, 2.0, 20.0, 14.0]])], img_shape=(24, 24)).values()).backward()
    for p in m.levels[1].parameters():
        assert p.grad is not None and not bool(p.grad.any())


def test_false_positive_scales():
    """'average': 1 / #FP per sample; 'dfs': 1 / size of the 4-connected component."""
    heat_t = torch.zeros(1, 6, 6)
    heat_t[0, 0:2, 0:2] = 0.9  # a 2x2 block (a cycle: the published search over-counts it)
    heat_t[0, 4, 4] = 0.9  # one cell
    heat_t[0, 3, 5] = 0.9  # touches (4, 4) only diagonally: its own component
    heat_t[0, 5, 0] = 0.9  # inside the boxes' foreground: never FP
    fg = torch.zeros(1, 6, 6)
    fg[0, 5, 0] = 1.0
    gt = torch.zeros(1, 6, 6)
    fp, avg = false_positive_masks(heat_t, gt, fg, output_threshold=0.5, scale_mode="average")
    assert fp.sum() == 6 and fp[0, 5, 0] == 0
    torch.testing.assert_close(avg[0, 0, 0], torch.tensor(1 / 6))
    _, dfs = false_positive_masks(heat_t, gt, fg, output_threshold=0.5, scale_mode="dfs")
    torch.testing.assert_close(dfs[0, 1, 1], torch.tensor(0.25))
    torch.testing.assert_close(dfs[0, 4, 4], torch.tensor(1.0))
    torch.testing.assert_close(dfs[0, 3, 5], torch.tensor(1.0))
    assert dfs[0, 2, 2] == 0
    # separate thresholds: the ground truth is present (0.3 >= 0.2) at one cell
    gt[0, 4, 4] = 0.3
    fp2, _ = false_positive_masks(heat_t, gt, fg, output_threshold=0.5, groundtruth_threshold=0.2)
    assert fp2[0, 4, 4] == 0 and fp2.sum() == 5


def test_adaptations_let_maps_of_two_sizes_meet(gen):
    """A student at 1/4 the teacher's resolution upsampled by 4, a teacher at
    twice the target pooled with stride 2; the module's terms equal the
    reference op on the adapted maps."""
    m = FGDLoss.from_preset(
        "distillbev",
        4,
        6,
        student_adaptation="upsample_2layer",
        upsample_factor=4,
        teacher_adaptation="avgpool",
        teacher_stride=2,
        masks="fgd",
    ).double()
    s = torch.randn(2, 4, 3, 4, generator=gen, dtype=torch.float64, requires_grad=True)
    t = torch.randn(2, 6, 24, 32, generator=gen, dtype=torch.float64)
    fg = torch.rand(2, 12, 16, generator=gen, dtype=torch.float64)
    bg = 1 - fg
    out = m(s, t, fg_mask=fg, bg_mask=bg)
    level = m.levels[0]
    sa, ta = level.align(s), F.avg_pool2d(t, 2)
    assert sa.shape == ta.shape == (2, 6, 12, 16)
    kw = {k: PRESETS["distillbev"][k] for k in ("fg_weight", "bg_weight", "channel_weight", "spatial_temperature")}
    ref = R.fgd_loss(sa, ta, fg, bg, attention_weight=0.0, channel_temperature=0.5, **kw)
    for k in ("loss_fg", "loss_bg", "loss_channel"):
        torch.testing.assert_close(out[k], ref[k])
    sum(out.values()).backward()
    assert level.align[1].conv1.weight.grad is not None
    bad = FGDLoss.from_preset("distillbev", 4, 6, masks="fgd")
    with pytest.raises(ValueError, match=r"student map is \(3, 4\) and the teacher map \(24, 32\)"):
        bad(s.float(), t.float(), fg_mask=fg, bg_mask=bg)


def test_per_level_weights_and_multi_scale_epoch(gen):
    m = FGDLoss([4, 4], [4, 4], fg_weight=[1e-3, 2e-3], global_weight=0.0, multi_scale_epoch=3)
    s = [torch.randn(1, 4, 6, 6, generator=gen), torch.randn(1, 4, 3, 3, generator=gen)]
    t = [torch.randn(1, 4, 6, 6, generator=gen), torch.randn(1, 4, 3, 3, generator=gen)]
    boxes = [torch.tensor([[2.0, 2.0, 20.0, 14.0]])]
    one = [
        R.fgd_loss(s[i], t[i], *R.fgd_masks_from_boxes(boxes, (24, 24), s[i].shape[2:]), fg_weight=w)
        for i, w in enumerate((1e-3, 2e-3))
    ]
    m.set_epoch(2)  # before multi_scale_epoch: the first level only
    torch.testing.assert_close(m(s, t, boxes=boxes, img_shape=(24, 24))["loss_fg"], one[0]["loss_fg"])
    m.set_epoch(3)
    torch.testing.assert_close(
        m(s, t, boxes=boxes, img_shape=(24, 24))["loss_fg"], one[0]["loss_fg"] + one[1]["loss_fg"]
    )
    with pytest.raises(ValueError, match="fg_weight has 3 values for 2 levels"):
        FGDLoss([4, 4], [4, 4], fg_weight=[1, 2, 3])


def test_region_weights_are_ours_and_scale_both_masks(gen):
    m = FGDLoss(4, 4, global_weight=0.0, region_weights={"tp": 2.0, "tn": 0.5})
    s, t = torch.randn(2, 4, 8, 8, generator=gen), torch.randn(2, 4, 8, 8, generator=gen)
    fg = torch.rand(2, 8, 8, generator=gen)
    th, gh = torch.rand(2, 3, 16, 16, generator=gen), torch.rand(2, 3, 16, 16, generator=gen)
    out = m(s, t, fg_mask=fg, bg_mask=1 - fg, teacher_heatmap=th, gt_heatmap=gh)
    r = hcam_ops.distill.region_weights(th, gh, 0.1, {"tp": 2.0, "tn": 0.5})
    r = F.interpolate(r[:, None], size=(8, 8), mode="nearest")[:, 0]
    ref = R.fgd_loss(s, t, fg * r, (1 - fg) * r, attention_weight=1e-3)
    torch.testing.assert_close(out["loss_fg"], ref["loss_fg"])
    torch.testing.assert_close(out["loss_bg"], ref["loss_bg"])


def test_maps_for_dumps(gen):
    m = FGDLoss.from_preset("distillbev", 4, 4, fp_weight=1.0)
    s, t = torch.randn(2, 4, 8, 8, generator=gen), torch.randn(2, 4, 8, 8, generator=gen)
    boxes = [torch.tensor([[4.0, 4.0, 20.0, 30.0]]), torch.zeros(0, 4)]
    heat = torch.rand(2, 2, 8, 8, generator=gen)
    (level,) = m.maps(s, t, boxes=boxes, img_shape=(32, 32), teacher_heatmap=heat, gt_heatmap=heat * 0)
    assert set(level) == {"fg", "bg", "fp", "teacher_attention", "student_attention"}
    for v in level.values():
        assert v.shape == (2, 8, 8)
    torch.testing.assert_close(level["teacher_attention"].sum((1, 2)), torch.full((2,), 64.0))
    assert level["fp"].sum() > 0 and level["fg"][1].sum() == 0


def test_bad_module_input(gen):
    m = FGDLoss(4, 4)
    s = torch.randn(1, 4, 5, 5, generator=gen)
    with pytest.raises(ValueError, match="needs boxes and img_shape"):
        m(s, s)
    with pytest.raises(ValueError, match="give both"):
        m(s, s, fg_mask=torch.ones(1, 5, 5))
    with pytest.raises(ValueError, match="levels"):
        FGDLoss([4, 4], [4])
    with pytest.raises(ValueError, match="masks must be one of"):
        FGDLoss(4, 4, masks="circles")
    bev = FGDLoss.from_preset("distillbev", 4, 4, fp_weight=1.0)
    with pytest.raises(ValueError, match="needs teacher_heatmap and gt_heatmap"):
        bev(s, s, boxes=[torch.tensor([[0.0, 0.0, 3.0, 3.0]])], img_shape=(5, 5))
    with pytest.raises(ValueError, match=r"boxes\[0\] must be \[n, 4\]"):
        FGDLoss.from_preset("distillbev", 4, 4)(s, s, boxes=[torch.zeros(2, 5)], img_shape=(5, 5))
    with pytest.raises(ValueError, match="student_adaptation must be one of"):
        FGDLoss(4, 4, student_adaptation="deconv")
    # Checked when built, not at the first step (or at fp_epoch, hours in).
    for bad, match in (
        (dict(fp_scale_mode="bogus"), "fp_scale_mode must be one of"),
        (dict(spatial_attention="geometric"), "spatial_attention must be one of"),
        (dict(spatial_temperature=-1.0), "spatial_temperature must be positive"),
        (dict(output_threshold=float("nan")), "output_threshold must be finite"),
        (dict(fp_weight=-1.0), "fp_weight must be finite and >= 0"),
        (dict(foreground_mask="gauss"), "options of masks='bev'"),
    ):
        with pytest.raises(ValueError, match=match):
            FGDLoss(4, 4, **bad)
    assert FGDLoss(4, 4, spatial_attention="teacher_student").op_kwargs["spatial_attention"] == "student_mix"
    with pytest.raises(ValueError, match="not finite"):
        m(s * float("nan"), s, boxes=[torch.tensor([[0.0, 0.0, 3.0, 3.0]])], img_shape=(5, 5))


def test_area_normalize_divides_each_level_by_its_area(gen):
    """Ours: with area_normalize each level's terms are divided by its H*W
    before the sum over levels; off, the published sum."""
    shapes = [(14, 10), (7, 5)]
    s = [torch.randn(2, 8, h, w, generator=gen) for h, w in shapes]
    t = [torch.randn(2, 8, h, w, generator=gen) for h, w in shapes]
    kw = dict(boxes=_boxes(), img_shape=(224, 160))
    on = FGDLoss([8, 8], [8, 8], global_weight=0.0, area_normalize=True)(s, t, **kw)
    off = FGDLoss([8, 8], [8, 8], global_weight=0.0)(s, t, **kw)
    levels = [FGDLoss(8, 8, global_weight=0.0)(s[i], t[i], **kw) for i in range(2)]
    assert set(on) == set(off) and on
    for k in on:
        want = sum(levels[i][k] / (h * w) for i, (h, w) in enumerate(shapes))
        torch.testing.assert_close(on[k], want, rtol=1e-6, atol=0)
        torch.testing.assert_close(off[k], levels[0][k] + levels[1][k], rtol=1e-6, atol=0)
