"""run.py's report: a tiny run end to end (the thread sweep, the header, no
"nan", the JSON rows, the plot's size), and the table and the plot on
hand-made rows. Quick on CPU: the small twin of one case, fused and eager
reference (no torch.compile)."""

import json
import re

import pytest
import run
import torch


def _png_size(path):
    import matplotlib.image

    height, width = matplotlib.image.imread(path).shape[:2]
    return width, height


def _row(op, shape, mode, impl, threads, ms, dtype="float32", **kw):
    return dict(op=op, shape=shape, dtype=dtype, mode=mode, impl=impl, threads=threads, ms=ms, **kw)


def test_tiny_run_with_a_thread_sweep(tmp_path, capsys):
    before = torch.get_num_threads()
    run.main(
        [
            "--device=cpu",
            "--ops=multilabel_arcface_loss",
            "--small",
            "--max-cases=1",
            "--dtypes=float32",
            "--modes=fwd+bwd",
            "--impls=fused,reference",
            "--threads=1,2",
            "--repeat=1",
            f"--out={tmp_path}",
        ]
    )
    assert torch.get_num_threads() == before  # restored

    md = (tmp_path / "results.md").read_text()
    assert not re.search(r"\bnan\b", md, re.IGNORECASE), md
    for field in ("- device: CPU", "cores", "- threads: 1, 2", f"- torch: {torch.__version__}", "- hcam_ops commit: "):
        assert field in md, field
    assert re.search(r"- date: \d{4}-\d\d-\d\d \d\d:\d\d UTC", md)
    assert "- repeat: median of 1 timed runs" in md
    assert "no peak statistics" in md and "MiB |" not in md  # no memory columns on CPU
    assert "| fused ms T=1 | fused ms T=2 |" in md and "| fused x1→2 |" in md and "| reference x1→2 |" in md
    table = [line for line in md.splitlines() if line.startswith("| multilabel_arcface_loss")]
    assert len(table) == 1 and "B=4 D=16 K=9" in table[0]  # the small twin, fwd+bwd only

    result = json.loads((tmp_path / "results.json").read_text())
    rows = result["rows"]
    assert sorted((r["impl"], r["threads"]) for r in rows) == [
        ("fused", 1),
        ("fused", 2),
        ("reference", 1),
        ("reference", 2),
    ]
    assert all(r["ms"] > 0 and r["peak_mib"] is None for r in rows)
    assert result["meta"]["threads"] == [1, 2]

    png = tmp_path / "results.png"
    assert png.exists()
    assert _png_size(png)[0] <= 1400

    err = capsys.readouterr().err
    assert "[1/4] multilabel_arcface_loss B=4 D=16 K=9 float32 fwd+bwd fused T=1: " in err
    assert "[4/4] multilabel_arcface_loss B=4 D=16 K=9 float32 fwd+bwd reference T=2: " in err


def test_threads_flag():
    assert run.parse_threads("1,2") == [1, 2]
    assert run.parse_threads("4") == [4]
    assert run.parse_threads(None) == [torch.get_num_threads()]
    with pytest.raises(Exception, match="positive"):
        run.parse_threads("0")
    with pytest.raises(SystemExit):
        run.main(["--threads=1,x", "--out=/nonexistent"])


def _cells(table, op):
    """The header cells and the cells of op's rows."""
    lines = table.splitlines()
    head = [c.strip() for c in lines[0].strip("|").split("|")]
    return head, [
        dict(zip(head, (c.strip() for c in line.strip("|").split("|"))))
        for line in lines[2:]
        if line.startswith(f"| {op} ")
    ]


def test_table_single_thread_count():
    rows = [
        _row("a", "B=1", "fwd", "fused", 1, 2.0),
        _row("a", "B=1", "fwd", "reference", 1, 8.0),
        _row("a", "B=1", "fwd", "compiled_ref", 1, 4.0),
        _row("masks", "B=2", "fwd", "fused", 1, 1.5),  # no compiled reference
        _row("masks", "B=2", "fwd", "reference", 1, 3.0),
        _row("b", "B=3", "fwd", "fused", 1, None, error="RuntimeError: x"),  # failed
        _row("b", "B=3", "fwd", "compiled_ref", 1, 2.0),
        _row("c", "B=4", "fwd", "fused", 1, float("nan")),  # an old-style missing value
        _row("c", "B=4", "fwd", "compiled_ref", 1, 2.0),
    ]
    table = run.format_table(rows)
    assert "nan" not in table.lower()
    head, (a,) = _cells(table, "a")
    assert head == ["op", "shape", "dtype", "mode", "fused ms", "reference ms", "compiled ref ms", "fused / compiled"]
    assert (a["fused ms"], a["reference ms"], a["compiled ref ms"], a["fused / compiled"]) == (
        "2.000",
        "8.000",
        "4.000",
        "0.50",
    )
    _, (masks,) = _cells(table, "masks")
    assert (masks["fused ms"], masks["compiled ref ms"], masks["fused / compiled"]) == ("1.500", "-", "-")
    _, (b,) = _cells(table, "b")
    assert (b["fused ms"], b["reference ms"], b["fused / compiled"]) == ("-", "-", "-")
    _, (c,) = _cells(table, "c")
    assert (c["fused ms"], c["fused / compiled"]) == ("-", "-")


def test_table_thread_sweep():
    rows = []
    for t, fused, compiled in [(1, 4.0, 2.0), (2, 2.0, 1.6), (4, 1.0, 1.0)]:
        rows += [
            _row("a", "B=1", "fwd+bwd", "fused", t, fused),
            _row("a", "B=1", "fwd+bwd", "compiled_ref", t, compiled),
        ]
    rows.append(_row("masks", "B=2", "fwd", "fused", 1, 3.0))
    rows.append(_row("masks", "B=2", "fwd", "fused", 2, 2.0))  # T=4 missing
    table = run.format_table(rows, [1, 2, 4])
    assert "nan" not in table.lower()
    head, (a,) = _cells(table, "a")
    assert head[4:] == [
        "fused ms T=1",
        "fused ms T=2",
        "fused ms T=4",
        "compiled ref ms T=1",
        "compiled ref ms T=2",
        "compiled ref ms T=4",
        "fused / compiled T=1",
        "fused / compiled T=2",
        "fused / compiled T=4",
        "fused x1→2",
        "fused x1→4",
        "compiled x1→2",
        "compiled x1→4",
    ]
    assert [a[f"fused / compiled T={t}"] for t in (1, 2, 4)] == ["2.00", "1.25", "1.00"]
    assert (a["fused x1→2"], a["fused x1→4"], a["compiled x1→2"], a["compiled x1→4"]) == (
        "2.00",
        "4.00",
        "1.25",
        "2.00",
    )
    _, (masks,) = _cells(table, "masks")
    assert (masks["fused ms T=4"], masks["fused x1→2"], masks["fused x1→4"]) == ("-", "1.50", "-")
    assert masks["compiled ref ms T=1"] == masks["fused / compiled T=1"] == masks["compiled x1→2"] == "-"


def test_table_memory_columns_where_measured():
    rows = [
        _row("a", "B=1", "fwd", "fused", None, 1.0, peak_mib=10.0, transient_mib=2.5, floor_ms=0.25),
        _row("a", "B=1", "fwd", "compiled_ref", None, 2.0, peak_mib=None, transient_mib=None, floor_ms=0.25),
    ]
    rows.append(_row("a", "B=1", "fwd", "reference", None, 3.0))
    head, (a,) = _cells(run.format_table(rows), "a")
    assert a["floor ms"] == "0.250"
    assert a["fused peak / transient MiB"] == "10.0 / 2.5"
    assert a["compiled peak / transient MiB"] == "-"  # not measured for it
    assert "reference peak / transient MiB" not in head


def test_plot_one_panel_per_op(tmp_path):
    rows = []
    shapes = {"cam_kl_loss": 6, "multilabel_arcface_loss": 3, "segment_mean": 2}
    for op, n in shapes.items():
        for i in range(n):
            shape = f"B={2**i} N=3136 C=2048 H=7 W=7 Kf=1000 Kc=100 transposed"
            for dtype in ("float32", "bfloat16"):
                for mode in ("fwd", "fwd+bwd"):
                    for t in (1, 2):
                        rows.append(_row(op, shape, mode, "fused", t, 1.0 + i / t, dtype=dtype))
                        rows.append(_row(op, shape, mode, "compiled_ref", t, 2.0 + i / (t * t), dtype=dtype))
    rows.append(_row("bev_masks_from_boxes", "B=4", "fwd", "fused", 1, 1.0))  # no ratio: not drawn
    path = run.plot_ratios(rows, str(tmp_path / "r.png"), "title", [1, 2])
    width, height = _png_size(path)
    assert width <= 1400
    assert height > 1000  # panels sized by their rows: 44 cases, 88 bars


def test_plot_nothing_to_draw(tmp_path):
    rows = [_row("a", "B=1", "fwd", "fused", 1, 1.0)]
    assert run.plot_ratios(rows, str(tmp_path / "r.png"), "title", [1]) is None
    assert not (tmp_path / "r.png").exists()


def test_table_first_touch_column_per_thread_count():
    rows = []
    for t, touch in [(1, 30.0), (2, 17.5)]:
        rows.append(_row("a", "B=1", "fwd+bwd", "fused", t, 40.0 / t, first_touch_ms=touch))
        rows.append(_row("a", "B=1", "fwd+bwd", "compiled_ref", t, 50.0 / t, first_touch_ms=touch))
    rows.append(_row("a", "B=1", "fwd", "fused", 1, 5.0))  # a forward row has none
    head, cells = _cells(run.format_table(rows, [1, 2]), "a")
    by_mode = {c["mode"]: c for c in cells}
    assert (by_mode["fwd+bwd"]["first-touch ms T=1"], by_mode["fwd+bwd"]["first-touch ms T=2"]) == ("30.00", "17.50")
    assert by_mode["fwd"]["first-touch ms T=1"] == "-"


def test_first_touch_allocates_each_size():
    # Two 1-byte buffers and one of 40 MiB (a fresh mapping): a positive time,
    # more for the large one than for the small ones.
    small = run.first_touch_ms([1, 1], 3)
    large = run.first_touch_ms([40 << 20], 3)
    assert 0 < small < large


def test_pin_malloc_on_glibc():
    import sys

    if not sys.platform.startswith("linux"):
        pytest.skip("glibc's mallopt is Linux's")
    assert run.pin_malloc() is True
