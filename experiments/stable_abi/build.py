"""Builds the stable-ABI port and records what docs/stable_abi.md reports
about the build: build times, what the library links against, and which
headers the stable build refuses. Run from this folder (MAX_JOBS=2):

    python build.py            # writes results/build.json

Steps:
  1. `python setup.py build_ext --inplace` (hcam_ops_stable/_C.abi3.so), timed.
  2. One-file compile times with the same compiler flags: the port's driver
     and kernel source (one level) against hcam_ops._C's minmax_normalize
     driver and kernel source (one level; _C compiles it at three, the port at two).
  3. The ordinary-ABI probe (csrc/probe_regular.cpp) through
     torch.utils.cpp_extension.load, for measure.py's per-call comparison.
  4. The link facts of both libraries: NEEDED entries, undefined dynamic
     symbols by kind (C shim, mangled c10/at/torch C++, other).
  5. Headers under TORCH_TARGET_VERSION: which ones stop the build.
"""

from __future__ import annotations

import glob
import json
import os
import re
import subprocess
import sys
import sysconfig
import tempfile
import time

import torch
from torch.utils import cpp_extension

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
RESULTS = os.path.join(HERE, "results")
TARGET = "-DTORCH_TARGET_VERSION=0x020a000000000000"
# hcam_ops._C's compile line (build/temp*/build.ninja: Python's CFLAGS, then setup.py's).
BASE = ["-DNDEBUG", "-g", "-fwrapv", "-O3", "-Wall", "-fPIC", "-std=c++20"]
OPT = ["-O3", "-fopenmp-simd", "-fno-wrapv", "-fno-math-errno"]
INCLUDES = [f"-I{p}" for p in cpp_extension.include_paths()] + [f"-I{sysconfig.get_paths()['include']}"]


def run(cmd, **kw):
    t0 = time.perf_counter()
    p = subprocess.run(cmd, capture_output=True, text=True, **kw)
    return time.perf_counter() - t0, p


def compile_seconds(src, flags):
    with tempfile.TemporaryDirectory() as d:
        secs, p = run(["c++", *BASE, *INCLUDES, *flags, "-c", src, "-o", os.path.join(d, "x.o")])
    if p.returncode != 0:
        raise RuntimeError(f"compile of {src} failed:\n{p.stderr[-3000:]}")
    return round(secs, 1)


def link_facts(path):
    needed = re.findall(r"\(NEEDED\)\s+Shared library: \[(.+?)\]", run(["readelf", "-d", path])[1].stdout)
    lines = run(["nm", "-D", "--undefined-only", "--with-symbol-versions", path])[1].stdout.splitlines()
    undef = [line.split()[-1] for line in lines if line.strip()]
    names = [u.split("@")[0] for u in undef]
    shim = sorted(n for n in names if n.startswith(("aoti_torch_", "torch_")))
    # Itanium-mangled names in namespace c10, at or torch: functions (_ZN, _ZNK),
    # vtables and typeinfo (_ZTV, _ZTI), guard variables and the like.
    cxx = [n for n in names if re.match(r"_Z[A-Z]*N?K?(3c10|2at|5torch)", n)]
    return {
        "size_bytes": os.path.getsize(path),
        "needed": needed,
        "undefined_total": len(names),
        "undefined_c_shim": shim,
        "undefined_c10_at_torch_cxx": len(cxx),
        "undefined_other": len(names) - len(shim) - len(cxx),
        "libstdcxx_versions": sorted({v for u in undef for v in re.findall(r"@+(GLIBCXX_[\d.]+|CXXABI_[\d.]+)", u)}),
    }


def header_probe(include):
    with tempfile.TemporaryDirectory() as d:
        src = os.path.join(d, "probe.cpp")
        with open(src, "w") as f:
            f.write(f"#include {include}\nint main() {{ return 0; }}\n")
        _, p = run(["c++", *BASE, *INCLUDES, f"-I{os.path.join(REPO, 'csrc')}", TARGET, "-fsyntax-only", src])
    first_error = next((line for line in p.stderr.splitlines() if "error" in line), "")
    return {"include": include, "compiles": p.returncode == 0, "first_error": re.sub(r"^.*?include/", "", first_error)}


def main():
    os.makedirs(RESULTS, exist_ok=True)
    env = {**os.environ, "MAX_JOBS": os.environ.get("MAX_JOBS", "2")}
    out = {"torch": torch.__version__, "python": sys.version.split()[0]}

    # 1. The extension, from clean.
    for old in glob.glob(os.path.join(HERE, "hcam_ops_stable", "_C*.so")):
        os.remove(old)
    run(["rm", "-rf", os.path.join(HERE, "build")])
    secs, p = run([sys.executable, "setup.py", "build_ext", "--inplace"], cwd=HERE, env=env)
    if p.returncode != 0:
        sys.exit(p.stdout[-3000:] + p.stderr[-6000:])
    warnings = [line for line in (p.stdout + p.stderr).splitlines() if "warning:" in line]
    (so,) = glob.glob(os.path.join(HERE, "hcam_ops_stable", "_C*.so"))
    out["stable_build"] = {
        "setup_build_ext_seconds": round(secs, 1),
        "library": os.path.basename(so),
        "compiler_warnings": warnings[:20],
    }

    # 2. One file each, same compiler and flags.
    stable = OPT + [TARGET, "-DCPU_CAPABILITY=DEFAULT", "-DCPU_CAPABILITY_DEFAULT", "-DHCAM_STABLE_AVX512"]
    csrc = os.path.join(REPO, "csrc")
    regular = OPT + [
        f"-I{csrc}",
        "-DCPU_CAPABILITY=DEFAULT",
        "-DCPU_CAPABILITY_DEFAULT",
        "-fopenmp",
        "-DTORCH_API_INCLUDE_EXTENSION_H",
        "-DTORCH_EXTENSION_NAME=_C",
    ]
    out["compile_seconds"] = {
        "stable driver (minmax_normalize_stable.cpp)": compile_seconds(
            os.path.join(HERE, "csrc", "minmax_normalize_stable.cpp"), stable + ["-DPy_LIMITED_API=0x030A0000"]
        ),
        "stable kernels, one level (minmax_kernels.cpp)": compile_seconds(
            os.path.join(HERE, "csrc", "minmax_kernels.cpp"), stable
        ),
        "_C driver (csrc/ops/minmax_normalize.cpp)": compile_seconds(
            os.path.join(csrc, "ops", "minmax_normalize.cpp"), regular
        ),
        "_C kernels, one level (csrc/ops/cpu/minmax_normalize_kernel.cpp)": compile_seconds(
            os.path.join(csrc, "ops", "cpu", "minmax_normalize_kernel.cpp"), regular
        ),
    }

    # 3. The ordinary-ABI probe.
    probe_dir = os.path.join(HERE, "build", "probe_regular")
    os.makedirs(probe_dir, exist_ok=True)
    t0 = time.perf_counter()
    cpp_extension.load(
        "hcam_ops_regular_probe",
        [os.path.join(HERE, "csrc", "probe_regular.cpp")],
        build_directory=probe_dir,
        extra_cflags=["-O3"],
        is_python_module=False,
        verbose=False,
    )
    out["regular_probe_build_seconds"] = round(time.perf_counter() - t0, 1)
    out["regular_probe_library"] = os.path.relpath(os.path.join(probe_dir, "hcam_ops_regular_probe.so"), HERE)

    # 4. Link facts.
    (main_so,) = glob.glob(os.path.join(REPO, "hcam_ops", "_C*.so"))
    out["link"] = {"stable": link_facts(so), "hcam_ops._C": link_facts(main_so)}

    # 5. Headers.
    out["headers_under_TORCH_TARGET_VERSION"] = [
        header_probe(h)
        for h in (
            "<ATen/cpu/vec/vec.h>",
            "<ATen/Parallel.h>",
            "<ATen/Dispatch.h>",
            "<ATen/OpMathType.h>",
            "<c10/util/Half.h>",
            "<c10/cuda/CUDAStream.h>",
            '"ops/cam_math.h"',
            '"ops/cpu/vec.h"',
            "<torch/headeronly/cpu/vec/vec_half.h>",
            "<torch/headeronly/core/Dispatch_v2.h>",
            "<torch/headeronly/util/NumericUtils.h>",
            "<torch/csrc/stable/accelerator.h>",
        )
    ]

    with open(os.path.join(RESULTS, "build.json"), "w") as f:
        json.dump(out, f, indent=1)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
