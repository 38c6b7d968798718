"""hcam_ops.cam.methods, the one registry of CAM methods (the classifier and
the detector tools resolve names through it), and the CAM layer each of our
timm models declares in its pretrained_cfg (what default_target_layer picks)."""

import pytest

pgc = pytest.importorskip("pytorch_grad_cam", reason="the grad-cam package is not installed here")
pytest.importorskip("timm", reason="the timm package is not installed here")
import timm  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

import hcam_ops.models  # noqa: E402,F401
from hcam_ops import cam  # noqa: E402
from hcam_ops.cam import detection  # noqa: E402
from hcam_ops.cam.classifier import (  # noqa: E402
    GENERIC_CAM_LAYER,
    default_target_layer,
    module_at,
    swin_reshape_transform,
)
from hcam_ops.cam.methods import (  # noqa: E402
    ALIASES,
    DETECTOR_METHODS,
    GRADIENT_FREE_METHODS,
    GRADIENT_METHODS,
    METHODS,
    FeatmapAM,
    SignedEigenCAM,
    cam_methods,
    normalise,
)

# -- the registry ----------------------------------------------------------------------

# Every spelling that worked before the registries were one: the classifier's
# exact names, the detector's normalised names and aliases, and class names.
SPELLINGS = {
    "gradcam": "GradCAM",
    "GradCAM": "GradCAM",
    "grad-cam": "GradCAM",
    "gradcam++": "GradCAMPlusPlus",
    "grad-cam++": "GradCAMPlusPlus",
    "GradCAMPlusPlus": "GradCAMPlusPlus",
    "gradcamplusplus": "GradCAMPlusPlus",
    "gradcampp": "GradCAMPlusPlus",
    "hirescam": "HiResCAM",
    "scorecam": "ScoreCAM",
    "xgradcam": "XGradCAM",
    "ablationcam": "AblationCAM",
    "ablation_cam": "AblationCAM",
    "eigencam": "EigenCAM",
    "EigenCAM": "EigenCAM",
    "eigengradcam": "EigenGradCAM",
    "layercam": "LayerCAM",
    "gradcamelementwise": "GradCAMElementWise",
    "kpcacam": "KPCA_CAM",
    "KPCA_CAM": "KPCA_CAM",
    "shapleycam": "ShapleyCAM",
}


@pytest.mark.parametrize("spelling, class_name", SPELLINGS.items())
def test_each_name_resolves_to_its_pytorch_grad_cam_class(spelling, class_name):
    if not hasattr(pgc, class_name):
        pytest.skip(f"this pytorch-grad-cam has no {class_name}")
    assert METHODS[normalise(spelling)] is getattr(pgc, class_name)


@pytest.mark.parametrize("spelling", ["signedeigencam", "SignedEigenCAM", "signed_eigen_cam"])
def test_signed_eigencam_names(spelling):
    assert METHODS[normalise(spelling)] is SignedEigenCAM


@pytest.mark.parametrize("spelling", ["featmapam", "featmap_am", "FeatmapAM", "featmap-am"])
def test_featmapam_names(spelling):
    assert METHODS[normalise(spelling)] is FeatmapAM


def test_every_class_name_and_alias_resolves_to_a_key():
    for key, cls in METHODS.items():
        assert normalise(key) == key
        assert METHODS[normalise(cls.__name__)] is cls
    for alias, key in ALIASES.items():
        assert alias not in METHODS and key in METHODS
    assert cam_methods() == sorted(METHODS)
    assert {"gradcam", "gradcam++", "scorecam", "eigencam", "layercam", "featmapam", "signedeigencam"} <= set(METHODS)


def test_the_detector_tools_use_the_registry():
    assert list(DETECTOR_METHODS) == [
        "gradcam",
        "gradcam++",
        "xgradcam",
        "eigengradcam",
        "eigencam",
        "ablationcam",
        "featmapam",
    ]
    assert DETECTOR_METHODS == {**GRADIENT_METHODS, **GRADIENT_FREE_METHODS}
    # The detectors' eigencam is the sign-corrected one; every other entry
    # is the registry's class of that name.
    assert DETECTOR_METHODS["eigencam"] is SignedEigenCAM is METHODS["signedeigencam"]
    assert METHODS["eigencam"] is pgc.EigenCAM
    assert all(DETECTOR_METHODS[k] is METHODS[k] for k in DETECTOR_METHODS if k != "eigencam")
    assert detection.METHODS is DETECTOR_METHODS and detection.FeatmapAM is FeatmapAM
    assert detection.GRADIENT_METHODS is GRADIENT_METHODS
    assert detection.GRADIENT_FREE_METHODS is GRADIENT_FREE_METHODS
    for spelling in ("GradCAM", "grad-cam++", "GradCAMPlusPlus", "gradcampp", "EigenCAM", "featmap_am"):
        assert detection.canonical_method(spelling) == normalise(spelling)
    with pytest.raises(detection.DetCAMInputError, match=r"^method: unknown method 'scorecam'; choose one of"):
        detection.canonical_method("scorecam")
    with pytest.raises(detection.DetCAMInputError, match=r"^method: expected a name, got int"):
        detection.canonical_method(3)


def test_package_names():
    for name in ("CosineLogits", "class_cams", "swin_reshape_transform", "gap_cam", "attention_rollout", "overlay"):
        assert hasattr(cam, name)


# -- each model's declared CAM layer ---------------------------------------------------

SWIN = {"embed_dim": 24, "depths": [1, 1, 1, 1], "num_heads": [1, 1, 2, 2]}
EVA = {"patch_size": 16, "embed_dim": 48, "depth": 2, "num_heads": 2}
EFF = {"channel_multiplier": 0.5, "depth_multiplier": 0.25}

# model name -> (cam_layer, cam_reshape, cam_neck_layer)
DECLARED = {
    **{
        name: ("backbone.layers.-1.blocks.-1", "nhwc", ("feature_module.relu2", "feature_module.expand"))
        for name in ("arc_psa_swin_tiny", "arc_psa_swin_base", "arc_psa_swin_base_384", "arc_psa_swinv2_base_384")
    },
    "swin_focal_tiny": ("backbone.layers.-1.blocks.-1", "nhwc", None),
    "efficientnet_b0_bce": ("conv_head", None, None),
    "efficientnet_b0_g16_bce": ("conv_head", None, None),
    "eva_clip_bce": ("base_model.blocks.-1.norm1", "tokens", None),
    "eva_clip_stn_bce": ("base_model.blocks.-1.norm1", "tokens", None),
}


@pytest.mark.parametrize("name", DECLARED)
def test_each_model_declares_its_cam_layer(name):
    cfg = timm.models.get_pretrained_cfg(name).to_dict()
    assert (cfg["cam_layer"], cfg.get("cam_reshape"), cfg.get("cam_neck_layer")) == DECLARED[name]


def _tiny(name, **kw):
    extra = {"arc": SWIN, "swi": SWIN, "eff": EFF, "eva": EVA}[name[:3]]
    return timm.create_model(name, img_size=64, backbone_kwargs=extra, **kw)


@pytest.mark.parametrize(
    "name, expected",
    [
        ("arc_psa_swin_tiny", lambda m: m.backbone.layers[-1].blocks[-1]),
        ("swin_focal_tiny", lambda m: m.backbone.layers[-1].blocks[-1]),
        ("efficientnet_b0_bce", lambda m: m.conv_head),
        ("eva_clip_stn_bce", lambda m: m.base_model.blocks[-1].norm1),
    ],
)
def test_default_target_layer_is_the_declared_layer(name, expected):
    torch.manual_seed(0)
    model = _tiny(name)
    assert model.pretrained_cfg["cam_layer"] == DECLARED[name][0]
    layer, reshape = default_target_layer(model)
    assert layer is module_at(model, model.pretrained_cfg["cam_layer"]) is expected(model)
    x = torch.randn(2, 3, 64, 64)
    seen = []
    handle = layer.register_forward_hook(lambda mod, inp, out: seen.append(out))
    with torch.no_grad():
        model.logits(x)
    handle.remove()
    fmap = seen[0] if reshape is None else reshape(seen[0])
    assert fmap.dim() == 4 and fmap.shape[0] == 2  # NCHW, what Grad-CAM weights
    if name.startswith("eva"):
        tower = model.base_model
        assert fmap.shape[2:] == tower.patch_embed.grid_size and fmap.shape[1] == tower.num_features
    if DECLARED[name][1] == "nhwc":
        assert reshape is swin_reshape_transform


@pytest.mark.parametrize("neck, attr", [("psan", "relu2"), ("compact", "expand")])
def test_neck_layer_of_both_feature_modules(neck, attr):
    model = _tiny("arc_psa_swin_tiny", neck=neck)
    layer, reshape = default_target_layer(model, "neck")
    assert layer is getattr(model.feature_module, attr) and reshape is None


def test_models_without_a_neck_refuse_the_neck_target():
    model = _tiny("efficientnet_b0_bce")
    with pytest.raises(ValueError, match="target 'neck' needs a model whose pretrained_cfg has a cam_neck_layer"):
        default_target_layer(model, "neck")
    with pytest.raises(ValueError, match="target must be 'report' or 'neck'"):
        default_target_layer(model, "head")


def test_a_pretrained_cfg_overlay_moves_the_cam_layer():
    """The layer is the cfg's, as timm's first_conv: an overlay changes it."""
    model = _tiny("efficientnet_b0_bce", pretrained_cfg_overlay={"cam_layer": "blocks.-1"})
    assert default_target_layer(model)[0] is model.blocks[-1]


class _Backbone(nn.Module):
    def __init__(self, layers: bool):
        super().__init__()
        if layers:
            self.layers = nn.ModuleList([nn.Module(), nn.Module()])
            self.layers[-1].blocks = nn.Sequential(nn.Identity(), nn.Identity())
        self.norm = nn.LayerNorm(4)


class _Undeclared(nn.Module):
    def __init__(self, layers: bool):
        super().__init__()
        self.backbone = _Backbone(layers)


def test_models_that_declare_nothing_get_the_generic_rule():
    assert GENERIC_CAM_LAYER == ("backbone.layers.-1.blocks.-1", "backbone.norm")
    with_layers, without = _Undeclared(True), _Undeclared(False)
    assert default_target_layer(with_layers) == (with_layers.backbone.layers[-1].blocks[-1], swin_reshape_transform)
    assert default_target_layer(without) == (without.backbone.norm, swin_reshape_transform)
    with pytest.raises(ValueError, match="Linear has no module at"):
        default_target_layer(nn.Linear(2, 2))


def test_module_at():
    seq = nn.Sequential(nn.Linear(1, 1), nn.Sequential(nn.ReLU(), nn.Tanh()))
    assert module_at(seq, "1.-1") is seq[1][1] and module_at(seq, "0") is seq[0]
    assert module_at(seq, "2") is None and module_at(seq, "-3") is None
    assert module_at(seq, "0.weight") is None and module_at(seq, "0.nothing") is None


def test_class_cams_accepts_every_spelling_of_a_name(gen):
    torch.manual_seed(0)
    model = _tiny("efficientnet_b0_bce")
    x = torch.randn(1, 3, 64, 64, generator=gen)
    want = cam.class_cams(model, x, classes=[0, 2], method="gradcam++")
    for spelling in ("GradCAMPlusPlus", "grad-cam++", "gradcampp"):
        torch.testing.assert_close(cam.class_cams(model, x, classes=[0, 2], method=spelling), want)
    for method in ("featmapam", "signedeigencam"):  # ours work on classifiers too
        maps = cam.class_cams(model, x, classes=[1], method=method)
        assert maps.shape == (1, 1, 64, 64) and maps.min() >= 0 and maps.max() <= 1
    with pytest.raises(ValueError, match=r"class_cams: method must be one of \["):
        cam.class_cams(model, x, method=None)
