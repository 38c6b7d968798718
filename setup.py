"""Build of hcam_ops._C: the C++ (and, where it can be built, CUDA) kernels.

Environment:
  HCAM_OPS_CUDA=auto|0|1|emulate
                           auto (default): build the CUDA kernels when torch has
                           CUDA and a toolkit is found; 0: CPU only; 1: CUDA or fail;
                           emulate: the CUDA kernels compiled as host C++ on the
                           emulator (csrc/emulator, docs/emulator.md), for tests
                           where there is no GPU.
  TORCH_CUDA_ARCH_LIST     CUDA architectures; default: the GPU present, else
                           8.0;8.6;8.9;9.0+PTX (A100, RTX 30xx/A10, RTX 40xx/L4,
                           H100, and PTX for newer GPUs).
  CUDA_HOME / CUDA_PATH    the toolkit, else /usr/local/cuda, else nvcc's own.
  MAX_JOBS                 parallel compile jobs (ninja).
  HCAM_OPS_CPU_VARIANTS    0: build the CPU kernels for baseline x86-64 only
                           (default on x86-64 with GCC/Clang: also AVX2 and
                           AVX-512 variants, chosen at run time).
  HCAM_OPS_MANYLINUX       1: force csrc/compat/manylinux_2_28.h into every
                           translation unit, which pins the few glibc symbol
                           versions newer than 2.28 (scripts/build_wheel.sh
                           sets it; docs/wheels.md).
  HCAM_OPS_STRIP_DEBUG     1: link without debug information (the wheel build:
                           60 of _C's 66 MB); the symbol table stays.
"""

import functools
import glob
import os
import platform
import shutil
import subprocess
import sys

from setuptools import find_packages, setup

ROOT = os.path.dirname(os.path.abspath(__file__))


def _is_toolkit(path):
    return (
        bool(path)
        and os.path.isfile(os.path.join(path, "bin", "nvcc"))
        and os.path.isfile(os.path.join(path, "include", "cuda_runtime.h"))
    )


def find_cuda_home():
    """The toolkit's root. The nvcc on PATH may be a wrapper script, so its
    directory is tried last and only accepted if it holds the headers."""
    for candidate in (os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), "/usr/local/cuda"):
        if _is_toolkit(candidate):
            return os.path.realpath(candidate)
    nvcc = shutil.which("nvcc")
    if nvcc:
        root = os.path.dirname(os.path.dirname(os.path.realpath(nvcc)))
        if _is_toolkit(root):
            return root
    return None


CUDA_MODE = os.environ.get("HCAM_OPS_CUDA", "auto").strip().lower()
if CUDA_MODE not in ("auto", "0", "1", "emulate"):
    sys.exit(f"HCAM_OPS_CUDA must be auto, 0, 1 or emulate, got {CUDA_MODE!r}")
CUDA_HOME = find_cuda_home()
if CUDA_HOME and CUDA_MODE not in ("0", "emulate"):
    # torch.utils.cpp_extension reads CUDA_HOME when it is imported.
    os.environ["CUDA_HOME"] = CUDA_HOME
try:
    import torch
except ImportError:
    # pip's build isolation gives a fresh environment without the user's
    # torch; building there would pull another torch and link against it.
    sys.exit(
        "hcam_ops: torch is not importable in the build environment. The extension builds against the torch you "
        "have installed: install torch first, then `pip install --no-build-isolation .` (or -e .)"
    )
from torch.utils.cpp_extension import BuildExtension, CppExtension, CUDAExtension  # noqa: E402

DEFAULT_ARCHS = "8.0;8.6;8.9;9.0+PTX"


def default_arch_list() -> str:
    """The architecture of each visible GPU, else a list that covers current
    data-centre and desktop GPUs (with PTX for newer ones)."""
    try:
        if torch.cuda.is_available():
            caps = sorted({torch.cuda.get_device_capability(i) for i in range(torch.cuda.device_count())})
            return ";".join(f"{major}.{minor}" for major, minor in caps)
    except RuntimeError:  # a driver problem: fall back to the portable list
        pass
    return DEFAULT_ARCHS


def torch_cuda_include_dirs():
    """Headers torch's CUDA build needs that the toolkit may lack (cuBLAS,
    cuSPARSE, ...): they ship in the nvidia/cu13 (or cu12) wheel directory."""
    dirs = []
    try:
        import nvidia  # namespace package of the nvidia-* wheels

        for base in nvidia.__path__:
            for sub in ("cu13", "cu12"):
                inc = os.path.join(base, sub, "include")
                if os.path.isdir(inc):
                    dirs.append(inc)
    except ImportError:
        pass
    return dirs


def want_cuda():
    if CUDA_MODE in ("0", "emulate"):
        return False
    problems = []
    if torch.version.cuda is None:
        problems.append(f"torch {torch.__version__} is a CPU-only build")
    if CUDA_HOME is None:
        problems.append("no CUDA toolkit found (set CUDA_HOME)")
    if not problems:
        return True
    if CUDA_MODE == "1":
        sys.exit("HCAM_OPS_CUDA=1 but CUDA cannot be built: " + "; ".join(problems))
    print("hcam_ops: building CPU kernels only: " + "; ".join(problems), file=sys.stderr)
    return False


def check_toolkit_version():
    out = subprocess.run([os.path.join(CUDA_HOME, "bin", "nvcc"), "--version"], capture_output=True, text=True).stdout
    release = out.split("release ")[-1].split(",")[0].strip() if "release " in out else "?"
    if release.split(".")[0] != torch.version.cuda.split(".")[0]:
        msg = f"nvcc {release} at {CUDA_HOME} does not match torch's CUDA {torch.version.cuda}"
        if CUDA_MODE == "1":
            sys.exit(msg)
        print("hcam_ops: warning: " + msg, file=sys.stderr)
    print(f"hcam_ops: CUDA {release} from {CUDA_HOME}, arch {os.environ['TORCH_CUDA_ARCH_LIST']}")


# Per-level variants of the CPU kernels (csrc/ops/cpu/isa.h), as ATen builds
# its native/cpu kernels (cmake/Codegen.cmake): the flags of each level, and
# CPU_CAPABILITY naming the namespace its code lands in. The baseline build of
# every source has CPU_CAPABILITY=DEFAULT. No -march=native: the wheel runs on
# any x86-64 and picks the best variant where it runs.
CPU_VARIANTS = {
    "AVX2": ["-mavx2", "-mfma", "-mf16c"],
    # -Wno-maybe-uninitialized: GCC's avx512fintrin.h starts its
    # _mm512_undefined_* values as `__Y = __Y`, which the warning reports at
    # every inlined masked load and conversion (hundreds of lines, none ours).
    "AVX512": ["-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512dq", "-mfma", "-mf16c", "-Wno-maybe-uninitialized"],
}
DEFAULT_LEVEL = ["-DCPU_CAPABILITY=DEFAULT", "-DCPU_CAPABILITY_DEFAULT"]


def cpu_variants():
    if os.environ.get("HCAM_OPS_CPU_VARIANTS", "1").strip() == "0":
        return {}
    if platform.machine().lower() not in ("x86_64", "amd64") or sys.platform == "win32":
        return {}
    return CPU_VARIANTS


def kernel_sources():
    """The sources compiled once per level: the CPU kernels."""
    return sorted(os.path.relpath(s, ROOT) for s in glob.glob(os.path.join(ROOT, "csrc", "ops", "cpu", "*_kernel.cpp")))


class BuildExt(BuildExtension):
    """torch's BuildExtension, plus the per-level objects of the CPU kernels.
    setuptools gives all sources of an Extension the same flags, so each level
    is compiled here (through the same ninja compile, with the extension's
    flags plus the level's) into its own directory and linked in. The baseline
    objects come first on the link line: where a variant and the baseline both
    emit an inline function of a shared header, the linker keeps the baseline's,
    which runs on every CPU."""

    def build_extension(self, ext):
        objects = []
        for level, flags in cpu_variants().items():
            args = [a for a in ext.extra_compile_args["cxx"] if a not in DEFAULT_LEVEL]
            args += flags + [f"-DCPU_CAPABILITY={level}", f"-DCPU_CAPABILITY_{level}"]
            postargs = {"cxx": args, "nvcc": []} if isinstance(ext.extra_compile_args, dict) else args
            objects += self.compiler.compile(
                kernel_sources(),
                output_dir=os.path.join(self.build_temp, "cpu_" + level.lower()),
                include_dirs=ext.include_dirs,
                extra_postargs=postargs,
                depends=ext.depends,
            )
        objects += self.compile_traced_kernels(ext)
        ext.extra_objects = list(ext.extra_objects or []) + objects
        super().build_extension(ext)

    def compile_traced_kernels(self, ext):
        """The emulated CUDA kernels of a traced build, compiled by clang with
        its load/store tracing (docs/traffic.md); the other sources stay with
        the default compiler (GCC: OpenMP on torch's libgomp)."""
        sources = getattr(ext, "traced_sources", [])
        if not sources:
            return []
        gcc_only = {"-fopenmp", "-Wno-maybe-uninitialized"}
        args = [a for a in ext.extra_compile_args["cxx"] if a not in gcc_only] + TRACE_FLAGS
        # torch's ninja file takes its compiler from CXX.
        saved = os.environ.get("CXX")
        os.environ["CXX"] = emulator_tracing_compiler()
        try:
            return self.compiler.compile(
                sources,
                output_dir=os.path.join(self.build_temp, "emulated_traced"),
                include_dirs=ext.include_dirs,
                extra_postargs={"cxx": args, "nvcc": []},
                depends=ext.depends,
            )
        finally:
            if saved is None:
                del os.environ["CXX"]
            else:
                os.environ["CXX"] = saved


# The emulated kernels' load/store tracing (docs/traffic.md): clang calls
# __sanitizer_cov_load4(addr) and its kin before every load and store
# (inline-8bit-counters is the coverage mode the tracing needs beside it). No
# auto-vectorising, so that each access is the one the kernel's source makes,
# as nvcc compiles it.
TRACE_FLAGS = [
    "-fsanitize-coverage=trace-loads,trace-stores,inline-8bit-counters",
    "-fno-vectorize",
    "-fno-slp-vectorize",
    "-Wno-unknown-pragmas",
]


@functools.cache
def emulator_tracing_compiler():
    """clang++ for the emulated kernels' traffic counters, or None:
    HCAM_OPS_EMULATOR_CXX names it (empty: no tracing), else clang++ from PATH."""
    name = os.environ.get("HCAM_OPS_EMULATOR_CXX", "clang++").strip()
    if not name:
        return None
    path = shutil.which(name)
    if path is None:
        print(
            f"hcam_ops: warning: {name} not found: the emulated kernels are built without load/store tracing "
            "(no traffic counters, docs/traffic.md)",
            file=sys.stderr,
        )
    return path


def emulated_cuda_sources():
    """The emulator's runtime, and each CUDA source as a host C++ translation
    unit behind the emulator's prelude: one generated wrapper per .cu file
    (build/emulated_cuda/), rewritten only when its text changes. Returns
    (runtime sources, kernel wrappers)."""
    out_dir = os.path.join(ROOT, "build", "emulated_cuda")
    os.makedirs(out_dir, exist_ok=True)
    runtime = sorted(glob.glob(os.path.join(ROOT, "csrc", "emulator", "*.cpp")))
    runtime += sorted(glob.glob(os.path.join(ROOT, "csrc", "emulator", "torch", "*.cpp")))
    sources = []
    for cu in sorted(glob.glob(os.path.join(ROOT, "csrc", "ops", "cuda", "*.cu"))):
        name = os.path.basename(cu)
        text = (
            f"// Generated by setup.py (HCAM_OPS_CUDA=emulate): csrc/ops/cuda/{name} on the emulator.\n"
            f'#include "emulator/prelude.h"\n#include "ops/cuda/{name}"\n'
        )
        path = os.path.join(out_dir, name[: -len(".cu")] + ".cpp")
        if not os.path.exists(path) or open(path).read() != text:
            with open(path, "w") as f:
                f.write(text)
        sources.append(path)
    return [os.path.relpath(s, ROOT) for s in runtime], [os.path.relpath(s, ROOT) for s in sources]


@functools.cache
def openmp_flags():
    """-fopenmp where torch's own ATen runs on OpenMP (torch.__config__ says
    which backend). at::parallel_for is a header template: it expands in our
    objects, as `#pragma omp parallel`, and without -fopenmp the pragma is
    dropped and every parallel_for runs its whole range on the calling
    thread (how every kernel here ran before: 1.0x from a second core).
    The objects then call the libgomp that torch loads (same soname)."""
    if not sys.platform.startswith("linux") or "OpenMP" not in torch.__config__.parallel_info():
        return ()
    # GCC's -fopenmp calls libgomp (torch's own, on Linux); clang's would link
    # LLVM's libomp, a second OpenMP runtime that torch.set_num_threads does
    # not govern.
    cxx = os.environ.get("CXX", "c++")
    try:
        version = subprocess.run([cxx, "--version"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        version = ""
    if "clang" in version.lower() or not version:
        print(
            f"hcam_ops: warning: {cxx} is not GCC: built without -fopenmp, the CPU kernels run on one thread",
            file=sys.stderr,
        )
        return ()
    return ("-fopenmp",)


def write_build_record():
    """hcam_ops/_build.py: the torch the extension is compiled against. The
    package compares it with the torch it is imported with, so a mismatch is
    one clear ImportError instead of an undefined symbol (or worse) from
    loading _C (hcam_ops/_torch_check.py)."""
    text = (
        f"# Generated by setup.py: the torch hcam_ops._C was compiled against.\nTORCH_VERSION = {torch.__version__!r}\n"
    )
    path = os.path.join(ROOT, "hcam_ops", "_build.py")
    if not os.path.exists(path) or open(path).read() != text:
        with open(path, "w") as f:
            f.write(text)


def manylinux_flags():
    """HCAM_OPS_MANYLINUX=1 (the wheel build): the header that keeps glibc
    symbol versions newer than 2.28 out of the binary, forced into every
    translation unit (host code of the .cu files included)."""
    value = os.environ.get("HCAM_OPS_MANYLINUX", "0").strip()
    if value not in ("0", "1"):
        sys.exit(f"HCAM_OPS_MANYLINUX must be 0 or 1, got {value!r}")
    if value == "0" or not sys.platform.startswith("linux"):
        return []
    return ["-include", os.path.join(ROOT, "csrc", "compat", "manylinux_2_28.h")]


def extensions():
    csrc = os.path.join(ROOT, "csrc")
    sources = sorted(glob.glob(os.path.join(csrc, "*.cpp")))
    sources += sorted(glob.glob(os.path.join(csrc, "ops", "*.cpp")))
    sources += sorted(glob.glob(os.path.join(csrc, "ops", "cpu", "*.cpp")))
    sources = [os.path.relpath(s, ROOT) for s in sources]
    # -fno-wrapv undoes the -fwrapv that Python's own CFLAGS bring: wrapping
    # signed arithmetic stops GCC from vectorising loops with int64 indices
    # (4.5x on the CPU grad pass); no code here relies on signed overflow.
    # -fno-math-errno: no code reads errno, and with it sqrt inlines and
    # exp/log become pure (common subexpressions, vectorisable).
    cxx = ["-O3", "-fopenmp-simd", "-fno-wrapv", "-fno-math-errno"] + DEFAULT_LEVEL + list(openmp_flags())
    cxx += [f"-DHCAM_OPS_CPU_{level}" for level in cpu_variants()]
    cxx += manylinux_flags()
    link = list(openmp_flags())
    if os.environ.get("HCAM_OPS_STRIP_DEBUG", "0").strip() == "1":
        link.append("-Wl,--strip-debug")
    kwargs = dict(name="hcam_ops._C", include_dirs=[csrc], py_limited_api=False, extra_link_args=link)
    if CUDA_MODE == "emulate":
        print("hcam_ops: CUDA kernels on the emulator (HCAM_OPS_CUDA=emulate)")
        # The emulator's stand-ins for the CUDA runtime headers come before torch's.
        include = [csrc, os.path.join(csrc, "emulator", "include")]
        flags = cxx + ["-DHCAM_OPS_WITH_CUDA", "-DHCAM_OPS_EMULATED_CUDA"]
        runtime, kernels = emulated_cuda_sources()
        traced = emulator_tracing_compiler() is not None
        if traced:
            print(f"hcam_ops: emulated kernels traced for their memory traffic, by {emulator_tracing_compiler()}")
            flags.append("-DHCAM_OPS_EMULATOR_TRACED")
        ext = CppExtension(
            sources=sources + runtime + ([] if traced else kernels),
            extra_compile_args={"cxx": flags},
            **{**kwargs, "include_dirs": include},
        )
        ext.traced_sources = kernels if traced else []
        return [ext]
    if want_cuda():
        os.environ.setdefault("TORCH_CUDA_ARCH_LIST", default_arch_list())
        check_toolkit_version()
        sources += sorted(os.path.relpath(s, ROOT) for s in glob.glob(os.path.join(csrc, "ops", "cuda", "*.cu")))
        nvcc = ["-O3", "-lineinfo", "--expt-relaxed-constexpr", "-Xptxas=-warn-spills"]
        nvcc += [f"-Xcompiler={flag}" for flag in manylinux_flags()]
        return [
            CUDAExtension(
                sources=sources,
                extra_compile_args={"cxx": cxx + ["-DHCAM_OPS_WITH_CUDA"], "nvcc": nvcc},
                **{**kwargs, "include_dirs": kwargs["include_dirs"] + torch_cuda_include_dirs()},
            )
        ]
    return [CppExtension(sources=sources, extra_compile_args={"cxx": cxx}, **kwargs)]


write_build_record()
setup(
    packages=find_packages(include=["hcam_ops", "hcam_ops.*"]),
    ext_modules=extensions(),
    cmdclass={"build_ext": BuildExt.with_options(use_ninja=True)},
)
