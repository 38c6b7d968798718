"""hcam_ops/ops/_constants.py holds the C++ side's values: each one is checked
here against what the kernels enforce or produce."""

import pytest
import torch

from hcam_ops.ops import _constants as K

FGD_ARGS = (1.0, 0.5, [1.0] * K.FGD_NUM_TERMS, 0, 0.5, False, False)


def _fgd_inputs(B=2, C=3, H=4, W=5):
    gen = torch.Generator().manual_seed(0)
    s, t = (torch.randn(B, C, H, W, generator=gen) for _ in range(2))
    fg = torch.rand(B, H, W, generator=gen)
    return s, t, fg, 1 - fg


def _cam_kl(levels):
    x = torch.randn(2, 4, 3)
    idx = torch.zeros(2, dtype=torch.int64)
    return torch.ops.hcam_ops.cam_kl(x, [torch.randn(2, 3)] * levels, [idx] * levels, 1.0, 1e-6, "fine_to_coarse")


def test_max_levels():
    _cam_kl(K.MAX_LEVELS)
    with pytest.raises(RuntimeError, match=f"needs 2 to {K.MAX_LEVELS} levels, got {K.MAX_LEVELS + 1}"):
        _cam_kl(K.MAX_LEVELS + 1)


def test_fgd_num_terms():
    s, t, fg, bg = _fgd_inputs()
    with pytest.raises(RuntimeError, match=f"weights must hold {K.FGD_NUM_TERMS} values"):
        torch.ops.hcam_ops.fgd_loss(s, t, fg, bg, None, 1.0, 0.5, [1.0] * (K.FGD_NUM_TERMS - 1), 0, 0.5, False, False)
    terms, *_ = torch.ops.hcam_ops.fgd_loss(s, t, fg, bg, None, *FGD_ARGS)
    assert terms.shape == (K.FGD_NUM_TERMS,)


def test_fgd_statistics_sizes():
    s, t, fg, bg = _fgd_inputs(B=2, C=3, H=4, W=5)
    _, col, row, sample = torch.ops.hcam_ops.fgd_loss(s, t, fg, bg, None, *FGD_ARGS)
    assert col.shape == (2, K.FGD_NUM_COL, 20)
    assert row.shape == (2, K.FGD_NUM_ROW, 3)
    assert sample.shape == (2, K.FGD_NUM_SAMPLE)
    with pytest.raises(RuntimeError, match="saved statistics do not match"):
        torch.ops.hcam_ops.fgd_loss_backward(
            torch.ones(K.FGD_NUM_TERMS), s, t, fg, bg, None, col, row, sample[:, :-1], *FGD_ARGS
        )
