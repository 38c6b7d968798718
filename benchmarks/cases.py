"""Benchmark cases: each op's shapes, inputs, and its implementations (fused,
reference, torch.compile of the reference). Shared by run.py (the report) and
the pytest-benchmark tests, so both time the same things."""

from __future__ import annotations

import dataclasses
from typing import Callable

import torch

import hcam_ops
from hcam_ops import reference as R


@dataclasses.dataclass
class Case:
    op: str
    shape: tuple  # as the issue names it
    label: str  # short text of the shape for tables
    make_inputs: Callable[[torch.device, torch.dtype, torch.Generator], dict]
    impls: dict  # name -> fn(**inputs) -> scalar loss
    grad_of: tuple  # input names that get gradients
    floor_bytes: Callable[[torch.dtype], int] = None  # fewest bytes a fwd+bwd must move


_compiled = {}


def compiled(fn):
    """torch.compile of a reference, built once per function."""
    if fn not in _compiled:
        _compiled[fn] = torch.compile(fn, dynamic=False)
    return _compiled[fn]


# --- CAM consistency (SPEC 1) -------------------------------------------------
CAM_KL_SHAPES = [  # (B, N, C, Kf, Kc)
    (128, 64, 384, 100, 70),
    (64, 196, 768, 200, 37),
    (32, 3136, 256, 1000, 100),
    (256, 196, 384, 1000, 100),
]


def _cam_kl_inputs(shape):
    B, N, C, Kf, Kc = shape

    def make(device, dtype, gen):
        return dict(
            features=torch.randn(B, N, C, generator=gen).to(device, dtype).requires_grad_(),
            fine_weight=(torch.randn(Kf, C, generator=gen) * C**-0.5).to(device, dtype).requires_grad_(),
            coarse_weight=(torch.randn(Kc, C, generator=gen) * C**-0.5).to(device, dtype),
            fine_index=torch.randint(0, Kf, (B,), generator=gen).to(device),
            coarse_index=torch.randint(0, Kc, (B,), generator=gen).to(device),
        )

    return make


def _cam_kl_floor(shape):
    B, N, C, Kf, Kc = shape

    def floor(dtype):
        # forward reads the features; backward reads them again (weight
        # gradient) and writes their gradient: three passes of B*N*C.
        return 3 * B * N * C * torch.empty((), dtype=dtype).element_size()

    return floor


def _fused_cam_kl(**kw):
    return hcam_ops.cam_kl_loss(**kw, check_index=False)


def cam_kl_cases():
    for shape in CAM_KL_SHAPES:
        yield Case(
            op="cam_kl_loss",
            shape=shape,
            label="B={} N={} C={} Kf={} Kc={}".format(*shape),
            make_inputs=_cam_kl_inputs(shape),
            impls={
                "fused": _fused_cam_kl,
                "reference": R.cam_kl_loss,
                "compiled_ref": lambda **kw: compiled(R.cam_kl_loss)(**kw),
            },
            grad_of=("features", "fine_weight"),
            floor_bytes=_cam_kl_floor(shape),
        )


# --- Multi-label ArcFace (SPEC 2) ----------------------------------------------
ARCFACE_SHAPES = [(32, 512, 6), (256, 512, 10000), (512, 512, 100000)]  # (B, D, K)


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


def arcface_cases():
    for shape in ARCFACE_SHAPES:
        yield Case(
            op="multilabel_arcface_loss",
            shape=shape,
            label="B={} D={} K={}".format(*shape),
            make_inputs=_arcface_inputs(shape),
            impls={
                "fused": _fused_arcface,
                "reference": R.multilabel_arcface_loss,
                "compiled_ref": lambda **kw: compiled(R.multilabel_arcface_loss)(**kw),
            },
            grad_of=("features", "weight"),
        )


def all_cases():
    yield from cam_kl_cases()
    yield from arcface_cases()
