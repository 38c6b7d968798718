"""The tiny H-CAST configuration the training and CAM-CLI tests share: 64 px
images, one block per stage, 24 segment tokens pooled 16 -> 8 -> 4 -> 2;
small enough for CPU CI."""

TINY_HCAST = [
    "--img-size", "64", "--embed-dim", "48", "--depths", "1,1,1,1", "--num-heads", "4",
    "--num-clusters", "16,8,4,2", "--num-segments", "16", "--max-segments", "24",
]  # fmt: skip
