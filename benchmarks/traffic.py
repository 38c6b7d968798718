"""GPU memory traffic of the fused kernels, counted on the emulator
(docs/traffic.md): every global load and store of every launch of a case's
forward and backward, as warp-level requests and 32-byte sectors, the DRAM
bytes an L2 model (50 MB, 128-byte lines, LRU) lets through, and the op's
floor: each tensor it reads read once, each tensor it writes written once.

Run by ``benchmarks/run.py --traffic`` on an emulated build whose kernels clang
traced (HCAM_OPS_CUDA=emulate with clang installed). A modelled H200 time is
the DRAM bytes at 4.3 TB/s plus 3 us per launch: the kernels are memory-bound,
so that is the time they would take at the traffic they make (ArcFace's
matrix products are cuBLAS's, not ours, and not counted).
"""

from __future__ import annotations

import logging
import warnings

import torch
from ncu_traffic import short_kernel
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from hcam_ops.testing import emulated_cuda, traffic

H200_BYTES_PER_S = 4.3e12
LAUNCH_S = 3e-6
# The targets of docs/traffic.md.
KERNEL_TARGET = 1.25  # each launch's modelled DRAM bytes over its pass's floor
OP_TARGET = 1.5  # forward + backward over the op's floor
EFFICIENCY_TARGET = 0.9  # requested / (sectors * 32) on the launch's main tensor
# Ops whose matrix products run in cuBLAS, not in our kernels: our figure
# leaves them out, Inductor's estimate counts its own.
CUBLAS_PRODUCTS = {"multilabel_arcface_loss"}


class OpTensors(TorchDispatchMode):
    """The tensors the hcam_ops operators of a pass read and write: a tensor
    an operator returns is written (once), a tensor one takes that no earlier
    operator of the pass returned is read (once); the floor is their bytes."""

    def __init__(self):
        super().__init__()
        self.read, self.written = {}, {}

    @staticmethod
    def _key(t):
        return (t.data_ptr(), t.numel(), t.dtype)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if getattr(func, "namespace", None) == "hcam_ops":
            for t in tree_leaves((args, kwargs)):
                if isinstance(t, torch.Tensor) and t.numel() and self._key(t) not in self.written:
                    self.read[self._key(t)] = t.numel() * t.element_size()
            for t in tree_leaves(out):
                if isinstance(t, torch.Tensor) and t.numel():
                    self.written[self._key(t)] = t.numel() * t.element_size()
        return out

    @property
    def floor_bytes(self):
        return sum(self.read.values()) + sum(self.written.values())


def _launch_row(op, case, dtype, pass_, floor, launch):
    kinds = ("load", "store", "atomic")
    sectors = sum(launch["sectors"][k] for k in kinds)
    requested = sum(launch["requested_bytes"][k] for k in kinds)
    # The launch's main tensor: the largest it touches (the feature map, its
    # gradient), ties broken by the bytes it moves of each.
    main = max(
        launch["buffers"],
        key=lambda b: (b["bytes"], sum(b["requested_bytes"][k] for k in kinds)),
        default=None,
    )
    if main is not None:
        m_req = sum(main["requested_bytes"][k] for k in kinds)
        m_sec = sum(main["sectors"][k] for k in kinds)
        main_eff = m_req / (32 * m_sec) if m_sec else None
    else:
        main_eff = None
    return {
        "op": op,
        "case": case,
        "dtype": dtype,
        "pass": pass_,
        "kernel": launch["kernel"],
        "grid": list(launch["grid"]),
        "block": list(launch["block"]),
        "floor_bytes": floor,
        "dram_bytes": launch["dram_read_bytes"] + launch["dram_write_bytes"],
        "unique_bytes": 32 * (launch["unique_sectors_read"] + launch["unique_sectors_written"]),
        "sectors": sectors,
        "requested_bytes": requested,
        "sector_efficiency": requested / (32 * sectors) if sectors else None,
        "main_efficiency": main_eff,
    }


def _fused_step(case, inputs):
    return case.impls["fused"](**inputs)


def measure_case(case, dtype, l2_bytes=None):
    """The launch rows of one case's forward (and backward, where it has one)."""
    kw = {} if l2_bytes is None else {"l2_bytes": l2_bytes}
    dname = str(dtype).replace("torch.", "")
    with traffic(**kw):  # the first session installs the allocator that tells tensors apart
        pass
    gen = torch.Generator().manual_seed(0)
    inputs = case.make_inputs(torch.device("cpu"), dtype, gen)
    rows = []
    with emulated_cuda():
        fwd_ops = OpTensors()
        with traffic(**kw) as launches, fwd_ops:
            loss = _fused_step(case, inputs)
        rows += [_launch_row(case.op, case.label, dname, "fwd", fwd_ops.floor_bytes, la) for la in launches]
        if case.grad_of and "fwd+bwd" in case.modes:
            bwd_ops = OpTensors()
            with traffic(**kw) as launches, bwd_ops:
                loss.backward()
            rows += [_launch_row(case.op, case.label, dname, "bwd", bwd_ops.floor_bytes, la) for la in launches]
    return rows


class _GraphBytes(logging.Handler):
    """Collects each compiled graph's num_bytes_accessed from Inductor's
    "Graph Metrics" log records, in the order the graphs compile."""

    def __init__(self):
        super().__init__()
        self.graphs = []

    def emit(self, record):
        args = record.args if isinstance(record.args, tuple) else (record.args,)
        for a in args:
            if isinstance(a, dict) and "num_bytes_accessed" in a:
                self.graphs.append(int(a["num_bytes_accessed"]))


def inductor_bytes(case, dtype):
    """Inductor's own estimate of the bytes the compiled reference moves, per
    graph (forward, then backward): the sum over its scheduler's nodes of
    each node's read and written buffers (GraphLowering.count_bytes, which it
    logs under TORCH_LOGS=inductor_metrics). Every cache is off, so that each
    graph is compiled, and so counted, here. Compiled for the CPU, so the
    fusion is Inductor's CPU backend's; a GPU build fuses much the same."""
    import cases as cases_mod

    fn = case.impls.get("compiled_ref")
    if fn is None:
        return None
    torch._dynamo.reset()
    cases_mod._compiled.clear()
    gen = torch.Generator().manual_seed(0)
    inputs = case.make_inputs(torch.device("cpu"), dtype, gen)
    handler = _GraphBytes()
    log = logging.getLogger("torch._inductor.compile_fx")
    saved = log.handlers[:], log.propagate
    torch._logging.set_logs(inductor_metrics=True)
    log.handlers, log.propagate = [handler], False
    try:
        with torch._inductor.config.patch(force_disable_caches=True), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*force_disable_caches.*")
            loss = fn(**inputs)
            if case.grad_of and "fwd+bwd" in case.modes:
                loss.backward()
    finally:
        log.handlers, log.propagate = saved
        torch._logging.set_logs()
        torch._dynamo.reset()
        cases_mod._compiled.clear()
    graphs = handler.graphs
    if not graphs:
        raise RuntimeError("Inductor logged no graph metrics")
    return {"fwd": graphs[0], "bwd": sum(graphs[1:]) if len(graphs) > 1 else None}


def summarize(rows):
    """Per (op, case, dtype): the totals of each pass and of both."""
    out = {}
    for r in rows:
        key = (r["op"], r["case"], r["dtype"])
        s = out.setdefault(key, {"fwd": None, "bwd": None, "launches": 0, "dram": 0})
        p = s.setdefault(r["pass"] + "_sum", {"dram": 0, "launches": 0})
        if s[r["pass"]] is None:
            s[r["pass"]] = r["floor_bytes"]
        p["dram"] += r["dram_bytes"]
        p["launches"] += 1
        s["dram"] += r["dram_bytes"]
        s["launches"] += 1
    for s in out.values():
        s["floor"] = (s["fwd"] or 0) + (s["bwd"] or 0)
        s["ratio"] = s["dram"] / s["floor"] if s["floor"] else None
        s["h200_us"] = 1e6 * (s["dram"] / H200_BYTES_PER_S + LAUNCH_S * s["launches"])
    return out


def _mb(v):
    return "-" if v is None else f"{v / 1e6:.2f}"


def _pct(v):
    return "-" if v is None else f"{100 * v:.0f}%"


def format_traffic(rows, inductor=None):
    """The Markdown tables: one row per launch, then one per op and case."""
    inductor = inductor or {}
    lines = [
        "| op | case | dtype | pass | kernel | floor MB | DRAM MB (L2 model) | / floor | unique MB | sector eff. "
        "| main tensor eff. | H200 us (model) |",
        "|---|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        ratio = r["dram_bytes"] / r["floor_bytes"] if r["floor_bytes"] else None
        flag = "" if ratio is None or ratio <= KERNEL_TARGET else " **!**"
        us = 1e6 * (r["dram_bytes"] / H200_BYTES_PER_S + LAUNCH_S)
        lines.append(
            f"| {r['op']} | {r['case']} | {r['dtype']} | {r['pass']} | `{short_kernel(r['kernel'])}` | "
            f"{_mb(r['floor_bytes'])} | "
            f"{_mb(r['dram_bytes'])} | {'-' if ratio is None else f'{ratio:.2f}'}{flag} | {_mb(r['unique_bytes'])} | "
            f"{_pct(r['sector_efficiency'])} | {_pct(r['main_efficiency'])} | {us:.1f} |"
        )
    lines += [
        "",
        "| op | case | dtype | floor MB (fwd + bwd) | DRAM MB | / floor | launches | H200 us (model) "
        "| compiled ref: Inductor's estimate MB | / floor |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for (op, case, dtype), s in summarize(rows).items():
        ind = inductor.get((op, case, dtype))
        ind_total = None if ind is None else (ind["fwd"] or 0) + (ind["bwd"] or 0)
        ind_ratio = None if ind_total is None or not s["floor"] else ind_total / s["floor"]
        flag = "" if s["ratio"] is None or s["ratio"] <= OP_TARGET else " **!**"
        ratio = "-" if s["ratio"] is None else f"{s['ratio']:.2f}"
        lines.append(
            f"| {op} | {case} | {dtype} | {_mb(s['floor'])} | {_mb(s['dram'])} | {ratio}{flag} | {s['launches']} | "
            f"{s['h200_us']:.1f} | {_mb(ind_total)}{' †' if op in CUBLAS_PRODUCTS else ''} | "
            f"{'-' if ind_ratio is None else f'{ind_ratio:.2f}'} |"
        )
    lines.append(
        "\n† Our DRAM figure is our kernels' alone: the op's three matrix products run in cuBLAS and are not "
        "counted. Inductor's estimate counts its own products (extern kernels) with the rest."
    )
    return "\n".join(lines)


def json_rows(rows):
    """traffic.json's objects (docs/traffic.md): the issue's keys, plus the launch's shape and efficiencies."""
    return [dict(r) for r in rows]
