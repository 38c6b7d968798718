"""The tiny configurations the training and CAM-CLI tests share, small
enough for CPU CI: H-CAST on 64 px images, one block per stage, 24 segment
tokens pooled 16 -> 8 -> 4 -> 2; the multi-label Swin on 64 px images, one
block per stage, 2 x 2 windows; a quick synthetic run."""

TINY_HCAST = [
    "--img-size", "64", "--embed-dim", "48", "--depths", "1,1,1,1", "--num-heads", "4",
    "--num-clusters", "16,8,4,2", "--num-segments", "16", "--max-segments", "24",
]  # fmt: skip
TINY_MULTILABEL = [
    "--img-size", "64",
    "--backbone-kwargs", '{"embed_dim": 24, "depths": [1, 1, 1, 1], "num_heads": [1, 1, 2, 2], "window_size": 2}',
]  # fmt: skip
# 16 generated images in batches of 8, no progress bar, no TensorBoard.
QUICK = ["--synthetic-size", "16", "--batch-size", "8", "--no-progress", "--no-tensorboard"]


def exits_with_one_line(fn, *expected: str) -> str:
    """Runs ``fn``: it must stop with one ``error: ...`` line (a CLIError or
    an argparse usage error, never a traceback) holding every ``expected``
    text; returns the line."""
    import pytest

    with pytest.raises(SystemExit) as info:
        fn()
    message = str(info.value.code)
    assert "\n" not in message and message.startswith("error: "), message
    for text in expected:
        assert text in message, message
    return message
