"""Mixed precision: the functional ops promote mixed float inputs (bfloat16 or
float16 features from autocast, a float32 head weight or teacher) to their
common dtype before the kernel, as torch's type promotion does, with or
without autocast. The same kernel then runs on the same values as a call
with every input cast up front, so results and gradients match exactly."""

import pytest
import torch
from conftest import DEVICES, randint, randn

import hcam_ops
from hcam_ops.ops import _checks

# (low, high): the dtype of the features-like inputs and of the weight-like
# inputs. The first two are what autocast produces with float32 parameters.
PAIRS = [
    (torch.bfloat16, torch.float32),
    (torch.float16, torch.float32),
    (torch.float16, torch.bfloat16),
    (torch.float32, torch.float64),
]
FGD_TERMS = dict(fg_weight=0.7, bg_weight=0.4, attention_weight=0.3, channel_weight=0.9, spatial_weight=1.3)


def _fgd_masks(B, H, W, gen, device):
    fg = torch.rand(B, H, W, generator=gen) * (torch.rand(B, H, W, generator=gen) < 0.4)
    bg = (fg == 0).float() / (fg == 0).float().sum((1, 2), keepdim=True).clamp_min(1)
    return fg.to(device), bg.to(device)


# Each case: (float inputs: name -> (shape, "low"/"high", gets a gradient), call).
def _case(name, gen, device):
    if name == "cam_gather":
        idx = randint(4, (3, 2), gen, device)
        return {"features": ((3, 7, 5), "low", True), "weight": ((4, 5), "high", True)}, (
            lambda features, weight: hcam_ops.cam_gather(features, weight, idx)
        )
    if name == "cam_gather_conv_map":
        idx = randint(4, (3,), gen, device)
        return {"features": ((3, 5, 3, 3), "low", True), "weight": ((4, 5, 1, 1), "high", True)}, (
            lambda features, weight: hcam_ops.cam_gather(features, weight, idx)
        )
    if name == "cam_kl_loss":
        fi, ci = randint(5, (3,), gen, device), randint(2, (3,), gen, device)
        return {
            "features": ((3, 7, 5), "low", True),
            "fine": ((5, 5), "high", True),
            "coarse": ((2, 5), "high", False),
        }, (lambda features, fine, coarse: hcam_ops.cam_kl_loss(features, fine, coarse, fi, ci, temperature=0.7))
    if name == "hierarchical_cam_kl_loss":
        idx = [randint(K, (3,), gen, device) for K in (7, 5, 2)]
        return {
            "features": ((3, 5, 3, 3), "low", True),
            "w0": ((7, 5), "high", True),
            "w1": ((5, 5), "low", True),
            "w2": ((2, 5), "high", False),
        }, (
            lambda features, w0, w1, w2: hcam_ops.hierarchical_cam_kl_loss(
                features, [w0, w1, w2], idx, reduction="none"
            )
        )
    if name == "softmax_kl":
        return {"p_logits": ((3, 7), "low", True), "q_logits": ((3, 7), "high", True)}, (
            lambda p_logits, q_logits: hcam_ops.softmax_kl(p_logits, q_logits, temperature=2.0)
        )
    if name.startswith("multilabel_arcface_loss"):
        reduction = name.rsplit("_", 1)[1]
        y = (torch.rand(3, 5, generator=gen) < 0.4).float().to(device)
        return {"features": ((3, 7), "low", True), "weight": ((5, 7), "high", True)}, (
            lambda features, weight: hcam_ops.multilabel_arcface_loss(features, weight, y, reduction=reduction)
        )
    if name == "arcface_logits":
        return {"features": ((3, 7), "low", True), "weight": ((5, 7), "high", True)}, (
            lambda features, weight: hcam_ops.arcface_logits(features, weight, 16.0)
        )
    if name == "fgd_loss":
        fg, bg = _fgd_masks(2, 5, 3, gen, device)
        return {"student": ((2, 3, 5, 3), "low", True), "teacher": ((2, 3, 5, 3), "high", False)}, (
            lambda student, teacher: hcam_ops.fgd_loss(
                student, teacher, fg, bg, spatial_attention="student_mix", fp_mask=bg, fp_weight=0.6, **FGD_TERMS
            )
        )
    raise ValueError(name)


CASES = [
    "cam_gather",
    "cam_gather_conv_map",
    "cam_kl_loss",
    "hierarchical_cam_kl_loss",
    "softmax_kl",
    "multilabel_arcface_loss_mean",
    "multilabel_arcface_loss_none",
    "arcface_logits",
    "fgd_loss",
]


def _outputs(out):
    if isinstance(out, dict):
        return list(out.values())
    return list(out) if isinstance(out, (tuple, list)) else [out]


def _make(spec, low, high, gen, device):
    return {
        k: randn(*shape, gen=gen, dtype=low if role == "low" else high, device=device, requires_grad=rg)
        for k, (shape, role, rg) in spec.items()
    }


def _run(call, inputs, gen):
    """The outputs and the gradients of a random weighting of them."""
    outs = _outputs(call(**inputs))
    g = [torch.rand(o.shape, generator=gen, dtype=torch.float64).add_(0.5).to(o.device, o.dtype) for o in outs]
    total = sum((o * w).sum() for o, w in zip(outs, g))
    wrt = [v for v in inputs.values() if v.requires_grad]
    return outs, torch.autograd.grad(total, wrt)


def _assert_same_as_cast_up_front(name, low, high, device, gen, run=None):
    spec, call = _case(name, gen, device)
    inputs = _make(spec, low, high, gen, device)
    common = torch.promote_types(low, high)
    cast = {k: v.detach().to(common).requires_grad_(v.requires_grad) for k, v in inputs.items()}
    outs, grads = (run or _run)(call, inputs, torch.Generator().manual_seed(99))
    want_outs, want_grads = _run(call, cast, torch.Generator().manual_seed(99))
    for o, w in zip(outs, want_outs, strict=True):
        assert o.dtype == common, f"{name}: output is {o.dtype}, want {common}"
        assert torch.equal(o, w), f"{name}: output differs from the call with inputs cast to {common}"
    wrt = [v for v in inputs.values() if v.requires_grad]
    for x, gx, gw in zip(wrt, grads, want_grads, strict=True):
        assert gx.dtype == x.dtype, f"{name}: gradient is {gx.dtype}, input {x.dtype}"
        assert torch.equal(gx, gw.to(x.dtype)), f"{name}: gradient differs from the cast-up-front one"


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("low, high", PAIRS, ids=lambda d: str(d).replace("torch.", ""))
@pytest.mark.parametrize("name", CASES)
def test_mixed_dtypes_match_casting_up_front(name, low, high, device, gen):
    _assert_same_as_cast_up_front(name, low, high, device, gen)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", [c for c in CASES if c != "arcface_logits"])
def test_mixed_dtypes_under_autocast(name, device, gen):
    """The kernels are not autocast ops: inside autocast the result is the same
    float32 one as outside."""
    low = torch.float16 if device == "cuda" else torch.bfloat16

    def run(call, inputs, g):
        with torch.autocast(device, dtype=low):
            return _run(call, inputs, g)

    _assert_same_as_cast_up_front(name, low, torch.float32, device, gen, run=run)


@pytest.mark.parametrize("device", DEVICES)
def test_arcface_logits_under_autocast(device, gen):
    """arcface_logits is plain torch: after the promotion, its F.linear follows
    autocast like any torch layer."""
    low = torch.float16 if device == "cuda" else torch.bfloat16
    f = randn(3, 7, gen=gen, dtype=low, device=device, requires_grad=True)
    w = randn(5, 7, gen=gen, dtype=torch.float32, device=device, requires_grad=True)
    with torch.autocast(device, dtype=low):
        got = hcam_ops.arcface_logits(f, w)
        want = hcam_ops.arcface_logits(f.detach().float(), w.detach())
    assert got.dtype == want.dtype == low and torch.equal(got, want)
    gf, gw = torch.autograd.grad(got.float().sum(), [f, w])
    assert gf.dtype == low and gw.dtype == torch.float32


@pytest.mark.parametrize("device", DEVICES)
def test_autocast_layer_outputs_and_fp32_parameters(device, gen):
    """The realistic case: tokens and maps out of nn.Linear / nn.Conv2d under
    autocast (low precision) against heads whose weights are float32
    parameters; each loss is float32 and every parameter's gradient float32."""
    torch.manual_seed(0)
    low = torch.float16 if device == "cuda" else torch.bfloat16
    embed = torch.nn.Linear(6, 5).to(device)
    conv = torch.nn.Conv2d(6, 5, 3, padding=1).to(device)
    fine, coarse = torch.nn.Linear(5, 7, bias=False).to(device), torch.nn.Linear(5, 3, bias=False).to(device)
    x = randn(3, 9, 6, gen=gen, dtype=torch.float32, device=device)
    img = randn(3, 6, 5, 3, gen=gen, dtype=torch.float32, device=device)
    teacher = randn(3, 5, 5, 3, gen=gen, dtype=torch.float32, device=device)
    teacher_logits = randn(3, 7, gen=gen, dtype=torch.float32, device=device)
    fg, bg = _fgd_masks(3, 5, 3, gen, device)
    fi, ci = randint(7, (3,), gen, device), randint(3, (3,), gen, device)
    y = (torch.rand(3, 7, generator=gen) < 0.4).float().to(device)
    wf, wc = fine.weight, coarse.weight

    def losses(tokens, pooled, logits, student):
        return {
            "cam_kl_loss": hcam_ops.cam_kl_loss(tokens, wf, wc, fi, ci),
            "hierarchical_cam_kl_loss": hcam_ops.hierarchical_cam_kl_loss(tokens, [wf, wc], [fi, ci], 0.5),
            "cam_gather": hcam_ops.cam_gather(tokens, wf, fi).square().mean(),
            "multilabel_arcface_loss": hcam_ops.multilabel_arcface_loss(pooled, wf, y),
            "softmax_kl": hcam_ops.softmax_kl(logits, teacher_logits),
            "fgd_loss": sum(hcam_ops.fgd_loss(student, teacher, fg, bg, **FGD_TERMS).values()),
        }

    with torch.autocast(device, dtype=low):
        tokens = embed(x)
        pooled = tokens.mean(1)
        logits = fine(pooled)
        student = conv(img)
        assert tokens.dtype == logits.dtype == student.dtype == low and wf.dtype == torch.float32
        got = losses(tokens, pooled, logits, student)
    params = [embed.weight, conv.weight, wf]
    for name, loss in got.items():
        assert loss.dtype == torch.float32, name
        grads = torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)
        used = [g for g in grads if g is not None]
        assert used and all(g.dtype == torch.float32 for g in used), name
        if name.startswith(("cam_", "hierarchical", "multilabel")):
            assert grads[2] is not None, f"{name}: no gradient for the float32 head weight"

    # The same losses outside autocast on the same values cast up front.
    cast = [t.detach().float() for t in (tokens, pooled, logits, student)]
    want = losses(*cast)
    for name in got:
        assert torch.equal(got[name].detach(), want[name].detach()), name


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda f, w, i: hcam_ops.cam_gather(f, w.long(), i), "cam_gather: weight must be float16"),
        (lambda f, w, i: hcam_ops.cam_gather(f.long(), w, i), "cam_gather: features must be float16"),
        (lambda f, w, i: hcam_ops.cam_kl_loss(f, w, w.int(), i, i), "cam_kl_loss: coarse_weight must be float16"),
        (lambda f, w, i: hcam_ops.softmax_kl(f[:, 0], w[:3].long()), "q_logits must be float16"),
        (
            lambda f, w, i: hcam_ops.multilabel_arcface_loss(f[:, 0], w.long(), torch.ones(3, 5)),
            "weight must be float16",
        ),
        (lambda f, w, i: hcam_ops.arcface_logits(f[:, 0], w.long()), "arcface_logits: weight must be float16"),
        (lambda f, w, i: hcam_ops.arcface_logits(f[:, 0].int(), w), "arcface_logits: features must be float16"),
        (
            lambda f, w, i: hcam_ops.fgd_loss(
                f[..., None], f[..., None].long(), f[:, 0, :, None].abs(), f[:, 0, :, None].abs()
            ),
            "teacher must be float16",
        ),
    ],
)
def test_non_float_input_raises(call, match, gen):
    f = randn(3, 4, 7, gen=gen, dtype=torch.bfloat16, device="cpu")
    w = randn(5, 7, gen=gen, dtype=torch.float32, device="cpu")
    with pytest.raises(TypeError, match=match):
        call(f, w, torch.tensor([0, 4, 2]))


def test_promote_floats_rule():
    a = torch.randn(2, 3).bfloat16()
    b = torch.randn(2, 3).half()
    c = torch.randn(4)
    same = _checks.promote_floats("op", {"a": a, "a2": a.clone()})
    assert same[0] is a  # no copy when the dtypes agree
    out = _checks.promote_floats("op", {"a": a, "b": b})
    assert [t.dtype for t in out] == [torch.float32, torch.float32]  # as torch.promote_types
    out = _checks.promote_floats("op", {"a": a, "c": c})
    assert out[1] is c and out[0].dtype == torch.float32 and torch.equal(out[0], a.float())
    with pytest.raises(TypeError, match="op: idx must be float16"):
        _checks.promote_floats("op", {"a": a, "idx": torch.tensor([1])})


@pytest.mark.compile
@pytest.mark.parametrize("device", DEVICES)
def test_compile_fullgraph_mixed(device, gen):
    x = randn(3, 5, 3, 3, gen=gen, dtype=torch.bfloat16, device=device, requires_grad=True)
    wf = randn(5, 5, gen=gen, dtype=torch.float32, device=device, requires_grad=True)
    wc = randn(2, 5, gen=gen, dtype=torch.float32, device=device)
    fi, ci = randint(5, (3,), gen, device), randint(2, (3,), gen, device)
    f = randn(3, 5, gen=gen, dtype=torch.float16, device=device, requires_grad=True)
    y = (torch.rand(3, 5, generator=gen) < 0.4).float().to(device)

    def step(x, f, wf, wc):
        return hcam_ops.cam_kl_loss(x, wf, wc, fi, ci) + hcam_ops.multilabel_arcface_loss(f, wf, y)

    torch._dynamo.reset()
    loss = torch.compile(step, fullgraph=True)(x, f, wf, wc)
    eager = step(x, f, wf, wc)
    assert loss.dtype == eager.dtype == torch.float32
    torch.testing.assert_close(loss, eager)
    wrt = [x, f, wf]
    for a, b in zip(torch.autograd.grad(loss, wrt), torch.autograd.grad(eager, wrt)):
        assert a.dtype == b.dtype
        torch.testing.assert_close(a, b)
