"""Benchmark cases: each op's shapes, inputs, and its implementations (fused,
reference, torch.compile of the reference). Shared by run.py (the report) and
the pytest-benchmark tests, so both time the same things."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import torch

import hcam_ops
from hcam_ops import reference as R


@dataclasses.dataclass
class Case:
    op: str
    shape: tuple  # the case's shape, as RESULTS.md names it
    label: str  # short text of the shape for tables
    make_inputs: Callable[[torch.device, torch.dtype, torch.Generator], dict]
    impls: dict  # name -> fn(**inputs) -> scalar loss
    grad_of: tuple  # input names that get gradients
    floor_bytes: Callable[[torch.dtype], int] = None  # fewest bytes a fwd+bwd must move
    modes: tuple = ("fwd", "fwd+bwd")  # an op with no gradient has only "fwd"
    on_cpu: bool = False  # in a CPU run even past its first shapes (run.py --max-cases)
    small: Case | None = None  # the same case at a small shape (test_bench_ops checks it against the reference)


def _impls(fused, reference):
    """The three implementations a case times: fused, reference, torch.compile of the reference."""
    return {"fused": fused, "reference": reference, "compiled_ref": lambda **kw: compiled(reference)(**kw)}


def _case(op, label, inputs, shape, **kw):
    """A case of ``op`` at ``shape``: ``label`` formatted with it, ``inputs(shape)`` its inputs."""
    return Case(op=op, shape=shape, label=label.format(*shape), make_inputs=inputs(shape), **kw)


def _with_small(build, shape, small_shape):
    """``build(shape)``, its twin ``build(small_shape)`` as ``small``."""
    return dataclasses.replace(build(shape), small=build(small_shape))


_compiled = {}


def compiled(fn):
    """torch.compile of a reference, built once per function."""
    if fn not in _compiled:
        _compiled[fn] = torch.compile(fn, dynamic=False)
    return _compiled[fn]


# --- CAM consistency (docs/ops/cam.md) ----------------------------------------------
CAM_KL_SHAPES = [  # (B, N, C, Kf, Kc), [B, N, C] tokens
    (128, 64, 384, 100, 70),
    (64, 196, 768, 200, 37),
    (32, 3136, 256, 1000, 100),
    (256, 196, 384, 1000, 100),
]
# Layouts the kernels read channels first (the CAM contracts the strided dim),
# after the token shapes so that a CPU run (first shapes only) stays quick.
CAM_KL_CHANNELS_FIRST = [
    ("map", (64, 2048, 7, 7, 1000, 100)),  # (B, C, H, W, Kf, Kc): a ResNet-50 [B, C, H, W] map
    ("tokens_t", (64, 196, 768, 200, 37)),  # (B, N, C, Kf, Kc): [B, N, C] viewing a [B, C, N] buffer
]
CAM_KL_SMALL = {"tokens": (3, 10, 16, 7, 5), "map": (3, 16, 4, 5, 7, 5), "tokens_t": (3, 10, 16, 7, 5)}


def _cam_kl_dims(shape, layout):
    """(B, N, C, Kf, Kc) of a case."""
    if layout == "map":
        B, C, H, W, Kf, Kc = shape
        return B, H * W, C, Kf, Kc
    return shape


def _cam_kl_inputs(shape, layout="tokens"):
    B, N, C, Kf, Kc = _cam_kl_dims(shape, layout)

    def make(device, dtype, gen):
        if layout == "map":
            features = torch.randn(B, C, *shape[2:4], generator=gen).to(device, dtype)
        elif layout == "tokens_t":
            features = torch.randn(B, C, N, generator=gen).to(device, dtype).transpose(1, 2)
        else:
            features = torch.randn(B, N, C, generator=gen).to(device, dtype)
        return dict(
            features=features.requires_grad_(),
            fine_weight=(torch.randn(Kf, C, generator=gen) * C**-0.5).to(device, dtype).requires_grad_(),
            coarse_weight=(torch.randn(Kc, C, generator=gen) * C**-0.5).to(device, dtype),
            fine_index=torch.randint(0, Kf, (B,), generator=gen).to(device),
            coarse_index=torch.randint(0, Kc, (B,), generator=gen).to(device),
        )

    return make


def _cam_kl_floor(shape, layout="tokens"):
    B, N, C, Kf, Kc = _cam_kl_dims(shape, layout)

    def floor(dtype):
        # forward reads the features; backward reads them again (weight
        # gradient) and writes their gradient: three passes of B*N*C.
        return 3 * B * N * C * torch.empty((), dtype=dtype).element_size()

    return floor


def _fused_cam_kl(**kw):
    return hcam_ops.cam_kl_loss(**kw, check_index=False)


def _cam_kl_case(shape, layout):
    if layout == "map":
        label = "B={} C={} H={} W={} Kf={} Kc={} map".format(*shape)
    else:
        label = "B={} N={} C={} Kf={} Kc={}".format(*shape) + (" transposed" if layout == "tokens_t" else "")
    return Case(
        on_cpu=layout == "map",  # the CPU run covers a [B, C, H, W] map too
        op="cam_kl_loss",
        shape=shape,
        label=label,
        make_inputs=_cam_kl_inputs(shape, layout),
        impls=_impls(_fused_cam_kl, R.cam_kl_loss),
        grad_of=("features", "fine_weight"),
        floor_bytes=_cam_kl_floor(shape, layout),
    )


def cam_kl_cases():
    for layout, shape in [("tokens", shape) for shape in CAM_KL_SHAPES] + CAM_KL_CHANNELS_FIRST:
        yield _with_small(lambda shape: _cam_kl_case(shape, layout), shape, CAM_KL_SMALL[layout])


# --- Multi-label ArcFace (docs/ops/multilabel_arcface.md) -------------------------------------------
ARCFACE_SHAPES = [(32, 512, 6), (256, 512, 10000), (512, 512, 100000)]  # (B, D, K)
ARCFACE_SMALL = (4, 16, 9)


def _arcface_inputs(shape):
    B, D, K = shape

    def make(device, dtype, gen):
        return dict(
            features=torch.randn(B, D, generator=gen).to(device, dtype).requires_grad_(),
            weight=torch.randn(K, D, generator=gen).to(device, dtype).requires_grad_(),
            labels=(torch.rand(B, K, generator=gen) < 0.05).to(device),
        )

    return make


def _fused_arcface(**kw):
    return hcam_ops.multilabel_arcface_loss(**kw, check_inputs=False)


def _arcface_case(shape):
    impls = _impls(_fused_arcface, R.multilabel_arcface_loss)
    return _case(
        "multilabel_arcface_loss", "B={} D={} K={}", _arcface_inputs, shape, impls=impls, grad_of=("features", "weight")
    )


def arcface_cases():
    for shape in ARCFACE_SHAPES:
        yield _with_small(_arcface_case, shape, ARCFACE_SMALL)


# --- FGD feature distillation (docs/ops/fgd.md) ---------------------------------------
FGD_SHAPES = [(2, 256, 100, 152), (4, 384, 128, 128), (8, 256, 180, 180)]  # (B, C, H, W)
FGD_SMALL = (2, 8, 64, 64)  # the boxes (up to 400 px) cover about a quarter of its 256 x 256 image
# Every term on, so each implementation computes all of them.
FGD_WEIGHTS = dict(fg_weight=1e-3, bg_weight=5e-4, attention_weight=1e-3, channel_weight=0.25, spatial_weight=2.5e-3)


def _fgd_inputs(shape):
    B, C, H, W = shape

    def make(device, dtype, gen):
        boxes = [torch.rand(6, 4, generator=gen) * 400 for _ in range(B)]
        boxes = [torch.cat([b[:, :2], b[:, :2] + b[:, 2:] / 2], 1) for b in boxes]
        fg, bg = hcam_ops.fgd_masks_from_boxes(boxes, (H * 4, W * 4), (H, W))
        return dict(
            student=torch.randn(B, C, H, W, generator=gen).to(device, dtype).requires_grad_(),
            teacher=torch.randn(B, C, H, W, generator=gen).to(device, dtype),
            fg_mask=fg.to(device),
            bg_mask=bg.to(device),
        )

    return make


def _fgd_floor(shape):
    B, C, H, W = shape

    def floor(dtype):
        # read S and T once, write d S once
        return 3 * B * C * H * W * torch.empty((), dtype=dtype).element_size()

    return floor


def _fused_fgd(**kw):
    return sum(hcam_ops.fgd_loss(**kw, **FGD_WEIGHTS, check_finite=False).values())


def _reference_fgd(**kw):
    return sum(R.fgd_loss(**kw, **FGD_WEIGHTS).values())


def _fgd_case(shape):
    impls, floor = _impls(_fused_fgd, _reference_fgd), _fgd_floor(shape)
    return _case(
        "fgd_loss", "B={} C={} H={} W={}", _fgd_inputs, shape, impls=impls, grad_of=("student",), floor_bytes=floor
    )


def fgd_cases():
    for shape in FGD_SHAPES:
        yield _with_small(_fgd_case, shape, FGD_SMALL)


# --- DistillBEV masks on the BEV grid (docs/ops/fgd.md#bev_masks_from_boxes) ----------
BEV_MASKS_SHAPES = [(4, 60, 128, 128), (8, 120, 180, 180)]  # (B, boxes per image, H, W)
BEV_MASKS_SMALL = (2, 6, 24, 20)
BEV_PC, BEV_CELL = (-51.2, -51.2), 0.8  # nuScenes CenterPoint: 0.1 m voxels, out_size_factor 8


def _bev_masks_inputs(shape):
    B, n, H, W = shape

    def make(device, dtype, gen):
        box_dtype = torch.float64 if dtype == torch.float64 else torch.float32
        span = torch.tensor([W * BEV_CELL, H * BEV_CELL])
        boxes = []
        for _ in range(B):
            xy = torch.tensor(BEV_PC) + torch.rand(n, 2, generator=gen) * span
            size = 0.5 + torch.rand(n, 2, generator=gen) * 8
            yaw = (torch.rand(n, 1, generator=gen) * 2 - 1) * torch.pi
            boxes.append(torch.cat([xy, size, yaw], 1).to(device, box_dtype))
        return dict(boxes=boxes, pc_range=BEV_PC, cell_size=BEV_CELL, feat_shape=(H, W))

    return make


def _fused_bev_masks(**kw):
    fg, bg = hcam_ops.bev_masks_from_boxes(**kw, check_boxes=False)
    return fg.sum() + bg.sum()


def _reference_bev_masks(**kw):
    fg, bg = R.bev_masks_from_boxes(**kw)
    return fg.sum() + bg.sum()


def _bev_masks_case(shape):
    # the reference loops over boxes in Python: no compiled reference
    impls = {"fused": _fused_bev_masks, "reference": _reference_bev_masks}
    return _case(
        "bev_masks_from_boxes", "B={} n={} H={} W={}", _bev_masks_inputs, shape, impls=impls, grad_of=(), modes=("fwd",)
    )


def bev_masks_cases():
    for shape in BEV_MASKS_SHAPES:
        yield _with_small(_bev_masks_case, shape, BEV_MASKS_SMALL)


# --- CAST kernels (issue 5): segment_mean and farthest point sampling ------------
SEGMENT_MEAN_SHAPES = [(64, 28, 28, 384, 196), (32, 28, 28, 768, 196)]  # (B, H, W, C, S)
FPS_SHAPES = [(64, 197, 384, 64), (64, 64, 384, 32)]  # (B, N, C, k): CAST's first two poolings
SEGMENT_MEAN_SMALL, FPS_SMALL = (2, 6, 5, 8, 7), (2, 20, 8, 5)


def _segment_mean_inputs(shape):
    B, H, W, C, S = shape

    def make(device, dtype, gen):
        return dict(
            x=torch.randn(B, H, W, C, generator=gen).to(device, dtype).requires_grad_(),
            segments=torch.randint(0, S, (B, H, W), generator=gen).to(device),
            num_segments=S,
        )

    return make


def _fused_segment_mean(**kw):
    return hcam_ops.segment_mean(**kw, check_segments=False)[0].sum()


def _reference_segment_mean(**kw):
    return R.segment_mean(**kw)[0].sum()


def _fps_inputs(shape):
    B, N, C, k = shape

    def make(device, dtype, gen):
        return dict(points=torch.randn(B, N, C, generator=gen).to(device, dtype), k=k)

    return make


def _segment_mean_floor(shape):
    B, H, W, C, S = shape

    def floor(dtype):
        # forward reads x once, backward writes its gradient once (the means are S/(H*W) of that)
        return 2 * B * H * W * C * torch.empty((), dtype=dtype).element_size()

    return floor


def _segment_mean_case(shape):
    impls = _impls(_fused_segment_mean, _reference_segment_mean)
    return _case(
        "segment_mean",
        "B={} H={} W={} C={} S={}",
        _segment_mean_inputs,
        shape,
        impls=impls,
        grad_of=("x",),
        floor_bytes=_segment_mean_floor(shape),
    )


def _fps_case(shape):
    impls = _impls(hcam_ops.farthest_point_sample, R.farthest_point_sample)
    return _case(
        "farthest_point_sample", "B={} N={} C={} k={}", _fps_inputs, shape, impls=impls, grad_of=(), modes=("fwd",)
    )


def cast_kernel_cases():
    for shape in SEGMENT_MEAN_SHAPES:
        yield _with_small(_segment_mean_case, shape, SEGMENT_MEAN_SMALL)
    for shape in FPS_SHAPES:
        yield _with_small(_fps_case, shape, FPS_SMALL)


def all_cases():
    yield from cam_kl_cases()
    yield from arcface_cases()
    yield from fgd_cases()
    yield from bev_masks_cases()
    yield from cast_kernel_cases()
