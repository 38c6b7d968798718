"""The emulator's traffic counters (docs/traffic.md). First on their own:
python_tests/emulator/traffic_harness.cpp, kernels whose requests, sectors
and DRAM bytes are computed here by hand, built with clang's load/store
tracing against the emulator's runtime. Then through the extension (an
emulated build traced by clang): a real op's counters, and
``benchmarks/run.py --traffic``'s table and JSON."""

import ast
import json
import os
import shutil
import subprocess
import sys

import pytest
import torch

import hcam_ops

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EMULATOR = os.path.join(ROOT, "csrc", "emulator")
HARNESS = os.path.join(ROOT, "python_tests", "emulator", "traffic_harness.cpp")
CLANG = shutil.which(os.environ.get("HCAM_OPS_EMULATOR_CXX", "clang++") or "clang++")
# Selected by `pytest -m cuda` too: CI's emulated leg runs the extension's half.
pytestmark = pytest.mark.cuda


def _trace_flags():
    """setup.py's TRACE_FLAGS, read from its source (one list for both builds)."""
    tree = ast.parse(open(os.path.join(ROOT, "setup.py")).read())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "TRACE_FLAGS" for t in node.targets):
            return ast.literal_eval(node.value)
    raise AssertionError("setup.py has no TRACE_FLAGS")


@pytest.fixture(scope="module")
def harness(tmp_path_factory):
    if not os.path.isdir(EMULATOR):
        pytest.skip("needs the source tree's csrc/emulator (this run tests an installed wheel)")
    if CLANG is None:
        pytest.skip("clang++ is not installed: the traffic counters need clang's load/store tracing")
    out = tmp_path_factory.mktemp("traffic")
    common = ["-std=c++17", "-O2", "-pthread", "-DHCAM_OPS_EMULATOR_TRACED", f"-I{os.path.join(EMULATOR, 'include')}"]
    objects = []
    # The runtime without tracing (its own loads must not report themselves).
    for name in sorted(f for f in os.listdir(EMULATOR) if f.endswith(".cpp")):
        obj = str(out / (name + ".o"))
        subprocess.run([CLANG, *common, "-c", os.path.join(EMULATOR, name), "-o", obj], check=True)
        objects.append(obj)
    exe = str(out / "traffic_harness")
    cuda = os.path.join(ROOT, "csrc", "ops", "cuda")
    cmd = [CLANG, *common, *_trace_flags(), f"-I{EMULATOR}", f"-I{cuda}", HARNESS, *objects, "-o", exe]
    subprocess.run(cmd, check=True, capture_output=True)
    return exe


def _counters(exe, case, l2_bytes=None):
    args = [exe, case] + ([] if l2_bytes is None else [str(l2_bytes)])
    p = subprocess.run(args, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, (case, p.stdout, p.stderr)
    return {k: int(v) for k, v in (line.split() for line in p.stdout.splitlines())}


# y[i] = x[i * stride] by 1000 threads: 31 full warps and one of 8 lanes.
# A full warp's load spans 32 * 4 * stride bytes; the partial warp's lanes
# 992..999 lie at bytes 3968*stride .. 3996*stride.
@pytest.mark.parametrize(
    "stride,load_sectors",
    [
        (1, 31 * 4 + 1),  # 128 contiguous bytes a warp: 4 sectors; the 8-lane warp: 1
        (2, 31 * 8 + 2),  # 256 bytes a warp, half of each sector used
        (8, 1000),  # 32-byte steps: a sector per lane
    ],
)
def test_strided_copy_sectors_by_hand(harness, stride, load_sectors):
    c = _counters(harness, f"stride{stride}")
    assert c["requests_load"] == 32 and c["requests_store"] == 32
    assert c["requested_load"] == 4000 and c["requested_store"] == 4000
    assert c["sectors_load"] == load_sectors
    assert c["sectors_store"] == 125  # 4000 contiguous bytes
    assert c["unique_read"] == load_sectors and c["unique_written"] == 125
    # Nothing is read twice, so the L2 model moves exactly the unique sectors.
    assert c["dram_read"] == 32 * load_sectors and c["dram_write"] == 32 * 125
    assert c["buffers"] == 2


def test_packs_are_one_request_each(harness):
    # 512 threads, each one 16-byte pack in and out: 16 warps x 512 bytes = 16 sectors each.
    c = _counters(harness, "packs")
    assert c["requests_load"] == 16 and c["requests_store"] == 16
    assert c["requested_load"] == 8192 and c["sectors_load"] == 256
    assert c["sectors_store"] == 256 and c["dram_read"] == 8192 and c["dram_write"] == 8192


def test_atomics_count_as_read_modify_write(harness):
    # 3 blocks of 64 threads on one int: 6 warp-level requests of one sector,
    # each asking for the same 4 bytes (requested bytes are distinct bytes).
    c = _counters(harness, "atomics")
    assert c["requests_atomic"] == 6 and c["requested_atomic"] == 6 * 4 and c["sectors_atomic"] == 6
    assert c["requests_load"] == 0 and c["requests_store"] == 0
    assert (c["unique_read"], c["unique_written"], c["dram_read"], c["dram_write"]) == (1, 1, 32, 32)


def test_l2_model_keeps_what_fits(harness):
    # 1 MiB read three times by 2 blocks of 128 threads (grid-stride), both
    # resident, so each sweep covers the whole MiB: it stays in a 50 MB L2 and
    # is read from DRAM once; through a 256 KiB L2 every sweep misses every sector.
    mib = 1 << 20
    big = _counters(harness, "sweeps")
    assert big["requests_load"] == 3 * 8 * 1024 and big["sectors_load"] == 3 * 8 * 1024 * 4
    assert big["unique_read"] == mib // 32 and big["dram_read"] == mib
    assert big["dram_write"] == 256 * 4  # one float per thread
    small = _counters(harness, "sweeps", l2_bytes=256 * 1024)
    assert small["unique_read"] == mib // 32 and small["dram_read"] == 3 * mib


def test_resident_blocks_share_the_l2(harness):
    # Two resident blocks each sweep their own 512 KiB three times. Alone, a
    # block's 512 KiB would stay in a 768 KiB L2; issuing together, they sweep
    # 1 MiB through it and every pass misses (block after block: 1 MiB in all).
    mib = 1 << 20
    c = _counters(harness, "private", l2_bytes=768 * 1024)
    assert c["unique_read"] == mib // 32 and c["dram_read"] == 3 * mib
    assert _counters(harness, "private")["dram_read"] == mib


def test_unregistered_memory_is_not_counted(harness):
    c = _counters(harness, "unregistered")
    assert c["requests_load"] == c["requests_store"] == 0 and c["buffers"] == 0


# --- Through the extension -------------------------------------------------------------

traced = pytest.mark.skipif(
    not (hcam_ops.cuda_emulated() and hcam_ops._C.traffic_traced()),
    reason="needs an emulated build whose kernels clang traced (HCAM_OPS_CUDA=emulate with clang++ installed)",
)


@traced
def test_minmax_normalize_traffic():
    """Rows of 1000 floats, 16-byte aligned: the kernel reads each row twice
    (extremes, then the normalised values) and writes it once; the second
    read hits the L2."""
    from hcam_ops.testing import emulated_cuda, traffic

    with traffic():  # installs the recording allocator
        pass
    x = torch.randn(64, 1000)
    with emulated_cuda(), traffic() as launches:
        y = hcam_ops.minmax_normalize(x)
    assert len(launches) == 1
    la = launches[0]
    assert "minmax_normalize_kernel" in la["kernel"] and la["grid"] == (64, 1, 1)
    nbytes = x.numel() * 4
    assert la["requested_bytes"]["load"] == 2 * nbytes and la["requested_bytes"]["store"] == nbytes
    assert la["sectors"]["load"] == 2 * nbytes // 32 and la["sectors"]["store"] == nbytes // 32
    assert la["unique_sectors_read"] == la["unique_sectors_written"] == nbytes // 32
    assert la["dram_read_bytes"] == la["dram_write_bytes"] == nbytes
    bases = {b["base"]: b for b in la["buffers"]}
    assert set(bases) == {x.data_ptr(), y.data_ptr()}


@traced
def test_recording_allocator_serves_raw_allocations():
    """oneDNN takes its scratch buffers by raw_allocate, which needs a DataPtr
    whose context is its data: the recording allocator must give one (it
    raised an internal assert of c10 in ArcFace's oneDNN product before)."""
    from hcam_ops.testing import traffic

    with traffic():  # installs the recording allocator for the rest of the process
        pass
    gen = torch.Generator().manual_seed(0)
    f, w = torch.randn(64, 256, generator=gen), torch.randn(256, 256, generator=gen)  # 4.2M MACs: oneDNN's product
    labels = torch.rand(64, 256, generator=gen) < 0.05
    got = hcam_ops.multilabel_arcface_loss(f, w, labels)
    want = hcam_ops.reference.multilabel_arcface_loss(f, w, labels)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


@traced
def test_traffic_session_errors():
    from hcam_ops.testing import traffic

    with traffic():
        with pytest.raises(RuntimeError, match="a traffic session is open already"):
            with traffic():
                pass
    with pytest.raises(RuntimeError, match="at least one 128-byte line"):
        with traffic(l2_bytes=64):
            pass


@traced
def test_run_traffic_report(tmp_path):
    out = tmp_path / "out"
    cmd = [sys.executable, os.path.join(ROOT, "benchmarks", "run.py"), "--traffic", "--small", "--out", str(out)]
    cmd += ["--ops", "fgd_loss,segment_mean", "--dtypes", "float32"]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=900, env=dict(os.environ, PYTHONPATH=ROOT))
    assert p.returncode == 0, p.stderr[-3000:]
    rows = json.loads((out / "traffic.json").read_text())
    keys = {"op", "case", "dtype", "pass", "kernel", "floor_bytes", "dram_bytes", "unique_bytes", "sectors"}
    keys |= {"requested_bytes"}
    assert rows and all(keys <= set(r) for r in rows)
    assert {r["op"] for r in rows} == {"fgd_loss", "segment_mean"}
    assert {r["pass"] for r in rows} == {"fwd", "bwd"}
    for r in rows:
        assert r["floor_bytes"] > 0 and r["sectors"] * 32 >= r["requested_bytes"] > 0
        assert r["dram_bytes"] >= r["unique_bytes"] > 0
    text = (out / "traffic.md").read_text()
    assert "| fgd_loss |" in text and "DRAM MB" in text


# --- the check against Nsight Compute (benchmarks/ncu_traffic.py) ---------------------------

sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
import ncu_traffic  # noqa: E402

# What `ncu --csv --print-units base --metrics dram__bytes_read.sum,dram__bytes_write.sum` prints:
# its own ==PROF== lines, then a row per launch and metric (thousands separators in values).
_NCU_HEADER = (
    "ID,Process ID,Process Name,Host Name,Kernel Name,Context,Stream,Block Size,Grid Size,Device,CC,"
    "Section Name,Metric Name,Metric Unit,Metric Value"
).split(",")
_STATS = "void hcam_ops::cuda::(anonymous namespace)::stats_kernel<float, float, 4>(const T1 *, int)"
_FINISH = "void hcam_ops::cuda::(anonymous namespace)::finish_kernel<float>(long, float *)"


def _ncu_row(launch, kernel, grid, metric, value):
    fields = [str(launch), "4242", "python3", "h", kernel, "1", "7", "(256, 1, 1)", grid, "0", "9.0"]
    fields += ["Command line profiler metrics", metric, "byte", value]
    return ",".join(f'"{f}"' for f in fields)


# What `ncu --csv --print-units base --metrics dram__bytes_read.sum,dram__bytes_write.sum` prints:
# its own ==PROF== lines, then a row per launch and metric (thousands separators in values).
NCU_CSV = "\n".join(
    [
        "==PROF== Connected to process 4242",
        '==PROF== Profiling "stats_kernel": 0%....50%....100% - 1 pass',
        ",".join(f'"{h}"' for h in _NCU_HEADER),
        _ncu_row(0, _STATS, "(240, 1, 1)", "dram__bytes_read.sum", "1,048,576"),
        _ncu_row(0, _STATS, "(240, 1, 1)", "dram__bytes_write.sum", "2,048"),
        _ncu_row(1, _FINISH, "(2, 1, 1)", "dram__bytes_read.sum", "4096"),
        _ncu_row(1, _FINISH, "(2, 1, 1)", "dram__bytes_write.sum", "0"),
    ]
)


def test_ncu_csv_is_paired_with_the_model():
    ncu = ncu_traffic.parse_ncu_csv(NCU_CSV)
    assert [n["dram_read"] for n in ncu] == [1048576.0, 4096.0] and [n["dram_write"] for n in ncu] == [2048.0, 0.0]
    model = [
        dict(
            op="fgd_loss",
            case="c",
            dtype="float32",
            kernel=f"hcam_ops::cuda::(anonymous namespace)::{k}",
            dram_bytes=b,
            **{"pass": "fwd"},
        )
        for k, b in [("stats_kernel", 1050624), ("finish_kernel", 8192)]
    ]
    rows = ncu_traffic.pair(model, ncu)
    assert [r["kernel"] for r in rows] == ["stats_kernel", "finish_kernel"]
    assert rows[0]["model_over_ncu"] == pytest.approx(1.0) and rows[1]["model_over_ncu"] == pytest.approx(2.0)
    assert "| fgd_loss | c | float32 | fwd | `stats_kernel` | 1.05 | 1.05 | 1.00 |" in ncu_traffic.format_pairs(rows)
    with pytest.raises(ValueError, match="launch order differs"):
        ncu_traffic.pair(model[::-1], ncu)
    with pytest.raises(ValueError, match="the model has 1 launches, ncu profiled 2"):
        ncu_traffic.pair(model[:1], ncu)


def test_kernel_names_agree_between_ncu_and_the_emulator():
    short = ncu_traffic.short_kernel
    assert short("void hcam_ops::cuda::(anonymous namespace)::grad_kernel<c10::BFloat16, float>(const T1 *)") == (
        "grad_kernel"
    )
    assert short("hcam_ops::cuda::(anonymous namespace)::grad_kernel") == "grad_kernel"
    assert short("hcam_ops::cuda::{anonymous}::grad_kernel<float, float>") == "grad_kernel"
