"""Our modelled DRAM bytes beside Nsight Compute's, on a GPU (docs/traffic.md).

  python benchmarks/ncu_traffic.py --model benchmarks/results/traffic.json --out OUT

For each (op, case, dtype) of the model's JSON (written by
``benchmarks/run.py --traffic`` on the emulator), runs the fused forward and
backward on the GPU under ``ncu`` (only hcam_ops's kernels profiled, metrics
``dram__bytes_read.sum`` and ``dram__bytes_write.sum`` in bytes), pairs ncu's
launches with the model's in order (their kernel names must agree), and writes
OUT/ncu_traffic.md and .json: per launch, the model's DRAM bytes, ncu's, and
their ratio. scripts/gpu_check.sh runs it where a GPU is lent.

``--run-case OP CASE DTYPE`` is the profiled child: one case's step on CUDA.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import re
import shutil
import subprocess
import sys

METRICS = ("dram__bytes_read.sum", "dram__bytes_write.sum")


def short_kernel(name):
    """A kernel's bare name, as both ncu (demangled, with template arguments
    and parameters) and the emulator (clang's pretty name) spell it:
    'void hcam_ops::cuda::(anonymous namespace)::stats_kernel<float, 4>(...)'
    and 'hcam_ops::cuda::(anonymous namespace)::stats_kernel' give 'stats_kernel'."""
    name = name.replace("(anonymous namespace)", "anonymous").replace("{anonymous}", "anonymous").strip()
    base = re.split(r"[<(]", name, maxsplit=1)[0]  # template arguments and parameters dropped
    return re.split(r"::|\s", base.strip())[-1]


def parse_ncu_csv(text):
    """ncu --csv --print-units base output -> [{"kernel", "dram_read", "dram_write"}] in launch order."""
    lines = [ln for ln in text.splitlines() if ln.startswith('"')]  # ncu's own "==PROF==" lines dropped
    launches = {}
    for row in csv.DictReader(io.StringIO("\n".join(lines))):
        metric = row.get("Metric Name")
        if metric not in METRICS:
            continue
        key = int(row["ID"])
        entry = launches.setdefault(key, {"kernel": row["Kernel Name"], "dram_read": None, "dram_write": None})
        value = float(row["Metric Value"].replace(",", ""))
        entry["dram_read" if metric == METRICS[0] else "dram_write"] = value
    return [launches[k] for k in sorted(launches)]


def pair(model_rows, ncu_rows):
    """The model's launches of one case (forward, then backward) beside ncu's, in order."""
    if len(model_rows) != len(ncu_rows):
        raise ValueError(f"the model has {len(model_rows)} launches, ncu profiled {len(ncu_rows)}")
    out = []
    for m, n in zip(model_rows, ncu_rows):
        if short_kernel(m["kernel"]) != short_kernel(n["kernel"]):
            raise ValueError(f"launch order differs: the model's {m['kernel']!r}, ncu's {n['kernel']!r}")
        measured = (n["dram_read"] or 0) + (n["dram_write"] or 0)
        out.append(
            {
                **{k: m[k] for k in ("op", "case", "dtype", "pass")},
                "kernel": short_kernel(m["kernel"]),
                "model_dram_bytes": m["dram_bytes"],
                "ncu_dram_bytes": measured,
                "model_over_ncu": m["dram_bytes"] / measured if measured else None,
            }
        )
    return out


def format_pairs(rows):
    lines = [
        "| op | case | dtype | pass | kernel | model DRAM MB | ncu DRAM MB | model / ncu |",
        "|---|---|---|---|---|---:|---:|---:|",
    ]
    for r in rows:
        ratio = "-" if r["model_over_ncu"] is None else f"{r['model_over_ncu']:.2f}"
        lines.append(
            f"| {r['op']} | {r['case']} | {r['dtype']} | {r['pass']} | `{r['kernel']}` | "
            f"{r['model_dram_bytes'] / 1e6:.2f} | {r['ncu_dram_bytes'] / 1e6:.2f} | {ratio} |"
        )
    return "\n".join(lines)


def run_case(op, label, dtype_name):
    """The profiled child: the fused forward, then backward, of one case on CUDA."""
    import torch

    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import cases as cases_mod

    case = next(c for c in cases_mod.all_cases() if c.op == op and c.label == label)
    dtype = getattr(torch, dtype_name)
    inputs = case.make_inputs(torch.device("cuda"), dtype, torch.Generator().manual_seed(0))
    torch.cuda.synchronize()
    loss = case.impls["fused"](**inputs)
    if case.grad_of and "fwd+bwd" in case.modes:
        loss.backward()
    torch.cuda.synchronize()


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=os.path.join(os.path.dirname(__file__), "results", "traffic.json"))
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "out"))
    ap.add_argument("--ncu", default=shutil.which("ncu") or "/usr/local/cuda/bin/ncu")
    ap.add_argument("--run-case", nargs=3, metavar=("OP", "CASE", "DTYPE"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.run_case:
        return run_case(*args.run_case)
    if not os.path.exists(args.ncu):
        ap.error(f"--ncu: no Nsight Compute at {args.ncu}")
    try:
        with open(args.model) as f:
            model = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        ap.error(f"--model: cannot read {args.model}: {e}")
    groups = {}
    for r in model:
        groups.setdefault((r["op"], r["case"], r["dtype"]), []).append(r)
    os.makedirs(args.out, exist_ok=True)
    rows = []
    for (op, label, dtype), model_rows in groups.items():
        cmd = [args.ncu, "--csv", "--print-units", "base", "--metrics", ",".join(METRICS)]
        cmd += ["--kernel-name-base", "demangled", "--kernel-name", "regex:hcam_ops::cuda"]
        cmd += [sys.executable, os.path.abspath(__file__), "--run-case", op, label, dtype]
        p = subprocess.run(cmd, capture_output=True, text=True)
        if p.returncode != 0:
            print(f"# {op} {label} {dtype}: ncu failed: {p.stderr.strip()[-500:]}", file=sys.stderr)
            continue
        try:
            rows += pair(model_rows, parse_ncu_csv(p.stdout))
        except ValueError as e:
            print(f"# {op} {label} {dtype}: {e}", file=sys.stderr)
    table = format_pairs(rows)
    with open(os.path.join(args.out, "ncu_traffic.md"), "w") as f:
        f.write(table + "\n")
    with open(os.path.join(args.out, "ncu_traffic.json"), "w") as f:
        json.dump(rows, f, indent=1)
    print(table)
    return rows


if __name__ == "__main__":
    main()
