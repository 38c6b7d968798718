"""CAST (Ke et al., ICLR 2024) and H-CAST (Park et al., ICLR 2025) as
published: ``twke18/CAST`` ``cast_models/cast_deit.py`` for one level,
``ngocquanai/HiOT`` (b1a222bb) ``cast_models/cast_deit_hier.py`` for two and
three, rewritten on timm's building blocks and the hcam_ops kernels.

The computation: a convolutional stem (stride 8); pixel features and position
embeddings averaged within each superpixel (``hcam_ops.segment_mean``); four
stages of ViT blocks over ``[class token, segment tokens]``, each followed by a
graph pooling to 64, 32, 16, 8 tokens (``graph_pool.py``); the last pooling is
frozen (its output feeds nothing). Stage ``i``'s class token is ``out{i}``;
H-CAST reads each level from a different stage, finest from the earliest:

    levels  head (finest)  family_head  manufacturer_head
    1       out4
    2       out3           out4
    3       out2           out3         out4

and only ``out4`` passes the final LayerNorm. Parameter names and shapes are
the published ones (``python_tests/data/cast_published_state_dicts.json``), so
released checkpoints load with ``strict=True``.
"""

from __future__ import annotations

import argparse
from collections import OrderedDict
from collections.abc import Sequence
from functools import partial

import torch
import torch.nn.functional as F
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.layers import to_2tuple, trunc_normal_
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model
from timm.models._manipulate import checkpoint_seq
from timm.models.vision_transformer import Block
from torch import nn

from ..ops.segment_mean import segment_mean
from .graph_pool import GraphPool

HEAD_NAMES = ("head", "family_head", "manufacturer_head")
NUM_STAGES = 4


class ConvStem(nn.Module):
    """The early-convolution stem CAST uses (Xiao et al., 2021; MoCo v3):
    four 3x3 conv-BN-ReLU layers of widths ``C/8, C/4, C/2, C`` and strides
    2, 2, 2, 1, then a 1x1 conv. ``[B, 3, H, W] -> [B, H/8, W/8, C]``
    (channels last, as ``segment_mean`` reads it)."""

    def __init__(self, img_size=224, patch_size: int = 8, in_chans: int = 3, embed_dim: int = 384):
        super().__init__()
        if patch_size != 8:
            raise ValueError(f"ConvStem: the stride is 8, got patch_size={patch_size}")
        if embed_dim % 8:
            raise ValueError(f"ConvStem: embed_dim must be divisible by 8, got {embed_dim}")
        self.img_size = to_2tuple(img_size)
        self.patch_size = (8, 8)
        self.grid_size = (self.img_size[0] // 8, self.img_size[1] // 8)
        self.num_patches = self.grid_size[0] * self.grid_size[1]
        layers, cin, cout = [], in_chans, embed_dim // 8
        for stride in (2, 2, 2, 1):
            layers += [nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]
            cin, cout = cout, cout * 2
        layers.append(nn.Conv2d(cin, embed_dim, 1))
        self.proj = nn.Sequential(*layers)  # indices 0..12: the published key names

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).permute(0, 2, 3, 1)


class CAST(nn.Module):
    """CAST with one to three hierarchical heads (H-CAST for two or three).

    Args:
        num_classes: an int (one level; ``0`` gives no head: the forward
            returns the final features) or the classes per level, finest
            first: ``(species, family)`` or ``(species, family, manufacturer)``.
        img_size: the input size; the position embeddings cover its 8x8 grid.
        embed_dim, depths, num_heads, mlp_ratio, qkv_bias: the four stages of
            timm ViT blocks (published: 384 or 768, (3, 3, 3, 2) or (6, 3, 3, 3),
            12 heads). The graph poolings' attention takes ``num_heads`` too
            (published: a fixed 12, the same in every published configuration).
        num_clusters: tokens kept by each graph pooling (64, 32, 16, 8).
        drop_rate: dropout after the position embeddings, in the attention
            projection and in the MLPs (timm 0.4's meaning of ``drop_rate``,
            which the published code ran on).
        attn_drop_rate, drop_path_rate: timm's.
        pool_drop_rate: the dropout inside the graph poolings' ``fc1`` (0.1).
        num_segments: ``None`` (published): the segment tokens of a batch
            number its largest superpixel id + 1 (one host sync), so images
            with fewer segments carry zero-feature padding tokens, which attend
            like the others. An int fixes the count (ids must be below it):
            static shapes, and each image's outputs independent of the rest
            of the batch; equal to the published outputs whenever the batch's
            largest id is ``num_segments - 1``.

    ``forward(x [B, 3, H, W], segments [B, H, W] int)`` returns the logits of
    each level, finest first, as a tuple (a single tensor for one level);
    with ``return_intermediates=True`` the intermediates dict is appended
    (see :meth:`forward_features`).
    """

    def __init__(
        self,
        num_classes: int | Sequence[int] = 1000,
        img_size=224,
        patch_size: int = 8,
        in_chans: int = 3,
        embed_dim: int = 384,
        depths: Sequence[int] = (3, 3, 3, 2),
        num_heads: int = 12,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        num_clusters: Sequence[int] = (64, 32, 16, 8),
        drop_rate: float = 0.0,
        attn_drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        pool_drop_rate: float = 0.1,
        num_segments: int | None = None,
    ):
        super().__init__()
        levels = [int(num_classes)] if isinstance(num_classes, int) else [int(n) for n in num_classes]
        if not 1 <= len(levels) <= len(HEAD_NAMES) or any(n < 0 for n in levels):
            raise ValueError(f"CAST: num_classes must be an int or 1 to 3 class counts, got {num_classes!r}")
        if len(depths) != NUM_STAGES or len(num_clusters) != NUM_STAGES:
            raise ValueError(f"CAST: {NUM_STAGES} stages: depths and num_clusters need 4 entries each")
        if embed_dim % num_heads:
            raise ValueError(f"CAST: embed_dim {embed_dim} is not divisible by num_heads {num_heads}")
        if num_segments is not None and num_segments < 1:
            raise ValueError(f"CAST: num_segments must be None or positive, got {num_segments}")
        self.levels = levels
        self.num_classes = levels[0]
        self.num_features = self.embed_dim = embed_dim
        self.num_clusters = tuple(num_clusters)
        self.num_segments = num_segments
        self.grad_checkpointing = False

        # Registration order = the published state-dict order.
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.patch_embed = ConvStem(img_size, patch_size, in_chans, embed_dim)
        self.pos_embed = nn.Parameter(torch.zeros(1, self.patch_embed.num_patches + 1, embed_dim))
        self.pos_drop = nn.Dropout(drop_rate)
        n = sum(depths)
        rates = [drop_path_rate * j / max(n - 1, 1) for j in range(n)]  # linearly up to the rate, as timm
        norm_layer = partial(nn.LayerNorm, eps=1e-6)
        self.blocks = nn.Sequential(
            *[
                Block(
                    embed_dim,
                    num_heads,
                    mlp_ratio,
                    qkv_bias=qkv_bias,
                    proj_drop=drop_rate,
                    attn_drop=attn_drop_rate,
                    drop_path=r,
                    norm_layer=norm_layer,
                )
                for r in rates
            ]
        )
        self.norm = norm_layer(embed_dim)
        self._build_heads()
        # The published model keeps timm's flat ``blocks`` and views of it per
        # stage (``blocks2`` holds blocks 3..5 under their own indices), so its
        # state dict lists every block twice; the same modules here, for the
        # same keys.
        start = 0
        for i, (depth, k) in enumerate(zip(depths, num_clusters), start=1):
            stage = OrderedDict((str(j), self.blocks[j]) for j in range(start, start + depth))
            setattr(self, f"blocks{i}", nn.Sequential(stage))
            setattr(self, f"pool{i}", GraphPool(embed_dim, k, num_heads, pool_drop_rate))
            start += depth

        trunc_normal_(self.pos_embed, std=0.02)
        trunc_normal_(self.cls_token, std=0.02)
        self.apply(_init_weights)
        # No logit depends on the last pooling; published, it is frozen.
        for p in self.pool4.parameters():
            p.requires_grad_(False)

    def _build_heads(self) -> None:
        for name, n in zip(HEAD_NAMES, self.levels):
            head = nn.Linear(self.embed_dim, n) if n > 0 else nn.Identity()
            head.apply(_init_weights)
            setattr(self, name, head)

    # -- timm conventions ---------------------------------------------------------

    @property
    def heads(self) -> list[nn.Module]:
        """The classifiers, finest level first."""
        return [getattr(self, n) for n in HEAD_NAMES[: len(self.levels)]]

    @property
    def head_stages(self) -> list[int]:
        """The stage whose class token each level reads (finest first)."""
        return [NUM_STAGES - len(self.levels) + 1 + l for l in range(len(self.levels))]

    def get_classifier(self) -> nn.Module:
        return self.head

    def reset_classifier(self, num_classes: int | Sequence[int], global_pool=None) -> None:
        """New heads (random init) for ``num_classes`` (an int or 1 to 3 counts)."""
        levels = [int(num_classes)] if isinstance(num_classes, int) else [int(n) for n in num_classes]
        if not 1 <= len(levels) <= len(HEAD_NAMES):
            raise ValueError(f"CAST: 1 to 3 levels, got {num_classes!r}")
        for name in HEAD_NAMES[len(levels) :]:
            if hasattr(self, name):
                delattr(self, name)
        self.levels, self.num_classes = levels, levels[0]
        self._build_heads()

    @torch.jit.ignore
    def no_weight_decay(self) -> set[str]:
        return {"pos_embed", "cls_token"}

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.grad_checkpointing = enable

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> dict:
        # The flat ``blocks`` names (the per-stage views alias the same modules).
        return {
            "stem": r"^cls_token|pos_embed|patch_embed",
            "blocks": [(r"^blocks\.(\d+)", None), (r"^norm", (99999,))],
        }

    # -- forward ------------------------------------------------------------------

    def segment_tokens(self, x: torch.Tensor, segments: torch.Tensor):
        """Stem features and position embeddings averaged per segment on the
        stem's grid: ``(tokens [B, S, C], valid [B, S] bool, grid [B, h, w])``."""
        feat = self.patch_embed(x)
        B, h, w, C = feat.shape
        if h * w != self.pos_embed.shape[1] - 1:
            raise ValueError(
                f"CAST: a {h}x{w} token grid, but the position embeddings cover {self.pos_embed.shape[1] - 1} "
                f"cells (img_size {self.patch_embed.img_size})"
            )
        if segments.shape != (B, x.shape[2], x.shape[3]):
            raise ValueError(
                f"CAST: segments must be [B, H, W] = [{B}, {x.shape[2]}, {x.shape[3]}], got {list(segments.shape)}"
            )
        # Nearest downsampling to the stem grid, then one token per id.
        grid = F.interpolate(segments[:, None].float(), size=(h, w), mode="nearest")[:, 0].long()
        S = self.num_segments if self.num_segments is not None else int(grid.max()) + 1
        tokens, counts = segment_mean(feat, grid, S)
        pos = self.pos_embed[:, 1:].reshape(1, h, w, C).expand(B, -1, -1, -1)
        pos_tokens, _ = segment_mean(pos, grid, S)
        return self.pos_drop(tokens + pos_tokens), counts > 0, grid

    def forward_features(self, x: torch.Tensor, segments: torch.Tensor) -> dict:
        """The published intermediates, per stage ``i`` = 1..4: ``block{i}``
        the segment/cluster tokens after the stage's blocks, ``logit{i}`` the
        pooling logits ``[B, N_i, K_i]`` (softmax over the last dim: the soft
        assignment), ``centroid{i}`` the pooled tokens ``[B, K_i, C]``
        (``centroid1`` is ``[B, 64, C]``), ``sampled_inds{i}`` the seeds,
        ``padding_mask{i}`` (True = padding) of the tokens entering the stage,
        ``out{i}`` the stage's class token (``out4`` normed). Added for the
        CAM tools: ``segments``, the superpixel ids on the stem grid."""
        x, valid, grid = self.segment_tokens(x, segments)
        cls = self.cls_token.expand(x.shape[0], -1, -1) + self.pos_embed[:, :1]
        inter = {"segments": grid}
        for i in range(1, NUM_STAGES + 1):
            blocks, pool = getattr(self, f"blocks{i}"), getattr(self, f"pool{i}")
            inter[f"padding_mask{i}"] = ~valid
            h = torch.cat([cls, x], dim=1)
            # No attention mask: published, padding tokens attend too.
            h = checkpoint_seq(blocks, h) if self.grad_checkpointing and not torch.jit.is_scripting() else blocks(h)
            h = h.type_as(x)
            cls, tokens = h[:, :1], h[:, 1:]
            inter[f"out{i}"] = self.norm(cls[:, 0]) if i == NUM_STAGES else cls[:, 0]
            cls, logit, x, valid, seeds = pool(cls, tokens, valid)
            inter.update({f"block{i}": tokens, f"logit{i}": logit, f"centroid{i}": x, f"sampled_inds{i}": seeds})
        return inter

    def forward_head(self, intermediates: dict, pre_logits: bool = False) -> tuple[torch.Tensor, ...]:
        """Each level's logits, finest first, from its stage's class token."""
        feats = [intermediates[f"out{s}"] for s in self.head_stages]
        if pre_logits:
            return tuple(feats)
        return tuple(head(f) for head, f in zip(self.heads, feats))

    def forward(self, x: torch.Tensor, segments: torch.Tensor, return_intermediates: bool = False):
        inter = self.forward_features(x, segments)
        logits = self.forward_head(inter)
        if return_intermediates:
            return (*logits, inter)
        return logits if len(logits) > 1 else logits[0]

    # -- weights ------------------------------------------------------------------

    def load_pretrained(self, checkpoint_path: str) -> dict:
        """timm's ``custom_load`` hook (``pretrained=True`` with
        ``pretrained_cfg_overlay=dict(file=...)``): :func:`load_for_finetuning`."""
        return load_for_finetuning(self, read_checkpoint(checkpoint_path))


class CASTWithCAM(CAST):
    """H-CAST's model for the CAM-consistency term: ``forward`` returns the
    intermediates too, ``(out, family_out, manu_out, intermediates)`` (three levels) or
    ``(out, family_out, intermediates)`` (two); ``intermediates["centroid1"]``
    is what the CAM consistency loss reads."""

    def forward(self, x: torch.Tensor, segments: torch.Tensor, return_intermediates: bool = True):
        return super().forward(x, segments, return_intermediates)


def _init_weights(m: nn.Module) -> None:
    # timm ViT init; the centroid blocks' bias keeps its own small normal init.
    if isinstance(m, nn.Linear):
        trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.LayerNorm):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)


def split_outputs(outputs, levels: int) -> tuple[list[torch.Tensor], dict]:
    """``model(x, segments, return_intermediates=True)`` -> (logits list, intermediates)."""
    *logits, inter = outputs
    if len(logits) != levels:
        raise ValueError(f"expected {levels} levels of logits, got {len(logits)}")
    return list(logits), inter


def clusters_to_grid(values: torch.Tensor, intermediates: dict, stage: int = 1) -> torch.Tensor:
    """Per-cluster values of stage ``stage`` (a CAM on ``centroid{stage}``,
    ``[B, K]``) carried back to the stem grid ``[B, h, w]``: through each
    pooling's soft assignment (softmax of ``logit{i}``) down to the segment
    tokens, then through the superpixel ids."""
    v = values
    for i in range(stage, 0, -1):
        v = (intermediates[f"logit{i}"].float().softmax(-1) @ v.float().unsqueeze(-1)).squeeze(-1)
    grid = intermediates["segments"]
    B, h, w = grid.shape
    return torch.gather(v, 1, grid.reshape(B, -1)).reshape(B, h, w)


# -- published checkpoints ---------------------------------------------------------


def read_checkpoint(path: str, key: str | None = None) -> dict[str, torch.Tensor]:
    """The state dict in a published CAST / H-CAST file (or any state-dict
    file): ``checkpoint[key]``, by default ``"model"`` (what the published
    runs evaluate; their ``model_ema`` is an EMA started from the pretrained
    weights), else ``"state_dict"``, else the file itself. Read with
    ``weights_only=True``; the ``args`` Namespace those files carry is the
    only class allowed. ``ValueError`` naming the file otherwise."""
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as e:  # noqa: BLE001  (unpickling errors have many types)
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ValueError(f"{path}: not a loadable checkpoint ({first})") from None
    if not isinstance(ckpt, dict):
        raise ValueError(f"{path}: holds a {type(ckpt).__name__}, not a state dict")
    if key is not None:
        if key not in ckpt:
            raise ValueError(f"{path}: no {key!r} entry (has {sorted(ckpt)[:8]})")
        state = ckpt[key]
    else:
        state = next((ckpt[k] for k in ("model", "state_dict") if isinstance(ckpt.get(k), dict)), ckpt)
    if not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{path}: no state dict of tensors in it")
    return {k[7:] if k.startswith("module.") else k: v for k, v in state.items()}


def load_for_finetuning(model: CAST, state: dict[str, torch.Tensor]) -> dict[str, list[str]]:
    """The published ``--finetune`` rule, stricter: classifier heads (and a
    class token) whose shape differs are dropped and re-initialised,
    ``pos_embed`` is resized bicubically to the model's grid, heads the model
    has and the file lacks keep their init, heads the file has and the model
    lacks are ignored; any other missing or unexpected key is an error.
    Returns ``{"reinitialised": [...], "ignored": [...]}``."""
    own = model.state_dict()
    state = dict(state)
    heads = tuple(f"{n}." for n in HEAD_NAMES)
    for k in [k for k in state if (k.startswith(heads) or k == "cls_token") and k in own]:
        if state[k].shape != own[k].shape:
            del state[k]
    if "pos_embed" in state and state["pos_embed"].shape != own["pos_embed"].shape:
        state["pos_embed"] = resize_pos_embed(state["pos_embed"], model.patch_embed.grid_size)
    missing, unexpected = model.load_state_dict(state, strict=False)
    bad = [k for k in missing if not k.startswith(heads)] + [k for k in unexpected if not k.startswith(heads)]
    if bad:
        raise ValueError(f"the checkpoint does not fit this CAST: {len(bad)} keys differ, e.g. {bad[:4]}")
    return {"reinitialised": sorted(missing), "ignored": sorted(unexpected)}


def resize_pos_embed(pos_embed: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """``[1, 1 + n*n, C]`` -> ``[1, 1 + gh*gw, C]``: the class position kept,
    the square grid resized bicubically (as the published fine-tuning does)."""
    cls, cells = pos_embed[:, :1], pos_embed[:, 1:]
    n = int(round(cells.shape[1] ** 0.5))
    if n * n != cells.shape[1]:
        raise ValueError(f"pos_embed: {cells.shape[1]} cells are not a square grid")
    cells = cells.reshape(1, n, n, -1).permute(0, 3, 1, 2).float()
    cells = F.interpolate(cells, size=grid, mode="bicubic", align_corners=False)
    return torch.cat([cls, cells.permute(0, 2, 3, 1).reshape(1, grid[0] * grid[1], -1).to(pos_embed.dtype)], 1)


# -- timm registration ---------------------------------------------------------------


def _cfg(**kwargs) -> dict:
    return {
        "url": "",
        "num_classes": 1000,
        "input_size": (3, 224, 224),
        "pool_size": None,
        "crop_pct": 0.875,  # the published evaluation: resize to 256, centre crop 224
        "interpolation": "bicubic",
        "fixed_input_size": True,
        "mean": IMAGENET_DEFAULT_MEAN,
        "std": IMAGENET_DEFAULT_STD,
        "first_conv": "patch_embed.proj.0",
        "classifier": "head",
        # pretrained=True with pretrained_cfg_overlay=dict(file=...) calls
        # CAST.load_pretrained (the published fine-tuning rule).
        "custom_load": True,
        **kwargs,
    }


VARIANTS = {
    "cast_small": dict(embed_dim=384, depths=(3, 3, 3, 2), num_heads=12),
    "cast_small_deep": dict(embed_dim=384, depths=(6, 3, 3, 3), num_heads=12),
    "cast_base": dict(embed_dim=768, depths=(3, 3, 3, 2), num_heads=12),
    "cast_base_deep": dict(embed_dim=768, depths=(6, 3, 3, 3), num_heads=12),
}

default_cfgs = generate_default_cfgs(
    {**{name: _cfg() for name in VARIANTS}, **{f"{name}_cam": _cfg() for name in VARIANTS}}
)


def _create(variant: str, pretrained: bool, cls=CAST, **kwargs) -> CAST:
    overlay = kwargs.get("pretrained_cfg_overlay") or {}
    if pretrained and not overlay.get("file"):
        raise ValueError(
            f"{variant}: no hub weights here; pass checkpoint_path=... to timm.create_model (strict load), or "
            "pretrained=True with pretrained_cfg_overlay=dict(file=...) (the published fine-tuning rule)"
        )
    if overlay.get("file"):
        # timm resets custom_load when a file is given; ours reads the published layout.
        kwargs["pretrained_cfg_overlay"] = {"custom_load": True, **overlay}
    arch = VARIANTS[variant.removesuffix("_cam")]
    return build_model_with_cfg(cls, variant, pretrained, **{**arch, **kwargs})


@register_model
def cast_small(pretrained: bool = False, **kwargs) -> CAST:
    return _create("cast_small", pretrained, **kwargs)


@register_model
def cast_small_deep(pretrained: bool = False, **kwargs) -> CAST:
    return _create("cast_small_deep", pretrained, **kwargs)


@register_model
def cast_base(pretrained: bool = False, **kwargs) -> CAST:
    return _create("cast_base", pretrained, **kwargs)


@register_model
def cast_base_deep(pretrained: bool = False, **kwargs) -> CAST:
    return _create("cast_base_deep", pretrained, **kwargs)


@register_model
def cast_small_cam(pretrained: bool = False, **kwargs) -> CASTWithCAM:
    return _create("cast_small_cam", pretrained, CASTWithCAM, **kwargs)


@register_model
def cast_small_deep_cam(pretrained: bool = False, **kwargs) -> CASTWithCAM:
    return _create("cast_small_deep_cam", pretrained, CASTWithCAM, **kwargs)


@register_model
def cast_base_cam(pretrained: bool = False, **kwargs) -> CASTWithCAM:
    return _create("cast_base_cam", pretrained, CASTWithCAM, **kwargs)


@register_model
def cast_base_deep_cam(pretrained: bool = False, **kwargs) -> CASTWithCAM:
    return _create("cast_base_deep_cam", pretrained, CASTWithCAM, **kwargs)
