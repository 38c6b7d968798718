"""``python -m hcam_ops.distill.train [flags]``: detector distillation
(FGD / DistillBEV) on the training engine; docs/distill.md.

One process, or several under ``torchrun --nproc_per_node=N -m
hcam_ops.distill.train ...`` (``--batch-size`` is per process)."""

from __future__ import annotations

import argparse
import sys


def parser() -> argparse.ArgumentParser:
    from ..train.cli import _engine_args
    from ..train.distill import task
    from ..train.errors import CLIParser

    ap = CLIParser(
        prog="python -m hcam_ops.distill.train",
        parents=[_engine_args()],
        description=task.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    task.add_args(ap)
    return ap


def main(argv=None):
    """Returns the best validation mAP."""
    from ..train.distill.task import DistillTask
    from ..train.engine import fit

    args = parser().parse_args(sys.argv[1:] if argv is None else argv)
    return fit(DistillTask(args), args)


if __name__ == "__main__":
    main()
