"""``python -m hcam_ops.train hierarchical|multilabel|distill [flags]``.

One process: ``python -m hcam_ops.train multilabel --epochs 10``. Several
(data parallel, one per GPU, or CPU processes on gloo)::

    torchrun --nproc_per_node=4 -m hcam_ops.train hierarchical --data root --hierarchy h.csv

``--batch-size`` is per process (the global batch is world size x batch size);
multi-node runs use torchrun's own ``--nnodes`` / ``--rdzv-*`` flags.
``--task NAME`` (or ``--task=NAME``) is an alias of the subcommand; with
neither, the task is ``hierarchical``.
"""

from __future__ import annotations

import argparse
import sys

import torch

from .._cli import CLIError, CLIParser, check_out_dir, finite_non_negative_float, non_negative_int, positive_float
from .engine import AMP_DTYPES, fit

TASKS = ("hierarchical", "multilabel", "distill")


def _engine_args() -> argparse.ArgumentParser:
    ap = CLIParser(add_help=False)
    g = ap.add_argument_group("training (shared by the tasks)")
    g.add_argument("--epochs", type=non_negative_int)
    g.add_argument("--batch-size", type=int, help="per process")
    g.add_argument("--opt", default="adamw", help="a timm optimizer name (adamw, adam, sgd, lamb, ...)")
    g.add_argument("--lr", type=finite_non_negative_float)
    g.add_argument("--momentum", type=finite_non_negative_float, default=0.9, help="for sgd")
    g.add_argument("--weight-decay", type=finite_non_negative_float, default=0.05)
    g.add_argument(
        "--sched",
        default="cosine",
        choices=["cosine", "step", "plateau", "none"],
        help="cosine (per update, with warm-up), step (every --decay-epochs), plateau (on the monitored metric)",
    )
    g.add_argument("--warmup-epochs", type=non_negative_int, default=1)
    g.add_argument("--warmup-lr", type=finite_non_negative_float, default=1e-6)
    g.add_argument("--min-lr", type=finite_non_negative_float, default=0.0)
    g.add_argument("--decay-epochs", type=positive_float, default=30, help="step: epochs between decays")
    g.add_argument("--decay-rate", type=positive_float, default=0.1, help="step and plateau: the lr factor")
    g.add_argument("--plateau-patience", type=non_negative_int, default=2, help="plateau: epochs without improvement")
    g.add_argument("--amp", action="store_true", help="mixed precision (float16 + scaler on CUDA, bfloat16 on CPU)")
    g.add_argument("--amp-dtype", choices=sorted(AMP_DTYPES), help="override the autocast dtype")
    g.add_argument("--accumulate", type=int, default=1, help="gradient accumulation steps")
    g.add_argument("--clip-grad", type=finite_non_negative_float, default=1.0, help="max gradient norm (0: off)")
    g.add_argument(
        "--patience", type=non_negative_int, help="early stopping: epochs without a better monitored metric (0: off)"
    )
    g.add_argument("--workers", type=non_negative_int, default=0, help="data-loading processes per training process")
    g.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    g.add_argument("--out", help="folder for log.csv, tb/, history.png, args.json, last.pth, best.pth")
    g.add_argument("--resume", help="a last.pth of the same configuration to continue from")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--no-progress", action="store_true", help="no progress bar, no progress lines")
    g.add_argument(
        "--log-every",
        type=non_negative_int,
        default=50,
        help="when stderr is not a terminal: a progress line every N steps (rate, ETA; 0: off)",
    )
    g.add_argument("--no-tensorboard", action="store_true")
    g.add_argument("--no-sync-bn", action="store_true", help="keep BatchNorm statistics per process")
    g.add_argument(
        "--on-nonfinite",
        default="stop",
        choices=["stop", "skip"],
        help="a loss or gradient that is NaN or Inf: stop the run (one line naming the epoch, step and samples), "
        "or skip that optimizer step (counted in log.csv's train_skipped)",
    )
    g.add_argument(
        "--dist-timeout",
        type=positive_float,
        default=300.0,
        help="several processes: seconds a collective waits for a rank before the run stops, naming the rank",
    )
    return ap


def parser() -> argparse.ArgumentParser:
    from .distill import task as distill
    from .hierarchical import task as hierarchical
    from .multilabel import task as multilabel

    ap = CLIParser(prog="python -m hcam_ops.train", description=__doc__)
    sub = ap.add_subparsers(dest="command", metavar="{" + ",".join(TASKS) + "}", required=True, parser_class=CLIParser)
    for name, module in (("hierarchical", hierarchical), ("multilabel", multilabel), ("distill", distill)):
        # A parent parser per subcommand: argparse shares a parent's option
        # objects with every child, so one task's set_defaults would rewrite
        # the other's.
        p = sub.add_parser(
            name,
            parents=[_engine_args()],
            help=module.__doc__.splitlines()[0],
            description=module.__doc__,
        )
        module.add_args(p)
    return ap


def route(argv: list[str]) -> list[str]:
    """``--task NAME`` / ``--task=NAME`` anywhere becomes the subcommand;
    with no subcommand and no ``--task``, ``hierarchical``."""
    argv = list(argv)
    task = None
    for i, a in enumerate(argv):
        if a == "--task":
            if i + 1 >= len(argv):
                raise CLIError("--task: expected one of " + ", ".join(TASKS))
            task = argv[i + 1]
            del argv[i : i + 2]
            break
        if a.startswith("--task="):
            task = a.split("=", 1)[1]
            del argv[i]
            break
    if task is not None and task not in TASKS:
        raise CLIError(f"--task {task!r}: one of {', '.join(TASKS)}")
    given = argv[0] if argv and argv[0] in TASKS else None
    if task and given and task != given:
        raise CLIError(f"--task {task} contradicts the subcommand {given}")
    if given is None and argv[:1] not in (["-h"], ["--help"]):
        argv.insert(0, task or "hierarchical")
    return argv


def main(argv=None):
    """Returns the multilabel test report, else the best monitored value (the
    hierarchical full-path accuracy, the distillation student's mAP)."""
    argv = route(sys.argv[1:] if argv is None else argv)
    args = parser().parse_args(argv)
    check_out_dir(args.out)  # before a task reads its data: an --out that is a file fails first
    if args.command == "hierarchical":
        from .hierarchical.task import HierarchicalTask as Task
    elif args.command == "multilabel":
        from .multilabel.task import MultilabelTask as Task
    else:
        from .distill.task import DistillTask as Task
    return fit(Task(args), args)
