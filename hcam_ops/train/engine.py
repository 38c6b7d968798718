"""The training loop every task shares (``python -m hcam_ops.train hierarchical|multilabel|distill``).

Data parallel over processes when launched by ``torchrun`` (DDP; NCCL on
GPUs, gloo on CPUs): every rank reads its own shard of each epoch
(``DistributedSampler``; ``--batch-size`` is per process), gradients are
averaged by DDP, BatchNorm statistics are synchronised, evaluation metrics are
summed over the ranks, and only rank 0 logs and writes files. Around it: AMP
(bfloat16, or float16 with a gradient scaler), gradient accumulation and
clipping, timm's schedulers (cosine with warm-up, step, plateau), early
stopping on the task's monitored metric, checkpoints with the model's name and
config (``checkpoint.py``), resume, ``log.csv`` + TensorBoard + ``history.png``.

Faults (docs/faults.md): a NaN or Inf loss or gradient stops the run with one
line naming the epoch, the step and the batch's samples, or with
``--on-nonfinite skip`` skips that step (``train_skipped`` in log.csv); a
checkpoint is never written from non-finite weights and ``best`` compares
finite metrics only; ``--resume`` restores every random state and the log,
so a resumed run equals the uninterrupted one; SIGTERM and SIGINT end the
run with one line, no half-written file; a collective that waits past
``--dist-timeout`` names the rank that stopped answering.

A task (``hierarchical/task.py``, ``multilabel/task.py``,
``distill/task.py``; a subclass of :class:`Task`) supplies the model, the
data, one training step and the evaluation; this file knows nothing of any
of them.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import sys
import time
from typing import Any

import torch
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from .. import checkpoint
from .._cli import CLIError, check_device
from . import distributed, rng, signals, sync_bn
from .history import History
from .progress import ProgressLines

AMP_DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16}


class Task:
    """What a training task gives the engine. The methods that raise must be
    written by every task; the others are hooks whose default does nothing."""

    name: str
    monitor: str  # the key of evaluate()'s result that is maximised (best checkpoint, early stopping, plateau)
    find_unused_parameters: bool = False
    model_name: str
    model_config: dict

    def build_model(self) -> torch.nn.Module:
        raise NotImplementedError

    def datasets(self) -> tuple[torch.utils.data.Dataset, torch.utils.data.Dataset]:
        raise NotImplementedError

    def train_sampler(self, dataset, world: distributed.World, seed: int) -> torch.utils.data.Sampler | None:
        raise NotImplementedError

    def train_step(self, model, bare, batch, device) -> tuple[dict[str, torch.Tensor], int]:
        raise NotImplementedError

    def evaluate(self, bare, loader, device, world: distributed.World) -> dict[str, float]:
        raise NotImplementedError

    def state(self) -> dict:
        """What the task needs to read the outputs (class names, hierarchy),
        kept in every checkpoint as ``task_state``."""
        return {}

    def load_state(self, task_state: dict) -> None:
        """On resume: the counterpart of :meth:`state`."""

    def after_step(self, bare) -> None:
        """After each optimizer step (e.g. a weight EMA)."""

    def train_metrics(self, world: distributed.World, device) -> dict[str, float]:
        """Epoch-level training metrics that per-batch sums cannot give (F1, mAP)."""
        return {}

    def finish(self, bare, device, world: distributed.World, out_dir: str) -> Any:
        """After the last epoch; what it returns, :func:`fit` returns."""
        return None

    def sample_ids(self, dataset, indices: list[int]) -> list:
        """How an error names the training samples at ``indices`` of
        ``dataset`` (the training set): by default the indices themselves."""
        return list(indices)


class NonFinite(Exception):
    """A non-finite loss or gradient, or non-finite weights before a save."""


def built_model(task: Task) -> str:
    """The model as built: its timm name and the configuration it was given
    (``cast_small(embed_dim=32, ...)``), not the name alone."""
    config = ", ".join(f"{k}={v!r}" for k, v in task.model_config.items())
    return f"{task.model_name}({config})"


def fit(task: Task, args):
    """Trains ``task`` as ``args`` say; returns what the task's ``finish``
    returns (the multilabel test report), else the best monitored value."""
    device = check_device(args.device)
    if args.accumulate < 1:
        raise CLIError(f"--accumulate {args.accumulate}: must be >= 1")
    if args.batch_size < 1:
        raise CLIError(f"--batch-size {args.batch_size}: must be >= 1")
    world, device = distributed.init(device, getattr(args, "dist_timeout", None))
    try:
        with signals.interruptible():
            return _fit(task, args, world, device)
    except signals.Interrupted as e:
        _interrupted(e.signum, args, world)
    except RuntimeError as e:  # torch.distributed.DistBackendError is one
        if world.distributed and distributed.timed_out(e):
            raise CLIError(distributed.timeout_message(world, args.dist_timeout)) from None
        raise
    finally:
        distributed.shutdown(world)


def _interrupted(signum: int, args, world: distributed.World):
    """One line (rank 0's), and the shell's status for a process a signal ended."""
    if world.main:
        last = os.path.join(args.out or ".", "last.pth")
        kept = f"; {last} holds the last finished epoch" if os.path.exists(last) else ""
        name = signals.Interrupted(signum).args[0]
        print(f"error: stopped by {name}; no checkpoint was left half-written{kept}", file=sys.stderr, flush=True)
    raise SystemExit(128 + signum)


def _fit(task: Task, args, world: distributed.World, device: torch.device) -> float:
    ckpt = _load_resume(args.resume, task) if args.resume else None
    torch.manual_seed(args.seed)  # the same initial weights on every rank (DDP also broadcasts rank 0's)
    bare = task.build_model().to(device)
    n_params = sum(p.numel() for p in bare.parameters())
    if ckpt is not None:
        bare.load_state_dict(ckpt["model"])
    distributed.seed_everything(args.seed, world)
    synced = 0
    if world.distributed and not args.no_sync_bn:
        bare, synced = sync_bn.convert(bare, device)

    train_set, val_set = task.datasets()
    sampler = task.train_sampler(train_set, world, args.seed)
    if sampler is None:
        sampler = torch.utils.data.DistributedSampler(train_set, world.size, world.rank, shuffle=True, seed=args.seed)
    per_rank = len(sampler)
    order = _Recorder(sampler)  # which samples each batch holds, for the error that names them
    train_loader = torch.utils.data.DataLoader(
        train_set,
        args.batch_size,
        sampler=order,
        num_workers=args.workers,
        drop_last=per_rank > args.batch_size,
        pin_memory=device.type == "cuda",
    )
    val_loader = torch.utils.data.DataLoader(
        val_set, args.batch_size, sampler=distributed.ShardSampler(len(val_set), world), num_workers=args.workers
    )
    updates_per_epoch = max((len(train_loader) + args.accumulate - 1) // args.accumulate, 1)

    optimizer = _optimizer(bare, args)
    scheduler = _scheduler(optimizer, args, updates_per_epoch)
    amp_dtype = (
        AMP_DTYPES[args.amp_dtype] if args.amp_dtype else (torch.float16 if device.type == "cuda" else torch.bfloat16)
    )
    scaler = torch.amp.GradScaler(device.type, enabled=args.amp and amp_dtype == torch.float16)

    start, best, stale = 0, float("-inf"), 0
    if ckpt is not None:
        optimizer.load_state_dict(ckpt["optimizer"])
        if scheduler is not None and ckpt.get("scheduler") is not None:
            scheduler.load_state_dict(ckpt["scheduler"])
        if ckpt.get("scaler"):
            scaler.load_state_dict(ckpt["scaler"])
        start, best, stale = ckpt["epoch"] + 1, ckpt["best"], ckpt.get("stale", 0)
        task.load_state(ckpt.get("task_state") or {})

    model = bare
    if world.distributed:
        model = DistributedDataParallel(
            bare,
            device_ids=[device.index] if device.type == "cuda" else None,
            find_unused_parameters=task.find_unused_parameters,
        )

    if ckpt is not None:
        states = ckpt.get("rng") or []
        if len(states) == world.size:
            rng.restore(states[world.rank], sampler)
        elif world.main:
            print(
                f"--resume {args.resume}: no random states for {world.size} process(es) in it; "
                "the run continues re-seeded (not bit-identical to an uninterrupted one)",
                file=sys.stderr,
                flush=True,
            )

    history = None
    if world.main:
        os.makedirs(args.out, exist_ok=True)
        record = {
            **vars(args),
            "world_size": world.size,
            "backend": world.backend,
            "device": str(device),
            "model_name": task.model_name,
            "model_config": task.model_config,
            "parameters": n_params,
        }
        with open(os.path.join(args.out, "args.json"), "w") as f:
            json.dump(record, f, indent=1, default=str)
        history = History(
            args.out, resume=ckpt is not None, tensorboard=not args.no_tensorboard, upto=start - 1 if ckpt else None
        )
        print(
            f"hcam_ops.train {task.name}: device {device}, world size {world.size}"
            f"{f' ({world.backend})' if world.distributed else ''}, model {built_model(task)} "
            f"({n_params / 1e6:.2f} M parameters{f', {synced} BatchNorm layers synchronised' if synced else ''}), "
            f"results in {os.path.abspath(args.out)}",
            flush=True,
        )
    distributed.barrier(world)

    show_bar = world.main and not args.no_progress and sys.stderr.isatty()
    show_lines = world.main and not args.no_progress and not show_bar
    printed_header = False
    updates = start * updates_per_epoch
    for epoch in range(start, args.epochs):
        t0 = time.time()
        if hasattr(sampler, "set_epoch"):
            sampler.set_epoch(epoch)
        model.train()
        sums, n, skipped = {}, 0, 0
        optimizer.zero_grad(set_to_none=True)
        bar = tqdm(train_loader, desc=f"epoch {epoch}", leave=False, disable=not show_bar, dynamic_ncols=True)
        last = len(train_loader) - 1
        lines = ProgressLines(epoch, len(train_loader), args.log_every, show_lines)
        for i, batch in enumerate(bar):
            step_now = (i + 1) % args.accumulate == 0 or i == last
            buffers = _float_buffers(bare) if args.on_nonfinite == "skip" else None
            # Gradients are all-reduced only on the micro-batch that steps.
            sync = model.no_sync() if world.distributed and not step_now else contextlib.nullcontext()
            with sync:
                with torch.autocast(device.type, dtype=amp_dtype, enabled=args.amp):
                    parts, size, problem = _train_step(task, model, bare, batch, device)
                bad = distributed.any_across(problem is not None, world, device)
                if not bad:
                    scaler.scale(parts["loss"] / args.accumulate).backward()
            if not bad and step_now:
                norm = None
                if args.clip_grad:
                    scaler.unscale_(optimizer)
                    norm = torch.nn.utils.clip_grad_norm_(bare.parameters(), args.clip_grad)
                elif not scaler.is_enabled():
                    norm = _grad_norm(bare)
                # With float16's scaler an Inf gradient is routine: the scaler skips that step itself.
                if norm is not None and not scaler.is_enabled() and not bool(torch.isfinite(norm)):
                    bad, problem = True, f"non-finite gradient norm ({float(norm)})"
            if bad:
                where = f"epoch {epoch}, step {i}"
                if args.on_nonfinite == "stop":
                    message = _nonfinite_message(task, train_set, order, i, args, problem, where, world)
                    raise CLIError(message) if world.main else SystemExit(1)  # one line, rank 0's
                optimizer.zero_grad(set_to_none=True)  # the micro-batches accumulated so far go too
                _restore_buffers(bare, buffers)  # BatchNorm statistics the bad batch updated
                skipped += 1
                if world.main:
                    print(f"--on-nonfinite skip: skipped {where}", file=sys.stderr, flush=True)
                continue
            if step_now:
                scaler.step(optimizer)
                scaler.update()
                optimizer.zero_grad(set_to_none=True)
                updates += 1
                task.after_step(bare)
                if scheduler is not None:
                    scheduler.step_update(num_updates=updates)
            for k, v in parts.items():
                sums[k] = sums.get(k, 0.0) + float(v.detach()) * size
            n += size
            if show_bar:
                bar.set_postfix(loss=f"{sums['loss'] / n:.4f}")
            lines.step(i, sums["loss"] / max(n, 1))
        totals = distributed.sum_across({**sums, "__n": n}, world, device)
        count = max(totals.pop("__n"), 1)
        train = {f"train_{k}": v / count for k, v in totals.items()}
        train.update({f"train_{k}": v for k, v in task.train_metrics(world, device).items()})
        if args.on_nonfinite == "skip":
            train["train_skipped"] = skipped  # the ranks skip together: the same count on each
        with torch.no_grad():
            val = {f"val_{k}": v for k, v in task.evaluate(bare, val_loader, device, world).items()}
        monitored = val[f"val_{task.monitor}"]
        if scheduler is not None:
            scheduler.step(epoch + 1, monitored)
        improved = math.isfinite(monitored) and monitored > best  # a NaN never becomes the best
        best, stale = (monitored, 0) if improved else (best, stale + 1)
        row = {"epoch": epoch, "lr": optimizer.param_groups[0]["lr"], **train, **val, "seconds": time.time() - t0}
        weights = _plain_state(bare)
        broken = _non_finite_keys(weights)
        if distributed.any_across(bool(broken), world, device):
            raise CLIError(
                f"epoch {epoch} left non-finite weights ({', '.join(broken[:3]) or 'on another rank'}); "
                f"no checkpoint written from them, {os.path.join(args.out, 'last.pth')} keeps the previous epoch"
            )
        states = distributed.gather_objects(rng.capture(sampler), world)
        if world.main:
            widths = [max(12, len(c)) for c in row]  # whole names: loss_fg and loss_fp must not read alike
            if not printed_header:
                print(" ".join(f"{c:>{w}}" for c, w in zip(row, widths)), flush=True)
                printed_header = True
            cells = (f"{v:>{w}.5g}" if isinstance(v, float) else f"{v:>{w}}" for v, w in zip(row.values(), widths))
            print(" ".join(cells), flush=True)
            history.append(row)
            state = checkpoint.model_checkpoint(
                task.model_name,
                task.model_config,
                weights,
                task=task.name,
                task_state=task.state(),
                optimizer=optimizer.state_dict(),
                scheduler=scheduler.state_dict() if scheduler is not None else None,
                scaler=scaler.state_dict(),
                epoch=epoch,
                best=best,
                stale=stale,
                metrics={**train, **val},
                rng=states,
            )
            checkpoint.save(state, os.path.join(args.out, "last.pth"))
            if improved:
                checkpoint.save(state, os.path.join(args.out, "best.pth"))
        if args.patience and stale >= args.patience:
            if world.main:
                print(f"early stop: no better {task.monitor} for {args.patience} epochs", flush=True)
            break
    distributed.barrier(world)
    if history is not None:
        history.close()
    best_path = os.path.join(args.out, "best.pth")
    if os.path.exists(best_path):
        bare.load_state_dict(checkpoint.load(best_path, "best checkpoint")["model"])
    result = task.finish(bare, device, world, args.out)
    return best if result is None else result


def _train_step(task: Task, model, bare, batch, device):
    """The task's step, and what is not finite about it (None: all is).
    The package's ops check their own inputs and terms (FGDLoss: "... not
    finite", the multi-label ArcFace loss: "... NaN or Inf") and raise
    ValueError; that becomes the same report as a NaN loss, which names the
    batch."""
    try:
        parts, size = task.train_step(model, bare, batch, device)
    except ValueError as e:
        if "not finite" not in str(e) and "NaN or Inf" not in str(e):
            raise
        return None, 0, str(e).splitlines()[0]
    loss = parts["loss"].detach()
    if not bool(torch.isfinite(loss).all()):
        return parts, size, f"non-finite loss ({float(loss)})"
    return parts, size, None


def _nonfinite_message(task: Task, train_set, order, i, args, problem, where, world) -> str:
    b = args.batch_size
    mine = task.sample_ids(train_set, order.order[i * b : (i + 1) * b])
    seen = distributed.gather_objects((problem, mine), world)
    culprits = [(r, p, ids) for r, (p, ids) in enumerate(seen) if p is not None] or list(
        (r, problem, ids) for r, (_, ids) in enumerate(seen)
    )
    samples = "; ".join(
        f"{f'rank {r} ' if world.distributed else ''}samples {', '.join(map(str, ids))}" for r, _, ids in culprits
    )
    return (
        f"{culprits[0][1]} in {where} ({samples}); stopped, no checkpoint written from it "
        "(--on-nonfinite skip skips such steps)"
    )


def _grad_norm(model: torch.nn.Module) -> torch.Tensor | None:
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    if not grads:
        return None
    return torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g.detach().float()) for g in grads]))


def _float_buffers(model: torch.nn.Module) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [(b, b.detach().clone()) for b in model.buffers() if b.is_floating_point()]


def _restore_buffers(model: torch.nn.Module, saved) -> None:
    with torch.no_grad():
        for b, copy in saved or []:
            b.copy_(copy)


def _non_finite_keys(state: dict) -> list[str]:
    return [k for k, v in state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]


class _Recorder(torch.utils.data.Sampler):
    """The wrapped sampler's order in the current epoch (the batches are its
    consecutive runs of ``--batch-size``), recorded as the loader draws it."""

    def __init__(self, inner):
        self.inner, self.order = inner, []

    def __iter__(self):
        self.order = []
        for index in self.inner:
            self.order.append(int(index))
            yield index

    def __len__(self) -> int:
        return len(self.inner)


def _load_resume(path: str, task: Task) -> dict:
    ckpt = checkpoint.load(path, "--resume")
    if not checkpoint.is_model_checkpoint(ckpt):
        raise CLIError(f"--resume {path}: not a checkpoint of hcam_ops (no model name and config in it)")
    diffs = checkpoint.config_differences(ckpt, task.name, task.model_name, task.model_config)
    if diffs:
        raise CLIError(f"--resume {path}: the checkpoint was trained with another configuration: {'; '.join(diffs)}")
    return ckpt


def _optimizer(model: torch.nn.Module, args) -> torch.optim.Optimizer:
    from timm.optim import create_optimizer_v2

    try:
        return create_optimizer_v2(
            model, opt=args.opt, lr=args.lr, weight_decay=args.weight_decay, momentum=args.momentum
        )
    except (ValueError, AssertionError) as e:
        raise CLIError(f"--opt {args.opt}: {e}") from None


def _scheduler(optimizer, args, updates_per_epoch: int):
    if args.sched == "none":
        return None
    if args.sched == "plateau":
        return _Plateau(optimizer, args)
    from timm.scheduler import create_scheduler_v2

    scheduler, _ = create_scheduler_v2(
        optimizer,
        sched=args.sched,
        num_epochs=args.epochs,
        warmup_epochs=args.warmup_epochs,
        warmup_lr=args.warmup_lr,
        min_lr=args.min_lr,
        decay_epochs=args.decay_epochs,
        decay_rate=args.decay_rate,
        step_on_epochs=args.sched != "cosine",
        updates_per_epoch=updates_per_epoch,
    )
    return scheduler


def _plain_state(model: torch.nn.Module) -> dict:
    """On the CPU; synchronised BatchNorm layers keep plain BatchNorm's keys,
    so the checkpoint loads into the model without them."""
    return {k: v.detach().cpu() for k, v in model.state_dict().items()}


class _Plateau:
    """torch's ReduceLROnPlateau behind timm's two calls (``step_update`` per
    update, ``step(epoch, metric)`` per epoch). timm's own plateau scheduler
    leaves its best metric and patience counters out of its state dict, so a
    resumed run would restart them; torch's keeps them."""

    def __init__(self, optimizer, args):
        self.inner = torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, mode="max", factor=args.decay_rate, patience=args.plateau_patience, min_lr=args.min_lr
        )

    def step_update(self, num_updates: int) -> None:
        pass  # the learning rate changes only on the epoch's metric

    def step(self, epoch: int, metric: float) -> None:
        self.inner.step(metric)

    def state_dict(self) -> dict:
        return self.inner.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.inner.load_state_dict(state)
