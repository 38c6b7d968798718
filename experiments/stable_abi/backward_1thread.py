"""The backward alone at one thread, median of 51 interleaved runs: the check
behind docs/stable_abi.md's note on the one-thread forward+backward ratio.
Run from this folder after build.py (as measure.py)."""

import statistics
import time

import measure

torch, _, _ = measure.setup()
torch.set_num_threads(1)
g = torch.Generator().manual_seed(3)
libs = (("hcam_ops", torch.ops.hcam_ops), ("hcam_ops_stable", torch.ops.hcam_ops_stable))
for shape in measure.SHAPES:
    x, gy = torch.randn(shape, generator=g), torch.randn(shape, generator=g)
    for _, ops in libs:
        for _ in range(3):
            ops.minmax_normalize_backward(gy, x, measure.EPS)
    samples = {name: [] for name, _ in libs}
    for _ in range(51):
        for name, ops in libs:
            t0 = time.perf_counter()
            ops.minmax_normalize_backward(gy, x, measure.EPS)
            samples[name].append(time.perf_counter() - t0)
    m = {k: statistics.median(v) * 1e3 for k, v in samples.items()}
    print(
        f"{shape}: backward, 1 thread: hcam_ops {m['hcam_ops']:.3f} ms, stable {m['hcam_ops_stable']:.3f} ms, "
        f"ratio {m['hcam_ops_stable'] / m['hcam_ops']:.3f}"
    )
