"""The seed 002's attention masks (hcam_ops.cam: cls_attention,
pool_attention, binarize_at_mean, head selection, fuse_masks): the
attention read back against a plain computation from the weights (float64),
the mask rule on planted maps, the head selection on planted heads, and the
fusion against a transcription of LOCATE's and BiT-Align's models/locate.py."""

import pytest

pytest.importorskip("timm", reason="the timm package is not installed here")
import timm  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

from hcam_ops._cli import InputError  # noqa: E402
from hcam_ops.cam import (  # noqa: E402
    attention_masks,
    binarize_at_mean,
    cls_attention,
    fuse_masks,
    mask_iou,
    masked_similarity,
    normalize_minmax,
    pool_attention,
    select_heads,
)
from hcam_ops.cam.pool_attention import timm_pool_weights  # noqa: E402
from hcam_ops.nn import AttentionPool2d  # noqa: E402


def _vit(**kw):
    torch.manual_seed(0)
    return timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=64, depth=3, **kw).double().eval()


def _block_input(model, x):
    """What the last block's attention receives (its norm1 output)."""
    seen = []
    handle = model.blocks[-1].attn.register_forward_pre_hook(lambda m, args: seen.append(args[0]))
    with torch.no_grad():
        model(x)
    handle.remove()
    return seen[0]


# -- cls_attention -----------------------------------------------------------------------


@pytest.mark.parametrize("reg_tokens", [0, 2])
def test_cls_attention_is_the_last_blocks_class_row_from_its_q_k_weights(gen, reg_tokens):
    model = _vit(reg_tokens=reg_tokens)
    x = torch.randn(2, 3, 64, 64, generator=gen, dtype=torch.float64)
    got = cls_attention(model, x)
    attn = model.blocks[-1].attn
    t = _block_input(model, x)  # [B, N, C]
    B, N, C = t.shape
    heads, d = attn.num_heads, C // attn.num_heads
    w, b = attn.qkv.weight, attn.qkv.bias
    q = (t @ w[:C].T + b[:C]).view(B, N, heads, d).transpose(1, 2)
    k = (t @ w[C : 2 * C].T + b[C : 2 * C]).view(B, N, heads, d).transpose(1, 2)
    weights = torch.softmax(q @ k.transpose(-2, -1) / d**0.5, dim=-1)
    prefix = 1 + reg_tokens
    assert model.num_prefix_tokens == prefix and N == prefix + 16
    want = weights[:, :, 0, prefix:].reshape(B, heads, 4, 4)
    assert got.shape == (2, 3, 4, 4) and got.dtype == torch.float64
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-15)
    assert attn.fused_attn is True  # switched back after the read


def test_cls_attention_errors(gen):
    x = torch.randn(1, 3, 16, 16, generator=gen)
    with pytest.raises(InputError, match=r"^model: no timm attention block \(\*attn.attn_drop\) in this Conv2d$"):
        cls_attention(nn.Conv2d(3, 4, 3), x)
    with pytest.raises(InputError, match=r"^images: expected a batch \[B, 3, H, W\]"):
        cls_attention(_vit(), x[0])
    with pytest.raises(InputError, match=r"^num_prefix_tokens: must be in \[1, 17\) tokens, got 0$"):
        cls_attention(_vit(), torch.randn(1, 3, 64, 64, generator=gen).double(), num_prefix_tokens=0)


# -- pool_attention ----------------------------------------------------------------------


@pytest.mark.parametrize("qkv_separate, class_token", [(True, False), (False, False), (False, True)])
def test_timm_pool_weights_rebuild_timms_pooled_output(gen, qkv_separate, class_token):
    """timm's AttentionPool2d hands its weights to nothing; ours recomputed
    from its parameters give back its own output (its v and proj on them),
    on a map of another size than its positional embedding's."""
    from timm.layers import AttentionPool2d as TimmPool

    torch.manual_seed(0)
    pool = TimmPool(16, feat_size=3, num_heads=4, qkv_separate=qkv_separate, class_token=class_token).double().eval()
    for p in pool.parameters():
        p.data = torch.randn(p.shape, generator=gen, dtype=torch.float64) * 0.3
    x = torch.randn(2, 16, 4, 5, generator=gen, dtype=torch.float64)
    with torch.no_grad():
        want = pool(x)
        weights = timm_pool_weights(pool, x)  # [B, heads, 1 + HW]
        tokens = x.flatten(2).transpose(1, 2)
        first = pool.cls_token.expand(2, -1, -1) if class_token else tokens.mean(1, keepdim=True)
        from timm.layers import resample_abs_pos_embed

        pos = resample_abs_pos_embed(pool.pos_embed.unsqueeze(0), (4, 5), old_size=(3, 3), num_prefix_tokens=1)
        pool_tokens = torch.cat([first, tokens], 1) + pos
        v = pool.v(pool_tokens) if qkv_separate else F.linear(pool_tokens, pool.qkv.weight[32:], pool.qkv.bias[32:])
        v = v.view(2, 21, 4, 4).transpose(1, 2)
        got = pool.proj((weights.unsqueeze(2) @ v).reshape(2, 16))
    assert weights.shape == (2, 4, 21)
    torch.testing.assert_close(weights.sum(-1), torch.ones(2, 4, dtype=torch.float64))
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


class _Pooled(nn.Module):
    """A conv stem and our pool: a model whose forward runs the pool."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 4, stride=4)
        self.pool = AttentionPool2d(4, 8, 2, 3)

    def forward(self, x):
        return self.pool(self.stem(x))


def test_pool_attention_reads_the_pool_on_the_map_it_receives(gen):
    torch.manual_seed(0)
    model = _Pooled().double().train()
    x = torch.randn(2, 3, 16, 16, generator=gen, dtype=torch.float64)
    got = pool_attention(model, x)
    with torch.no_grad():
        want = model.pool(model.stem(x), return_attention=True)[1]
    torch.testing.assert_close(got, want, rtol=0, atol=0)
    assert got.shape == (2, 2, 4, 4) and model.training  # the mode is given back
    with pytest.raises(InputError, match=r"^model: no AttentionPool2d \(ours or timm's\) in this Conv2d$"):
        pool_attention(nn.Conv2d(3, 3, 1), x)
    model.forward = lambda x: model.stem(x)
    with pytest.raises(InputError, match=r"^model: its forward never ran its attention pool 'pool'$"):
        pool_attention(model, x)


# -- the mask rule -----------------------------------------------------------------------


def test_binarize_at_mean_on_planted_maps():
    maps = torch.tensor([[[0.0, 1.0], [1.0, 2.0]], [[3.0, 3.0], [3.0, 3.0]], [[0.5, 0.1], [0.2, 0.3]]])
    # mean 1 (both 1s tie and stay 0), a constant map (all at the mean), mean 0.275
    want = torch.tensor([[[0.0, 0.0], [0.0, 1.0]], [[0.0, 0.0], [0.0, 0.0]], [[1.0, 0.0], [0.0, 1.0]]])
    assert torch.equal(binarize_at_mean(maps), want)
    assert torch.equal(binarize_at_mean(maps[0].double()), want[0].double())


def test_binarize_at_mean_per_map_of_any_batch_shape(gen):
    maps = torch.rand(2, 3, 5, 6, generator=gen, dtype=torch.float64) + 0.1
    got = binarize_at_mean(maps)
    assert got.dtype == torch.float64
    for b in range(2):
        for k in range(3):
            m = maps[b, k]
            assert torch.equal(got[b, k], (m > m.sum() / 30).double())


def test_binarize_at_mean_errors():
    with pytest.raises(InputError, match=r"^maps: expected a floating tensor, got torch.int64$"):
        binarize_at_mean(torch.ones(3, 3, dtype=torch.int64))
    with pytest.raises(InputError, match=r"^maps: expected \[\.\.\., h, w\] maps, got shape \(4,\)$"):
        binarize_at_mean(torch.ones(4))
    with pytest.raises(InputError, match=r"^maps: empty maps"):
        binarize_at_mean(torch.ones(2, 0, 3))


# -- head selection ----------------------------------------------------------------------


def _planted_masks(gen, B=3, heads=4, h=5, w=6):
    masks = binarize_at_mean(torch.rand(B, heads, h, w, generator=gen, dtype=torch.float64) + 0.1)
    assert (masks.flatten(2).sum(-1) > 0).all()
    return masks


def test_iou_guidance_picks_the_planted_head(gen):
    masks = _planted_masks(gen)
    planted = torch.tensor([2, 0, 3])
    guide = masks[torch.arange(3), planted].clone()
    scores = mask_iou(masks, guide)
    assert torch.equal(select_heads(scores), planted)
    assert torch.equal(scores[torch.arange(3), planted], torch.ones(3, dtype=torch.float64))
    inter = (masks[0, 1] * guide[0]).sum()
    torch.testing.assert_close(scores[0, 1], inter / (masks[0, 1].sum() + guide[0].sum() - inter))
    empty = torch.zeros(1, 2, 2, 2, dtype=torch.float64)
    assert torch.equal(mask_iou(empty, empty[:, 0]), torch.ones(1, 2, dtype=torch.float64))


def test_text_similarity_guidance_is_bitaligns_and_picks_the_planted_head(gen):
    B, heads, C = 2, 4, 6
    masks = _planted_masks(gen, B, heads)
    query = torch.randn(B, C, generator=gen, dtype=torch.float64)
    features = 0.3 * torch.randn(B, C, 5, 6, generator=gen, dtype=torch.float64)
    planted = torch.tensor([1, 3])
    # Where the planted head's mask is on, the features point along the query.
    features = features + 2 * masks[torch.arange(B), planted][:, None] * query[:, :, None, None]
    scores = masked_similarity(masks, features, query)
    # BiT-Align's loop: ego_proj_cls_attn = mask_i * pre_ego, its mean over
    # the positions, cosine with text_f.
    want = torch.zeros(B, heads, dtype=torch.float64)
    for i in range(heads):
        weighted = (masks[:, i].unsqueeze(1) * features).flatten(-2, -1).permute(0, 2, 1)
        want[:, i] = F.cosine_similarity(query, weighted.mean(dim=1), dim=-1)
    torch.testing.assert_close(scores, want, rtol=1e-12, atol=1e-14)
    assert torch.equal(select_heads(scores), planted)


def test_select_heads_ties_and_errors():
    assert select_heads(torch.tensor([[0.5, 0.9, 0.9], [0.2, 0.2, 0.1]])).tolist() == [1, 0]
    with pytest.raises(InputError, match=r"^scores: must be finite$"):
        select_heads(torch.tensor([[0.5, float("nan")]]))
    with pytest.raises(InputError, match=r"^scores: expected \[B, heads\] scores"):
        select_heads(torch.ones(3))


# -- fusion ------------------------------------------------------------------------------


def _locate_normalize_minmax(cams, eps=1e-15):
    """LOCATE's models/model_util.py normalize_minmax, transcribed."""
    B = cams.shape[0]
    lo = cams.view(B, -1).min(1)[0]
    out = cams - lo.view(B, 1, 1)
    hi = out.view(B, -1).max(1)[0]
    out /= hi.view(B, 1, 1) + eps
    return out


def _bitalign_ego_sam(pool_map, ego_cls_map, head_idxs):
    """BiT-Align's models/locate.py from the two maps to ego_sam,
    transcribed: both binarised at their mean, every head's mask min-max
    normalised in place, then the fusion with ego_cls_attn[:, head_idxs]."""
    pool_mask = (pool_map > pool_map.flatten(-2, -1).mean(-1, keepdim=True).unsqueeze(-1)).double()
    ego = (ego_cls_map > ego_cls_map.flatten(-2, -1).mean(-1, keepdim=True).unsqueeze(-1)).double()
    for head in range(ego.size(1)):
        ego[:, head, :, :] = _locate_normalize_minmax(ego[:, head, :, :])
    return _locate_normalize_minmax(0.5 * pool_mask + 0.5 * ego[:, head_idxs].mean(1))


def test_fusion_equals_bitaligns_transcription(gen):
    B, heads = 3, 4
    pool_map = torch.rand(B, 5, 6, generator=gen, dtype=torch.float64) + 0.1
    ego_map = torch.rand(B, heads, 5, 6, generator=gen, dtype=torch.float64) + 0.1
    head_idxs = torch.tensor([2, 0, 2])
    masks, pool_mask = binarize_at_mean(ego_map), binarize_at_mean(pool_map)
    published = _bitalign_ego_sam(pool_map, ego_map, head_idxs)
    # Taken literally, every image averages the heads chosen for the batch.
    coupled = fuse_masks(masks, head_idxs, pool_mask, batch_coupled=True)
    torch.testing.assert_close(coupled, published, rtol=1e-13, atol=1e-14)
    # Ours by default: each image its own head, = the transcription image by image.
    own = fuse_masks(masks, head_idxs, pool_mask)
    for b in range(B):
        one = _bitalign_ego_sam(pool_map[b : b + 1], ego_map[b : b + 1], head_idxs[b : b + 1])
        torch.testing.assert_close(own[b : b + 1], one, rtol=1e-13, atol=1e-14)
    assert not torch.allclose(own, coupled)  # the planted batch tells them apart
    # Masks of 0 / 1 fuse to 0, 0.5, 1 (LOCATE's eps: 1 / (1 + 1e-15) in float64).
    torch.testing.assert_close(own, (own * 2).round() / 2, rtol=0, atol=1e-14)
    assert own.max() > 1 - 1e-14 and own.min() == 0


def test_fusion_equals_locates_transcription(gen):
    """LOCATE: ego_sam = normalize_minmax(binary masks of heads [0, 1, 3], averaged)."""
    ego_map = torch.rand(2, 6, 4, 4, generator=gen, dtype=torch.float64) + 0.1
    masks = binarize_at_mean(ego_map)
    ego_cls_attn = (ego_map > ego_map.flatten(-2, -1).mean(-1, keepdim=True).unsqueeze(-1)).double()
    want = _locate_normalize_minmax(ego_cls_attn[:, [0, 1, 3]].mean(1))
    torch.testing.assert_close(fuse_masks(masks, [0, 1, 3]), want, rtol=0, atol=0)
    assert torch.equal(normalize_minmax(torch.full((1, 2, 2), 7.0)), torch.zeros(1, 2, 2))


def test_fusion_errors(gen):
    masks = _planted_masks(gen, 2, 3)
    with pytest.raises(InputError, match=r"^heads: 3 is not one of the 3 heads$"):
        fuse_masks(masks, [0, 3])
    with pytest.raises(InputError, match=r"^heads: expected \[2\] int64 head indices"):
        fuse_masks(masks, torch.tensor([0, 1, 2]))
    with pytest.raises(InputError, match=r"^heads: expected head indices, got \[\]$"):
        fuse_masks(masks, [])
    with pytest.raises(InputError, match=r"^head_masks: expected binary masks"):
        fuse_masks(masks * 0.5, [0])
    with pytest.raises(InputError, match=r"^pool_mask: expected shape \(2, 5, 6\), got \(2, 5, 5\)$"):
        fuse_masks(masks, [0], torch.zeros(2, 5, 5, dtype=torch.float64))
    with pytest.raises(InputError, match=r"^pool_weight: must be in \[0, 1\], got 2$"):
        fuse_masks(masks, [0], pool_weight=2)


# -- both attentions of one model (BiT-Align's layout) -----------------------------------


class _ViTWithPool(nn.Module):
    """A tiny timm ViT and our pool on its patch tokens, as BiT-Align's
    locate model puts an AttentionPool2d on DINO's patch features."""

    def __init__(self):
        super().__init__()
        self.vit = _vit()
        self.pool = AttentionPool2d(4, 192, 4, 8).double()

    def forward(self, x):
        tokens = self.vit.forward_features(x)[:, self.vit.num_prefix_tokens :]
        return self.pool(tokens.transpose(1, 2).reshape(x.shape[0], 192, 4, 4))


def test_attention_masks_fuses_both_as_bitalign(gen):
    model = _ViTWithPool().eval()
    x = torch.randn(2, 3, 64, 64, generator=gen, dtype=torch.float64)
    out = attention_masks(model, x, "clsattention")
    assert torch.equal(out.cls_maps, cls_attention(model, x))
    assert torch.equal(out.pool_maps, pool_attention(model, x))
    assert torch.equal(out.pool_mask, binarize_at_mean(out.pool_maps.mean(1)))
    assert torch.equal(out.scores, mask_iou(out.cls_masks, out.pool_mask))
    assert torch.equal(out.heads, select_heads(out.scores))
    assert torch.equal(out.fused, fuse_masks(out.cls_masks, out.heads, out.pool_mask))
    fixed = attention_masks(model, x, "attnpool", heads=[0, 2])
    assert fixed.heads == [0, 2] and fixed.scores is None
    assert torch.equal(fixed.fused, fuse_masks(out.cls_masks, [0, 2], out.pool_mask))


def test_attention_masks_with_one_attention_and_errors(gen):
    vit = _vit()
    x = torch.randn(1, 3, 64, 64, generator=gen, dtype=torch.float64)
    out = attention_masks(vit, x)
    guide = binarize_at_mean(out.cls_maps.mean(1))  # the heads' consensus, without a pool
    assert torch.equal(out.heads, select_heads(mask_iou(out.cls_masks, guide)))
    assert torch.equal(out.fused, fuse_masks(out.cls_masks, out.heads))
    assert out.pool_maps is None and out.pool_mask is None
    scores = torch.tensor([[0.1, 0.7, 0.3]], dtype=torch.float64)
    assert attention_masks(vit, x, scores=scores).heads.tolist() == [1]
    with pytest.raises(InputError, match=r"^model: attnpool needs an AttentionPool2d"):
        attention_masks(vit, x, "attnpool")
    with pytest.raises(InputError, match=r"^heads: give heads or scores, not both$"):
        attention_masks(vit, x, heads=[0], scores=scores)
    with pytest.raises(InputError, match=r"^scores: expected shape \(1, 3\)"):
        attention_masks(vit, x, scores=scores[:, :2])
    pooled = _Pooled().double()
    only_pool = attention_masks(pooled, x[:, :, :16, :16], "attnpool")
    assert torch.equal(only_pool.fused, only_pool.pool_mask) and only_pool.cls_maps is None
    with pytest.raises(InputError, match=r"^model: cls-attention needs a timm ViT-style attention block"):
        attention_masks(pooled, x[:, :, :16, :16], "clsattention")
    with pytest.raises(InputError, match=r"^heads: the model has no class-token heads to choose$"):
        attention_masks(pooled, x[:, :, :16, :16], "attnpool", heads=[0])
