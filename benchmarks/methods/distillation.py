"""Issue 27, items 1 and 3: a detector-distillation benchmark where
distillation has room to help, and its results with seeds.

  python benchmarks/methods/distillation.py                      # the recipe below: teacher, 7 student runs x 3 seeds
  python benchmarks/methods/distillation.py --jobs 2                       # two runs at a time (one core each)
  python benchmarks/methods/distillation.py --runs student,fgd --seeds 0     # some rows only
  python benchmarks/methods/distillation.py --epochs 11 --teacher-train-images 512 --teacher-epochs 48  # earlier recipe
  python benchmarks/methods/distillation.py --train-images 16 --val-images 8 --epochs 1 --teacher-epochs 1  # smoke

The data (ours): ``hcam_ops.data.synthetic_detection.HardSyntheticDetection`` at 64 px, eight
classes (a shape and a hue each), 2-5 objects an image from 19 to 48 px,
overlapping and occluding, with clutter; generated deterministically (train
seed 0, val seed 1) and written once as COCO folders (``--runs-dir``/data/
train, /val), which every run reads with ``--data``. The teacher has its own
export of ``--teacher-train-images`` (8x the students' by default:
``--runs-dir``/data-teacher4096), whose first images are the students' (item
i depends only on the seed and i), validated on the same images.

The recipe (ours): the teacher is a RetinaNet trained once (seed 0) for
``--teacher-epochs`` (6 on 4096 images: 24,576 images seen, 3x a student's)
and reused by every student run and seed; by default on the students'
ResNet-18 FPN (``--teacher-size teacher``: ResNet-50, 2.3x the cost of a
step here; within a CPU budget we chose more data over the wider backbone:
on the students' 512 images the R18 teacher memorises them and stops at
0.47). Each student is a RetinaNet ResNet-18 FPN trained from scratch for
``--epochs`` (16: 8192 images seen) with the same optimiser (AdamW lr 1e-3,
wd 1e-4, one warm-up epoch, cosine, clipping at 10, batch 4). Runs:

  teacher           --no-distill --arch-size student, once
  student           --student-alone
  fgd               --preset fgd                       (published weights)
  distillbev        --preset distillbev                (published main config, no FP term)
  fgd-auto          --preset fgd --distill-weight auto (ours: largest term = detection loss)
  distillbev-auto   --preset distillbev --distill-weight auto
  fgd-area          --preset fgd --loss-kwargs '{"area_normalize": true}'
  distillbev-area   --preset distillbev --loss-kwargs '{"area_normalize": true}'
  fgd-area-p3p5     fgd-area with P6/P7 weighted 0 (a diagnostic, only when --runs names it)

Each run is ``python -m hcam_ops.train distill`` on one torch thread, in
this process (``--jobs 1``) or in one of ``--jobs`` worker processes (the
runs that need the teacher wait for it; the student-alone runs do not).
The number kept is the last epoch's validation COCO box mAP of the run's
log.csv (the student's; for "teacher" the teacher's). Results go,
one object per run and seed ``{"run", "seed", "map"}``, to
``--out``/distillation.json, written after every run; runs already in it are
skipped (so a killed sweep loses at most the run it was in; a run with a
``last.pth`` resumes from it).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys

from seeds import by_run, mean_std

from hcam_ops._cli import positive_int
from hcam_ops.nn.fgd_presets import PRESETS

HERE = os.path.dirname(os.path.abspath(__file__))

# Ours: the optimiser of every run (the README's earlier AdamW recipe) at
# 64 px, one thread.
COMMON = [
    "--image-size", "64", "--batch-size", "4", "--opt", "adamw", "--lr", "1e-3", "--weight-decay", "1e-4",
    "--warmup-epochs", "1", "--clip-grad", "10", "--no-progress", "--no-tensorboard",
]  # fmt: skip
SEVEN = {
    "student": ["--student-alone"],
    "fgd": ["--preset", "fgd"],
    "distillbev": ["--preset", "distillbev"],
    "fgd-auto": ["--preset", "fgd", "--distill-weight", "auto"],
    "distillbev-auto": ["--preset", "distillbev", "--distill-weight", "auto"],
    "fgd-area": ["--preset", "fgd", "--loss-kwargs", '{"area_normalize": true}'],
    "distillbev-area": ["--preset", "distillbev", "--loss-kwargs", '{"area_normalize": true}'],
}
# Ours, a diagnostic beside the seven (by name only): fgd-area with P6 and P7
# weighted 0 and the published weights on P3-P5. At 64 px P6/P7 are 1x1, so
# area_normalize leaves them the bulk of the imitation; this run tells
# whether that is what sinks fgd-area.
_P3_P5 = {
    k: [PRESETS["fgd"][k]] * 3 + [0.0, 0.0] for k in ("fg_weight", "bg_weight", "attention_weight", "global_weight")
}
DIAGNOSTICS = {
    "fgd-area-p3p5": ["--preset", "fgd", "--loss-kwargs", json.dumps({"area_normalize": True, **_P3_P5})],
}
RUNS = {**SEVEN, **DIAGNOSTICS}
DEFAULT_RUNS = ",".join(SEVEN)


def export_data(root: str, train_images: int, val_images: int) -> str:
    """The hard set as COCO folders ``root/train`` and ``root/val`` (written
    once; kept if the sizes match)."""
    from hcam_ops.data.synthetic_detection import HardSyntheticDetection, to_coco

    stamp = os.path.join(root, "spec.json")
    spec = {"train_images": train_images, "val_images": val_images, "image_size": 64, "seeds": [0, 1]}
    if os.path.isfile(stamp):
        with open(stamp) as f:
            if json.load(f) == spec:
                return root
    for split, n, seed in (("train", train_images, 0), ("val", val_images, 1)):
        d = os.path.join(root, split)
        to_coco(HardSyntheticDetection(n, 64, seed=seed), os.path.join(d, "annotations.json"), image_dir=d)
    with open(stamp, "w") as f:
        json.dump(spec, f)
    return root


def last_map(log_csv: str) -> float:
    with open(log_csv, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        raise SystemExit(f"error: {log_csv}: no epoch logged")
    return float(rows[-1]["val_map"])


def one_run(
    name: str, seed: int, out_dir: str, data: str, epochs: int, teacher: str | None, teacher_size: str = "student"
) -> dict:
    import torch

    from hcam_ops.train import cli

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # one core a run; restored below
    argv = ["distill", "--data", data, *COMMON, "--epochs", str(epochs), "--seed", str(seed), "--out", out_dir]
    if name == "teacher":
        argv += ["--no-distill", "--arch-size", teacher_size]
    else:
        argv += RUNS[name]
        if name != "student":
            argv += ["--teacher", teacher]
    last = os.path.join(out_dir, "last.pth")
    if os.path.isfile(last) and os.path.isfile(os.path.join(out_dir, "log.csv")):
        argv += ["--resume", last]
    print("# python -m hcam_ops.train " + " ".join(argv), file=sys.stderr, flush=True)
    try:
        cli.main(argv)
    finally:
        torch.set_num_threads(threads)
    return {"run": name, "seed": seed, "map": last_map(os.path.join(out_dir, "log.csv"))}


def run_parallel(plan, job, done, jobs: int) -> None:
    """``plan`` on ``jobs`` worker processes (spawned: a fresh torch each);
    the runs that need the teacher are submitted once it is done. A run that
    fails does not stop the others (their rows are kept); the failures are
    reported together at the end, and a failed teacher skips its dependants."""
    import multiprocessing
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

    waiting = [p for p in plan if p[0] not in ("teacher", "student")]
    ready = [p for p in plan if p[0] in ("teacher", "student")]
    teacher_pending = ("teacher", 0) in plan
    failed = []
    with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        running = {}
        while ready or waiting or running:
            # The plan puts the teacher first; the runs that need it wait for it.
            if not teacher_pending:
                ready, waiting = ready + waiting, []
            while ready and len(running) < jobs:
                spec = job(*ready.pop(0))
                running[pool.submit(one_run, *spec)] = spec
            finished, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in finished:
                spec = running.pop(future)
                name, seed = spec[0], spec[1]
                try:
                    row = future.result()
                except BaseException as e:  # noqa: BLE001 - a worker's SystemExit too: reported below
                    failed.append(f"{name} seed {seed} ({type(e).__name__}: {e})")
                    print(f"# {name} seed {seed}: failed: {e!r}", file=sys.stderr, flush=True)
                    if name == "teacher":
                        failed += [f"{n} seed {s} (not run: no teacher)" for n, s in waiting]
                        waiting = []
                else:
                    done(row, spec[2])
                if name == "teacher":
                    teacher_pending = False
    if failed:
        raise SystemExit(f"error: {len(failed)} run(s) failed: " + "; ".join(failed))


def table(results: list[dict]) -> str:
    """Mean and spread (population std, min - max) of COCO mAP per run, to 4
    decimals (the students' mAPs are small); one seed: its value alone."""
    lines = ["| run | seeds | COCO mAP mean ± std | min - max | per seed |", "|---|---|---|---|---|"]
    for name, rs in by_run(results):
        rs = sorted(rs, key=lambda r: r["seed"])
        v = [r["map"] for r in rs]
        per_seed = ", ".join(f"{r['seed']}: {r['map']:.4f}" for r in rs)
        if len(v) == 1:
            lines.append(f"| {name} | 1 | {v[0]:.4f} (one seed) | - | {per_seed} |")
            continue
        lines.append(f"| {name} | {len(rs)} | {mean_std(v, 4)} | {min(v):.4f} - {max(v):.4f} | {per_seed} |")
    return "\n".join(lines)


def save(results: list[dict], path: str) -> None:
    with open(path + ".tmp", "w") as f:
        json.dump(results, f, indent=1)
    os.replace(path + ".tmp", path)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--runs",
        default=DEFAULT_RUNS,
        help=f"comma list of: teacher, {', '.join(RUNS)} (the teacher first if needed)",
    )
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--epochs", type=positive_int, default=16, help="the students' epochs")
    ap.add_argument(
        "--teacher-epochs",
        type=positive_int,
        default=6,
        help="the teacher's epochs (6 on 8x the students' images: 3x the images they see)",
    )
    ap.add_argument(
        "--teacher-size",
        choices=("student", "teacher"),
        default="student",
        help="the teacher's backbone: ResNet-18 (student, default: within a CPU budget, more data rather "
        "than a wider backbone) or ResNet-50 (teacher)",
    )
    ap.add_argument("--train-images", type=positive_int, default=512)
    ap.add_argument("--val-images", type=positive_int, default=128)
    ap.add_argument(
        "--teacher-train-images",
        type=positive_int,
        default=None,
        help="the teacher's training images (default: 8x the students' --train-images); more make a stronger "
        "teacher (ours: an R18 teacher on the students' 512 images memorises them at 0.47 mAP), the first "
        "--train-images of them the students'",
    )
    ap.add_argument(
        "--out",
        default=os.path.join(HERE, "..", "results"),
        help="folder of distillation.json, or the .json file itself",
    )
    ap.add_argument("--runs-dir", default="runs/distillation", help="the training runs' folders and the data")
    ap.add_argument(
        "--jobs", type=positive_int, default=1, help="runs at a time, each in its own process on one thread"
    )
    ap.add_argument("--keep-checkpoints", action="store_true", help="keep every run's last.pth (default: best only)")
    args = ap.parse_args(argv)
    try:
        names = [n.strip() for n in args.runs.split(",") if n.strip()]
        seeds = [int(s) for s in args.seeds.split(",")]
    except ValueError as e:
        ap.error(f"--seeds: {e}")
    if args.teacher_train_images is None:
        args.teacher_train_images = 8 * args.train_images
    unknown = [n for n in names if n not in RUNS and n != "teacher"]
    if unknown:
        ap.error(f"--runs: unknown {', '.join(unknown)}; choose from {', '.join(RUNS)}")
    path = args.out if args.out.endswith(".json") else os.path.join(args.out, "distillation.json")
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    results = []
    if os.path.isfile(path):
        with open(path) as f:
            results = json.load(f)
    data = export_data(os.path.join(args.runs_dir, "data"), args.train_images, args.val_images)
    teacher_data = data
    if args.teacher_train_images != args.train_images:
        # Item i depends only on (seed, i): the teacher's images begin with the students'.
        teacher_data = export_data(
            os.path.join(args.runs_dir, f"data-teacher{args.teacher_train_images}"),
            args.teacher_train_images,
            args.val_images,
        )
    teacher_dir = os.path.join(args.runs_dir, "teacher")
    # The teacher first, where a run needs it (or --runs names it).
    need_teacher = any(n != "student" for n in names)
    # Seed-major: a sweep cut short has every run of its first seeds.
    plan = [("teacher", 0)] * need_teacher + [(n, s) for s in seeds for n in names if n != "teacher"]
    plan = [(n, s) for n, s in plan if not any(r["run"] == n and r["seed"] == s for r in results)]
    if (
        ("teacher", 0) in plan
        and os.path.isfile(os.path.join(teacher_dir, "best.pth"))
        and not os.path.isfile(os.path.join(teacher_dir, "last.pth"))
    ):
        raise SystemExit(f"error: {teacher_dir}: a finished teacher not in {path}; remove the folder or the row")

    def job(name, seed):
        out_dir = teacher_dir if name == "teacher" else os.path.join(args.runs_dir, f"{name}-seed{seed}")
        epochs = args.teacher_epochs if name == "teacher" else args.epochs
        teacher = os.path.join(teacher_dir, "best.pth")
        return (name, seed, out_dir, teacher_data if name == "teacher" else data, epochs, teacher, args.teacher_size)

    def done(row, out_dir):
        # Only this process writes the JSON: workers return their rows.
        results.append(row)
        save(results, path)
        if not args.keep_checkpoints and os.path.isfile(os.path.join(out_dir, "last.pth")):
            os.remove(os.path.join(out_dir, "last.pth"))
        print(f"# {row['run']} seed {row['seed']}: mAP {row['map']:.4f}", file=sys.stderr, flush=True)

    if args.jobs == 1:
        for name, seed in plan:
            spec = job(name, seed)
            done(one_run(*spec), spec[2])
    else:
        run_parallel(plan, job, done, args.jobs)
    print(table(results))
    return results


if __name__ == "__main__":
    main()
