"""Train-step times of the models with their fused loss against the
plain-PyTorch reference loss, and the loss's share of the step:
cast_small (H-CAST, three levels, batch 64) with the CAM-consistency loss,
arc_psa_swin_tiny (batch 32) with the multi-label ArcFace head.

    python benchmarks/train_step.py [--tiny]

On CUDA: the full models at 224 x 224, CUDA-event timing. `--tiny` (the
default on CPU) shrinks them so the run takes seconds.
"""

from __future__ import annotations

import argparse
import statistics
import time

import timm
import torch

import hcam_ops
import hcam_ops.models  # noqa: F401  (registers the timm names)
from hcam_ops import reference as R
from hcam_ops.models import split_outputs
from hcam_ops.train.hierarchical.data import synthetic_hierarchy
from hcam_ops.train.hierarchical.losses import hierarchical_loss


def _timer(device):
    if device.type == "cuda":

        def run(fn):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            return start.elapsed_time(end)
    else:

        def run(fn):
            t0 = time.perf_counter()
            fn()
            return (time.perf_counter() - t0) * 1e3

    return run


def arcface_rows(device, tiny, repeat, timer):
    """arc_psa_swin_tiny train step with the fused head against the reference
    multi-label ArcFace on the same features and weight."""
    B = 8 if tiny else 32
    size = 64 if tiny else 224
    kw = {"backbone_kwargs": {"embed_dim": 24, "depths": [1, 1, 1, 1], "num_heads": [1, 1, 2, 2]}} if tiny else {}
    torch.manual_seed(0)
    model = timm.create_model("arc_psa_swin_tiny", img_size=size, **kw).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(B, 3, size, size, generator=g).to(device)
    y = (torch.rand(B, 6, generator=g) < 0.3).float().to(device)
    fused = lambda f, w, y: hcam_ops.multilabel_arcface_loss(f, w, y, check_inputs=False)  # noqa: E731
    rows = []
    for name, loss_fn in (("fused", fused), ("reference", R.multilabel_arcface_loss)):

        def step():
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
                feats = model.features(x)
            loss = loss_fn(feats.float(), model.head.weight, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        feats = model.features(x).detach().float().requires_grad_()
        weight = model.head.weight.detach().requires_grad_()

        def loss_only():
            loss_fn(feats, weight, y).backward()

        for fn in (step, loss_only):
            fn()
        rows.append(
            (
                name,
                statistics.median(timer(step) for _ in range(repeat)),
                statistics.median(timer(loss_only) for _ in range(repeat)),
            )
        )
    return B, rows


# The Plant Pathology 2021 report's model families (docs/plant_pathology.md):
# timm name, keyword arguments, image size, batch, for the tiny CPU run and
# the full CUDA run (the report's sizes).
FAMILIES = (
    (
        "efficientnet_b0_bce",
        {"backbone_kwargs": {"channel_multiplier": 0.5, "depth_multiplier": 0.5}},
        {},
        224,
    ),
    (
        "efficientnet_b0_g16_bce",
        {"backbone_kwargs": {"channel_multiplier": 0.5, "depth_multiplier": 0.5}},
        {},
        224,
    ),
    (
        "eva_clip_bce",
        {"backbone_kwargs": {"patch_size": 16, "embed_dim": 96, "depth": 4, "num_heads": 4}},
        {},
        224,
    ),
    (
        "eva_clip_stn_bce",
        {"backbone_kwargs": {"patch_size": 16, "embed_dim": 96, "depth": 4, "num_heads": 4}},
        {},
        224,
    ),
    (
        "arc_psa_swin_base_384",
        {"backbone_kwargs": {"embed_dim": 32, "depths": [1, 1, 2, 1], "num_heads": [1, 2, 4, 8], "window_size": 4}},
        {},
        384,
    ),
    (
        "swin_focal_tiny",
        {"backbone_kwargs": {"embed_dim": 32, "depths": [1, 1, 2, 1], "num_heads": [1, 2, 4, 8], "window_size": 4}},
        {},
        224,
    ),
)


def family_rows(device, tiny, repeat, timer):
    """One Adam train step (forward with its loss, backward, update) of every
    model family, as the multi-label task runs it (bfloat16 autocast on CUDA).
    Tiny: narrow models at 64 x 64, batch 8; full: the models as registered
    (EVA-CLIP: the report's EVA-g tower) at their size, batch 16."""
    B = 8 if tiny else 16
    rows = []
    for name, tiny_kw, full_kw, full_size in FAMILIES:
        size = 64 if tiny else full_size
        torch.manual_seed(0)
        model = timm.create_model(name, img_size=size, **(tiny_kw if tiny else full_kw)).to(device)
        opt = torch.optim.Adam(model.parameters(), lr=1e-4)
        g = torch.Generator().manual_seed(0)
        x = torch.randn(B, 3, size, size, generator=g).to(device)
        y = (torch.rand(B, 6, generator=g) < 0.3).float().to(device)

        def step():
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
                loss, _ = model(x, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        step()
        params = sum(p.numel() for p in model.parameters()) / 1e6
        rows.append((name, params, size, statistics.median(timer(step) for _ in range(repeat))))

    return B, rows


def stn_rows(device, repeat, timer, batch=8):
    """The report's STN against the pooled one: parameters and forward +
    backward time on a batch of ``batch`` images at 224 and 384."""
    from hcam_ops.nn.stn import STN, PooledSTN

    rows = []
    for size in (224, 384):
        x = torch.randn(batch, 3, size, size, device=device, requires_grad=True)
        for name, module in (("report", STN(size)), ("pooled", PooledSTN())):
            module = module.to(device)

            def run():
                module(x).sum().backward()

            run()
            params = sum(p.numel() for p in module.parameters()) / 1e6
            rows.append((name, size, params, statistics.median(timer(run) for _ in range(repeat))))
    return rows


def print_families(device, tiny, repeat, timer):
    B, rows = family_rows(device, tiny, repeat, timer)
    tag = f"{'tiny configs, ' if tiny else ''}{device}"
    print(f"Plant Pathology 2021 model families: Adam train step, batch {B}, {tag}")
    print("| model | params (M) | image | step ms |")
    print("|---|---|---|---|")
    for name, params, size, ms in rows:
        print(f"| {name} | {params:.2f} | {size} | {ms:.1f} |")
    print()
    print(f"STN front ends: forward + backward, batch 8, {device}")
    print("| STN | image | params (M) | ms |")
    print("|---|---|---|---|")
    for name, size, params, ms in stn_rows(device, repeat, timer):
        print(f"| {name} | {size} | {params:.3f} | {ms:.1f} |")


def _print(title, rows):
    print(title)
    print("| loss | step ms | loss fwd+bwd ms | loss share of step |")
    print("|---|---|---|---|")
    for name, step_ms, loss_ms in rows:
        print(f"| {name} | {step_ms:.2f} | {loss_ms:.3f} | {100 * loss_ms / step_ms:.1f}% |")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--batch-size", type=int, default=None)
    ap.add_argument("--tiny", action="store_true")
    ap.add_argument("--repeat", type=int, default=None)
    args = ap.parse_args(argv)
    device = torch.device(args.device)
    tiny = args.tiny or device.type == "cpu"
    B = args.batch_size or (8 if tiny else 64)
    repeat = args.repeat or (3 if tiny else 20)
    h = synthetic_hierarchy((100, 70, 30))
    # The published H-CAST training step: mixup-free here so both losses see
    # the same batch; CE per level + 0.5 L_gk + 0.1 L_cons on centroid1.
    cfg = dict(num_classes=tuple(h.num_classes))
    if tiny:
        cfg.update(img_size=64, embed_dim=96, depths=(1, 1, 1, 1), num_heads=4, num_clusters=(16, 8, 4, 2))
    size = cfg.get("img_size", 224)
    model = timm.create_model("cast_small", **cfg).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(B, 3, size, size, generator=g).to(device)
    cell = size // 14  # 14 x 14 = 196 square superpixels, as SEEDS gives at 224
    ids = (torch.arange(size) // cell)[:, None] * 14 + (torch.arange(size) // cell)[None, :]
    seg = ids.clamp_max(195).expand(B, size, size).contiguous().to(device)
    labels = h.labels(torch.randint(0, 100, (B,), generator=g).to(device))
    timer = _timer(device)
    fused = lambda *a, **k: hcam_ops.hierarchical_cam_kl_loss(*a, **k, check_index=False)  # noqa: E731
    rows = []
    for name, cam_fn in (("fused", fused), ("reference", R.hierarchical_cam_kl_loss)):

        def step():
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
                logits, inter = split_outputs(model(x, seg, return_intermediates=True), 3)
                loss = hierarchical_loss(
                    model.heads,
                    logits,
                    inter,
                    labels,
                    h.num_classes,
                    smoothing=0.1,
                    gk_weight=0.5,
                    cam_weight=0.1,
                    cam_loss=cam_fn,
                )["loss"]
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            logits, inter = split_outputs(model(x, seg, return_intermediates=True), 3)
        tokens = inter["centroid1"].detach().float().requires_grad_()
        weights = [hd.weight.detach().float().requires_grad_() for hd in model.heads[:2]]
        classes = [lg.detach().argmax(1) for lg in logits[:2]]

        def loss_only():
            cam_fn(tokens, weights, classes).backward()

        for fn in (step, loss_only):
            fn()
        step_ms = statistics.median(timer(step) for _ in range(repeat))
        loss_ms = statistics.median(timer(loss_only) for _ in range(repeat))
        rows.append((name, step_ms, loss_ms))
    tag = f"{'tiny config, ' if tiny else ''}{device}"
    _print(f"cast_small (H-CAST, 3 levels) train step with the CAM-consistency loss, batch {B}, {tag}", rows)
    B2, rows2 = arcface_rows(device, tiny, repeat, timer)
    print()
    _print(f"arc_psa_swin_tiny train step with the multi-label ArcFace head, batch {B2}, {tag}", rows2)
    print()
    print_families(device, tiny, repeat, timer)


if __name__ == "__main__":
    main()
