"""Argument checks shared by the ops: one clear message per kind of bad input."""

from __future__ import annotations

import math
import numbers
import re
from collections.abc import Mapping, Sequence

import torch

FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
DIRECTIONS = ("fine_to_coarse", "coarse_to_fine")


def check_float(x: torch.Tensor, op: str, name: str) -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{op}: {name} must be a tensor, got {type(x).__name__}")
    if x.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{op}: {name} must be float16, bfloat16, float32 or float64, got {x.dtype}")


def check_features(features: torch.Tensor, op: str) -> tuple[int, int, int]:
    """Checks a [B, N, C] or [B, C, H, W] feature tensor; returns (B, N, C)."""
    check_float(features, op, "features")
    if features.dim() == 3:
        B, N, C = features.shape
    elif features.dim() == 4:
        B, C, H, W = features.shape
        N = H * W
    else:
        raise ValueError(
            f"{op}: features must be [B, N, C] tokens or a [B, C, H, W] map, got shape {tuple(features.shape)}"
        )
    if N == 0:
        raise ValueError(f"{op}: features have no spatial positions (N = 0), shape {tuple(features.shape)}")
    if C == 0:
        raise ValueError(f"{op}: features have no channels (C = 0), shape {tuple(features.shape)}")
    return B, N, C


def as_weight_matrix(weight: torch.Tensor, features: torch.Tensor, C: int, op: str, name: str) -> torch.Tensor:
    """A head's weight as [K, C]: a linear [K, C] or a 1x1 conv [K, C, 1, 1]."""
    check_float(weight, op, name)
    if weight.dim() == 4 and weight.shape[2:] == (1, 1):
        weight = weight.flatten(1)
    if weight.dim() != 2:
        raise ValueError(f"{op}: {name} must be [K, C] or [K, C, 1, 1], got shape {tuple(weight.shape)}")
    if weight.shape[1] != C:
        raise ValueError(f"{op}: {name} has {weight.shape[1]} channels, features have {C}")
    if weight.shape[0] == 0:
        raise ValueError(f"{op}: {name} has no classes (K = 0)")
    # A dtype other than the features' is fine: promote_floats casts both.
    check_same_device(features, weight, op, name)
    return weight


def promote_floats(op: str, tensors: Mapping[str, torch.Tensor]) -> list[torch.Tensor]:
    """The mixed-precision policy of every op with several float inputs.

    Checks that each named tensor is a float tensor (``TypeError`` naming it
    otherwise) and returns them, in order, cast to their common dtype, the
    ``torch.promote_types`` of all of them: a bfloat16 or float16 feature map
    (what autocast makes) with a float32 head weight runs in float32, as
    torch's losses do under autocast. A tensor already in that dtype is
    returned as it is (no copy). The cast is a plain ``.to(dtype)``, so
    autograd hands each input its gradient in its own dtype, and
    ``torch.compile`` traces it without a graph break (dtypes are static).
    Integer tensors (class indices, segment ids) and per-cell masks or labels
    do not take part: pass only the tensors the kernel computes with.
    """
    for name, t in tensors.items():
        check_float(t, op, name)
    values = list(tensors.values())
    dtype = values[0].dtype
    for t in values[1:]:
        dtype = torch.promote_types(dtype, t.dtype)
    return [t if t.dtype == dtype else t.to(dtype) for t in values]


def check_same_device(ref: torch.Tensor, x: torch.Tensor, op: str, name: str, ref_name: str = "features") -> None:
    if x.device != ref.device:
        raise ValueError(f"{op}: {name} is on {x.device}, {ref_name} on {ref.device}")


def check_same_device_fake(t: torch.Tensor, name: str, ref: torch.Tensor, ref_name: str, op: str) -> None:
    """The device check of the backward kernels (csrc/ops/cam_features.h,
    check_same_device), for their fakes: the same message, and a meta tensor
    among real ones (the fake runs as the Meta kernel) is caught too."""
    torch._check(t.device == ref.device, lambda: f"{op}: {name} is on {t.device}, {ref_name} on {ref.device}")


def check_index(index: torch.Tensor, features: torch.Tensor, B: int, op: str, name: str, dims: Sequence[int]) -> None:
    if not isinstance(index, torch.Tensor):
        raise TypeError(f"{op}: {name} must be an int64 tensor, got {type(index).__name__}")
    if index.dtype != torch.int64:
        raise TypeError(f"{op}: {name} must be int64 (torch.long), got {index.dtype}")
    if index.dim() not in dims or index.shape[0] != B:
        want = " or ".join(["[B]", "[B, L]"][d - 1] for d in dims)
        raise ValueError(f"{op}: {name} must be {want} with B = {B}, got shape {tuple(index.shape)}")
    check_same_device(features, index, op, name)


def check_index_range(index: torch.Tensor, K: int, op: str, name: str, what: str = "class") -> None:
    """Raises for a class index outside [0, K). On CUDA this costs one device
    sync, which check_index=False skips; it is skipped under torch.compile,
    where the kernels write NaN for such a sample instead of reading out of
    bounds (the CPU kernels always raise)."""
    if index.numel() == 0 or torch.compiler.is_compiling() or index.device.type == "meta":
        return
    lo, hi = torch.aminmax(index)
    lo, hi = (int(v) for v in torch.stack([lo, hi]).tolist())
    if lo < 0 or hi >= K:
        bad = lo if lo < 0 else hi
        raise IndexError(f"{op}: {name} holds {what} {bad}, outside [0, {K})")


INT64_MAX = 2**63 - 1


def check_real(value, op: str, name: str) -> float:
    """A float argument as PyTorch's schema takes one: a real number (a
    Python or NumPy int or float), not a str, bool or None; returns it as a float."""
    if isinstance(value, bool) or not isinstance(value, (numbers.Real, torch.SymFloat, torch.SymInt)):
        raise TypeError(f"{op}: {name} must be a real number, got {type(value).__name__} {value!r}")
    return float(value)


def check_int(value, op: str, name: str) -> int:
    """An int argument as PyTorch's schema takes one: a Python or NumPy int
    (a bool, or a float even when whole, is refused) that fits int64."""
    if isinstance(value, bool) or not isinstance(value, (numbers.Integral, torch.SymInt)):
        raise TypeError(f"{op}: {name} must be an int, got {type(value).__name__} {value!r}")
    if not -INT64_MAX - 1 <= value <= INT64_MAX:
        raise ValueError(f"{op}: {name} is too large: {value} does not fit int64")
    return value if isinstance(value, torch.SymInt) else int(value)


def check_size(value, op: str, name: str) -> int:
    """A positive int size (check_int, then > 0)."""
    n = check_int(value, op, name)
    if n <= 0:
        raise ValueError(f"{op}: {name} must be positive, got {value}")
    return n


def check_output_size(shape: Sequence[int], dtype: torch.dtype, op: str, name: str, value) -> None:
    """Raises when an output of ``shape`` cannot exist: its bytes overflow int64
    (torch's storage limit), naming the argument that sized it. Skipped
    under torch.compile, where sizes may be symbolic."""
    if torch.compiler.is_compiling():
        return
    nbytes = math.prod(map(int, shape)) * dtype.itemsize
    if nbytes > INT64_MAX:
        raise ValueError(f"{op}: {name} {value} is too large: the output {list(shape)} would take {nbytes} bytes")


def call_allocating(op: str, name: str, value, fn, *args):
    """Runs ``fn(*args)``, turning the allocator's failure for an output sized
    by ``name`` into one line that names it (eager only: under torch.compile
    the call is traced as it is)."""
    if torch.compiler.is_compiling():
        return fn(*args)
    try:
        return fn(*args)
    except (RuntimeError, MemoryError) as e:  # torch.OutOfMemoryError is a RuntimeError
        text = str(e)
        if not ("allocate" in text or "out of memory" in text):
            raise
        size = re.search(r"allocate (\d+ bytes|[\d.]+ \w+)", text)  # CPU: "N bytes", CUDA: "2.00 GiB"
        need = f": the output would take {size.group(1)}, more than can be allocated" if size else ""
        raise ValueError(f"{op}: {name} {value} is too large{need}") from None


def check_temperature(temperature: float, op: str, name: str = "temperature") -> float:
    t = check_real(temperature, op, name)
    if not (t > 0 and math.isfinite(t)):
        raise ValueError(f"{op}: {name} must be positive and finite, got {temperature}")
    return t


def check_eps(eps: float, op: str) -> float:
    e = check_real(eps, op, "eps")
    if not (e >= 0 and math.isfinite(e)):
        raise ValueError(f"{op}: eps must be >= 0 and finite, got {eps}")
    return e


def check_choice(value: str, allowed: Sequence[str], op: str, name: str) -> str:
    if value not in allowed:
        raise ValueError(f"{op}: {name} must be one of {', '.join(map(repr, allowed))}, got {value!r}")
    return value
