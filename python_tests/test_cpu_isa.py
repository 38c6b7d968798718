"""Every instruction-set variant of the CPU kernels (csrc/ops/cpu/isa.h) is
tested: each level is forced in turn with HCAM_OPS_CPU_CAPABILITY in a fresh
process (the level is fixed when the library loads) and a representative set
of the ops' parity, gradcheck and tie-rule tests runs there. The level this
process runs at (the highest the CPU has) gets the whole suite instead."""

import os
import subprocess
import sys

import pytest
import torch

import hcam_ops

LEVELS = ["DEFAULT", "AVX2", "AVX512"]
HERE = os.path.dirname(os.path.abspath(__file__))

# float32 and bfloat16 (the widths and conversions the variants differ in) at
# every shape and layout of each op, one reduction per loss, and the tests
# whose contract is an exact tie or gradient rule.
FILES = [
    "test_cam_kl.py",
    "test_cam_gather.py",
    "test_minmax_normalize.py",
    "test_softmax_kl.py",
    "test_multilabel_arcface.py",
    "test_fgd_loss.py",
    "test_fgd_masks.py",
    "test_bev_masks.py",
    "test_segment_mean.py",
    "test_farthest_point_sample.py",
]
SELECT = (
    "((parity and (float32 or bfloat16) and not options and not None and not -1-cpu and not -6-cpu)"
    " or gradcheck or ties or reduced_precision or non_contiguous)"
    " and not cuda and not batchmean and not -sum-"
)


def _cpu_level():
    """The highest level torch finds on this CPU (ATEN_CPU_CAPABILITY included)."""
    cap = torch.backends.cpu.get_cpu_capability()
    return cap if cap in LEVELS else "DEFAULT"


def _run(code, level):
    env = dict(os.environ, HCAM_OPS_CPU_CAPABILITY=level)
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, cwd=HERE)


def test_active_level_is_the_cpus():
    """Unforced, the kernels run at the CPU's level (every variant is built on
    x86-64), and the full suite therefore tests that level."""
    if "HCAM_OPS_CPU_CAPABILITY" in os.environ:
        pytest.skip("HCAM_OPS_CPU_CAPABILITY is set for this run")
    assert hcam_ops.cpu_capability() == _cpu_level()


@pytest.mark.parametrize("level", LEVELS)
def test_forced_level_is_reported(level):
    out = _run("import hcam_ops; print(hcam_ops.cpu_capability())", level)
    assert out.returncode == 0, out.stderr
    got = out.stdout.strip()
    if LEVELS.index(level) > LEVELS.index(_cpu_level()):
        # Forcing only ever lowers: a level the CPU lacks would fault.
        assert got == _cpu_level()
    else:
        assert got == level


def test_unknown_level_is_ignored_with_a_warning():
    out = _run("import hcam_ops; print(hcam_ops.cpu_capability())", "sse9")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == hcam_ops.cpu_capability() or "HCAM_OPS_CPU_CAPABILITY" in os.environ
    assert "HCAM_OPS_CPU_CAPABILITY=sse9" in out.stderr


@pytest.mark.parametrize("level", LEVELS)
def test_parity_at_level(level):
    if LEVELS.index(level) > LEVELS.index(_cpu_level()):
        pytest.skip(f"this CPU has no {level} (torch reports {_cpu_level()})")
    if level == hcam_ops.cpu_capability():
        pytest.skip(f"{level} is this process's level: the whole suite runs at it")
    code = (
        "import sys, pytest, hcam_ops\n"
        f"assert hcam_ops.cpu_capability() == {level!r}, hcam_ops.cpu_capability()\n"
        f"sys.exit(pytest.main(['-q', '-p', 'no:cacheprovider', '-x', '-k', {SELECT!r}] + {FILES!r}))\n"
    )
    out = _run(code, level)
    tail = (out.stdout + out.stderr)[-4000:]
    assert out.returncode == 0, f"{level}:\n{tail}"
    assert " passed" in out.stdout, tail


def test_baseline_code_has_no_vector_extensions():
    """No function outside the AVX2 / AVX-512 variants holds a VEX or EVEX
    instruction. Each variant's source also emits the inline functions of the
    headers it shares with the baseline (std::vector, c10); the linker keeps
    one copy of each, and that copy must be the baseline's (BuildExt puts the
    baseline objects first), or the baseline path would fault on a CPU
    without AVX. Functions local to one object (anonymous namespaces, GCC's
    .constprop / .isra / .part / .cold clones) are that object's own."""
    import re
    import shutil

    objdump = shutil.which("objdump")
    if objdump is None:
        pytest.skip("objdump is not installed")
    lib = hcam_ops._C.__file__
    out = subprocess.run([objdump, "-d", "--no-show-raw-insn", "-C", lib], capture_output=True, text=True, check=True)
    # GCC's outlined OpenMP bodies (`..._omp_fn.N`) are not demangled by
    # objdump: their mangled names carry the level (IsaE1E / IsaE2E, AVX2,
    # AVX512) or the anonymous namespace (_GLOBAL__N_1).
    variant = re.compile(
        r"Isa\)[12]|cpu::AVX2::|cpu::AVX512::|\(anonymous namespace\)|\[clone \."
        r"|IsaE[12]E|4AVX2|6AVX512|_GLOBAL__N_1"
    )
    offenders, fn = set(), ""
    for line in out.stdout.splitlines():
        if line.endswith(">:") and " <" in line:
            fn = line.split(" <", 1)[1][:-2]
        elif re.match(r"^ +[0-9a-f]+:\tv[a-z0-9]+ ", line) and not variant.search(fn):
            offenders.add(fn)
    assert not offenders, sorted(offenders)[:10]
