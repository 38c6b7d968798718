"""pytest-benchmark entries: every case of cases.py, each implementation,
forward+backward, at the first dtype that fits the device. Run with
`pytest benchmarks --benchmark-only`; on CPU only the first shape of each op
runs unless HCAM_BENCH_ALL=1 (the large shapes take minutes there)."""

import os

import cases as cases_mod
import pytest
import torch

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
ALL = DEVICE.type == "cuda" or os.environ.get("HCAM_BENCH_ALL") == "1"


def _params():
    seen = {}
    for case in cases_mod.all_cases():
        seen[case.op] = seen.get(case.op, 0) + 1
        if not ALL and seen[case.op] > 1:
            continue
        for impl in case.impls:
            yield pytest.param(case, impl, id=f"{case.op}-{case.label.replace(' ', '_')}-{impl}")


@pytest.mark.parametrize("case, impl", list(_params()))
def test_fwd_bwd(benchmark, case, impl):
    inputs = case.make_inputs(DEVICE, torch.float32, torch.Generator().manual_seed(0))
    fn = case.impls[impl]

    def step():
        for name in case.grad_of:
            inputs[name].grad = None
        loss = fn(**inputs)
        if case.grad_of:
            loss.backward()
        if DEVICE.type == "cuda":
            torch.cuda.synchronize()
        return loss

    step()  # compile / warm up outside the timing
    loss = benchmark(step)
    # a loss is finite; farthest_point_sample returns indices, which must be in range
    assert bool(torch.isfinite(loss).all()) if loss.is_floating_point() else bool((loss >= 0).all())
    if DEVICE.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        step()
        benchmark.extra_info["peak_mib_above_inputs"] = (torch.cuda.max_memory_allocated() - base) / 2**20
