"""CAMs for torchvision detectors (hcam_ops.cam.detection, the CLI
hcam_ops.cam.detect): every method on every family, the FPN reshape rule and
its refusal, ablation indexing across levels, the box score target against
hand computations, per-box normalisation, drawing, the wrapper's train/eval
state, bad input, and CAMs of a detector trained on the synthetic set."""

from collections import OrderedDict

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from hcam_ops._cli import CLIError
from hcam_ops.cam import detect as detect_cli
from hcam_ops.cam.detection import (
    GRADIENT_FREE_METHODS,
    METHODS,
    DetBoxScoreTarget,
    DetCAMInputError,
    DetCAMModel,
    DetCAMVisualizer,
    FPNAblationLayer,
    FPNReshapeTransform,
    build_detector,
    class_colours,
    draw_detections,
    locate,
    normalize_in_boxes,
    save_checkpoint,
)
from hcam_ops.data.synthetic_detection import SyntheticDetection
from hcam_ops.train.synthetic_detector import recall, train_on_synthetic

FAMILIES = ["fasterrcnn", "maskrcnn", "retinanet", "fcos"]


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    # On the 2-core CI machine, shared with other jobs, torch's two-thread CPU
    # kernels spin-wait: a training step measured 3-6 s with two threads under
    # load and 0.3 s with one. The setting is restored after the module.
    # OpenBLAS likewise (EigenCAM's SVD: 3 s with its threads, 10 ms without).
    from threadpoolctl import threadpool_limits

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    with threadpool_limits(limits=1):
        yield
    torch.set_num_threads(previous)


def small_detector(fam, **kwargs):
    """Random weights, thin FPN, small images; every score kept, so that a
    random network has detections to explain."""
    if fam in ("fasterrcnn", "maskrcnn"):
        thresholds = {"box_score_thresh": 0.0, "box_detections_per_img": 10}
    else:
        thresholds = {"score_thresh": 0.0, "detections_per_img": 10}
    rpn = {"rpn_pre_nms_top_n_test": 100, "rpn_post_nms_top_n_test": 50} if fam in ("fasterrcnn", "maskrcnn") else {}
    # FCOS's GroupNorm(32, C) needs two channels per group on the 1x1 P7 of
    # these small images.
    channels = 64 if fam == "fcos" else 32
    torch.manual_seed(0)
    return build_detector(
        f"{fam}_resnet18_fpn", 4, min_size=96, max_size=128, fpn_channels=channels, **thresholds, **rpn, **kwargs
    ).eval()


@pytest.fixture(scope="module")
def detectors():
    return {fam: small_detector(fam) for fam in FAMILIES}


@pytest.fixture(scope="module")
def image():
    # 96 x 120: the detector pads the width to 128, so the padding crop is used.
    return SyntheticDetection(1, (96, 120), seed=4)[0][0]


def all_eval(module):
    return not any(m.training for m in module.modules())


# -- every method on every family ------------------------------------------------------


@pytest.mark.parametrize("method", list(METHODS))
@pytest.mark.parametrize("fam", FAMILIES)
def test_each_method_runs_on_each_family(detectors, image, fam, method):
    detector = detectors[fam]
    backbone = detector.backbone
    model = DetCAMModel(detector, score_thr=0.0)
    vis = DetCAMVisualizer(model, method, batch_size=128)
    expected_layer = "neck" if method in GRADIENT_FREE_METHODS else "backbone.body.layer4"
    assert vis.target_layer_names == [expected_layer]
    ex = vis.explain(image, topk=2)
    assert ex.cam.shape == (96, 120) and ex.cam.dtype == np.float32
    assert np.isfinite(ex.cam).all() and ex.cam.min() >= 0 and ex.cam.max() <= 1 + 1e-6
    assert 1 <= len(ex.boxes) <= 2 and ex.labels.dtype == np.int64
    assert (ex.masks is not None) == (fam == "maskrcnn")
    if method in ("eigencam", "featmapam"):
        assert ex.cam.max() == pytest.approx(1.0, abs=1e-5)
    # Afterwards: predict mode, the detector's own layers, no CAM hooks left.
    assert not model.return_loss and all_eval(detector)
    assert detector.backbone is backbone
    assert all(not m._forward_hooks for m in detector.backbone.modules())
    assert all(p.grad is None for p in detector.parameters())


# -- FPN reshape transform --------------------------------------------------------------


def levels(seed=0, channels=(4, 4, 4)):
    g = torch.Generator().manual_seed(seed)
    shapes = [(32, 40), (16, 20), (8, 10)]
    return OrderedDict(
        (str(i), torch.randn(1, c, h, w, generator=g)) for i, (c, (h, w)) in enumerate(zip(channels, shapes))
    )


@pytest.mark.parametrize(
    "max_shape, size",
    [
        ((20, 20), (20, 20)),
        (-1, (32, 40)),
        ((-1, -1), (32, 40)),
        ((8,), (8, 8)),
        ((64, 64), (32, 40)),
        ((12, 30), (12, 30)),
    ],
)
def test_fpn_reshape_size_rule(max_shape, size):
    feats = levels(channels=(4, 3, 2))
    out = FPNReshapeTransform(max_shape)(feats)
    assert out.shape == (1, 9, *size)
    expected = torch.cat([F.interpolate(v.abs(), size=size, mode="bilinear") for v in feats.values()], dim=1)
    torch.testing.assert_close(out, expected)
    assert out.min() >= 0


def test_fpn_reshape_takes_lists_and_single_maps():
    feats = levels()
    torch.testing.assert_close(FPNReshapeTransform()(list(feats.values())), FPNReshapeTransform()(feats))
    one = feats["0"]
    out = FPNReshapeTransform(is_need_grad=True)(one)
    # Gradient methods: one map is fine, and its sign is kept (gradients pass
    # through the same transform).
    torch.testing.assert_close(out, F.interpolate(one, size=(20, 20), mode="bilinear"))
    assert out.min() < 0


def test_fpn_reshape_refuses_levels_for_gradient_methods():
    with pytest.raises(DetCAMInputError, match="^target_layers: 'neck' returns 3 feature levels; gradient methods"):
        FPNReshapeTransform(is_need_grad=True, layer_name="'neck'")(levels())


def test_fpn_reshape_crops_the_detectors_padding():
    feats = levels()
    out = FPNReshapeTransform(-1, valid_region=lambda: (1.0, 0.75))(feats)
    assert out.shape == (1, 12, 32, 30)
    # Widths 40, 20, 10 -> 30, 15, 8 (a partly covered column is kept).
    cropped = [v[..., :w] for v, w in zip(feats.values(), (30, 15, 8))]
    expected = torch.cat([F.interpolate(v.abs(), size=(32, 30), mode="bilinear") for v in cropped], dim=1)
    torch.testing.assert_close(out, expected)


def test_gradient_method_on_the_neck_is_refused(detectors, image):
    vis = DetCAMVisualizer(DetCAMModel(detectors["fasterrcnn"], 0.0), "gradcam", target_layers=["neck"])
    with pytest.raises(DetCAMInputError, match="^target_layers: 'neck' returns 5 feature levels"):
        vis.explain(image, topk=1)
    assert not vis.model.return_loss and all_eval(detectors["fasterrcnn"])


def test_gradient_method_on_one_fpn_level(detectors, image):
    vis = DetCAMVisualizer(DetCAMModel(detectors["fasterrcnn"], 0.0), "gradcam++", ["backbone.fpn.layer_blocks.0"])
    cam = vis.explain(image, topk=1).cam
    assert cam.shape == (96, 120) and np.isfinite(cam).all()


# -- ablation across FPN levels ---------------------------------------------------------


def test_locate_maps_global_channels_to_levels():
    counts = [3, 5, 2]
    expected = {0: (0, 0), 2: (0, 2), 3: (1, 0), 7: (1, 4), 8: (2, 0), 9: (2, 1)}
    for index, where in expected.items():
        assert locate(index, counts) == where
    with pytest.raises(IndexError):
        locate(10, counts)


def test_ablation_layer_sets_one_channel_per_copy():
    g = torch.Generator().manual_seed(1)
    feats = OrderedDict(
        (k, torch.randn(2, c, s, s, generator=g)) for k, c, s in (("0", 3, 8), ("1", 5, 4), ("pool", 2, 2))
    )
    layer = FPNAblationLayer()
    layer.set_next_batch(input_batch_index=1, activations=feats, num_channels_to_ablate=4)
    layer.indices = np.array([0, 4, 8, 9])
    out = layer(torch.zeros(4, 3, 32, 32))
    assert isinstance(out, OrderedDict) and list(out) == ["0", "1", "pool"]
    ablated = {0: ("0", 0), 1: ("1", 1), 2: ("pool", 0), 3: ("pool", 1)}
    for copy, (key, channel) in ablated.items():
        for k, level in out.items():
            assert level.shape[0] == 4
            for c in range(level.shape[1]):
                if (k, c) == (key, channel):
                    assert (level[copy, c] == -1000).all()
                else:
                    assert torch.equal(level[copy, c], feats[k][1, c])


def test_ablation_layer_keeps_list_type_and_value():
    feats = [torch.ones(1, 2, 4, 4), torch.ones(1, 3, 2, 2)]
    layer = FPNAblationLayer(value=0.0)
    layer.set_next_batch(0, feats, 2)
    layer.indices = np.array([1, 4])
    out = layer(None)
    assert isinstance(out, list)
    assert (out[0][0, 1] == 0).all() and (out[0][0, 0] == 1).all() and (out[1][0] == 1).all()
    assert (out[1][1, 2] == 0).all() and (out[1][1, :2] == 1).all() and (out[0][1] == 1).all()


def test_ablation_restores_the_detector_after_an_error(detectors, image, monkeypatch):
    from hcam_ops.cam.detection import visualizer

    class FailingTarget(DetBoxScoreTarget):
        calls = 0

        def __call__(self, output):
            FailingTarget.calls += 1
            if FailingTarget.calls > 2:  # fail inside the ablation loop
                raise RuntimeError("boom")
            return super().__call__(output)

    detector = detectors["fasterrcnn"]
    backbone = detector.backbone
    vis = DetCAMVisualizer(DetCAMModel(detector, 0.0), "ablationcam", batch_size=8)
    monkeypatch.setattr(visualizer, "DetBoxScoreTarget", FailingTarget)
    with pytest.raises(RuntimeError, match="boom"):
        vis.explain(image, topk=1)
    assert detector.backbone is backbone and FailingTarget.calls == 3


# -- box score target --------------------------------------------------------------------


def test_box_score_target_matches_a_hand_computation():
    refs = [[0, 0, 10, 10], [20, 20, 30, 30], [50, 50, 60, 60]]
    target = DetBoxScoreTarget(refs, [1, 2, 1])
    pred = {
        "boxes": torch.tensor(
            [[0, 0, 10, 5], [1, 0, 10, 10], [20, 20, 30, 30], [21, 21, 30, 30], [50, 50, 60, 60]], dtype=torch.float32
        ),
        "labels": torch.tensor([1, 1, 1, 2, 2]),
        "scores": torch.tensor([0.9, 0.8, 0.99, 0.7, 0.95]),
    }
    # Box 0: the same-label overlaps are 0.5 (not > 0.5) and 0.9 -> 0.9 + 0.8.
    # Box 1: the label-2 prediction overlapping 81/100 -> 0.81 + 0.7 (the
    #   label-1 box on top of it does not hide it).
    # Box 2: only a label-2 prediction there -> 0.
    assert float(target(pred)) == pytest.approx(0.9 + 0.8 + 0.81 + 0.7, abs=1e-6)
    assert float(DetBoxScoreTarget(refs, [1, 2, 1], match_iou_thr=0.85)(pred)) == pytest.approx(1.7, abs=1e-6)
    empty = {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64), "scores": torch.zeros(0)}
    assert float(target(empty)) == 0.0


def test_box_score_target_adds_mask_dice():
    ref_mask = np.zeros((1, 16, 16), np.float32)
    ref_mask[0, 0:10, 0:10] = 1
    pred_mask = torch.zeros(1, 16, 16)
    pred_mask[0, 0:10, 1:10] = 0.5
    target = DetBoxScoreTarget([[0, 0, 10, 10]], [3], masks=ref_mask)
    pred = {
        "boxes": torch.tensor([[1.0, 0, 10, 10]]),
        "labels": torch.tensor([3]),
        "scores": torch.tensor([0.6]),
        "masks": pred_mask,
    }
    dice = 2 * (90 * 0.5) / (100 + 45)
    assert float(target(pred)) == pytest.approx(0.9 + 0.6 + dice, abs=1e-6)


def test_box_score_target_sums_losses_for_gradient_methods():
    w = torch.tensor(2.0, requires_grad=True)
    losses = {"loss_classifier": 0.5 * w, "loss_box_reg": torch.tensor(0.25), "loss_mask": [w, w], "not_a_term": w}
    total = DetBoxScoreTarget([[0, 0, 1, 1]], [1])(losses)
    assert float(total.detach()) == pytest.approx(1.0 + 0.25 + 4.0)
    total.backward()
    assert float(w.grad) == pytest.approx(2.5)


# -- per-box normalisation and drawing ---------------------------------------------------


def test_per_box_normalisation_puts_each_box_max_at_one():
    rng = np.random.default_rng(0)
    cam = rng.random((60, 80)).astype(np.float32) * 0.3
    cam[40:50, 60:70] += 5.0  # a hot spot inside no box: must not matter
    boxes = [[2.4, 3.0, 20.0, 25.6], [15, 10, 40, 30], [50.2, 5, 58, 12]]
    out = normalize_in_boxes(cam, boxes)
    inside = np.zeros(cam.shape, bool)
    for x1, y1, x2, y2 in [(2, 3, 20, 26), (15, 10, 40, 30), (50, 5, 58, 12)]:
        assert out[y1:y2, x1:x2].max() == pytest.approx(1.0, abs=1e-6)
        inside[y1:y2, x1:x2] = True
    assert (out[~inside] == 0).all() and out.max() <= 1.0
    # Inside a lone box, the values are the crop min-max normalised.
    crop = cam[5:12, 50:58]
    np.testing.assert_allclose(out[5:12, 50:58], (crop - crop.min()) / (crop.max() - crop.min()), rtol=1e-6)
    assert (normalize_in_boxes(np.ones((10, 10)), [[0, 0, 5, 5]]) == 0).all()


def test_drawing_writes_the_boxes_where_they_are():
    canvas = np.zeros((64, 80, 3), np.uint8)
    colours = class_colours(4)
    out = draw_detections(canvas, [[10, 30, 40, 60]], [2], [0.87], ["a", "b", "c"], colours, thickness=1)
    colour = colours[2]
    assert (out[30:60, 10] == colour).all()  # left edge
    assert (out[30:60, 39] == colour).all()  # right edge
    assert (out[59, 10:40] == colour).all()  # bottom edge
    assert (out[35:58, 12:38] == 0).all()  # inside untouched
    assert (out[:, 45:] == 0).all() and (out[:12] == 0).all()  # far from the box and its tag
    assert (canvas == 0).all()  # a copy
    assert len({tuple(c) for c in class_colours(10)}) == 10


def test_show_cam_overlays_and_draws(detectors, image):
    model = DetCAMModel(detectors["fasterrcnn"], 0.0, ["circle", "square", "triangle"])
    vis = DetCAMVisualizer(model, "featmapam")
    ex = vis.explain(image, topk=3)
    picture = vis.show_cam(image, ex.boxes, ex.labels, ex.cam, ex.scores, with_norm_in_bboxes=True)
    assert picture.shape == (96, 120, 3) and picture.dtype == np.uint8


# -- the wrapper's modes ------------------------------------------------------------------


def test_mode_switches_leave_the_right_train_eval_state(image):
    detector = small_detector("fasterrcnn")
    model = DetCAMModel(detector, 0.0)
    assert all_eval(detector)
    bns = [m for m in detector.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert bns
    stats = [m.running_mean.clone() for m in bns]

    model.set_return_loss(True)
    assert detector.training and detector.rpn.training and detector.roi_heads.training
    assert not any(m.training for m in bns)
    model.eval()  # what pytorch-grad-cam does: must not leave loss mode half-applied
    assert detector.training and not any(m.training for m in bns)
    model.set_input_data(image, boxes=[[10, 10, 50, 40]], labels=[1])
    losses = model()[0]
    assert {"loss_classifier", "loss_box_reg", "loss_objectness", "loss_rpn_box_reg"} <= set(losses)
    assert all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    assert all(torch.equal(m.running_mean, s) for m, s in zip(bns, stats))
    # detect() is a predict-mode pass and puts loss mode back.
    assert "scores" in model.detect(image) and model.return_loss and detector.training

    model.set_return_loss(False)
    assert all_eval(detector)
    model.train()
    assert all_eval(detector)
    out = model(image[None])[0]
    assert set(out) == {"boxes", "labels", "scores"} and not out["scores"].requires_grad


def test_loss_mode_is_deterministic_and_needs_boxes(image):
    model = DetCAMModel(small_detector("fasterrcnn"), 0.0)
    model.set_return_loss(True)
    with pytest.raises(DetCAMInputError, match="^boxes:"):
        model(image[None])
    with pytest.raises(DetCAMInputError, match="^boxes:"):
        model.set_input_data(image)
    model.set_targets([[10, 10, 50, 40]], [2])
    a = {k: v.item() for k, v in model(image[None])[0].items()}
    b = {k: v.item() for k, v in model(image[None])[0].items()}
    assert a == b


def test_gradient_cams_leave_predict_mode_and_bn_stats(detectors, image):
    detector = detectors["maskrcnn"]
    bns = [m for m in detector.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    stats = [m.running_var.clone() for m in bns]
    vis = DetCAMVisualizer(DetCAMModel(detector, 0.0), "xgradcam")
    vis.explain(image, topk=2)
    assert all_eval(detector) and all(torch.equal(m.running_var, s) for m, s in zip(bns, stats))


# -- bad input ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "bad, message",
    [
        (np.zeros((32, 32), np.uint8), r"^image: expected an RGB array \[H, W, 3\], got shape \(32, 32\)"),
        (np.zeros((2, 32, 32, 3), np.uint8), r"^image: expected an RGB array"),
        (torch.zeros(2, 3, 32, 32), r"^image: expected a tensor \[3, H, W\]"),
        (torch.zeros(32, 32), r"^image: expected a tensor"),
        (torch.full((3, 32, 32), 2.0), r"^image: float images must be in \[0, 1\]"),
        ([[0, 1]], r"^image: expected a numpy array or a tensor"),
    ],
)
def test_bad_images_are_named(detectors, bad, message):
    vis = DetCAMVisualizer(DetCAMModel(detectors["fcos"], 0.0), "featmapam")
    with pytest.raises(DetCAMInputError, match=message):
        vis.explain(bad)


def test_no_detections_above_the_threshold(detectors, image):
    vis = DetCAMVisualizer(DetCAMModel(detectors["fasterrcnn"], score_thr=0.999), "eigencam")
    with pytest.raises(DetCAMInputError, match=r"^score_thr: no detections above score_thr=0.999"):
        vis.explain(image)


# Every method under the names people write (registry keys, class names,
# mmdet's keys), with the pytorch-grad-cam class it must build and whether it
# explains the losses (gradients) or the detections.
METHOD_NAMES = [
    ("gradcam", "gradcam", "GradCAM", True),
    ("GradCAM", "gradcam", "GradCAM", True),
    ("grad-cam++", "gradcam++", "GradCAMPlusPlus", True),
    ("GradCAMPlusPlus", "gradcam++", "GradCAMPlusPlus", True),
    ("gradcampp", "gradcam++", "GradCAMPlusPlus", True),
    ("XGradCAM", "xgradcam", "XGradCAM", True),
    ("eigen_grad_cam", "eigengradcam", "EigenGradCAM", True),
    ("EigenCAM", "eigencam", "SignedEigenCAM", False),
    ("AblationCAM", "ablationcam", "AblationCAM", False),
    ("featmap_am", "featmapam", "FeatmapAM", False),
]


@pytest.mark.parametrize("name, key, cls, gradients", METHOD_NAMES, ids=[m[0] for m in METHOD_NAMES])
def test_method_names(detectors, name, key, cls, gradients):
    vis = DetCAMVisualizer(DetCAMModel(detectors["fcos"], 0.0), name)
    assert (vis.method, type(vis.cam).__name__, vis.needs_grad) == (key, cls, gradients)
    assert (vis.ablation_layer is not None) == (cls == "AblationCAM")


def test_method_names_cover_every_method():
    assert {key for _, key, _, _ in METHOD_NAMES} == set(METHODS)
    assert {key for _, key, _, gradients in METHOD_NAMES if not gradients} == set(GRADIENT_FREE_METHODS)


def test_unknown_method_and_missing_layer(detectors):
    model = DetCAMModel(detectors["retinanet"], 0.0)
    with pytest.raises(DetCAMInputError, match=r"^method: unknown method 'scorecam'; choose one of gradcam,"):
        DetCAMVisualizer(model, "scorecam")
    with pytest.raises(DetCAMInputError, match=r"^target_layers: 'backbone.body.layer9': no such module in RetinaNet"):
        DetCAMVisualizer(model, "eigencam", ["neck", "backbone.body.layer9"])
    with pytest.raises(DetCAMInputError, match="^max_shape:"):
        DetCAMVisualizer(model, "eigencam", max_shape=(0, 4))
    with pytest.raises(DetCAMInputError, match="^ratio_channels_to_ablate:"):
        DetCAMVisualizer(model, "ablationcam", ratio_channels_to_ablate=0)


def test_layer_aliases_and_paths(detectors):
    detector = detectors["fasterrcnn"]
    model = DetCAMModel(detector, 0.0)
    vis = DetCAMVisualizer(model, "featmapam", ["neck", "backbone", "detector.backbone.fpn.layer_blocks.1"])
    assert vis.target_layers == [detector.backbone, detector.backbone.body, detector.backbone.fpn.layer_blocks[1]]


# -- the CLI -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def random_checkpoint(tmp_path_factory):
    detector = small_detector("fasterrcnn")
    path = tmp_path_factory.mktemp("ck") / "random.pth"
    build = {"min_size": 96, "max_size": 128, "fpn_channels": 32}
    save_checkpoint(str(path), detector, "fasterrcnn_resnet18_fpn", 4, ["circle", "square", "triangle"], **build)
    return str(path)


@pytest.fixture(scope="module")
def image_file(tmp_path_factory, image):
    path = tmp_path_factory.mktemp("img") / "shapes.png"
    Image.fromarray((image.permute(1, 2, 0).numpy() * 255).astype(np.uint8)).save(path)
    return str(path)


def run_cli(args, capsys):
    with pytest.raises(CLIError) as err:
        detect_cli.main(args)
    message = str(err.value.code)
    assert "\n" not in message and message.startswith("error: ")
    return message


@pytest.mark.parametrize(
    "extra, expected",
    [
        (["--method", "nope"], "error: --method nope: unknown method 'nope'"),
        (
            ["--target-layers", "neck", "head.nope"],
            "error: --target-layers neck head.nope: 'head.nope': no such module",
        ),
        (["--score-thr", "0.999"], "error: --score-thr 0.999: no detections above score_thr=0.999"),
        (
            ["--method", "gradcam", "--target-layers", "neck", "--score-thr", "0"],
            "error: --target-layers neck: 'neck' returns 5 feature",
        ),
        (["--model", "fcos_resnet50_fpn"], "error: --model fcos_resnet50_fpn: the checkpoint holds a fasterrcnn_"),
        (["--max-shape", "0"], "error: --max-shape 0: expected (h, w) of positive sizes"),
    ],
)
def test_cli_errors_name_the_flag(random_checkpoint, image_file, tmp_path, capsys, extra, expected):
    args = ["--checkpoint", random_checkpoint, "--image", image_file, "--out", str(tmp_path), *extra]
    assert run_cli(args, capsys).startswith(expected)


def test_cli_file_errors(random_checkpoint, image_file, tmp_path, capsys):
    missing = str(tmp_path / "missing.pth")
    message = run_cli(["--checkpoint", missing, "--image", image_file, "--out", str(tmp_path)], capsys)
    assert message == f"error: --checkpoint {missing}: no such file"
    message = run_cli(["--checkpoint", random_checkpoint, "--image", random_checkpoint, "--out", str(tmp_path)], capsys)
    assert message.startswith(f"error: --image {random_checkpoint}: not a readable image")
    bare = tmp_path / "bare.pth"
    torch.save(small_detector("fasterrcnn").state_dict(), bare)
    message = run_cli(["--checkpoint", str(bare), "--image", image_file, "--out", str(tmp_path)], capsys)
    assert message == f"error: --model: {bare} is a bare state dict: name its detector"


def test_cli_reads_a_bare_state_dict(image_file, tmp_path, capsys):
    bare = tmp_path / "bare.pth"
    torch.save(small_detector("fasterrcnn").state_dict(), bare)
    out = tmp_path / "out"
    detect_cli.main(
        ["--checkpoint", str(bare), "--model", "fasterrcnn_resnet18_fpn", "--min-size", "96", "--max-size", "128"]
        + ["--image", image_file, "--out", str(out), "--method", "featmapam", "--score-thr", "0.2", "--topk", "2"]
    )
    assert (out / "shapes_featmapam.png").is_file()
    assert "wrote 1 files" in capsys.readouterr().out


# -- a detector that sees something ------------------------------------------------------


@pytest.fixture(scope="session")
def trained():
    """Faster R-CNN (ResNet-18, 64-wide FPN) after 120 SGD steps on 480
    synthetic images: about 40 s on an idle 2-core CPU, 90 s on a busy one."""
    detector, build = train_on_synthetic("fasterrcnn_resnet18_fpn", steps=120, seed=0, threads=1)
    return detector, build


@pytest.fixture(scope="module")
def held_out():
    return SyntheticDetection(4, 128, seed=2_000_000)


def margins(cam, boxes):
    inside = np.zeros(cam.shape, bool)
    for x1, y1, x2, y2 in boxes.int().tolist():
        inside[y1:y2, x1:x2] = True
    return cam[inside].mean() - cam[~inside].mean(), cam[inside].mean() / cam[~inside].mean()


def test_trained_detector_finds_the_shapes(trained):
    detector, _ = trained
    assert recall(detector, SyntheticDetection(12, 128, seed=3_000_000)) >= 0.9


@pytest.mark.parametrize("method, min_margin, min_ratio", [("eigencam", 0.15, 2.0), ("ablationcam", 0.08, 1.25)])
def test_cams_of_the_trained_detector_sit_on_the_objects(trained, held_out, method, min_margin, min_ratio):
    detector, _ = trained
    vis = DetCAMVisualizer(DetCAMModel(detector, 0.5), method, batch_size=64)
    results = np.array([margins(vis.explain(img).cam, tg["boxes"]) for img, tg in held_out])
    # Mean CAM inside the true boxes against the mean outside, per image
    # (areas normalised), then over the images.
    assert results[:, 0].mean() > min_margin, results
    assert results[:, 1].mean() > min_ratio, results
    assert (results[:, 0] > 0).sum() >= 3, results


def test_aug_smooth_keeps_every_view(trained, held_out):
    detector, _ = trained
    vis = DetCAMVisualizer(DetCAMModel(detector, 0.5), "ablationcam", batch_size=64, ratio_channels_to_ablate=0.1)
    image, target = held_out[0]
    cam = vis.explain(image, aug_smooth=True).cam
    # The reference boxes follow the flips, so every view finds its detections.
    assert vis.views_used == 6
    assert np.isfinite(cam).all() and margins(cam, target["boxes"])[0] > 0


def test_cli_on_the_trained_detector(trained, held_out, tmp_path, capsys):
    detector, build = trained
    ck = tmp_path / "detector.pth"
    save_checkpoint(str(ck), detector, "fasterrcnn_resnet18_fpn", 4, ["circle", "square", "triangle"], **build)
    image, target = held_out[1]
    path = tmp_path / "img.png"
    Image.fromarray((image.permute(1, 2, 0).numpy() * 255).astype(np.uint8)).save(path)
    out = tmp_path / "out"
    detect_cli.main(
        ["--checkpoint", str(ck), "--image", str(path), "--out", str(out), "--method", "eigencam"]
        + ["--score-thr", "0.5", "--per-box", "--eigen-smooth"]
    )
    printed = capsys.readouterr().out.strip().splitlines()
    n = len(printed) - 1  # one line per detection, then the summary
    assert n >= len(target["boxes"]) and printed[-1] == f"wrote {1 + n} files to {out}"
    files = sorted(p.name for p in out.iterdir())
    assert len(files) == 1 + n and "img_eigencam.png" in files
    names = {"circle", "square", "triangle"}
    assert all(f.split("_")[-1][:-4] in names for f in files if "_box" in f)
    assert Image.open(out / "img_eigencam.png").size == (128, 128)
