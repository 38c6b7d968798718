"""The CUDA emulator (csrc/emulator, docs/emulator.md) on its own, without
torch: python_tests/emulator/harness.cpp built with the C++ compiler against
the emulator's runtime and the kernels' real block_reduce.cuh, or a mutated
copy of it. The faults it must report, and proof that it bites: a reduction
without its trailing barrier, or with a wrong shuffle partner, fails."""

import os
import re
import shutil
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EMULATOR = os.path.join(ROOT, "csrc", "emulator")
BLOCK_REDUCE = os.path.join(ROOT, "csrc", "ops", "cuda", "block_reduce.cuh")
HARNESS = os.path.join(ROOT, "python_tests", "emulator", "harness.cpp")
CXX = os.environ.get("CXX", "g++")
SCHEDULES = ["round-robin", "warp-greedy", "warp-greedy-reversed", "random"]

pytestmark = [
    pytest.mark.skipif(shutil.which(CXX) is None, reason=f"no C++ compiler ({CXX}) to build the harness"),
    pytest.mark.skipif(
        not os.path.isdir(EMULATOR), reason="needs the source tree's csrc/emulator (this run tests an installed wheel)"
    ),
]


def _build(tmp_path, name, header_text):
    """The harness built against `header_text` as block_reduce.cuh."""
    inc = tmp_path / name
    inc.mkdir()
    (inc / "block_reduce.cuh").write_text(header_text)
    exe = tmp_path / f"harness_{name}"
    sources = sorted(os.path.join(EMULATOR, f) for f in os.listdir(EMULATOR) if f.endswith(".cpp"))
    cmd = [CXX, "-std=c++17", "-O2", "-pthread", f"-I{os.path.join(EMULATOR, 'include')}", f"-I{EMULATOR}"]
    subprocess.run([*cmd, f"-I{inc}", HARNESS, *sources, "-o", str(exe)], check=True, capture_output=True)
    return str(exe)


def _run(exe, case, schedule="warp-greedy", seed=None):
    env = dict(os.environ, HCAM_OPS_EMULATOR_SCHEDULE=schedule)
    if seed is not None:
        env["HCAM_OPS_EMULATOR_SEED"] = str(seed)
    p = subprocess.run([exe, case], env=env, capture_output=True, text=True, timeout=120)
    return p.returncode, p.stdout.strip()


def _original():
    with open(BLOCK_REDUCE) as f:
        return f.read()


def _block_allreduce_span(text):
    start = text.index("__device__ __forceinline__ T block_allreduce(")
    return start, text.index("\n}\n", start)


def _without_trailing_barrier(text):
    start, end = _block_allreduce_span(text)
    body = text[start:end]
    last = body.rindex("__syncthreads();")
    assert body.count("__syncthreads();") == 2
    return text[:start] + body[:last] + body[last + len("__syncthreads();") :] + text[end:]


def _without_first_barrier(text):
    start, end = _block_allreduce_span(text)
    body = text[start:end].replace("__syncthreads();", "", 1)
    return text[:start] + body + text[end:]


def _wrong_partner(text):
    mutated = re.sub(r"shfl_xor\(v, m\)", "shfl_xor(v, m ^ 1)", text)
    assert mutated != text
    return mutated


# block_reduce.cuh's shfl_xor as it was before the memcpy: the words written
# through int* and the value read back as T, which breaks strict aliasing.
_ALIASING_SHFL_XOR = """template <typename T>
__device__ __forceinline__ T shfl_xor(const T& v, int lane_mask) {
  T r;
  const int* src = reinterpret_cast<const int*>(&v);
  int* dst = reinterpret_cast<int*>(&r);
  for (int i = 0; i < static_cast<int>(sizeof(T) / 4); ++i) dst[i] = __shfl_xor_sync(kFullMask, src[i], lane_mask);
  return r;
}
"""


def _aliasing_shuffle(text):
    start = text.index("template <typename T>\n__device__ __forceinline__ T shfl_xor(")
    end = text.index("\n}\n", start) + 3
    return text[:start] + _ALIASING_SHFL_XOR + text[end:]


@pytest.fixture(scope="module")
def harness(tmp_path_factory):
    return _build(tmp_path_factory.mktemp("original"), "original", _original())


@pytest.mark.parametrize("schedule", SCHEDULES)
def test_real_reductions_are_right_under_every_schedule(harness, schedule):
    for seed in (1, 2, 3) if schedule == "random" else (None,):
        assert _run(harness, "sums", schedule, seed) == (0, "ok")
        assert _run(harness, "struct-shuffles", schedule, seed) == (0, "ok")


@pytest.mark.parametrize(
    "case,message",
    [
        (
            "barriers-differ",
            r"kernel barriers_differ, block \([01], 0, 0\).*different barriers: threads 0-31 at "
            r"harness.cpp:\d+, threads 32-63 at harness.cpp:\d+",
        ),
        (
            "exit-at-barrier",
            r"kernel exits_before_barrier.*thread 5 exited while threads 0-4, 6-63 wait at the "
            r"barrier at harness.cpp:\d+",
        ),
        (
            "deadlock",
            r"kernel shuffle_vs_barrier.*deadlock: warp 0 waits at __shfl_xor_sync .*lane 3 waits at the "
            r"barrier",
        ),
        (
            "partial-warp",
            r"kernel full_mask_partial_warp.*mask 0xffffffff names lanes the warp does not have "
            r"\(a partial warp of 16 threads\)",
        ),
        ("too-many-threads", r"kernel nothing: block \(1025, 1, 1\) is beyond the device's limit of 1024 threads"),
        ("grid-y", r"kernel nothing: grid \(1, 65536, 1\) is beyond the device's limits"),
        ("empty-grid", r"kernel nothing: empty launch"),
        ("dynamic-over-default", r"kernel nothing: 49168 bytes of dynamic shared memory, above the 49152"),
    ],
)
def test_faults_are_reported_with_the_kernel_named(harness, case, message):
    for schedule in SCHEDULES:
        rc, out = _run(harness, case, schedule)
        assert rc == 2 and re.search(message, out), (schedule, out)


@pytest.mark.parametrize("case", ["ballot", "atomics", "dynamic-poisoned", "dynamic-opted-in"])
def test_semantics(harness, case):
    for schedule in SCHEDULES:
        assert _run(harness, case, schedule) == (0, "ok"), schedule


def test_a_missing_trailing_barrier_is_caught_by_the_greedy_schedules(tmp_path):
    """block_allreduce without its second __syncthreads: a warp that leaves
    first overwrites the scratch of the next reduction while slower warps
    still read this one. The warp-greedy schedules (forward and reversed)
    run a warp ahead and catch it; round-robin lets every thread read first
    and does not, which is why CI runs the greedy two."""
    exe = _build(tmp_path, "no_trailing_barrier", _without_trailing_barrier(_original()))
    for schedule in ("warp-greedy", "warp-greedy-reversed"):
        rc, out = _run(exe, "sums", schedule)
        assert rc == 1 and out.startswith("wrong:"), (schedule, out)
    assert _run(exe, "sums", "round-robin") == (0, "ok")


def test_a_missing_first_barrier_is_caught(tmp_path):
    exe = _build(tmp_path, "no_first_barrier", _without_first_barrier(_original()))
    for schedule in ("warp-greedy", "warp-greedy-reversed", "round-robin"):
        rc, out = _run(exe, "sums", schedule)
        assert rc == 1 and out.startswith("wrong:"), (schedule, out)


def test_a_wrong_shuffle_partner_is_caught(tmp_path):
    exe = _build(tmp_path, "wrong_partner", _wrong_partner(_original()))
    for schedule in SCHEDULES:
        rc, out = _run(exe, "sums", schedule, seed=1)
        assert rc == 1 and out.startswith("wrong:"), (schedule, out)


def test_the_old_aliasing_shuffle_fails_on_the_host_compiler(tmp_path):
    """The defect the emulator found in block_reduce.cuh: shfl_xor wrote the
    words through int* and read them back as T. GCC at -O2 (the emulated
    build's level) drops those stores, so a MinMax<double> or a double came
    back as zeros; the memcpy version is right (test above)."""
    exe = _build(tmp_path, "aliasing_shuffle", _aliasing_shuffle(_original()))
    rc, out = _run(exe, "struct-shuffles")
    assert rc == 1 and out.startswith("wrong:"), out


def test_unknown_schedule_is_refused(harness):
    rc, out = _run(harness, "sums", "fastest")
    assert rc == 2 and "HCAM_OPS_EMULATOR_SCHEDULE must be round-robin, warp-greedy" in out
