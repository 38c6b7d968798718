"""The published CUB-200 and FGVC-Aircraft layouts and hierarchies, on small
generated trees, and a tiny training run on each through the CLI."""

import csv

import pytest

pytest.importorskip("timm", reason="the timm package is not installed here")
pytest.importorskip("skimage", reason="the skimage package is not installed here")
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from hcam_ops.train import main  # noqa: E402
from hcam_ops.train.hierarchical import published  # noqa: E402
from hcam_ops.train.hierarchical.data import (  # noqa: E402
    Aircraft,
    WithSegments,
    aircraft_hierarchy,
    cub,
    cub_hierarchy,
    cub_species_folders,
    published_transform,
)

TINY = [
    "--img-size", "64", "--embed-dim", "48", "--depths", "1,1,1,1", "--num-heads", "4",
    "--num-clusters", "8,4,2,1", "--num-segments", "16", "--max-segments", "24",
    "--batch-size", "4", "--epochs", "1", "--no-progress", "--no-tensorboard",
]  # fmt: skip


def _image(path, seed):
    """Blocks of colour (superpixel methods find regions in it, not in noise)."""
    g = torch.Generator().manual_seed(seed)
    blocks = torch.rand(5, 7, 3, generator=g)
    arr = (blocks.repeat_interleave(8, 0).repeat_interleave(8, 1) * 255).byte().numpy()
    Image.fromarray(arr).save(path)


def _cub_tree(root):
    """ROOT/{train,test}/NNN.Name/*.jpg for species 1, 2, 45 and 200."""
    for split, n in (("train", 2), ("test", 1)):
        for folder in (
            "001.Black_footed_Albatross",
            "002.Laysan_Albatross",
            "045.Northern_Fulmar",
            "200.Common_Yellowthroat",
        ):
            d = root / split / folder
            d.mkdir(parents=True)
            for i in range(n):
                _image(d / f"{folder[:3]}_{i}.jpg", hash((split, folder, i)) % 1000)
    return root


def test_cub_layout_and_hierarchy(tmp_path):
    root = _cub_tree(tmp_path / "images_split")
    names = cub_species_folders(str(root))
    assert names == {0: "001.Black_footed_Albatross", 1: "002.Laysan_Albatross", 44: "045.Northern_Fulmar",
                     199: "200.Common_Yellowthroat"}  # fmt: skip
    h = cub_hierarchy(names)
    assert h.num_classes == [200, 38, 13]
    assert h.names[0][44] == "045.Northern_Fulmar" and h.names[0][2] == "003"
    # the published tree: species -> family -> order, ids 1-based in the tables
    for s in range(200):
        f = published.CUB_FAMILY[s] - 1
        assert int(h.parents[0][s]) == f and int(h.parents[1][f]) == published.CUB_ORDER[s] - 1
    fam, order = h.labels(torch.tensor([0, 1, 44]))[1:]
    assert fam.tolist() == [34, 34, 35] and order.tolist() == [11, 11, 11]  # albatrosses and fulmar: one order
    train = cub(str(root), True, 32)
    test = cub(str(root), False, 32)
    assert len(train) == 8 and len(test) == 4
    assert sorted({y for _, y in train.samples}) == [0, 1, 2, 3]  # ImageFolder indices ...
    assert sorted({train.target_transform(y) for _, y in train.samples}) == [0, 1, 44, 199]  # ... to species
    image, label = test[2]
    assert image.shape == (3, 32, 32) and label == 44
    (root / "train" / "not_a_class").mkdir()
    with pytest.raises(ValueError, match="not a CUB class folder"):
        cub_species_folders(str(root))


def _aircraft_tree(root, conflict=False):
    """ROOT/fgvc-aircraft-2013b/data with images and the label files."""
    data = root / "fgvc-aircraft-2013b" / "data"
    (data / "images").mkdir(parents=True)
    rows = {  # image id: (variant, family, manufacturer) as FGVC names them
        "0001": ("A320", "A320", "Airbus"),
        "0002": ("A321", "A320", "Airbus"),
        "0003": ("707-320", "Boeing 707", "Boeing"),
        "0004": ("Tu-154", "Tu-154", "Tupolev"),
    }
    if conflict:
        rows["0002"] = ("A321", "A321 family?", "Airbus")
    for i, img in enumerate(rows):
        _image(data / "images" / f"{img}.jpg", i)
    for kind, col in (("variant", 0), ("family", 1), ("manufacturer", 2)):
        (data / f"images_{kind}_trainval.txt").write_text("".join(f"{k} {v[col]}\n" for k, v in rows.items()))
    (data / "images_variant_test.txt").write_text("0003 707-320\n0001 A320\n")
    return root


def test_aircraft_layout_and_hierarchy(tmp_path):
    root = _aircraft_tree(tmp_path / "air")
    h = aircraft_hierarchy(str(root))
    assert h.num_classes == [100, 70, 30]
    a320 = published.AIRCRAFT_VARIANTS.index("A320")
    fam, maker = (int(t) for t in (h.labels(torch.tensor([a320]))[1][0], h.labels(torch.tensor([a320]))[2][0]))
    assert (h.names[1][fam], h.names[2][maker]) == ("A320", "Airbus")  # named from the dataset's files
    boeing = published.AIRCRAFT_VARIANTS.index("707-320")
    assert h.names[2][int(h.labels(torch.tensor([boeing]))[2][0])] == "Boeing"
    assert h.names[1][int(h.parents[0][published.AIRCRAFT_VARIANTS.index("A340-300")])].startswith("family_")
    assert aircraft_hierarchy().names[2][maker] == f"manufacturer_{maker + 1:02d}"  # no files: ids
    ds = Aircraft(str(root), train=False, transform=published_transform(False, 32))
    assert [y for _, y in ds.samples] == [boeing, a320]
    image, label = ds[1]
    assert image.shape == (3, 32, 32) and label == a320
    with pytest.raises(ValueError, match="images_family_trainval.txt"):
        aircraft_hierarchy(str(_aircraft_tree(tmp_path / "bad", conflict=True)))


def test_segments_follow_the_image_the_model_sees(tmp_path):
    """Normalised items: superpixels of the de-normalised image (published)."""
    calls = []

    def fake_superpixels(image):
        calls.append(image.clone())
        return torch.zeros(image.shape[1:], dtype=torch.long)

    mean, std = torch.tensor([0.5, 0.4, 0.3]).view(3, 1, 1), torch.tensor([0.2, 0.25, 0.3]).view(3, 1, 1)
    raw = torch.rand(3, 8, 8)
    ds = WithSegments(
        [((raw - mean) / std, 7)], fake_superpixels, True, mean.flatten().tolist(), std.flatten().tolist()
    )
    image, seg, y = ds[0]
    torch.testing.assert_close(calls[0], raw)
    torch.testing.assert_close(image, (raw - mean) / std)
    assert y == 7 and seg.shape == (8, 8)


@pytest.mark.parametrize("layout", ["BIRD-HIER-SUPERPIXEL", "aircraft"])  # the published name of "cub"
def test_cli_trains_on_the_published_layouts(layout, tmp_path):
    root = _cub_tree(tmp_path / "cub") if layout != "aircraft" else _aircraft_tree(tmp_path / "air")
    out = tmp_path / "run"
    main(["hierarchical", *TINY, "--data-set", layout, "--data-path", str(root), "--out", str(out), "--globalkl"])
    rows = list(csv.DictReader(open(out / "predictions.csv")))
    assert len(rows) == (4 if layout != "aircraft" else 2)
    want = ["200", "38", "13"] if layout != "aircraft" else ["100", "70", "30"]
    ckpt = torch.load(out / "last.pth", weights_only=True)
    assert [str(n) for n in ckpt["model_config"]["num_classes"]] == want
    if layout == "aircraft":
        assert {r["l2_true_name"] for r in rows} == {"Airbus", "Boeing"}
