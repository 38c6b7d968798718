"""hcam_ops.nn.AttentionPool2d, CLIP's attention pool that returns its
attention: against torch's multi_head_attention_forward called as CLIP
(openai/CLIP clip/model.py) and BiT-Align's locate model call it, in float64."""

import pytest
import torch
import torch.nn.functional as F

from hcam_ops._cli import InputError
from hcam_ops.nn import AttentionPool2d


def _pool(gen, spatial=(3, 4), embed_dim=12, heads=3, output_dim=5):
    torch.manual_seed(0)
    pool = AttentionPool2d(spatial, embed_dim, heads, output_dim).double()
    for p in pool.parameters():  # biases start at zero in nn.Linear's init: make every term count
        p.data = torch.randn(p.shape, generator=gen, dtype=torch.float64) * 0.5
    return pool


def _published(pool, x):
    """The module as CLIP and BiT-Align run it: every token a query,
    weights per head (average_attn_weights=False; BiT-Align's call leaves the
    default, which averages them). Returns (pooled x[0], [B, heads, L, L])."""
    t = x.flatten(2).permute(2, 0, 1)  # (HW)NC
    t = torch.cat([t.mean(0, keepdim=True), t], 0) + pool.positional_embedding[:, None]
    out, att = F.multi_head_attention_forward(
        query=t,
        key=t,
        value=t,
        embed_dim_to_check=t.shape[-1],
        num_heads=pool.num_heads,
        q_proj_weight=pool.q_proj.weight,
        k_proj_weight=pool.k_proj.weight,
        v_proj_weight=pool.v_proj.weight,
        in_proj_weight=None,
        in_proj_bias=torch.cat([pool.q_proj.bias, pool.k_proj.bias, pool.v_proj.bias]),
        bias_k=None,
        bias_v=None,
        add_zero_attn=False,
        dropout_p=0.0,
        out_proj_weight=pool.c_proj.weight,
        out_proj_bias=pool.c_proj.bias,
        use_separate_proj_weight=True,
        training=False,
        need_weights=True,
        average_attn_weights=False,
    )
    return out[0], att


@pytest.mark.parametrize("spatial", [(3, 4), 4])
def test_pooled_vector_and_attention_equal_torchs_multi_head_attention(gen, spatial):
    pool = _pool(gen, spatial)
    H, W = (spatial, spatial) if isinstance(spatial, int) else spatial
    x = torch.randn(2, 12, H, W, generator=gen, dtype=torch.float64)
    pooled, attn = pool(x, return_attention=True)
    want_pooled, att = _published(pool, x)
    assert attn.shape == (2, 3, H, W) and pooled.shape == (2, 5)
    torch.testing.assert_close(pooled, want_pooled, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(attn, att[:, :, 0, 1:].reshape(2, 3, H, W), rtol=1e-12, atol=1e-14)
    # BiT-Align's image_features_attn: the heads' average, row 0, columns 1:.
    torch.testing.assert_close(attn.mean(1), att.mean(1)[:, 0, 1:].reshape(2, H, W), rtol=1e-12, atol=1e-14)
    # The pooled token's weight on itself is the rest of each head's softmax.
    torch.testing.assert_close(attn.flatten(2).sum(-1) + att[:, :, 0, 0], torch.ones(2, 3, dtype=torch.float64))
    torch.testing.assert_close(pool(x), pooled, rtol=0, atol=0)


def test_parameter_names_are_clips(gen):
    pool = _pool(gen, 4, 12, 3, None)
    assert sorted(pool.state_dict()) == sorted(
        ["positional_embedding"] + [f"{p}_proj.{w}" for p in "qkvc" for w in ("weight", "bias")]
    )
    assert pool.positional_embedding.shape == (17, 12) and pool.c_proj.out_features == 12


def test_bad_input_is_named(gen):
    pool = _pool(gen)
    with pytest.raises(InputError, match=r"^x: expected a 3 x 4 map \(the positional embedding's\), got 4 x 3$"):
        pool(torch.randn(1, 12, 4, 3, dtype=torch.float64))
    with pytest.raises(InputError, match=r"^x: expected 12 channels, got 8$"):
        pool(torch.randn(1, 8, 3, 4, dtype=torch.float64))
    with pytest.raises(InputError, match=r"^x: expected a feature map \[B, C, H, W\]"):
        pool(torch.randn(12, 3, 4, dtype=torch.float64))
    with pytest.raises(InputError, match=r"^num_heads: must divide embed_dim 12, got 5$"):
        AttentionPool2d(3, 12, 5)
    with pytest.raises(InputError, match=r"^spatial_dim: must be positive"):
        AttentionPool2d(0, 12, 3)
