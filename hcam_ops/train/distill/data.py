"""The data of ``python -m hcam_ops.train distill``: the synthetic detection
set, or a COCO-format folder read with json + PIL.

A folder ``DIR`` holds ``annotations.json`` (COCO instances: ``images`` with
``id``/``file_name``, ``annotations`` with ``image_id``/``category_id``/``bbox``
``[x, y, w, h]`` in pixels, ``categories`` with ``id``/``name``), the image
files named relative to ``DIR`` (or ``DIR/images``); or two such folders
``DIR/train`` and ``DIR/val``. A single file is split by image id: the last
``val_fraction`` of the images are the validation split. Category ids become
labels ``1..K`` in id order (0 is torchvision's background); ``iscrowd``
annotations are skipped. Every problem is one line naming the file and row.
"""

from __future__ import annotations

import json
import math
import os

import numpy as np
import torch
from torch.utils.data import Dataset

from ..._cli import CLIError, check_dir, check_file


class CocoFolder(Dataset):
    """Items as :class:`hcam_ops.data.SyntheticDetection`'s: ``(image float
    [3, H, W] in [0, 1], {"boxes" xyxy float32 [N, 4], "labels" int64 [N],
    "image_id"})``."""

    def __init__(self, root: str, records: list[dict], classes: list[str], source: str):
        self.root, self.records, self.classes, self.source = root, records, classes, source

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int):
        from PIL import Image, UnidentifiedImageError

        r = self.records[index]
        try:
            with Image.open(r["path"]) as im:
                rgb = np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0
        except (OSError, UnidentifiedImageError) as e:
            raise CLIError(f"{self.source}: image {r['file_name']!r} (id {r['id']}): cannot be read ({e})") from None
        H, W = rgb.shape[:2]
        if (H, W) != r["size"]:
            raise CLIError(
                f"{self.source}: image {r['file_name']!r} (id {r['id']}) is {H}x{W}, the file says {r['size'][0]}x"
                f"{r['size'][1]}"
            )
        image = torch.from_numpy(np.ascontiguousarray(rgb.transpose(2, 0, 1)))
        target = {
            "boxes": torch.tensor(r["boxes"], dtype=torch.float32).reshape(-1, 4),
            "labels": torch.tensor(r["labels"], dtype=torch.int64),
            "image_id": torch.tensor(r["id"], dtype=torch.int64),
        }
        return image, target

    def image_size(self) -> tuple[int, int]:
        """The most common ``(H, W)``."""
        sizes = [r["size"] for r in self.records]
        return max(set(sizes), key=sizes.count) if sizes else (0, 0)


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def read_coco(path: str) -> tuple[list[dict], list[str], list[int]]:
    """``(records sorted by image id, class names, category ids)``."""
    check_file(path, "--data")
    root = os.path.dirname(path)
    try:
        with open(path) as f:
            coco = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CLIError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(coco, dict) or not all(isinstance(coco.get(k), list) for k in ("images", "categories")):
        raise CLIError(f"{path}: not a COCO instances file (needs 'images' and 'categories' lists)")
    cats = {}
    for i, c in enumerate(coco["categories"]):
        if not isinstance(c, dict) or not isinstance(c.get("id"), int) or c["id"] in cats:
            raise CLIError(f"{path}: categories[{i}]: needs a distinct integer 'id'")
        cats[c["id"]] = str(c.get("name", c["id"]))
    if not cats:
        raise CLIError(f"{path}: no categories")
    ids = sorted(cats)
    label_of = {cid: k + 1 for k, cid in enumerate(ids)}
    images = {}
    for i, im in enumerate(coco["images"]):
        ok = isinstance(im, dict) and isinstance(im.get("id"), int) and isinstance(im.get("file_name"), str)
        if not ok or im["id"] in images:
            raise CLIError(f"{path}: images[{i}]: needs a distinct integer 'id' and a 'file_name'")
        if not all(isinstance(im.get(k), int) and im[k] > 0 for k in ("width", "height")):
            raise CLIError(f"{path}: images[{i}] (id {im['id']}): needs positive integer 'width' and 'height'")
        file = os.path.join(root, im["file_name"])
        if not os.path.isfile(file):
            file = os.path.join(root, "images", im["file_name"])
        if not os.path.isfile(file):
            raise CLIError(f"{path}: images[{i}] (id {im['id']}): no file {im['file_name']!r} in {root} or its images/")
        images[im["id"]] = {
            "id": im["id"], "file_name": im["file_name"], "path": file,
            "size": (im["height"], im["width"]), "boxes": [], "labels": [],
        }  # fmt: skip
    for i, a in enumerate(coco.get("annotations") or []):
        where = f"{path}: annotations[{i}]" + (f" (id {a['id']})" if isinstance(a, dict) and "id" in a else "")
        if not isinstance(a, dict):
            raise CLIError(f"{where}: not an object")
        if a.get("iscrowd", 0):
            continue
        if a.get("image_id") not in images:
            raise CLIError(f"{where}: image_id {a.get('image_id')!r} is not in 'images'")
        if a.get("category_id") not in label_of:
            raise CLIError(f"{where}: category_id {a.get('category_id')!r} is not in 'categories'")
        box = a.get("bbox")
        if not (isinstance(box, list) and len(box) == 4 and all(_number(v) for v in box)):
            raise CLIError(f"{where}: bbox {box!r} is not four numbers [x, y, w, h]")
        x, y, w, h = (float(v) for v in box)
        record = images[a["image_id"]]
        H, W = record["size"]
        if w <= 0 or h <= 0:
            raise CLIError(f"{where}: bbox {box!r} has a width or height <= 0")
        if x < 0 or y < 0 or x + w > W + 0.5 or y + h > H + 0.5:
            raise CLIError(f"{where}: bbox {box!r} leaves the {W}x{H} image {record['file_name']!r}")
        record["boxes"].append([x, y, min(x + w, W), min(y + h, H)])
        record["labels"].append(label_of[a["category_id"]])
    records = [images[k] for k in sorted(images)]
    return records, [cats[c] for c in ids], ids


def coco_splits(root: str, val_fraction: float) -> tuple[CocoFolder, CocoFolder]:
    """``(train, val)`` of a folder (see the module's docstring)."""
    check_dir(root, "--data")
    split_files = [os.path.join(root, s, "annotations.json") for s in ("train", "val")]
    if all(os.path.isfile(p) for p in split_files):
        (tr, tr_classes, tr_ids), (va, va_classes, va_ids) = (read_coco(p) for p in split_files)
        if tr_ids != va_ids:
            raise CLIError(f"--data {root}: train/ and val/ annotations.json have different categories")
        if not tr or not va:
            raise CLIError(f"--data {root}: {'train' if not tr else 'val'}/annotations.json has no images")
        return CocoFolder(root, tr, tr_classes, split_files[0]), CocoFolder(root, va, va_classes, split_files[1])
    path = os.path.join(root, "annotations.json")
    check_file(path, f"--data {root}: annotations file")
    records, classes, _ = read_coco(path)
    if not 0 < val_fraction < 1:
        raise CLIError(f"--val-fraction {val_fraction}: must be in (0, 1)")
    n_val = max(1, round(len(records) * val_fraction))
    if len(records) < 2:
        raise CLIError(f"{path}: needs at least 2 images (a training and a validation split)")
    return CocoFolder(root, records[:-n_val], classes, path), CocoFolder(root, records[-n_val:], classes, path)


def synthetic_splits(size: int, image_size: int, num_classes: int, seed: int):
    """``(train, val)`` of :class:`hcam_ops.data.SyntheticDetection`: ``size``
    training images and a quarter as many (at least 2) for validation, on
    other seeds."""
    from ...data.synthetic_detection import SyntheticDetection

    try:
        train = SyntheticDetection(size, image_size, num_classes, seed=seed)
        val = SyntheticDetection(max(size // 4, 2), image_size, num_classes, seed=seed + 1_000_003)
    except ValueError as e:
        raise CLIError(f"--synthetic-size/--image-size/--num-classes: {e}") from None
    return train, val


class Padded(Dataset):
    """Fixed-shape items, so the engine's DataLoader (torch's default collate)
    batches them: the image zero-padded bottom/right to ``(H, W)``, boxes and
    labels padded to ``max_objects`` rows (label 0 = padding), with the
    true ``size`` and object ``count``. :func:`unpad` undoes it exactly."""

    def __init__(self, dataset, size: tuple[int, int], max_objects: int):
        self.dataset, self.size, self.max_objects = dataset, tuple(size), max(int(max_objects), 1)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict:
        image, target = self.dataset[index]
        _, h, w = image.shape
        H, W = self.size
        padded = image.new_zeros(3, H, W)
        padded[:, :h, :w] = image
        n = int(target["boxes"].shape[0])
        if n > self.max_objects:
            raise CLIError(f"image {index}: {n} objects, more than the {self.max_objects} counted for the set")
        boxes = torch.zeros(self.max_objects, 4)
        labels = torch.zeros(self.max_objects, dtype=torch.int64)
        boxes[:n], labels[:n] = target["boxes"], target["labels"]
        return {
            "image": padded, "size": torch.tensor([h, w]), "boxes": boxes, "labels": labels,
            "count": torch.tensor(n), "image_id": torch.as_tensor(target["image_id"]).reshape(()),
        }  # fmt: skip


def unpad(batch: dict, device) -> tuple[list[torch.Tensor], list[dict]]:
    """A collated batch of :class:`Padded` items -> ``(images, targets)`` as
    torchvision's detectors take them."""
    images, targets = [], []
    for i in range(batch["image"].shape[0]):
        h, w = (int(v) for v in batch["size"][i])
        n = int(batch["count"][i])
        images.append(batch["image"][i, :, :h, :w].to(device, non_blocking=True))
        targets.append({"boxes": batch["boxes"][i, :n].to(device), "labels": batch["labels"][i, :n].to(device)})
    return images, targets


def padded(dataset) -> Padded:
    """The :class:`Padded` view of a synthetic set or a :class:`CocoFolder`."""
    if isinstance(dataset, CocoFolder):
        sizes = [r["size"] for r in dataset.records] or [(1, 1)]
        size = (max(s[0] for s in sizes), max(s[1] for s in sizes))
        most = max((len(r["boxes"]) for r in dataset.records), default=1)
        return Padded(dataset, size, most)
    return Padded(dataset, dataset.image_size, dataset.objects[1])
