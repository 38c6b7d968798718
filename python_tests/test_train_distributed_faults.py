"""Faults with several processes (gloo, CPU; docs/faults.md): a rank that
stops answering is named within --dist-timeout, and a NaN batch on one rank
stops or skips on every rank (no deadlock). The two ranks are started
directly (RANK / WORLD_SIZE / MASTER_ADDR, as torchrun sets them) so the
test sees each one's exit status and output."""

import os
import signal
import socket
import subprocess
import sys
import textwrap

import pytest

pytest.importorskip("timm", reason="the timm package is not installed here")
pytest.importorskip("skimage", reason="the skimage package is not installed here")
from _train_helpers import QUICK, TINY_HCAST  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY_H = ["hierarchical", *TINY_HCAST, *QUICK, "--batch-size", "4", "--no-repeated-aug", "--no-sync-bn"]

# Rank 1's second step: STALL stops the process (SIGSTOP), NAN makes that
# batch's images NaN.
FAULT = textwrap.dedent(
    """
    import os, signal, sys
    import torch
    from hcam_ops.train import engine, main
    step, calls = engine._train_step, [0]
    def faulty(task, model, bare, batch, device):
        calls[0] += 1
        if os.environ["RANK"] == "1" and calls[0] == 2:
            if os.environ["FAULT"] == "stall":
                os.kill(os.getpid(), signal.SIGSTOP)
            batch = [torch.full_like(batch[0], float("nan")), *batch[1:]]
        return step(task, model, bare, batch, device)
    engine._train_step = faulty
    main(sys.argv[1:])
    """
)


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _two_ranks(fault, tmp_path, *flags, timeout=240):
    port = _free_port()
    procs = []
    for rank in range(2):
        env = {
            **os.environ,
            "OMP_NUM_THREADS": "1",
            "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""),
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(port),
            "WORLD_SIZE": "2",
            "RANK": str(rank),
            "LOCAL_RANK": str(rank),
            "FAULT": fault,
        }
        argv = [sys.executable, "-c", FAULT, *TINY_H, "--out", str(tmp_path / "run"), *flags]
        procs.append(subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    try:
        outs = [p.communicate(timeout=timeout) for p in procs[:1]]
        if fault == "stall":
            procs[1].send_signal(signal.SIGKILL)  # the stopped rank; SIGKILL reaches it
        outs.append(procs[1].communicate(timeout=timeout))
    finally:
        for p in procs:
            p.kill()
    return [p.returncode for p in procs], [err for _, err in outs]


def test_a_stopped_rank_is_named_within_the_timeout(tmp_path):
    """Rank 1 is SIGSTOP'd in its second step: rank 0 used to wait silently
    (torch's 30-minute default); with --dist-timeout 5 it exits 1 with one
    line naming rank 1."""
    codes, errs = _two_ranks("stall", tmp_path, "--epochs", "1", "--dist-timeout", "5")
    assert codes[0] == 1, errs[0]
    lines = errs[0].strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: rank 0:"), errs[0]
    assert "--dist-timeout 5 s" in lines[0] and "rank 1 stopped answering" in lines[0], lines[0]


def test_a_nan_batch_on_one_rank_stops_every_rank(tmp_path):
    codes, errs = _two_ranks("nan", tmp_path, "--epochs", "1", "--dist-timeout", "60")
    assert codes == [1, 1], errs
    lines = errs[0].strip().splitlines()
    assert len(lines) == 1 and "non-finite loss" in lines[0] and "epoch 0, step 1 (rank 1 samples" in lines[0], errs[0]
    assert errs[1].strip() == "", errs[1]


def test_a_nan_batch_on_one_rank_is_skipped_by_every_rank(tmp_path):
    codes, errs = _two_ranks("nan", tmp_path, "--epochs", "1", "--dist-timeout", "60", "--on-nonfinite", "skip")
    assert codes == [0, 0], errs
    log = (tmp_path / "run" / "log.csv").read_text().splitlines()
    header, row = log[0].split(","), log[1].split(",")
    assert row[header.index("train_skipped")] == "1"
