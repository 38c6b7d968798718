"""Build of hcam_ops_stable._C, the stable-ABI port of minmax_normalize
(docs/stable_abi.md). `python setup.py build_ext --inplace` from this folder.

What makes it a stable-ABI build:
  -DTORCH_TARGET_VERSION=0x020a000000000000  the oldest torch it must run on
      (2.10: the first with torch::stable::parallel_for, empty, contiguous,
      typed data pointers); the headers hide anything newer, and every ATen /
      c10 header stops the build with #error.
  py_limited_api=True   -DPy_LIMITED_API, no libtorch_python, a .abi3.so.
No -fopenmp: torch::stable::parallel_for runs in libtorch's own at::parallel_for.

The kernel source is compiled once per level, as the repository's setup.py
does for csrc/ops/cpu/*_kernel.cpp (BuildExt there): baseline x86-64 with the
extension's flags, and AVX-512 with the same -m flags as hcam_ops._C's.
"""

import os
import platform
import sys

from setuptools import setup
from torch.utils.cpp_extension import BuildExtension, CppExtension

TORCH_TARGET_VERSION = "0x020a000000000000"  # 2.10.0
KERNELS = "csrc/minmax_kernels.cpp"
DEFAULT_LEVEL = ["-DCPU_CAPABILITY=DEFAULT", "-DCPU_CAPABILITY_DEFAULT"]
AVX512 = ["-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512dq", "-mfma", "-mf16c", "-Wno-maybe-uninitialized"]
X86_GCC = platform.machine().lower() in ("x86_64", "amd64") and sys.platform.startswith("linux")

# The optimisation flags of hcam_ops._C (the repository's setup.py), less -fopenmp.
CXX = ["-O3", "-fopenmp-simd", "-fno-wrapv", "-fno-math-errno", f"-DTORCH_TARGET_VERSION={TORCH_TARGET_VERSION}"]
CXX += DEFAULT_LEVEL + (["-DHCAM_STABLE_AVX512"] if X86_GCC else [])


class BuildExt(BuildExtension):
    """The AVX-512 objects of the kernel source, linked after the baseline ones
    (an inline function both emit is then kept from the baseline)."""

    def build_extension(self, ext):
        if X86_GCC:
            args = [a for a in ext.extra_compile_args["cxx"] if a not in DEFAULT_LEVEL]
            args += AVX512 + ["-DCPU_CAPABILITY=AVX512", "-DCPU_CAPABILITY_AVX512"]
            ext.extra_objects = list(ext.extra_objects or []) + self.compiler.compile(
                [KERNELS],
                output_dir=os.path.join(self.build_temp, "avx512"),
                include_dirs=ext.include_dirs,
                extra_postargs={"cxx": args, "nvcc": []},
                depends=ext.depends,
            )
        super().build_extension(ext)


setup(
    name="hcam_ops_stable",
    version="0.0.0",
    packages=["hcam_ops_stable"],
    ext_modules=[
        CppExtension(
            "hcam_ops_stable._C",
            ["csrc/minmax_normalize_stable.cpp", KERNELS],
            extra_compile_args={"cxx": CXX},
            depends=["csrc/stable_kernels.h"],
            py_limited_api=True,
        )
    ],
    cmdclass={"build_ext": BuildExt.with_options(use_ninja=True)},
    options={"bdist_wheel": {"py_limited_api": "cp310"}},
)
