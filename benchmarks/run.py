"""The benchmark report: every case in cases.py, fused vs reference vs
torch.compile(reference), forward and forward+backward, median time (and on
CUDA peak memory above the inputs), on whatever device is there, at one or
more CPU thread counts. Writes results.md (a header saying what was measured,
then a markdown table), results.json and results.png (fused / compiled time
per case, one panel per op) to --out, and prints the header and the table
last. Progress, "[k/n] op shape dtype mode impl T=..: X ms", goes to stderr.

  python benchmarks/run.py                   # all cases, fp32 and bf16, on CUDA if present
  python benchmarks/run.py --dtypes float32 --ops cam_kl_loss --repeat 20
  python benchmarks/run.py --device cpu --threads 1,2 --modes fwd+bwd --impls fused,compiled_ref --repeat 7

Flags:
  --device       cuda (default where present) or cpu
  --dtypes       comma list of float32, bfloat16, float16, float64 (default float32,bfloat16)
  --ops          comma list of op names (default: all of cases.py)
  --impls        comma list of fused, reference, compiled_ref (default: all three)
  --modes        comma list of fwd, fwd+bwd (default: both)
  --repeat       timed runs per entry; the median is reported (default 50 on CUDA, 5 on CPU)
  --max-cases    first N shapes per op (default: all on CUDA; on CPU 2, plus the cases
                 cases.py marks on_cpu)
  --threads      torch.set_num_threads for each measurement: one count, or a comma list
                 (--threads 1,2) to measure every entry at each count (default: torch's
                 current count). With several, the table has each impl's time and the
                 fused / compiled ratio at each count, and each impl's speed-up from the
                 first count to each later one ("fused x1→2"). The count is restored after.
  --malloc       CPU: pinned (default) fixes glibc malloc's mmap and trim thresholds for
                 the run, so every implementation meets the same allocator (glibc's
                 moving threshold made one kernel alternate between 10 and 20 ms from
                 run to run); default leaves glibc's own
  --small        each case's small twin (the shape test_bench_ops.py checks against the
                 reference): a quick check that the harness runs, not a benchmark
  --out          output folder (default benchmarks/out)
  --traffic      instead of timing: each case's GPU memory traffic, counted on the emulator
                 (an emulated build traced by clang, docs/traffic.md): per kernel launch
                 of the fused forward and backward, the floor, the modelled DRAM bytes (L2
                 model), their ratio, the sector efficiency and a modelled H200 time; per
                 op, the same summed, beside Inductor's own byte estimate of the compiled
                 reference. Writes traffic.md and traffic.json. Takes --ops, --dtypes,
                 --small, --max-cases (default: every shape) and --l2-mb (default 50)

On CPU the memory columns are left out: the CPU allocator keeps no peak
statistics. Instead each fwd+bwd row has a floor (the case's fewest bytes over
the copy bandwidth at that thread count) and a first-touch time (allocating the
step's gradients afresh and writing them once: page faults for a block over
32 MiB, which glibc maps anew each time). A value not measured (an impl a case does not have, e.g. no
compiled reference of a Python-loop reference, or an entry that failed) is "-".
torch.compile's CPU kernels fix their thread count when they are compiled
(and Dynamo guards on it), so the compiled reference is compiled once per
thread count; the warm-up at each count runs that compilation.
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import datetime
import json
import math
import os
import statistics
import subprocess
import sys
import time

import torch
import torch._dynamo

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import cases as cases_mod  # noqa: E402

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16, "float64": torch.float64}
# Table order and the short name of each implementation.
IMPL_NAMES = {"fused": "fused", "reference": "reference", "compiled_ref": "compiled"}
CPU_MEMORY_NOTE = "memory not measured on CPU (the CPU allocator keeps no peak statistics)"


def _step(impl, inputs, grad_of, backward):
    loss = impl(**inputs)
    if backward:
        for name in grad_of:
            inputs[name].grad = None
        loss.backward()
    return loss


def measure(impl, input_sets, grad_of, backward, device, repeat, warmup):
    """Median milliseconds over `repeat` runs, rotating among input sets so a
    run does not find the previous one's data in cache; peak memory (MiB) above
    what was allocated before the run, gradients included; and the transient
    part of it, the peak less what the run leaves allocated (CUDA only: None
    on CPU, whose allocator keeps no peak statistics)."""
    for i in range(warmup):
        _step(impl, input_sets[i % len(input_sets)], grad_of, backward)
    times = []
    if device.type == "cuda":
        torch.cuda.synchronize()
        for i in range(repeat):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            _step(impl, input_sets[i % len(input_sets)], grad_of, backward)
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end))
        torch.cuda.synchronize()
        for name in grad_of:
            for s in input_sets:
                s[name].grad = None
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        loss = _step(impl, input_sets[0], grad_of, backward)
        torch.cuda.synchronize()
        peak = (torch.cuda.max_memory_allocated() - base) / 2**20
        transient = (torch.cuda.max_memory_allocated() - torch.cuda.memory_allocated()) / 2**20
        del loss
    else:
        for i in range(repeat):
            t0 = time.perf_counter()
            _step(impl, input_sets[i % len(input_sets)], grad_of, backward)
            times.append((time.perf_counter() - t0) * 1e3)
        peak = transient = None
    return statistics.median(times), peak, transient


def copy_bandwidth(device):
    """Bytes per second of a large device copy (read + write), the ceiling a
    memory-bound kernel is measured against. CPU: a 256 MiB copy (well past
    the last-level cache) between buffers already touched, at the current
    thread count: DRAM, without page faults."""
    if device.type != "cuda":
        x = torch.ones(2**28, dtype=torch.uint8)
        y = torch.zeros_like(x)
        times = []
        for i in range(8):
            t0 = time.perf_counter()
            y.copy_(x)
            if i >= 2:
                times.append(time.perf_counter() - t0)
        return 2 * x.numel() / statistics.median(times)
    x = torch.empty(2**28, dtype=torch.uint8, device=device)
    y = torch.empty_like(x)
    for _ in range(3):
        y.copy_(x)
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(20):
        y.copy_(x)
    end.record()
    end.synchronize()
    return 2 * x.numel() * 20 / (start.elapsed_time(end) / 1e3)


def pin_malloc():
    """Pins glibc malloc's thresholds for this process (mmap at 32 MiB, heap
    trimmed past 1 GiB) and says whether it could. By default glibc moves its
    mmap threshold up to the largest block freed so far, so whether a step's
    gradient of, say, 31 MiB comes from a reused heap block or a fresh mapping
    (page faults: 10 ms more for the FGD case at B=2) depends on what ran
    before it, and one kernel's time alternated between 10 and 20 ms from run
    to run. Pinned, every implementation meets the same allocator; blocks over
    32 MiB are still mapped afresh each time (the first-touch column)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's malloc.h
        return bool(libc.mallopt(M_MMAP_THRESHOLD, 32 << 20)) and bool(libc.mallopt(M_TRIM_THRESHOLD, 1 << 30))
    except (OSError, AttributeError):  # no mallopt: not glibc
        return False


def first_touch_ms(sizes, repeat):
    """CPU: median ms to allocate buffers of ``sizes`` (bytes, one allocation
    each, as the step's gradients are) afresh and write them once, at the
    current thread count: the floor of a step that returns those gradients.
    glibc serves a block over 32 MiB (and, by its moving threshold, often a
    smaller one) with a fresh mmap each time, whose pages the kernel faults
    in and zeroes on first touch; on this kind of VM that costs more than the
    kernels' own arithmetic and scales poorly with threads, and a fused or
    compiled step pays it alike."""
    times = []
    for _ in range(max(repeat, 3)):
        t0 = time.perf_counter()
        buffers = [torch.empty(n, dtype=torch.uint8).fill_(1) for n in sizes]
        times.append((time.perf_counter() - t0) * 1e3)
        del buffers
    return statistics.median(times)


def _grad_bytes(case, input_set):
    return [input_set[name].numel() * input_set[name].element_size() for name in case.grad_of]


def parse_threads(text):
    """``"1,2"`` -> [1, 2]; None or "" -> [torch's current thread count]."""
    if not text:
        return [torch.get_num_threads()]
    threads = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        if not part.isdigit() or int(part) < 1:
            raise argparse.ArgumentTypeError(f"--threads: {part!r} is not a positive integer")
        if int(part) not in threads:
            threads.append(int(part))
    if not threads:
        raise argparse.ArgumentTypeError("--threads: no thread count given")
    return threads


def _select_cases(args, device):
    """The (case, dtype name) pairs this run measures, in order."""
    ops = set(filter(None, args.ops.split(",")))
    selected, per_op, seen = [], {}, set()
    for case in cases_mod.all_cases():
        if ops and case.op not in ops:
            continue
        per_op[case.op] = per_op.get(case.op, 0) + 1
        if args.max_cases and per_op[case.op] > args.max_cases and not (device.type == "cpu" and case.on_cpu):
            continue
        if args.small:
            if case.small is None:
                continue
            case = case.small
        if (case.op, case.label) in seen:  # shapes that share one small twin
            continue
        seen.add((case.op, case.label))
        selected.extend((case, dname) for dname in args.dtypes.split(","))
    return selected


def _entries(case, modes, impls, threads):
    """(mode, impl, threads) of one case, in the order measured: every
    thread count of an impl one after the other, on the same inputs."""
    return [
        (mode, impl, t)
        for mode in modes
        if mode in case.modes
        for impl in impls
        if impl in case.impls  # e.g. no compiled reference of a Python-loop reference
        for t in threads
    ]


class _Threads:
    """torch.set_num_threads for each measurement, restored on exit.
    Inductor's CPU kernels fix their thread count when they are compiled and
    Dynamo guards on it, so the compiled reference is compiled once per
    (shape, dtype, thread count), each a Dynamo cache entry of the reference:
    past Dynamo's recompile limit (8 entries of one function) it would quietly
    run the reference eager, so the limit is raised while this is entered."""

    def __enter__(self):
        self.saved = torch.get_num_threads()
        config = torch._dynamo.config
        self.limit_name = "recompile_limit" if hasattr(config, "recompile_limit") else "cache_size_limit"
        self.saved_limit = getattr(config, self.limit_name)
        setattr(config, self.limit_name, max(self.saved_limit, 256))
        return self

    def set(self, t):
        torch.set_num_threads(t)

    def __exit__(self, *exc):
        torch.set_num_threads(self.saved)
        setattr(torch._dynamo.config, self.limit_name, self.saved_limit)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--dtypes", default="float32,bfloat16")
    ap.add_argument("--ops", default="", help="comma-separated op names (default: all)")
    ap.add_argument("--impls", default="fused,reference,compiled_ref")
    ap.add_argument("--modes", default="fwd,fwd+bwd")
    ap.add_argument("--repeat", type=int, default=None, help="timed runs per entry (default 50 on CUDA, 5 on CPU)")
    ap.add_argument(
        "--max-cases",
        type=int,
        default=None,
        help="first N shapes per op (default: all on CUDA, 2 on CPU, where the large ones take minutes)",
    )
    ap.add_argument(
        "--threads",
        type=parse_threads,
        default=None,
        help="CPU threads (torch.set_num_threads): one count or a comma list, e.g. 1,2, each entry measured "
        "at each (default: torch's current count)",
    )
    ap.add_argument(
        "--malloc",
        choices=("pinned", "default"),
        default="pinned",
        help="CPU: pin glibc malloc's thresholds for the run (default; see pin_malloc) or leave glibc's moving ones",
    )
    ap.add_argument(
        "--small", action="store_true", help="each case's small twin: a quick check of the harness, not a benchmark"
    )
    ap.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "out"))
    ap.add_argument("--traffic", action="store_true", help="count GPU memory traffic on the emulator (docs/traffic.md)")
    ap.add_argument("--l2-mb", type=float, default=50.0, help="--traffic: the L2 model's size in MB (MiB)")
    args = ap.parse_args(argv)
    if args.traffic:
        return run_traffic(args, ap)

    device = torch.device(args.device)
    threads = args.threads or parse_threads(None)
    repeat = args.repeat or (50 if device.type == "cuda" else 5)
    if args.max_cases is None and device.type == "cpu":
        args.max_cases = 2
    warmup = 5 if device.type == "cuda" else 3
    malloc = "default"
    if device.type == "cpu" and args.malloc == "pinned":
        malloc = "glibc thresholds pinned (mmap 32 MiB, trim 1 GiB)" if pin_malloc() else "default (mallopt refused)"
    n_sets = 3 if device.type == "cuda" else 1
    impls = args.impls.split(",")
    modes = args.modes.split(",")
    for name in impls:
        if name not in IMPL_NAMES:
            ap.error(f"--impls: unknown {name!r} (one of {', '.join(IMPL_NAMES)})")
    if device.type == "cpu" and max(threads) > (os.cpu_count() or 1):
        print(f"# --threads {max(threads)} is more than the {os.cpu_count()} CPUs here", file=sys.stderr)
    os.makedirs(args.out, exist_ok=True)
    # Copy bandwidth per thread count (CPU: DRAM bandwidth grows less than the
    # thread count; CUDA: one figure).
    bandwidth = {}
    with _Threads() as thread_setting:
        one = copy_bandwidth(device) if device.type == "cuda" else None
        for t in threads:
            thread_setting.set(t)
            bandwidth[t] = one if device.type == "cuda" else copy_bandwidth(device)

    selected = _select_cases(args, device)
    total = sum(len(_entries(case, modes, impls, threads)) for case, _ in selected)
    meta = _meta(device, bandwidth, repeat, warmup, n_sets, threads)
    meta["malloc"] = malloc
    header = _header(meta)
    print(header + f"\n\n{total} measurements\n", file=sys.stderr, flush=True)

    rows, k = [], 0
    with _Threads() as thread_setting:
        for case, dname in selected:
            dtype = DTYPES[dname]
            gen = torch.Generator().manual_seed(0)
            input_sets = [case.make_inputs(device, dtype, gen) for _ in range(n_sets)]
            touch = {}  # CPU: first-touch ms of the gradients' bytes, per thread count
            for mode, name, t in _entries(case, modes, impls, threads):
                k += 1
                thread_setting.set(t)
                if device.type == "cpu" and mode == "fwd+bwd" and case.grad_of and t not in touch:
                    touch[t] = first_touch_ms(_grad_bytes(case, input_sets[0]), repeat)
                error = None
                try:
                    ms, mib, tmib = measure(
                        case.impls[name], input_sets, case.grad_of, mode == "fwd+bwd", device, repeat, warmup
                    )
                    result = f"{ms:.3f} ms" + ("" if mib is None else f", {mib:.1f} MiB peak")
                except Exception as e:  # report, do not hide, a failing entry
                    ms = mib = tmib = None
                    error = f"{type(e).__name__}: {e}"
                    result = f"failed: {error}"
                rows.append(
                    dict(
                        op=case.op,
                        shape=case.label,
                        dtype=dname,
                        mode=mode,
                        impl=name,
                        threads=t,
                        ms=ms,
                        peak_mib=mib,
                        transient_mib=tmib,
                        floor_ms=case.floor_bytes(dtype) / bandwidth[t] * 1e3
                        if mode == "fwd+bwd" and case.floor_bytes and bandwidth.get(t)
                        else None,
                        first_touch_ms=touch.get(t) if mode == "fwd+bwd" else None,
                        **({"error": error} if error else {}),
                    )
                )
                print(
                    f"[{k}/{total}] {case.op} {case.label} {dname} {mode} {name} T={t}: {result}",
                    file=sys.stderr,
                    flush=True,
                )
            del input_sets
            if device.type == "cuda":
                torch.cuda.empty_cache()

    table = format_table(rows, threads)
    with open(os.path.join(args.out, "results.md"), "w") as f:
        f.write(header + "\n\n" + table + "\n")
    with open(os.path.join(args.out, "results.json"), "w") as f:
        json.dump(dict(header=header, meta=meta, rows=rows), f, indent=1)
    plot_ratios(rows, os.path.join(args.out, "results.png"), _title(meta), threads)
    print(header)
    print()
    print(table)
    return rows


def run_traffic(args, ap):
    """--traffic: the traffic table and traffic.json (benchmarks/traffic.py)."""
    import traffic as traffic_mod

    import hcam_ops

    if not (hcam_ops.cuda_emulated() and hcam_ops._C.traffic_traced()):
        ap.error(
            "--traffic needs an emulated build whose kernels clang traced: install clang, then "
            "HCAM_OPS_CUDA=emulate pip install --no-build-isolation -e . (docs/traffic.md)"
        )
    if args.l2_mb <= 0:
        ap.error(f"--l2-mb must be positive, got {args.l2_mb}")
    for name in args.dtypes.split(","):
        if name not in DTYPES:
            ap.error(f"--dtypes: unknown {name!r} (one of {', '.join(DTYPES)})")
    os.makedirs(args.out, exist_ok=True)
    selected = _select_cases(args, torch.device("cuda"))
    l2 = int(args.l2_mb * 2**20)
    rows, inductor = [], {}
    header = (
        f"# GPU memory traffic on the emulator (docs/traffic.md)\n\nhcam_ops {hcam_ops_commit()}, torch "
        f"{torch.__version__}; L2 model {args.l2_mb:g} MiB, 128-byte lines, LRU, the resident blocks issuing "
        f"together; modelled H200 time = DRAM bytes / {traffic_mod.H200_BYTES_PER_S / 1e12:g} TB/s + "
        f"{traffic_mod.LAUNCH_S * 1e6:g} us per launch. **!** marks a launch above "
        f"{traffic_mod.KERNEL_TARGET}x its pass's floor, or an op above {traffic_mod.OP_TARGET}x in all."
    )
    failed = 0
    for k, (case, dname) in enumerate(selected, 1):
        t0 = time.perf_counter()
        try:
            got = traffic_mod.measure_case(case, DTYPES[dname], l2_bytes=l2)
        except Exception as e:  # report, do not hide, a failing case; go on with the rest
            failed += 1
            print(
                f"[{k}/{len(selected)}] {case.op} {case.label} {dname}: failed: {type(e).__name__}: {e}",
                file=sys.stderr,
                flush=True,
            )
            continue
        rows += got
        try:
            est = traffic_mod.inductor_bytes(case, DTYPES[dname])
        except Exception as e:  # the compiled column says "-"; the reason goes to stderr
            print(f"# Inductor's estimate of {case.op} {case.label}: {type(e).__name__}: {e}", file=sys.stderr)
            est = None
        if est is not None:
            inductor[(case.op, case.label, dname)] = est
        print(
            f"[{k}/{len(selected)}] {case.op} {case.label} {dname}: {len(got)} launches, "
            f"{time.perf_counter() - t0:.1f} s",
            file=sys.stderr,
            flush=True,
        )
        # Written after every case, so that a long run stopped midway keeps what it measured.
        table = traffic_mod.format_traffic(rows, inductor)
        with open(os.path.join(args.out, "traffic.md"), "w") as f:
            f.write(header + "\n\n" + table + "\n")
        with open(os.path.join(args.out, "traffic.json"), "w") as f:
            json.dump(traffic_mod.json_rows(rows), f, indent=1)
        with open(os.path.join(args.out, "traffic_inductor.json"), "w") as f:
            json.dump([dict(op=o, case=c, dtype=d, **v) for (o, c, d), v in inductor.items()], f, indent=1)
    table = traffic_mod.format_traffic(rows, inductor)
    if failed:
        print(f"# {failed} of {len(selected)} cases failed (above)", file=sys.stderr)
    print(header)
    print()
    print(table)
    if failed:
        sys.exit(1)
    return rows


# --- what was measured ----------------------------------------------------------------


def _cpu_model():
    """The CPU's "model name" in /proc/cpuinfo, or None."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def _git(where, *cmd):
    return subprocess.run(
        ["git", "-C", where, *cmd], capture_output=True, text=True, timeout=20, check=True
    ).stdout.strip()


def hcam_ops_commit():
    """The short commit of the git checkout hcam_ops is imported from (or, for
    an installed hcam_ops, the one this script is in), "-dirty" when it has
    changes; "unknown" where neither is a git checkout."""
    import hcam_ops

    for where in (os.path.dirname(os.path.abspath(hcam_ops.__file__)), os.path.dirname(os.path.abspath(__file__))):
        try:
            commit = _git(where, "rev-parse", "--short", "HEAD")
            dirty = _git(where, "status", "--porcelain")
        except (OSError, subprocess.SubprocessError):
            continue
        return commit + ("-dirty" if dirty else "")
    return "unknown"


def _meta(device, bandwidth, repeat, warmup, n_sets, threads):
    import hcam_ops

    if device.type == "cuda":
        name = f"GPU {torch.cuda.get_device_name(device)}"
    else:
        # The CPU kernels' instruction set (a build before runtime dispatch has no cpu_capability).
        isa = getattr(hcam_ops, "cpu_capability", lambda: "baseline build")()
        name = f"CPU {_cpu_model() or 'unknown model'}, {os.cpu_count()} cores, hcam_ops CPU kernels {isa}"
    return dict(
        device=name,
        device_type=device.type,
        copy_bandwidth_gb_s={t: bw / 1e9 for t, bw in bandwidth.items() if bw},
        threads=list(threads),
        torch=torch.__version__,
        cuda_built=hcam_ops.cuda_built(),
        commit=hcam_ops_commit(),
        date=datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        repeat=repeat,
        warmup=warmup,
        input_sets=n_sets,
    )


def _header(meta):
    """The lines at the top of results.md: device, threads, torch, commit, date, method."""
    bws = meta.get("copy_bandwidth_gb_s") or {}
    if not bws:
        bw = ""
    elif len(set(bws.values())) == 1:
        bw = f", copy bandwidth {next(iter(bws.values())):.0f} GB/s"
    else:
        bw = ", copy bandwidth " + ", ".join(f"{v:.0f} GB/s at T={t}" for t, v in bws.items())
    threads = ", ".join(map(str, meta["threads"]))
    lines = [
        "# hcam_ops benchmark",
        "",
        f"- device: {meta['device']}{bw}",
        f"- threads: {threads} (torch.set_num_threads for each measurement)",
        f"- torch: {meta['torch']}; hcam_ops CUDA kernels built: {meta['cuda_built']}",
        f"- hcam_ops commit: {meta['commit']}",
        f"- date: {meta['date']}",
        f"- repeat: median of {meta['repeat']} timed runs after {meta['warmup']} warm-up, "
        f"rotating among {meta['input_sets']} input set(s)",
    ]
    if meta["device_type"] == "cuda":
        lines.append(
            "- memory: peak = MiB above the inputs, gradients included; transient = peak less what the step "
            "leaves allocated"
        )
    else:
        lines.append(f"- {CPU_MEMORY_NOTE}")
        lines.append(f"- malloc: {meta.get('malloc', 'default')}")
        lines.append(
            '- "first-touch ms": allocating the step\'s gradients afresh and writing them once (fwd+bwd rows): '
            "the floor of any implementation that returns them, page faults included (glibc maps a block over "
            "32 MiB anew each time)"
        )
    lines.append(
        '- "floor ms" (fwd+bwd rows with one): the fewest bytes the step must move (cases.py) over the copy '
        "bandwidth at that thread count"
    )
    lines.append(
        "- fused ops run without their host-side input checks (check_index / check_inputs=False); "
        '"fused / compiled" below 1: the fused op is faster; "-": not measured'
    )
    if len(meta["threads"]) > 1:
        t0 = meta["threads"][0]
        lines.append(f'- "x{t0}→T": an impl\'s time at {t0} thread(s) over its time at T threads')
    return "\n".join(lines)


def _title(meta):
    """One line for the plot."""
    threads = ",".join(map(str, meta["threads"]))
    return f"{meta['device']}; threads {threads}; torch {meta['torch']}; commit {meta['commit']}; {meta['date']}"


# --- the table --------------------------------------------------------------------------


def _num(v):
    """A measured number, or None for one not measured (None, NaN)."""
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return None
    return v


def _fmt(v, spec):
    v = _num(v)
    return "-" if v is None else format(v, spec)


def _ratio(a, b):
    a, b = _num(a), _num(b)
    return None if a is None or b is None or b == 0 else a / b


def _impl_order(rows):
    names = []
    for r in rows:
        if r["impl"] not in names:
            names.append(r["impl"])
    return sorted(names, key=lambda n: (list(IMPL_NAMES).index(n) if n in IMPL_NAMES else len(IMPL_NAMES), n))


def _keyed(rows):
    """(op, shape, dtype, mode) -> {(impl, threads): row}, in the order measured."""
    keyed = {}
    for r in rows:
        keyed.setdefault((r["op"], r["shape"], r["dtype"], r["mode"]), {})[(r["impl"], r.get("threads"))] = r
    return keyed


def format_table(rows, threads=None):
    """The markdown table of ``rows`` (run.py's row dicts): per (op, shape,
    dtype, mode), each measured impl's ms, the fused / compiled ratio, the
    bandwidth floor where there is one, and peak / transient memory where it
    was measured. With several thread counts, each of those at each count and
    each impl's speed-up from the first count to each later one. Columns of an
    impl no row has are left out; a value not measured is "-"."""
    if threads is None:
        threads = []
        for r in rows:
            if r.get("threads") not in threads:
                threads.append(r.get("threads"))
    multi = len(threads) > 1
    impls = _impl_order(rows)
    keyed = _keyed(rows)
    has_ratio = "fused" in impls and "compiled_ref" in impls
    has_floor = any(_num(r.get("floor_ms")) is not None for r in rows)
    # memory is measured (on CUDA) or not (CPU) for the whole run: its columns are all or none
    has_mem = any(_num(r.get("peak_mib")) is not None for r in rows)
    mem_impls = [i for i in impls if i != "reference"] if has_mem else []

    def at(t):
        return f" T={t}" if multi else ""

    def ms(by, impl, t):
        r = by.get((impl, t))
        return None if r is None else r.get("ms")

    columns = []  # (header, fn(by) -> text)
    for impl in impls:
        label = "compiled ref" if impl == "compiled_ref" else impl
        for t in threads:
            columns.append((f"{label} ms{at(t)}", lambda by, i=impl, t=t: _fmt(ms(by, i, t), ".3f")))
    if has_ratio:
        for t in threads:
            columns.append(
                (
                    f"fused / compiled{at(t)}",
                    lambda by, t=t: _fmt(_ratio(ms(by, "fused", t), ms(by, "compiled_ref", t)), ".2f"),
                )
            )
    if multi:
        for impl in impls:
            for t in threads[1:]:
                columns.append(
                    (
                        f"{IMPL_NAMES.get(impl, impl)} x{threads[0]}→{t}",
                        lambda by, i=impl, t=t: _fmt(_ratio(ms(by, i, threads[0]), ms(by, i, t)), ".2f"),
                    )
                )
    if any(_num(r.get("first_touch_ms")) is not None for r in rows):
        for t in threads:

            def touch(by, t=t):
                return _fmt(
                    next(
                        (
                            r["first_touch_ms"]
                            for (_, rt), r in by.items()
                            if rt == t and _num(r.get("first_touch_ms")) is not None
                        ),
                        None,
                    ),
                    ".2f",
                )

            columns.append((f"first-touch ms{at(t)}", touch))
    if has_floor:
        for t in threads:

            def floor(by, t=t):
                return _fmt(
                    next((r["floor_ms"] for (_, rt), r in by.items() if rt == t and _num(r.get("floor_ms"))), None),
                    ".3f",
                )

            columns.append((f"floor ms{at(t)}", floor))
    for impl in mem_impls:
        for t in threads:

            def mem(by, i=impl, t=t):
                r = by.get((i, t))
                if r is None or _num(r.get("peak_mib")) is None:
                    return "-"
                return f"{_fmt(r['peak_mib'], '.1f')} / {_fmt(r.get('transient_mib'), '.1f')}"

            columns.append((f"{IMPL_NAMES.get(impl, impl)} peak / transient MiB{at(t)}", mem))

    lines = [
        "| op | shape | dtype | mode | " + " | ".join(h for h, _ in columns) + " |",
        "|---|---|---|---|" + "---|" * len(columns),
    ]
    for (op, shape, dtype, mode), by in keyed.items():
        lines.append(f"| {op} | {shape} | {dtype} | {mode} | " + " | ".join(f(by) for _, f in columns) + " |")
    return "\n".join(lines)


# --- the plot ---------------------------------------------------------------------------

PLOT_DPI = 110
PLOT_WIDTH_IN = 12  # 1320 px at PLOT_DPI


def _plot_data(rows, threads):
    """op -> [(label, {threads: ratio})], the fused time over the compiled
    reference's (over the plain reference's where no row has a compiled one),
    cases without a ratio left out; and the baseline's name."""
    base = "compiled_ref" if any(r["impl"] == "compiled_ref" for r in rows) else "reference"
    data = {}
    for (op, shape, dtype, mode), by in _keyed(rows).items():
        ratios = {}
        for t in threads:
            fused, other = by.get(("fused", t)), by.get((base, t))
            ratio = _ratio(fused and fused.get("ms"), other and other.get("ms"))
            if ratio is not None:
                ratios[t] = ratio
        if ratios:
            data.setdefault(op, []).append((f"{shape}  {dtype}  {mode}", ratios))
    return data, base


def plot_ratios(rows, path, title, threads=None):
    """Horizontal bars of fused / compiled time per (shape, dtype, mode), one
    panel per op, one bar per thread count; a log axis centred on 1 (bars to
    the left: the fused op is faster). Returns the path, or None when there
    is nothing to draw or no matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.ticker import FixedLocator, NullLocator
    except ImportError:
        print("# matplotlib not installed: no plot", file=sys.stderr)
        return None
    if threads is None:
        threads = sorted({r.get("threads") for r in rows}, key=lambda t: (t is None, t))
    data, base = _plot_data(rows, threads)
    if not data:
        print("# no fused / compiled ratio to plot (no fused or no reference rows)", file=sys.stderr)
        return None
    base_name = "compiled reference" if base == "compiled_ref" else "reference (eager)"
    multi = len(threads) > 1
    bar_in = 0.22  # inches per bar
    heights = [len(cases) * (bar_in * len(threads) + 0.12) + 0.9 for cases in data.values()]
    fig, axes = plt.subplots(
        len(data),
        1,
        figsize=(PLOT_WIDTH_IN, sum(heights) + 1.0),
        gridspec_kw=dict(height_ratios=heights),
        squeeze=False,
        constrained_layout=True,  # room for the labels and the title
    )
    values = [v for cases in data.values() for _, ratios in cases for v in ratios.values()]
    lo, hi = min(min(values), 1.0), max(max(values), 1.0)
    xlim = (lo / 1.6, hi * 1.6)
    ticks = [2.0**e for e in range(-10, 11) if xlim[0] <= 2.0**e <= xlim[1]]
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    group = 0.8
    for ax, (op, cases) in zip(axes[:, 0], data.items()):
        width = group / len(threads)
        for i, t in enumerate(threads):
            ys, vals = [], []
            for j, (_, ratios) in enumerate(cases):
                if t in ratios:
                    ys.append(j - group / 2 + width * (i + 0.5))
                    vals.append(ratios[t])
            if not vals:
                continue
            ax.barh(
                ys,
                [v - 1 for v in vals],
                height=width * 0.9,
                left=1,
                color=colors[i % len(colors)],
                label=f"{t} thread{'s' if t != 1 else ''}" if t is not None else None,
            )
            for y, v in zip(ys, vals):
                ax.annotate(
                    f"{v:.2f}",
                    (v, y),
                    xytext=(3 if v >= 1 else -3, 0),
                    textcoords="offset points",
                    ha="left" if v >= 1 else "right",
                    va="center",
                    fontsize=8,
                )
        ax.axvline(1.0, color="black", linewidth=0.8)
        ax.set_xscale("log")
        ax.set_xlim(*xlim)
        ax.xaxis.set_major_locator(FixedLocator(ticks))
        ax.xaxis.set_minor_locator(NullLocator())
        ax.set_xticklabels([f"{x:g}" for x in ticks], fontsize=8)
        ax.set_yticks(range(len(cases)))
        ax.set_yticklabels([label for label, _ in cases], fontsize=8)
        ax.set_ylim(len(cases) - 0.5, -0.5)  # first case on top
        ax.set_title(op, fontsize=10, loc="left")
        ax.grid(axis="x", linewidth=0.3)
        if multi:
            ax.legend(fontsize=8, loc="best")
    axes[-1, 0].set_xlabel(f"fused time / {base_name} time (log scale; below 1: fused is faster)", fontsize=9)
    fig.suptitle(title, fontsize=8, wrap=True)
    fig.savefig(path, dpi=PLOT_DPI)
    plt.close(fig)
    return path


if __name__ == "__main__":
    main()
