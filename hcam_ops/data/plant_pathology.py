"""Plant Pathology 2021 (FGVC8) labels, as the report's section 3.1 prepares
them::

    python -m hcam_ops.data.plant_pathology /data/plant-pathology-2021-fgvc8 --out data/pp2021

reads the competition's ``train.csv`` (``image,labels``; the labels
space-separated, 12 combinations of 6 diseases), splits every combination
into its classes, writes one-hot rows (``images,scab,healthy,...``, the
report's column order, through scikit-learn's ``MultiLabelBinarizer`` as
its ``label.py``) and a split stratified on the label combination:
``train.csv``, ``val.csv``, ``test.csv`` and ``dataset.json`` (the image
folder, classes, counts) in ``--out``; ``python -m hcam_ops.train multilabel
--data data/pp2021`` reads them. The argument is the Kaggle folder (its
``train.csv`` and ``train_images/``) or a CSV (then ``--images``).

The report's course gave it a ready split; its test table (63 ``complex``
images, 145 ``healthy``) and its training log (355 ``complex`` images in
training) put that split near 74/13/13, the default here.
"""

from __future__ import annotations

import csv
import json
import os
from collections import Counter

from .._cli import CLIError, CLIParser, check_out_dir, not_utf8

# The six classes of the Plant Pathology 2021 report (section 2.2), in its
# one-hot column order: the models' outputs and the label files share it.
LEAF_CLASSES = ("scab", "healthy", "frog_eye_leaf_spot", "rust", "complex", "powdery_mildew")
CLASSES = LEAF_CLASSES
SPLITS = ("train", "val", "test")


def read_competition_csv(path: str, classes=CLASSES) -> list[tuple[str, list[str]]]:
    """``[(image, [label, ...])]`` from the competition's ``image,labels``
    file; an unknown or missing label is an error naming the line."""
    try:
        with open(path, newline="", encoding="utf-8") as f:
            return _competition_rows(path, csv.DictReader(f), classes)
    except UnicodeDecodeError as e:
        raise CLIError(not_utf8(path, e)) from None


def _competition_rows(path: str, reader: csv.DictReader, classes) -> list[tuple[str, list[str]]]:
    fields = reader.fieldnames or []
    if "image" not in fields or "labels" not in fields:
        raise CLIError(f"{path}: expected the competition's columns image,labels (found {','.join(fields)})")
    rows = []
    for line, r in enumerate(reader, start=2):
        image, labels = (r["image"] or "").strip(), (r["labels"] or "").split()
        if not image:
            raise CLIError(f"{path} line {line}: no image name")
        if not labels:
            raise CLIError(f"{path} line {line}: {image} has no labels")
        unknown = [x for x in labels if x not in classes]
        if unknown:
            raise CLIError(f"{path} line {line}: label {unknown[0]!r} is not one of {', '.join(classes)}")
        rows.append((image, labels))
    if not rows:
        raise CLIError(f"{path}: a header but no rows")
    return rows


def one_hot(label_lists: list[list[str]], classes=CLASSES):
    """``[N, K]`` 0/1 array in ``classes`` order (the report's MultiLabelBinarizer)."""
    from sklearn.preprocessing import MultiLabelBinarizer

    return MultiLabelBinarizer(classes=list(classes)).fit_transform(label_lists)


def stratified_split(combos: list[str], val: float, test: float, seed: int) -> dict[str, list[int]]:
    """Row indices per split, each label combination spread over the splits
    in proportion (scikit-learn's ``train_test_split``, stratified twice:
    test off the whole, then validation off the rest)."""
    from sklearn.model_selection import train_test_split

    index = list(range(len(combos)))
    try:
        rest, test_idx = train_test_split(index, test_size=test, stratify=combos, random_state=seed)
        train_idx, val_idx = train_test_split(
            rest, test_size=val / (1 - test), stratify=[combos[i] for i in rest], random_state=seed
        )
    except ValueError as e:
        rare = [c for c, n in Counter(combos).items() if n < 2]
        hint = f" (combinations with one image: {', '.join(rare)})" if rare else ""
        raise CLIError(f"cannot stratify the split: {e}{hint}") from None
    return {"train": sorted(train_idx), "val": sorted(val_idx), "test": sorted(test_idx)}


def convert(
    source: str, out: str, images: str | None = None, val: float = 0.13, test: float = 0.13, seed: int = 42
) -> dict:
    """The whole tool; returns what ``dataset.json`` holds."""
    if not (0 < val < 1 and 0 < test < 1 and val + test < 1):
        raise CLIError(f"--val {val} and --test {test}: each in (0, 1), together below 1")
    check_out_dir(out)
    if os.path.isdir(source):
        csv_path = os.path.join(source, "train.csv")
        images = images or os.path.join(source, "train_images")
    else:
        csv_path = source
        images = images or os.path.join(os.path.dirname(source), "train_images")
    if not os.path.isfile(csv_path):
        raise CLIError(f"{csv_path}: no such file (give the Kaggle folder or its train.csv)")
    if not os.path.isdir(images):
        raise CLIError(f"--images {images}: no such folder")
    rows = read_competition_csv(csv_path)
    missing = [name for name, _ in rows if not os.path.isfile(os.path.join(images, name))]
    if missing:
        raise CLIError(f"--images {images}: {len(missing)} images of {csv_path} are not there, e.g. {missing[0]}")
    onehot = one_hot([labels for _, labels in rows])
    combos = [" ".join(sorted(labels)) for _, labels in rows]
    split = stratified_split(combos, val, test, seed)
    os.makedirs(out, exist_ok=True)
    counts = {}
    for name in SPLITS:
        with open(os.path.join(out, f"{name}.csv"), "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["images", *CLASSES])
            for i in split[name]:
                w.writerow([rows[i][0], *(int(v) for v in onehot[i])])
        counts[name] = {
            "images": len(split[name]),
            **{c: int(sum(onehot[i][k] for i in split[name])) for k, c in enumerate(CLASSES)},
        }
    info = {
        "source": os.path.abspath(csv_path),
        "images": os.path.abspath(images),
        "classes": list(CLASSES),
        "combinations": dict(sorted(Counter(combos).items(), key=lambda kv: -kv[1])),
        "fractions": {"train": round(1 - val - test, 6), "val": val, "test": test},
        "seed": seed,
        "counts": counts,
    }
    with open(os.path.join(out, "dataset.json"), "w") as f:
        json.dump(info, f, indent=1)
    return info


def format_counts(info: dict) -> str:
    width = max(len(c) for c in ("class", *info["classes"]))
    lines = [f"{'class':<{width}}  " + "  ".join(f"{s:>6}" for s in SPLITS)]
    for c in ("images", *info["classes"]):
        lines.append(f"{c:<{width}}  " + "  ".join(f"{info['counts'][s][c]:>6}" for s in SPLITS))
    return "\n".join(lines)


def main(argv=None) -> dict:
    ap = CLIParser(prog="python -m hcam_ops.data.plant_pathology", description=__doc__)
    ap.add_argument("source", help="the Kaggle folder (train.csv, train_images/) or a train.csv")
    ap.add_argument("--out", required=True, help="folder for train.csv, val.csv, test.csv, dataset.json")
    ap.add_argument("--images", help="the image folder (default: train_images next to the CSV)")
    ap.add_argument("--val", type=float, default=0.13, help="validation share")
    ap.add_argument("--test", type=float, default=0.13, help="test share")
    ap.add_argument("--seed", type=int, default=42)
    args = ap.parse_args(argv)
    info = convert(args.source, args.out, args.images, args.val, args.test, args.seed)
    print(f"{sum(info['combinations'].values())} images, {len(info['combinations'])} label combinations")
    print(format_counts(info))
    print(f"wrote {', '.join(f'{s}.csv' for s in SPLITS)} and dataset.json to {args.out}")
    return info


if __name__ == "__main__":
    main()
