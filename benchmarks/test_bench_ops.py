"""pytest-benchmark entries: every case of cases.py, each implementation,
forward+backward, at the first dtype that fits the device. Run with
`pytest benchmarks --benchmark-only`; on CPU only the first shape of each op
runs unless HCAM_BENCH_ALL=1 (the large shapes take minutes there).

Before timing, each entry runs its case at the case's small shape and checks
the value and the gradients against hcam_ops.reference in float64, so a case
that wires the wrong op or arguments fails; the cases not timed on this
device get that check alone (test_untimed_cases_match_the_reference, which
--benchmark-only skips: run `pytest benchmarks --benchmark-disable` for
every check without the timing)."""

import os

import cases as cases_mod
import pytest
import torch

from hcam_ops import reference as R

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
ALL = DEVICE.type == "cuda" or os.environ.get("HCAM_BENCH_ALL") == "1"


# What each op's cases compute, written here from hcam_ops.reference (not
# taken from cases.py): the scalar every implementation of a case returns.
REFERENCE = {
    "cam_kl_loss": R.cam_kl_loss,
    "multilabel_arcface_loss": R.multilabel_arcface_loss,
    "fgd_loss": lambda **kw: sum(R.fgd_loss(**kw, **cases_mod.FGD_WEIGHTS).values()),
    "bev_masks_from_boxes": lambda **kw: sum(mask.sum() for mask in R.bev_masks_from_boxes(**kw)),
    "segment_mean": lambda **kw: R.segment_mean(**kw)[0].sum(),
    "farthest_point_sample": R.farthest_point_sample,
}


def _params(timed=True):
    """Every case and implementation timed on this device (``timed``), or
    every one that is not."""
    seen = {}
    for case in cases_mod.all_cases():
        seen[case.op] = seen.get(case.op, 0) + 1
        if (ALL or seen[case.op] == 1) != timed:
            continue
        for impl in case.impls:
            yield pytest.param(case, impl, id=f"{case.op}-{case.label.replace(' ', '_')}-{impl}")


def _check_against_reference(case, impl):
    """``impl`` of ``case`` (a small one) gives hcam_ops.reference's value and
    gradients, in float64, on the same inputs."""
    got_inputs, want_inputs = (case.make_inputs(DEVICE, torch.float64, torch.Generator().manual_seed(0)) for _ in "ab")
    got, want = case.impls[impl](**got_inputs), REFERENCE[case.op](**want_inputs)
    if not want.is_floating_point():  # farthest_point_sample's indices
        assert torch.equal(got, want)
        return
    assert want.abs() > 1e-3  # a value that tells implementations apart
    torch.testing.assert_close(got, want, rtol=1e-9, atol=0)
    if case.grad_of:
        got.backward()
        want.backward()
        for name in case.grad_of:
            torch.testing.assert_close(got_inputs[name].grad, want_inputs[name].grad, rtol=1e-9, atol=1e-12, msg=name)


@pytest.mark.parametrize("case, impl", list(_params(timed=False)))
def test_untimed_cases_match_the_reference(case, impl):
    _check_against_reference(case.small, impl)


@pytest.mark.parametrize("case, impl", list(_params()))
def test_fwd_bwd(benchmark, case, impl):
    _check_against_reference(case.small, impl)
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
