"""Parity and cost of the stable-ABI port against hcam_ops._C (docs/stable_abi.md).
Run from this folder after build.py, with the repository's hcam_ops built:

    python measure.py          # both levels, writes results/measure_<level>.json

Each instruction-set level runs in its own process (both libraries read
HCAM_OPS_CPU_CAPABILITY once, when loaded): "auto" (AVX-512 where the CPU has
it, hcam_ops._C's default) and "default" (baseline x86-64 for both).

  parity    torch.ops.hcam_ops.minmax_normalize[_backward] against
            torch.ops.hcam_ops_stable.*, bit for bit (NaN compared as bits),
            float32 / float64 / bfloat16 / float16, odd shapes, ties, NaN,
            Inf, constant rows, eps = 0, a strided input, 1 and 2 threads;
            opcheck and gradcheck of the stable operator; error messages.
  timings   forward, and forward + backward (the two operator calls), median
            of 21 runs, the two libraries interleaved, 1 and 2 threads.
  per-call  a [4, 8] input: median over 21 repeats of the mean of 2000 calls,
            for both minmax_normalize operators and for the probe operators
            on each ABI (one tensor in, an int out; and one tensor in, an
            empty_like out).
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
RESULTS = os.path.join(HERE, "results")
SHAPES = [(4096, 196), (65536, 49), (256, 3136)]
RUNS = 21
EPS = 1e-6


def setup():
    sys.path[:0] = [REPO, HERE]
    import hcam_ops_stable
    import torch

    import hcam_ops

    with open(os.path.join(RESULTS, "build.json")) as f:
        torch.ops.load_library(os.path.join(HERE, json.load(f)["regular_probe_library"]))
    return torch, hcam_ops, hcam_ops_stable


def bits(t, torch):
    view = {
        torch.float32: torch.int32,
        torch.float64: torch.int64,
        torch.bfloat16: torch.int16,
        torch.float16: torch.int16,
    }
    return t.contiguous().view(view[t.dtype])


def compare(a, b, torch):
    same = torch.equal(bits(a, torch), bits(b, torch))
    if same:
        return {"bitwise": True}
    both_nan = a.isnan() & b.isnan()
    diff = (a.double() - b.double()).abs().masked_fill(both_nan, 0)
    return {"bitwise": False, "max_abs": float(diff.nan_to_num(nan=float("inf")).max())}


def cases(torch):
    g = torch.Generator().manual_seed(0)
    out = []
    for dtype in (torch.float32, torch.float64, torch.bfloat16, torch.float16):
        for shape in [(1,), (5,), (3, 1), (4, 7), (2, 3, 33), (2, 3136), (4096, 196), (65536, 49), (256, 3136)]:
            out.append((f"{str(dtype)[6:]} {list(shape)}", torch.randn(shape, generator=g).to(dtype), EPS))
        special = torch.randn(6, 40, generator=g)
        special[0, 5] = float("nan")
        special[1] = 2.5  # constant row
        special[2, ::7] = special[2].max()  # ties of the max
        special[3, 1::9] = special[3].min()  # ties of the min
        special[4, 3] = float("inf")
        special[5, 8] = -float("inf")
        out.append((f"{str(dtype)[6:]} special rows", special.to(dtype), EPS))
        out.append((f"{str(dtype)[6:]} special rows eps=0", special.to(dtype), 0.0))
        strided = torch.randn(64, 96, generator=g).to(dtype).t()  # [96, 64], not contiguous
        out.append((f"{str(dtype)[6:]} strided [96, 64]", strided, EPS))
    return out


def parity(torch, hcam_ops, hcam_ops_stable):
    reg, st = torch.ops.hcam_ops, torch.ops.hcam_ops_stable
    rows, all_bitwise = [], True
    g = torch.Generator().manual_seed(1)
    for threads in (1, 2):
        torch.set_num_threads(threads)
        for name, x, eps in cases(torch):
            grad = torch.randn(x.shape, generator=g).to(x.dtype)
            f = compare(reg.minmax_normalize(x, eps), st.minmax_normalize(x, eps), torch)
            b = compare(reg.minmax_normalize_backward(grad, x, eps), st.minmax_normalize_backward(grad, x, eps), torch)
            all_bitwise &= f["bitwise"] and b["bitwise"]
            if not (f["bitwise"] and b["bitwise"]):
                rows.append({"case": name, "threads": threads, "forward": f, "backward": b})
    torch.set_num_threads(os.cpu_count())

    # Autograd through the Python registration, against hcam_ops.minmax_normalize.
    x = torch.randn(5, 33, generator=g, dtype=torch.float64, requires_grad=True)
    gy = torch.randn(5, 33, generator=g, dtype=torch.float64)
    autograd_equal = torch.equal(
        torch.autograd.grad(hcam_ops.minmax_normalize(x, 1e-3), x, gy)[0],
        torch.autograd.grad(hcam_ops_stable.minmax_normalize(x, 1e-3), x, gy)[0],
    )
    gradcheck = torch.autograd.gradcheck(lambda t: hcam_ops_stable.minmax_normalize(t, 1e-3), (x,))
    opcheck = {}
    for name, op, args in (
        ("minmax_normalize", st.minmax_normalize.default, (x.detach(), 1e-6)),
        ("minmax_normalize_backward", st.minmax_normalize_backward.default, (gy, x.detach(), 1e-6)),
    ):
        try:
            torch.library.opcheck(op, args)
            opcheck[name] = "passed"
        except Exception as e:  # noqa: BLE001
            opcheck[name] = f"{type(e).__name__}: {str(e)[:300]}"

    errors = {}
    for label, call in (
        ("int64 input", lambda ops: ops.minmax_normalize(torch.arange(4), EPS)),
        ("empty last dim", lambda ops: ops.minmax_normalize(torch.zeros(3, 0), EPS)),
        ("shape mismatch", lambda ops: ops.minmax_normalize_backward(torch.zeros(3, 4), torch.zeros(3, 5), EPS)),
    ):
        errors[label] = {}
        for lib, ops in (("hcam_ops", reg), ("hcam_ops_stable", st)):
            try:
                call(ops)
                errors[label][lib] = "no error"
            except Exception as e:  # noqa: BLE001
                errors[label][lib] = f"{type(e).__name__}: {str(e).splitlines()[0][:240]}"
    return {
        "cases": len(cases(torch)) * 2,
        "all_bitwise": all_bitwise,
        "not_bitwise": rows,
        "autograd_grad_equal": autograd_equal,
        "gradcheck": gradcheck,
        "opcheck": opcheck,
        "errors": errors,
    }


def timings(torch):
    reg, st = torch.ops.hcam_ops, torch.ops.hcam_ops_stable
    libs = {"hcam_ops": reg, "hcam_ops_stable": st}
    g = torch.Generator().manual_seed(2)
    out = []
    for shape in SHAPES:
        x = torch.randn(shape, generator=g)
        gy = torch.randn(shape, generator=g)
        for threads in (1, 2):
            torch.set_num_threads(threads)
            for mode in ("forward", "forward+backward"):

                def once(ops, x=x, gy=gy, mode=mode):
                    t0 = time.perf_counter()
                    ops.minmax_normalize(x, EPS)
                    if mode != "forward":
                        ops.minmax_normalize_backward(gy, x, EPS)
                    return time.perf_counter() - t0

                for ops in libs.values():  # warm-up
                    once(ops), once(ops)
                samples = {k: [] for k in libs}
                for _ in range(RUNS):
                    for k, ops in libs.items():
                        samples[k].append(once(ops))
                med = {k: statistics.median(v) * 1e3 for k, v in samples.items()}
                out.append(
                    {
                        "shape": list(shape),
                        "dtype": "float32",
                        "threads": threads,
                        "mode": mode,
                        "hcam_ops_ms": round(med["hcam_ops"], 3),
                        "stable_ms": round(med["hcam_ops_stable"], 3),
                        "stable_over_hcam_ops": round(med["hcam_ops_stable"] / med["hcam_ops"], 3),
                    }
                )
    torch.set_num_threads(os.cpu_count())
    return out


def per_call(torch):
    x = torch.randn(4, 8)
    g = torch.randn(4, 8)
    calls = {
        "minmax_normalize [4, 8], hcam_ops": lambda: torch.ops.hcam_ops.minmax_normalize.default(x, EPS),
        "minmax_normalize [4, 8], stable": lambda: torch.ops.hcam_ops_stable.minmax_normalize.default(x, EPS),
        "minmax_normalize_backward [4, 8], hcam_ops": lambda: torch.ops.hcam_ops.minmax_normalize_backward.default(
            g, x, EPS
        ),
        "minmax_normalize_backward [4, 8], stable": lambda: torch.ops.hcam_ops_stable.minmax_normalize_backward.default(
            g, x, EPS
        ),
        "probe (Tensor -> int), ordinary ABI": lambda: torch.ops.hcam_ops_regular.probe.default(x),
        "probe (Tensor -> int), stable": lambda: torch.ops.hcam_ops_stable.probe.default(x),
        "probe_empty_like (Tensor -> Tensor), ordinary ABI": lambda: (
            torch.ops.hcam_ops_regular.probe_empty_like.default(x)
        ),
        "probe_empty_like (Tensor -> Tensor), stable": lambda: torch.ops.hcam_ops_stable.probe_empty_like.default(x),
    }
    n = 2000
    samples = {k: [] for k in calls}
    for fn in calls.values():
        for _ in range(200):
            fn()
    for _ in range(RUNS):
        for k, fn in calls.items():
            t0 = time.perf_counter()
            for _ in range(n):
                fn()
            samples[k].append((time.perf_counter() - t0) / n)
    return {k: round(statistics.median(v) * 1e6, 2) for k, v in samples.items()}


def one_level(level):
    torch, hcam_ops, hcam_ops_stable = setup()
    out = {
        "level": level,
        "torch": torch.__version__,
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "hcam_ops_cpu_capability": hcam_ops.cpu_capability(),
        "stable_cpu_capability": hcam_ops_stable.cpu_capability(),
        "parity": parity(torch, hcam_ops, hcam_ops_stable),
        "timings": timings(torch),
        "per_call_us": per_call(torch),
    }
    with open(os.path.join(RESULTS, f"measure_{level}.json"), "w") as f:
        json.dump(out, f, indent=1)
    return out


def main():
    if len(sys.argv) > 1:
        one_level(sys.argv[1])
        return
    for level in ("auto", "default"):
        env = dict(os.environ)
        env.pop("HCAM_OPS_CPU_CAPABILITY", None)
        if level == "default":
            env["HCAM_OPS_CPU_CAPABILITY"] = "default"
        subprocess.run([sys.executable, __file__, level], env=env, check=True)
        with open(os.path.join(RESULTS, f"measure_{level}.json")) as f:
            r = json.load(f)
        print(f"== level {level}: hcam_ops {r['hcam_ops_cpu_capability']}, stable {r['stable_cpu_capability']}")
        p = r["parity"]
        print(
            f"parity: {p['cases']} cases, all bitwise {p['all_bitwise']}, autograd equal {p['autograd_grad_equal']}, "
            f"gradcheck {p['gradcheck']}, opcheck {p['opcheck']}"
        )
        for row in p["not_bitwise"]:
            print("  not bitwise:", row)
        for label, msgs in p["errors"].items():
            print(f"  error {label}:")
            for lib, msg in msgs.items():
                print(f"    {lib:16s} {msg}")
        print(f"{'shape':>12s} {'thr':>3s} {'mode':>16s} {'hcam_ops ms':>11s} {'stable ms':>9s} {'ratio':>6s}")
        for t in r["timings"]:
            print(
                f"{str(t['shape']):>12s} {t['threads']:>3d} {t['mode']:>16s} {t['hcam_ops_ms']:>11.3f} "
                f"{t['stable_ms']:>9.3f} {t['stable_over_hcam_ops']:>6.3f}"
            )
        for k, v in r["per_call_us"].items():
            print(f"  per call {k:48s} {v:8.2f} us")


if __name__ == "__main__":
    main()
