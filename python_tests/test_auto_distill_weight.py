"""hcam_ops.distill.AutoDistillWeight (ours): the factor is the detection
losses' sum over the largest terms' sum, over the first `batches` batches,
then frozen; a checkpoint mid-calibration resumes to the same factor; ranks
agree (all-reduced)."""

import math

import pytest
import torch

from hcam_ops.distill import AutoDistillWeight

# (detection loss, terms) per batch: the largest term differs in name and size.
BATCHES = [
    (2.0, {"loss_fg": 300.0, "loss_bg": 40.0}),
    (1.5, {"loss_fg": 100.0, "loss_bg": 250.0}),
    (1.0, {"loss_fg": 50.0, "loss_bg": 10.0}),
    (0.5, {"loss_fg": 1.0, "loss_bg": 1.0}),
]


def _feed(auto, batches):
    return [
        float(auto.update(torch.tensor(det), {k: torch.tensor(v) for k, v in terms.items()})) for det, terms in batches
    ]


def test_running_factor_then_frozen():
    auto = AutoDistillWeight(batches=3)
    assert float(auto.factor()) == 1.0
    got = _feed(auto, BATCHES)
    want = [2.0 / 300.0, 3.5 / 550.0, 4.5 / 600.0, 4.5 / 600.0]
    assert got == pytest.approx(want, rel=1e-12)
    assert auto.frozen and int(auto.seen) == 3


def test_resume_mid_calibration_gives_the_same_factor():
    whole = _feed(AutoDistillWeight(batches=3), BATCHES)
    first = AutoDistillWeight(batches=3)
    _feed(first, BATCHES[:2])
    resumed = AutoDistillWeight(batches=3)
    resumed.load_state_dict(first.state_dict())
    assert _feed(resumed, BATCHES[2:]) == whole[2:]


def test_a_nonfinite_batch_sets_nothing():
    auto = AutoDistillWeight(batches=2)
    _feed(auto, BATCHES[:1])
    assert float(auto.update(torch.tensor(math.nan), {"loss_fg": torch.tensor(1.0)})) == pytest.approx(2.0 / 300.0)
    assert int(auto.seen) == 1


def test_bad_arguments():
    for bad in (0, -1, 2.5, True, "3"):
        with pytest.raises(ValueError, match="batches must be a positive int"):
            AutoDistillWeight(bad)
    with pytest.raises(ValueError, match="no distillation terms"):
        AutoDistillWeight().update(torch.tensor(1.0), {})


def test_under_torch_distributed(tmp_path):
    # One gloo rank: the sums go through all_reduce and come back the same.
    import torch.distributed as dist

    want = _feed(AutoDistillWeight(batches=3), BATCHES)
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        assert _feed(AutoDistillWeight(batches=3), BATCHES) == want
    finally:
        dist.destroy_process_group()
