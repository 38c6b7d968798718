"""Checks every multi-label model of the Plant Pathology 2021 report passes
(python_tests/test_arc_psa_swin.py, test_efficientnet.py, test_eva_clip.py):
its faces, two training steps, and overfitting a handful of images
(``faces_then_training`` and ``fits_a_handful`` run them in the tests' order)."""

from __future__ import annotations

import contextlib

import pytest
import torch

from hcam_ops.train.multilabel.data import SyntheticMultiLabel


def handful(n: int = 6, size: int = 64, classes: int = 6, seed: int = 3):
    """``n`` synthetic images (coloured blobs per class) and their labels."""
    data = SyntheticMultiLabel(classes, size, n, seed, train=False)
    x = torch.stack([data[i][0] for i in range(n)])
    return x, data.labels.clone()


def check_faces(model, x, y):
    """``model(x, labels) -> (loss, logits)``, ``predict`` = sigmoid of the
    margin-free ``logits``, timm's ``forward_features`` / ``forward_head``,
    ``pretrained_cfg`` and ``reset_classifier``. Returns ``model(x)``."""
    model.eval()
    K = y.shape[1]
    out = model(x)
    loss, logits = model(x, y)
    assert loss.dim() == 0 and torch.isfinite(loss)
    assert logits.shape == (x.shape[0], K)
    probs = model.predict(x)
    assert probs.shape == (x.shape[0], K) and ((probs >= 0) & (probs <= 1)).all()
    torch.testing.assert_close(probs, torch.sigmoid(model.logits(x).float()))
    torch.testing.assert_close(model.forward_head(model.forward_features(x)), model.logits(x))
    cfg = model.pretrained_cfg
    assert cfg["num_classes"] == 6 and cfg["input_size"] == (3, x.shape[2], x.shape[3])
    assert not cfg.get("hf_hub_id") and not cfg.get("url")  # no weights to fetch, ever
    assert model.get_classifier() is not None
    return out


def check_reset_classifier(model, x):
    model.reset_classifier(3)
    model.eval()
    assert model.predict(x).shape == (x.shape[0], 3)
    loss, logits = model(x, torch.ones(x.shape[0], 3))
    assert logits.shape == (x.shape[0], 3) and torch.isfinite(loss)


def two_steps(model, x, y, lr: float = 1e-3) -> list[float]:
    """Two Adam steps; every trainable parameter gets a gradient and the
    weights move."""
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    before = [p.detach().clone() for p in model.parameters()]
    losses = []
    for _ in range(2):
        loss, _ = model(x, y)
        opt.zero_grad()
        loss.backward()
        missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
        assert not missing, f"no gradient for {missing[:3]}"
        opt.step()
        losses.append(float(loss.detach()))
    assert all(torch.isfinite(torch.tensor(losses)))
    assert any(not torch.equal(a, p) for a, p in zip(before, model.parameters()))
    return losses


def overfit(model, x, y, lr: float = 2e-3, max_steps: int = 150, check_every: int = 5) -> int:
    """Trains on ``(x, y)`` until every label of every image is predicted
    right at 0.5 in eval mode (BatchNorm statistics included); returns the
    steps it took, fails after ``max_steps``."""
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    first = None
    for step in range(1, max_steps + 1):
        model.train()
        loss, _ = model(x, y)
        first = float(loss.detach()) if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % check_every == 0:
            model.eval()
            with torch.no_grad():
                right = ((model.predict(x) > 0.5).float() == y).all()
                now = float(model(x, y)[0])
            if right and now < first:
                return step
    raise AssertionError(f"{type(model).__name__} did not fit {len(x)} images in {max_steps} steps")


@contextlib.contextmanager
def faces_then_training(model, n: int = 4):
    """``check_faces`` on ``handful(n)``; yields ``(x, y, model(x))`` for the
    test's own checks of the untrained model, then ``two_steps`` and
    ``check_reset_classifier``."""
    x, y = handful(n)
    out = check_faces(model, x, y)
    yield x, y, out
    two_steps(model, x, y)
    check_reset_classifier(model, x)


def fits_a_handful(model, **kw) -> None:
    """``overfit`` on ``handful(4)`` within its 150 steps."""
    x, y = handful(4)
    assert overfit(model, x, y, **kw) <= 150


@pytest.fixture(autouse=True)
def flush_denormals():
    """Untrained EfficientNets in eval mode (BatchNorm at its initial
    statistics) shrink activations to denormal floats, which x86 CPUs compute
    about ten times slower; flushing them to zero changes nothing these tests
    check. Imported by the test modules that run such models."""
    torch.set_flush_denormal(True)
    yield
    torch.set_flush_denormal(False)
