"""The kernels' accumulation dtype: the one copy of this rule in Python."""

import torch


def acc_dtype(*dtypes: torch.dtype) -> torch.dtype:
    """at::opmath_type's rule (csrc/ops/common.h, acc_type_of): float64 when
    every given dtype is float64, else float32 (float16 and bfloat16 accumulate
    in float32)."""
    return torch.float64 if all(d == torch.float64 for d in dtypes) else torch.float32
