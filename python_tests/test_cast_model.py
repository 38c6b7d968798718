"""CAST / H-CAST as published: state-dict parity with the published models
(names and shapes held as data), the forward against a plain transcription of
the published computation, the heads-on-stages contract, CAST's seed rule,
padding, timm conventions, checkpoints, CASTWithCAM."""

import argparse
import json
import os

import pytest

pytest.importorskip("timm", reason="the timm package is not installed here")
import timm  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import hcam_ops  # noqa: E402
from hcam_ops.models import CAST, CASTWithCAM, cast_seeds, clusters_to_grid, split_outputs  # noqa: E402

PUBLISHED = os.path.join(os.path.dirname(__file__), "data", "cast_published_state_dicts.json")
TINY = dict(img_size=64, embed_dim=48, depths=(1, 1, 1, 1), num_heads=4, num_clusters=(8, 4, 2, 1))


def _voronoi(B, size, counts, gen):
    """Superpixels as Voronoi cells of random sites: ids 0..n-1 per image."""
    ys, xs = torch.meshgrid(
        torch.arange(size, dtype=torch.float32), torch.arange(size, dtype=torch.float32), indexing="ij"
    )
    out = []
    for b in range(B):
        sites = torch.rand(counts[b % len(counts)], 2, generator=gen) * size
        d = (ys[..., None] - sites[:, 0]) ** 2 + (xs[..., None] - sites[:, 1]) ** 2
        out.append(d.argmin(-1))
    return torch.stack(out)


def _tiny(num_classes=(6, 4, 2), cls=CAST, **kw):
    torch.manual_seed(0)
    m = cls(num_classes=num_classes, **{**TINY, "pool_drop_rate": 0.0, **kw})
    # Non-trivial norms and BatchNorm statistics, so that a wrong wiring shows.
    g = torch.Generator().manual_seed(5)
    for mod in m.modules():
        if isinstance(mod, (torch.nn.LayerNorm, torch.nn.BatchNorm2d)):
            mod.weight.data = 0.7 + 0.6 * torch.rand(mod.weight.shape, generator=g)
            mod.bias.data = 0.1 * torch.randn(mod.bias.shape, generator=g)
        if isinstance(mod, torch.nn.BatchNorm2d):
            mod.running_mean = 0.1 * torch.randn(mod.running_mean.shape, generator=g)
            mod.running_var = 0.5 + torch.rand(mod.running_var.shape, generator=g)
    return m


# -- state-dict parity ---------------------------------------------------------------


def _published():
    with open(PUBLISHED) as f:
        return json.load(f)["configs"]


@pytest.mark.parametrize("key", sorted(_published()))
def test_state_dict_names_and_shapes_are_the_published_ones(key):
    rec = _published()[key]
    nc = rec["num_classes"] if len(rec["num_classes"]) > 1 else rec["num_classes"][0]
    with torch.device("meta"):  # shapes only: no memory, no init cost
        model = timm.create_model(rec["model"], num_classes=nc, img_size=rec["img_size"])
    ours = [[k, list(v.shape)] for k, v in model.state_dict().items()]
    theirs = rec["state_dict"]
    assert len(ours) == len(theirs)
    mismatched = [(a, b) for a, b in zip(ours, theirs) if a != b]
    assert mismatched == []  # same names, shapes and order
    assert sum(p.numel() for p in model.parameters()) == rec["parameters"]
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == rec["trainable"]


# -- the forward against a plain transcription of the published computation -----


def _attention(sd, p, x, heads):
    B, N, C = x.shape
    qkv = (x @ sd[p + "qkv.weight"].T + sd[p + "qkv.bias"]).reshape(B, N, 3, heads, C // heads).permute(2, 0, 3, 1, 4)
    q, k, v = qkv[0], qkv[1], qkv[2]
    a = torch.softmax(q @ k.transpose(-2, -1) * (C // heads) ** -0.5, dim=-1)
    return (a @ v).transpose(1, 2).reshape(B, N, C) @ sd[p + "proj.weight"].T + sd[p + "proj.bias"]


def _ln(sd, p, x, eps):
    return F.layer_norm(x, x.shape[-1:], sd[p + "weight"], sd[p + "bias"], eps)


def _dgl_fps(points, k):
    """DGL's CPU farthest point sampler from index 0 (first maximum wins)."""
    picks, idx = [0], 0
    dist = None
    for _ in range(k - 1):
        d = ((points - points[idx]) ** 2).sum(-1)
        dist = d if dist is None else torch.minimum(dist, d)
        idx = int(torch.argmax(dist))
        picks.append(idx)
    return picks


def _published_forward(sd, x, seg, depths, clusters, heads):
    """ngocquanai/HiOT@b1a222bb cast_deit_hier.py + graph_pool.py, eval mode,
    written out with plain tensor ops on the state dict."""
    h = x
    for conv, bn, stride in ((0, 1, 2), (3, 4, 2), (6, 7, 2), (9, 10, 1)):
        h = F.conv2d(h, sd[f"patch_embed.proj.{conv}.weight"], stride=stride, padding=1)
        b = f"patch_embed.proj.{bn}."
        h = F.relu(F.batch_norm(h, sd[b + "running_mean"], sd[b + "running_var"], sd[b + "weight"], sd[b + "bias"]))
    feat = F.conv2d(h, sd["patch_embed.proj.12.weight"], sd["patch_embed.proj.12.bias"]).permute(0, 2, 3, 1)
    B, gh, gw, C = feat.shape
    y = F.interpolate(seg[:, None].float(), (gh, gw), mode="nearest")[:, 0].long().reshape(B, -1)
    member = F.one_hot(y, int(y.max()) + 1).float()  # [B, cells, S]
    count = member.sum(1)
    pos = sd["pos_embed"]
    tokens = (member.transpose(1, 2) @ (feat.reshape(B, -1, C) + pos[:, 1:])) / count.clamp_min(1)[..., None]
    padded = count <= 0.5
    cls = sd["cls_token"].expand(B, -1, -1) + pos[:, :1]
    outs, first = {}, 0
    for stage in range(1, 5):
        z = torch.cat([cls, tokens], 1)
        for j in range(first, first + depths[stage - 1]):
            p = f"blocks.{j}."
            z = z + _attention(sd, p + "attn.", _ln(sd, p + "norm1.", z, 1e-6), heads)
            m = _ln(sd, p + "norm2.", z, 1e-6) @ sd[p + "mlp.fc1.weight"].T + sd[p + "mlp.fc1.bias"]
            z = z + F.gelu(m) @ sd[p + "mlp.fc2.weight"].T + sd[p + "mlp.fc2.bias"]
        first += depths[stage - 1]
        cls, src = z[:, :1], z[:, 1:]
        outs[stage] = _ln(sd, "norm.", cls[:, 0], 1e-6) if stage == 4 else cls[:, 0]
        p = f"pool{stage}.pool_block."
        valid = (~padded).float()[..., None]
        mean = (src * valid).sum(1, keepdim=True) / valid.sum(1, keepdim=True).clamp_min(1)
        filled = torch.where(padded[..., None], mean, src)
        pts = torch.cat([mean, filled], 1).double()
        seeds = torch.tensor([[i - 1 for i in _dgl_fps(pts[b], clusters[stage - 1] + 1)[1:]] for b in range(B)])
        node = src + _attention(sd, p + "centroid_fc.attn.", _ln(sd, p + "centroid_fc.norm.", src, 1e-6), heads)
        node = node - node.mean(1, keepdim=True) + sd[p + "centroid_fc.bias"]
        cent = torch.stack([node[b, seeds[b]] for b in range(B)])
        logit = 5 * F.normalize(node, dim=-1) @ F.normalize(cent, dim=-1).transpose(1, 2)
        assign = logit.softmax(-1)
        f1 = torch.cat([cls, src], 1)
        f1 = F.gelu(_ln(sd, p + "fc1.0.", f1, 1e-5) @ sd[p + "fc1.1.weight"].T + sd[p + "fc1.1.bias"])
        pooled = assign.transpose(1, 2) @ f1[:, 1:] / assign.sum(1)[..., None]
        f2 = torch.cat([f1[:, :1], pooled], 1)
        f2 = _ln(sd, p + "fc2.0.", f2, 1e-5) @ sd[p + "fc2.1.weight"].T + sd[p + "fc2.1.bias"]
        tokens = f2[:, 1:] + torch.stack([src[b, seeds[b]] for b in range(B)])
        cls = f2[:, :1] + cls
        padded = torch.zeros(B, tokens.shape[1], dtype=torch.bool)
    return outs


@pytest.mark.parametrize("levels", [(6, 4, 2), (6, 3), (5,)])
def test_logits_equal_a_transcription_of_the_published_forward(levels, gen):
    model = _tiny(levels).eval()
    x = torch.randn(3, 3, 64, 64, generator=gen)
    seg = _voronoi(3, 64, (30, 22, 12), gen)  # different counts: padding differs per image
    with torch.no_grad():
        logits, inter = split_outputs(model(x, seg, return_intermediates=True), len(levels))
        outs = _published_forward(model.state_dict(), x, seg, TINY["depths"], TINY["num_clusters"], TINY["num_heads"])
    assert inter["padding_mask1"].any()  # the case the published padding rules are about
    sd = model.state_dict()
    stages = {1: [4], 2: [3, 4], 3: [2, 3, 4]}[len(levels)]
    for lg, name, stage in zip(logits, ("head", "family_head", "manufacturer_head"), stages):
        want = outs[stage] @ sd[f"{name}.weight"].T + sd[f"{name}.bias"]
        torch.testing.assert_close(lg, want, rtol=1e-4, atol=1e-5)


# -- heads on stages -----------------------------------------------------------------


@pytest.mark.parametrize("levels", [(6, 4, 2), (6, 3), (5,)])
def test_each_level_reads_its_stage(levels, gen):
    """3 levels: species <- out2, family <- out3, manufacturer <- out4 (normed);
    2 levels: species <- out3, family <- out4; 1 level: out4. So changing the
    blocks of a later stage leaves the finer levels' logits as they were."""
    model = _tiny(levels).eval()
    stages = model.head_stages
    assert stages == {3: [2, 3, 4], 2: [3, 4], 1: [4]}[len(levels)]
    x, seg = torch.randn(2, 3, 64, 64, generator=gen), _voronoi(2, 64, (25, 18), gen)
    with torch.no_grad():
        logits, inter = split_outputs(model(x, seg, return_intermediates=True), len(levels))
        for head, lg, s in zip(model.heads, logits, stages):
            torch.testing.assert_close(lg, head(inter[f"out{s}"]))
        for stage in (2, 3, 4):
            for p in getattr(model, f"blocks{stage}").parameters():
                p.add_(0.05 * torch.randn(p.shape, generator=gen))
            after = split_outputs(model(x, seg, return_intermediates=True), len(levels))[0]
            for lg, new, s in zip(logits, after, stages):
                if s < stage:
                    torch.testing.assert_close(new, lg)  # reads an earlier stage
                else:
                    assert not torch.allclose(new, lg), (stage, s)
            logits = after
        # only the last level passes the final norm
        model.norm.weight.mul_(2.0)
        final = split_outputs(model(x, seg, return_intermediates=True), len(levels))[0]
        for lg, new, s in zip(logits, final, stages):
            assert torch.equal(new, lg) == (s != 4)


# -- seeds and padding ------------------------------------------------------------


def test_cast_seed_rule(gen):
    """Seeds: farthest point sampling (DGL's rule) from the mean of the valid
    tokens, padded tokens replaced by that mean, the mean itself dropped."""
    tokens = torch.randn(2, 12, 5, generator=gen)
    valid = torch.ones(2, 12, dtype=torch.bool)
    valid[1, 8:] = False
    got = cast_seeds(tokens, valid, 6)
    for b in range(2):
        v = valid[b, :, None].float()
        mean = (tokens[b] * v).sum(0, keepdim=True) / v.sum()
        pts = torch.cat([mean, torch.where(valid[b, :, None], tokens[b], mean)]).double()
        assert got[b].tolist() == [i - 1 for i in _dgl_fps(pts, 7)[1:]]
    assert valid[1][got[1]].all()  # padding is never a seed
    # fewer real tokens than seeds: the published code asserts; here they repeat the first seed
    some = torch.tensor([[True, True, True, False, False, False]])
    few = cast_seeds(tokens[:1, :6], some, 5)
    assert sorted(few[0, :3].tolist()) == [0, 1, 2] and few[0, 3:].tolist() == [few[0, 0].item()] * 2


def test_padding_tokens_and_fixed_token_count(gen):
    """Published: a batch has max id + 1 segment tokens, so an image's
    outputs depend on its batch mates' superpixel counts; num_segments fixes
    the count, and then they do not."""
    x = torch.randn(2, 3, 64, 64, generator=gen)
    seg = _voronoi(2, 64, (28, 12), gen)
    dyn = _tiny((6, 3)).eval()
    with torch.no_grad():
        out, _, inter = dyn(x, seg, return_intermediates=True)
        alone = dyn(x[1:], seg[1:])[0]
    n = int(seg.max()) + 1
    assert inter["padding_mask1"].shape == (2, n) and inter["padding_mask1"][1].sum() >= n - 12
    assert not torch.allclose(alone, out[1:])  # padding tokens attend (published)
    fixed = _tiny((6, 3), num_segments=40).eval()
    with torch.no_grad():
        both = fixed(x, seg)[0]
        torch.testing.assert_close(fixed(x[1:], seg[1:])[0], both[1:])
        fixed.num_segments = n  # the published count for this batch
        torch.testing.assert_close(fixed(x, seg)[0], out)
    with pytest.raises(IndexError):
        fixed.num_segments = 10
        fixed(x, seg)


# -- intermediates, CAM variant, gradients -------------------------------------------


def test_intermediates_and_cam_variant(gen):
    x, seg = torch.randn(2, 3, 64, 64, generator=gen), _voronoi(2, 64, (25, 20), gen)
    m3 = _tiny((6, 4, 2), CASTWithCAM).eval()
    out, family, manu, inter = m3(x, seg)
    assert (out.shape, family.shape, manu.shape) == ((2, 6), (2, 4), (2, 2))
    for i, k in zip(range(1, 5), TINY["num_clusters"]):
        assert inter[f"centroid{i}"].shape == (2, k, 48)
        assert inter[f"sampled_inds{i}"].shape == (2, k)
        assert inter[f"logit{i}"].shape[-1] == k and inter[f"out{i}"].shape == (2, 48)
        assert {f"block{i}", f"padding_mask{i}"} <= set(inter)
    m2 = _tiny((6, 3), CASTWithCAM).eval()
    assert len(m2(x, seg)) == 3 and isinstance(m2(x, seg)[-1], dict)
    assert isinstance(_tiny((6, 3))(x, seg), tuple) and _tiny((5,))(x, seg).shape == (2, 5)
    # a CAM on centroid1 maps back to the stem grid through the assignments and the ids
    cam = hcam_ops.cam_gather(inter["centroid1"], m3.head.weight, out.argmax(1))
    grid = clusters_to_grid(cam, inter)
    per_segment = (inter["logit1"].softmax(-1) @ cam.unsqueeze(-1)).squeeze(-1)
    ids = inter["segments"]
    assert grid.shape == (2, 8, 8)
    torch.testing.assert_close(grid[1, 3, 5], per_segment[1, ids[1, 3, 5]])


@pytest.mark.parametrize("levels", [(6, 4, 2), (6, 3), (5,)])
def test_gradients_reach_every_trainable_parameter_and_the_last_pooling_is_frozen(levels, gen):
    """So DDP needs no find_unused_parameters: every trainable parameter
    reaches the loss for 1, 2 and 3 levels; the last pooling is frozen."""
    m = _tiny(levels, pool_drop_rate=0.1)
    x, seg = torch.randn(4, 3, 64, 64, generator=gen), _voronoi(4, 64, (25, 20), gen)
    logits, inter = split_outputs(m(x, seg, return_intermediates=True), len(levels))
    loss = sum(lg.logsumexp(1).sum() for lg in logits)
    if len(levels) > 1:
        loss = loss + hcam_ops.cam_kl_loss(
            inter["centroid1"], m.head.weight, m.family_head.weight, logits[0].argmax(1), logits[1].argmax(1)
        )
    loss.backward()
    frozen = {n for n, p in m.named_parameters() if not p.requires_grad}
    assert frozen and all(n.startswith("pool4.") for n in frozen)
    assert [n for n, p in m.named_parameters() if p.requires_grad and p.grad is None] == []


# -- timm conventions, checkpoints -------------------------------------------------


def test_timm_conventions(gen):
    names = timm.list_models("cast_*")
    for n in ("cast_small", "cast_base", "cast_small_deep", "cast_base_deep", "cast_small_cam", "cast_base_cam"):
        assert n in names
    m = timm.create_model("cast_small", num_classes=(5, 3), drop_rate=0.1, drop_path_rate=0.2, **TINY)
    cfg = m.pretrained_cfg
    assert cfg["input_size"] == (3, 224, 224) and cfg["interpolation"] == "bicubic" and cfg["crop_pct"] == 0.875
    assert cfg["mean"] == (0.485, 0.456, 0.406) and cfg["first_conv"] == "patch_embed.proj.0"
    assert m.get_classifier() is m.head and m.no_weight_decay() == {"pos_embed", "cls_token"}
    assert m.blocks[3].drop_path1.drop_prob == pytest.approx(0.2) and m.pos_drop.p == 0.1
    assert m.blocks2[0] is m.blocks[1]  # the per-stage views alias the flat blocks
    m.reset_classifier((7, 4, 2))
    assert [h.out_features for h in m.heads] == [7, 4, 2] and m.head_stages == [2, 3, 4]
    m.reset_classifier(0)
    assert not hasattr(m, "family_head")
    x, seg = torch.randn(2, 3, 64, 64, generator=gen), _voronoi(2, 64, (20,), gen)
    assert m.eval()(x, seg).shape == (2, 48)  # no head: the final features
    # gradient checkpointing: same values, same gradients
    a = _tiny((6, 3)).train()
    b = _tiny((6, 3)).train()
    b.set_grad_checkpointing(True)
    la, lb = a(x, seg)[0].sum(), b(x, seg)[0].sum()
    la.backward()
    lb.backward()
    torch.testing.assert_close(lb, la)
    torch.testing.assert_close(b.blocks[0].attn.qkv.weight.grad, a.blocks[0].attn.qkv.weight.grad)
    with pytest.raises(ValueError, match="no hub weights"):
        timm.create_model("cast_small", pretrained=True)


def _published_file(path, model, **extra):
    """A file laid out as the published training saves it."""
    sd = model.state_dict()
    ema = {k: v + 1 if v.is_floating_point() else v for k, v in sd.items()}
    torch.save({"model": sd, "model_ema": ema, "epoch": 3, "args": argparse.Namespace(lr=1e-3), **extra}, path)
    return sd, ema


def test_published_checkpoints_load(tmp_path, gen):
    """checkpoint_path= loads strictly (timm's loader prefers the file's
    model_ema, as for every timm model); pretrained=True with a file is the
    published fine-tuning rule: the 'model' weights, heads of another shape
    re-initialised, pos_embed resized."""
    src = _tiny((6, 4, 2))
    sd, ema = _published_file(tmp_path / "hcast.pth", src)
    strict = timm.create_model("cast_small", num_classes=(6, 4, 2), checkpoint_path=str(tmp_path / "hcast.pth"), **TINY)
    assert all(torch.equal(strict.state_dict()[k], ema[k]) for k in ema)
    ft = timm.create_model(
        "cast_small",
        num_classes=(6, 4, 2),
        pretrained=True,
        pretrained_cfg_overlay=dict(file=str(tmp_path / "hcast.pth")),
        **TINY,
    )
    assert all(torch.equal(ft.state_dict()[k], sd[k]) for k in sd)
    # a single-level CAST file: strict into one level, fine-tuned into three at another size
    one = _tiny(10)
    one_sd, _ = _published_file(tmp_path / "cast.pth", one)
    timm.create_model("cast_small", num_classes=10, **TINY).load_state_dict(one_sd, strict=True)
    big = timm.create_model("cast_small", num_classes=(6, 4, 2), **{**TINY, "img_size": 96})
    report = big.load_pretrained(str(tmp_path / "cast.pth"))
    assert report["reinitialised"] == sorted(
        f"{h}.{w}" for h in ("head", "family_head", "manufacturer_head") for w in ("weight", "bias")
    )
    assert big.pos_embed.shape == (1, 1 + 12 * 12, 48)
    assert torch.equal(big.pos_embed[:, :1], one.pos_embed[:, :1])
    assert torch.equal(big.blocks[2].mlp.fc1.weight, one.blocks[2].mlp.fc1.weight)
    torch.save({"model": {"bogus.weight": torch.zeros(2)}}, tmp_path / "other.pth")
    with pytest.raises(ValueError, match="does not fit"):
        big.load_pretrained(str(tmp_path / "other.pth"))


def test_bad_input(gen):
    m = _tiny((6, 3))
    with pytest.raises(ValueError, match="segments must be"):
        m(torch.randn(1, 3, 64, 64), torch.zeros(1, 32, 32, dtype=torch.long))
    with pytest.raises(ValueError, match="token grid"):
        m(torch.randn(1, 3, 96, 96), torch.zeros(1, 96, 96, dtype=torch.long))
    with pytest.raises(ValueError, match="1 to 3 class counts"):
        CAST(num_classes=(4, 3, 2, 1), **TINY)
    with pytest.raises(ValueError, match="4 entries"):
        CAST(num_classes=3, **{**TINY, "depths": (1, 1)})
    with pytest.raises(TypeError):
        timm.create_model("cast_small", depth=3)
    with pytest.raises(ValueError, match="tokens cannot pool"):
        m(torch.randn(1, 3, 64, 64), torch.zeros(1, 64, 64, dtype=torch.long))  # one segment, 8 clusters
