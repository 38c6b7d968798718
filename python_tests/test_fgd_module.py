"""hcam_ops.nn.FGDLoss and GcBlock."""

import pytest
import torch

import hcam_ops
from hcam_ops import reference as R
from hcam_ops.nn import FGDLoss, GcBlock
from hcam_ops.nn.fgd import PRESETS


def _boxes():
    return [
        torch.tensor([[10.0, 20.0, 120.0, 90.0]]),
        torch.tensor([[0.0, 0.0, 50.0, 60.0], [100.0, 100.0, 200.0, 220.0]]),
    ]


def test_presets_hold_the_spec_weights():
    m = FGDLoss.from_preset("fgd", 8, 8)
    assert m.op_kwargs["fg_weight"] == 1e-3 and m.op_kwargs["bg_weight"] == 5e-4
    assert m.op_kwargs["attention_weight"] == 1e-3 and m.global_weight == 5e-6
    b = FGDLoss.from_preset("distillbev", 8, 8, spatial_adapter=True)
    assert b.op_kwargs["fg_weight"] == 1.5e-3 and b.op_kwargs["bg_weight"] == 4e-2
    assert b.op_kwargs["channel_weight"] == 0.25 and b.spatial_weight == 2.5e-3
    assert b.op_kwargs["spatial_attention"] == "combined" and b.global_blocks is None
    with pytest.raises(ValueError, match="unknown preset"):
        FGDLoss.from_preset("kd", 8, 8)


def test_multi_level_with_adapters_matches_reference(gen):
    """Two levels, one with a channel adapter, masks from boxes per level: the
    module's terms are the sums of the reference op over levels."""
    torch.manual_seed(0)
    m = FGDLoss.from_preset("fgd", [6, 8], [8, 8]).double()
    s = [
        torch.randn(2, 6, 14, 14, generator=gen, dtype=torch.float64, requires_grad=True),
        torch.randn(2, 8, 7, 7, generator=gen, dtype=torch.float64, requires_grad=True),
    ]
    t = [
        torch.randn(2, 8, 14, 14, generator=gen, dtype=torch.float64),
        torch.randn(2, 8, 7, 7, generator=gen, dtype=torch.float64),
    ]
    out = m(s, t, boxes=_boxes(), img_shape=(224, 224))
    assert set(out) == {"loss_fg", "loss_bg", "loss_attention", "loss_channel", "loss_spatial", "loss_global"}
    want = {k: 0.0 for k in out}
    kw = {k: v for k, v in PRESETS["fgd"].items() if k != "global_weight"}
    for i in range(2):
        sa = m.adapters[i](s[i])
        fg, bg = R.fgd_masks_from_boxes(_boxes(), (224, 224), sa.shape[2:])
        ref = R.fgd_loss(sa, t[i], fg.double(), bg.double(), **kw)
        for k in ref:
            want[k] = want[k] + ref[k]
        want["loss_global"] = (
            want["loss_global"] + 5e-6 * ((m.global_blocks[i](sa) - m.global_blocks[i](t[i])) ** 2).sum() / 2
        )
    for k in out:
        torch.testing.assert_close(out[k], torch.as_tensor(want[k], dtype=torch.float64), rtol=1e-9, atol=1e-15)
    total = sum(out.values())
    total.backward()
    assert s[0].grad is not None and m.adapters[0].weight.grad is not None
    assert m.global_blocks[0].conv_mask.weight.grad is not None


def test_spatial_adapter_and_region_weights(gen):
    m = FGDLoss.from_preset("distillbev", 4, 4, spatial_adapter=True, region_weights={"tp": 2.0, "tn": 0.5})
    s = torch.randn(2, 4, 8, 8, generator=gen, requires_grad=True)
    t = torch.randn(2, 4, 8, 8, generator=gen)
    fg = torch.rand(2, 8, 8, generator=gen)
    bg = 1.0 - fg
    th, gh = torch.rand(2, 3, 16, 16, generator=gen), torch.rand(2, 3, 16, 16, generator=gen)
    out = m(s, t, fg_mask=fg, bg_mask=bg, teacher_heatmap=th, gt_heatmap=gh)
    r = hcam_ops.distill.region_weights(th, gh, 0.1, {"tp": 2.0, "tn": 0.5})
    r = torch.nn.functional.interpolate(r[:, None], size=(8, 8), mode="nearest")
    kw = {k: v for k, v in PRESETS["distillbev"].items() if k not in ("global_weight", "spatial_weight")}
    ref = R.fgd_loss(s, t, fg[:, None] * r, bg[:, None] * r, **kw)
    torch.testing.assert_close(out["loss_fg"], ref["loss_fg"])
    torch.testing.assert_close(out["loss_bg"], ref["loss_bg"])
    pooled = m.spatial_adapters[0](s.mean(1, keepdim=True))
    torch.testing.assert_close(out["loss_spatial"], 2.5e-3 * (t.mean(1, keepdim=True) - pooled).abs().sum() / 2)
    sum(out.values()).backward()
    assert m.spatial_adapters[0].weight.grad is not None


def test_gc_block_starts_as_identity_and_learns(gen):
    block = GcBlock(6)
    x = torch.randn(2, 6, 5, 4, generator=gen)
    torch.testing.assert_close(block(x), x)
    ctx = block.context(x)
    w = torch.softmax(block.conv_mask(x).flatten(2), -1)  # [B, 1, HW]
    torch.testing.assert_close(ctx.flatten(1), (x.flatten(2) * w).sum(-1))


def test_bad_module_input(gen):
    m = FGDLoss(4, 4)
    s = torch.randn(1, 4, 5, 5, generator=gen)
    with pytest.raises(ValueError, match="needs boxes and img_shape"):
        m(s, s)
    with pytest.raises(ValueError, match="give both"):
        m(s, s, fg_mask=torch.ones(1, 5, 5))
    with pytest.raises(ValueError, match="levels"):
        FGDLoss([4, 4], [4])
