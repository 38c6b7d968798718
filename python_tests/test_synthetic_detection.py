"""The synthetic detection set (hcam_ops.data.synthetic_detection): items as
torchvision detectors take them, exact boxes and masks, determinism, collate,
and the COCO export."""

import json
import os

import numpy as np
import pytest
import torch
from PIL import Image

from hcam_ops.data.synthetic_detection import (
    CLASSES,
    SyntheticDetection,
    collate,
    mask_to_rle,
    rle_to_mask,
    to_coco,
)


def test_items_have_the_torchvision_detection_format():
    ds = SyntheticDetection(8, (96, 120), num_classes=3, seed=3)
    assert len(ds) == 8 and ds.num_classes == 3 and ds.classes == CLASSES[:3]
    for i in range(len(ds)):
        image, target = ds[i]
        assert image.dtype == torch.float32 and image.shape == (3, 96, 120)
        assert 0.0 <= image.min() and image.max() <= 1.0
        boxes, labels = target["boxes"], target["labels"]
        assert boxes.dtype == torch.float32 and boxes.dim() == 2 and boxes.shape[1] == 4
        assert labels.dtype == torch.int64 and labels.shape == (len(boxes),)
        assert 1 <= len(boxes) <= 3
        assert ((labels >= 1) & (labels <= 3)).all()
        assert (boxes[:, 2] > boxes[:, 0]).all() and (boxes[:, 3] > boxes[:, 1]).all()
        assert (boxes[:, [0, 2]] >= 0).all() and (boxes[:, [0, 2]] <= 120).all()
        assert (boxes[:, [1, 3]] >= 0).all() and (boxes[:, [1, 3]] <= 96).all()
        assert int(target["image_id"]) == i
        assert "masks" not in target


def test_boxes_are_the_tight_boxes_of_the_painted_masks():
    ds = SyntheticDetection(12, 128, num_classes=4, seed=5, masks=True)
    for i in range(len(ds)):
        image, target = ds[i]
        masks = target["masks"]
        assert masks.dtype == torch.uint8 and masks.shape == (len(target["boxes"]), 128, 128)
        for box, mask in zip(target["boxes"].tolist(), masks.bool()):
            rows = torch.nonzero(mask.any(dim=1)).flatten()
            cols = torch.nonzero(mask.any(dim=0)).flatten()
            assert box == [float(cols[0]), float(rows[0]), float(cols[-1] + 1), float(rows[-1] + 1)]
            # The object's pixels are painted in one saturated colour, unlike
            # the greyish texture around it.
            pixels = image[:, mask]
            assert (pixels.max(0).values - pixels.min(0).values).mean() > 0.5
            assert pixels.std(dim=1).max() < 1e-6
        x1, y1, x2, y2 = target["boxes"].T
        for a in range(len(x1)):
            for b in range(a + 1, len(x1)):
                gap = max(x1[b] - x2[a], x1[a] - x2[b], y1[b] - y2[a], y1[a] - y2[b])
                assert gap >= 2, "boxes overlap"


def test_items_depend_only_on_seed_and_index():
    a = SyntheticDetection(10, 64, seed=11)
    b = SyntheticDetection(10, 64, seed=11)
    c = SyntheticDetection(10, 64, seed=12)
    later_first = [b[i] for i in reversed(range(10))][::-1]
    for i in range(10):
        assert torch.equal(a[i][0], later_first[i][0])
        assert torch.equal(a[i][1]["boxes"], later_first[i][1]["boxes"])
    assert not all(torch.equal(a[i][0], c[i][0]) for i in range(10))
    assert torch.equal(a[-1][0], a[9][0])
    with pytest.raises(IndexError):
        a[10]


def test_collate_gives_lists_a_detector_trains_on():
    from hcam_ops.cam.detection import build_detector

    ds = SyntheticDetection(4, 64, seed=1)
    loader = torch.utils.data.DataLoader(ds, batch_size=2, collate_fn=collate)
    images, targets = next(iter(loader))
    assert isinstance(images, list) and isinstance(targets, list) and len(images) == len(targets) == 2
    assert collate([]) == ([], [])
    torch.manual_seed(0)
    detector = build_detector("fasterrcnn_resnet18_fpn", ds.num_classes + 1, min_size=64, max_size=64, fpn_channels=16)
    detector.train()
    losses = detector(images, targets)
    assert set(losses) >= {"loss_classifier", "loss_box_reg", "loss_objectness", "loss_rpn_box_reg"}
    assert all(torch.isfinite(v) for v in losses.values())


def test_coco_export_round_trips(tmp_path):
    ds = SyntheticDetection(5, (64, 80), num_classes=2, seed=7)
    path = tmp_path / "coco" / "instances.json"
    returned = to_coco(ds, str(path), image_dir=str(tmp_path / "images"))
    coco = json.loads(path.read_text())
    assert coco == json.loads(json.dumps(returned))
    assert coco["categories"] == [
        {"id": 1, "name": "circle", "supercategory": "shape"},
        {"id": 2, "name": "square", "supercategory": "shape"},
    ]
    assert [im["id"] for im in coco["images"]] == list(range(5))
    assert all(im["width"] == 80 and im["height"] == 64 for im in coco["images"])
    ids = [a["id"] for a in coco["annotations"]]
    assert ids == list(range(1, len(ids) + 1))
    masked = SyntheticDetection(5, (64, 80), num_classes=2, seed=7, masks=True)
    for index in range(5):
        image, target = masked[index]
        anns = [a for a in coco["annotations"] if a["image_id"] == index]
        assert len(anns) == len(target["boxes"])
        for ann, box, label, mask in zip(anns, target["boxes"].tolist(), target["labels"].tolist(), target["masks"]):
            x1, y1, x2, y2 = box
            assert ann["bbox"] == [x1, y1, x2 - x1, y2 - y1]
            assert ann["category_id"] == label and ann["iscrowd"] == 0
            assert ann["area"] == float(mask.sum())
            decoded = rle_to_mask(ann["segmentation"]["counts"], ann["segmentation"]["size"])
            assert np.array_equal(decoded, mask.numpy().astype(bool))
        name = coco["images"][index]["file_name"]
        written = np.asarray(Image.open(os.path.join(tmp_path, "images", name))).astype(np.float32) / 255
        assert np.abs(written - image.permute(1, 2, 0).numpy()).max() <= 0.5 / 255 + 1e-6


@pytest.mark.parametrize(
    "mask",
    [
        np.zeros((3, 4), bool),
        np.ones((3, 4), bool),
        np.eye(4, dtype=bool),
        np.array([[1, 0, 0], [1, 1, 0]], bool),
    ],
    ids=["empty", "full", "diagonal", "starts-inside"],
)
def test_rle_is_column_major_and_starts_with_background(mask):
    counts = mask_to_rle(mask)
    assert sum(counts) == mask.size
    if mask.ravel(order="F")[0]:
        assert counts[0] == 0
    assert np.array_equal(rle_to_mask(counts, mask.shape), mask)


def test_rle_known_value():
    # Column-major: column 0 is (1, 1), column 1 is (0, 1), column 2 is (0, 0).
    mask = np.array([[1, 0, 0], [1, 1, 0]], bool)
    assert mask_to_rle(mask) == [0, 2, 1, 1, 2]


@pytest.mark.parametrize(
    "kwargs, argument",
    [
        ({"image_size": 8}, "image_size"),
        ({"num_classes": 5}, "num_classes"),
        ({"objects": (0, 2)}, "objects"),
        ({"object_size": (0.5, 0.2)}, "object_size"),
        ({"num_images": -1}, "num_images"),
    ],
)
def test_bad_arguments_are_named(kwargs, argument):
    with pytest.raises(ValueError, match=f"^{argument}:"):
        SyntheticDetection(**kwargs)
