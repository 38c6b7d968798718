"""The benchmark report: every case in cases.py, fused vs reference vs
torch.compile(reference), forward and forward+backward, median time and peak
memory above the inputs, on whatever device is there. Prints a markdown table
(last) and writes it with JSON and a PNG plot to --out.

  python benchmarks/run.py                   # all cases, fp32 and bf16, on CUDA if present
  python benchmarks/run.py --dtypes float32 --ops cam_kl_loss --repeat 20
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import cases as cases_mod  # noqa: E402

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16, "float64": torch.float64}


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
    part of it, the peak less what the run leaves allocated (CUDA only)."""
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
        peak = transient = float("nan")
    return statistics.median(times), peak, transient


def copy_bandwidth(device):
    """Bytes per second of a large device copy (read + write), the ceiling a
    memory-bound kernel is measured against."""
    if device.type != "cuda":
        return None
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
    ap.add_argument("--threads", type=int, default=None, help="CPU threads (torch.set_num_threads)")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "out"))
    args = ap.parse_args(argv)

    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    repeat = args.repeat or (50 if device.type == "cuda" else 5)
    if args.max_cases is None and device.type == "cpu":
        args.max_cases = 2
    warmup = 5 if device.type == "cuda" else 1
    ops = set(filter(None, args.ops.split(",")))
    impls = args.impls.split(",")
    modes = args.modes.split(",")
    os.makedirs(args.out, exist_ok=True)
    bandwidth = copy_bandwidth(device)

    rows, per_op = [], {}
    for case in cases_mod.all_cases():
        if ops and case.op not in ops:
            continue
        per_op[case.op] = per_op.get(case.op, 0) + 1
        if args.max_cases and per_op[case.op] > args.max_cases and not (device.type == "cpu" and case.on_cpu):
            continue
        for dname in args.dtypes.split(","):
            dtype = DTYPES[dname]
            gen = torch.Generator().manual_seed(0)
            n_sets = 3 if device.type == "cuda" else 1
            input_sets = [case.make_inputs(device, dtype, gen) for _ in range(n_sets)]
            floor_ms = None
            if bandwidth and case.floor_bytes:
                floor_ms = case.floor_bytes(dtype) / bandwidth * 1e3
            for mode in modes:
                if mode not in case.modes:
                    continue
                for name in impls:
                    if name not in case.impls:  # e.g. no compiled reference of a Python-loop reference
                        continue
                    impl = case.impls[name]
                    try:
                        ms, mib, tmib = measure(
                            impl, input_sets, case.grad_of, mode == "fwd+bwd", device, repeat, warmup
                        )
                    except Exception as e:  # report, do not hide, a failing entry
                        print(
                            f"# {case.op} {case.label} {dname} {mode} {name}: {type(e).__name__}: {e}", file=sys.stderr
                        )
                        ms = mib = tmib = float("nan")
                    rows.append(
                        dict(
                            op=case.op,
                            shape=case.label,
                            dtype=dname,
                            mode=mode,
                            impl=name,
                            ms=ms,
                            peak_mib=mib,
                            transient_mib=tmib,
                            floor_ms=floor_ms if mode == "fwd+bwd" else None,
                        )
                    )
                    print(
                        f"{case.op:14s} {case.label:36s} {dname:8s} {mode:7s} {name:12s} {ms:9.3f} ms {mib:8.1f} MiB",
                        file=sys.stderr,
                        flush=True,
                    )
            del input_sets
            if device.type == "cuda":
                torch.cuda.empty_cache()

    header = _header(device, bandwidth, repeat)
    table = _markdown(rows)
    with open(os.path.join(args.out, "results.md"), "w") as f:
        f.write(header + "\n\n" + table + "\n")
    with open(os.path.join(args.out, "results.json"), "w") as f:
        json.dump(dict(header=header, rows=rows), f, indent=1)
    _plot(rows, os.path.join(args.out, "results.png"), header)
    print(header)
    print()
    print(table)


def _header(device, bandwidth, repeat):
    import hcam_ops

    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    else:
        # The CPU kernels' instruction set (a build before runtime dispatch has no cpu_capability).
        isa = getattr(hcam_ops, "cpu_capability", lambda: "baseline build")()
        name = f"CPU ({os.cpu_count()} cores, {torch.get_num_threads()} threads, hcam_ops CPU kernels {isa})"
    bw = f", copy bandwidth {bandwidth / 1e12:.2f} TB/s" if bandwidth else ""
    return (
        f"device: {name}{bw}; torch {torch.__version__}; hcam_ops CUDA kernels built: "
        f"{hcam_ops.cuda_built()}; median of {repeat} runs; peak = MiB above the inputs, gradients "
        f"included; transient = peak less what the step leaves allocated; fused ops run without "
        f"their host-side input checks (check_index / check_inputs=False)"
    )


def _markdown(rows):
    lines = [
        "| op | shape | dtype | mode | fused ms | reference ms | compiled ref ms | fused / compiled | floor ms "
        "| fused peak / transient MiB | compiled peak / transient MiB |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    keyed = {}
    for r in rows:
        keyed.setdefault((r["op"], r["shape"], r["dtype"], r["mode"]), {})[r["impl"]] = r
    for (op, shape, dtype, mode), by in keyed.items():

        def ms(k):
            return by[k]["ms"] if k in by else float("nan")

        def mib(k):
            if k not in by:
                return "nan"
            return f"{by[k]['peak_mib']:.1f} / {by[k]['transient_mib']:.1f}"

        fl = next((r["floor_ms"] for r in by.values() if r["floor_ms"]), None)
        ratio = ms("fused") / ms("compiled_ref") if "compiled_ref" in by else float("nan")
        lines.append(
            f"| {op} | {shape} | {dtype} | {mode} | {ms('fused'):.3f} | {ms('reference'):.3f} | "
            f"{ms('compiled_ref'):.3f} | {ratio:.2f} | {'' if fl is None else f'{fl:.3f}'} | "
            f"{mib('fused')} | {mib('compiled_ref')} |"
        )
    return "\n".join(lines)


def _plot(rows, path, title):
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("# matplotlib not installed: no plot", file=sys.stderr)
        return
    sel = [r for r in rows if r["mode"] == "fwd+bwd"]
    groups = sorted({(r["op"], r["shape"], r["dtype"]) for r in sel}, key=str)
    impls = sorted({r["impl"] for r in sel})
    fig, ax = plt.subplots(figsize=(max(6, 1.6 * len(groups)), 4.5))
    width = 0.8 / max(len(impls), 1)
    for i, impl in enumerate(impls):
        vals = [
            next((r["ms"] for r in sel if (r["op"], r["shape"], r["dtype"]) == g and r["impl"] == impl), float("nan"))
            for g in groups
        ]
        ax.bar([j + i * width for j in range(len(groups))], vals, width, label=impl)
    ax.set_xticks([j + width * (len(impls) - 1) / 2 for j in range(len(groups))])
    ax.set_xticklabels([f"{g[0]}\n{g[1]}\n{g[2]}" for g in groups], fontsize=6)
    ax.set_yscale("log")
    ax.set_ylabel("fwd+bwd median ms (log)")
    ax.set_title(title, fontsize=7)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    main()
