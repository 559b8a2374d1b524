"""The inflated 3D network on the structures of real nnU-Net 3D plans: it builds, its deep-supervision outputs
have the plan's scales (highest resolution first), its state-dict keys do not depend on the DS flag, and
ImageNet weights load strictly for every encoder normalisation.

Forward passes use the plans' strides and kernels with patch sizes scaled down for these CPUs (thin z kept as
it is); the thin ACDC-like plan also runs at its real size.
"""
import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings, strategies as st

from nnunetv2_xdim.backbones.norms import NORMS
from nnunetv2_xdim.backbones.weights import load_pretrained_backbone
from nnunetv2_xdim.networks.inflated import InflatedUNetEncoder
from nnunetv2_xdim.networks.plan import PlanArch, XDimArch
from nnunetv2_xdim.networks.unet import build_network
from nnunetv2_xdim.transfer import RULES, UnsupportedBackboneError
from nnunetv2_xdim.trainers import BACKBONE_TRAINERS, SCRATCH_TRAINERS, nnUNetTrainerXDim
from plans_util import managers

IN_PLANE = [[1, 2, 2]]
# real nnU-Net 3d_fullres structures: patch, strides, kernels, input channels (cascade: + one-hot classes)
REAL_PLANS = {
    "BraTS-like isotropic": dict(patch=[128, 128, 128], channels=4, strides=[[1, 1, 1]] + [[2, 2, 2]] * 5,
                                 kernels=[[3, 3, 3]] * 6),
    "ACDC-like thin z": dict(patch=[10, 256, 224], channels=1, strides=[[1, 1, 1]] + IN_PLANE * 5,
                             kernels=[[1, 3, 3]] * 3 + [[3, 3, 3]] * 3),
    "abdominal CT": dict(patch=[56, 192, 160], channels=1,
                         strides=[[1, 1, 1], [1, 2, 2], [2, 2, 2], [2, 2, 2], [2, 2, 2], [1, 2, 2]],
                         kernels=[[1, 3, 3]] + [[3, 3, 3]] * 5),
    "ACDC-like cascade": dict(patch=[20, 256, 224], channels=1 + 4,
                              strides=[[1, 1, 1], [1, 2, 2], [2, 2, 2], [2, 2, 2], [1, 2, 2], [1, 2, 2]],
                              kernels=[[1, 3, 3], [1, 3, 3]] + [[3, 3, 3]] * 4),
}


def expected_scales(patch, strides):
    red = np.cumprod(np.array(strides), axis=0)
    return [tuple(int(p // r) for p, r in zip(patch, rr)) for rr in red[:-1]]


def scaled_patch(patch, strides):
    """Thin axes (20 voxels or fewer) as they are; others the smallest multiple of the stride product that
    leaves a bottleneck of 2 voxels in-plane and 1 along z (instance norm needs more than one voxel)."""
    prod = np.prod(np.array(strides), axis=0)
    return [p if p <= 20 else int(s) * (1 if axis == 0 else 2) for axis, (p, s) in enumerate(zip(patch, prod))]


def check_network(arch, patch, strides, kernels, channels, n_classes=3, both_forward=True):
    pm, cm = managers(patch, strides, kernels=kernels)
    plan = PlanArch.from_configuration(cm)
    net = build_network(arch, plan, channels, n_classes, deep_supervision=True)
    net_nods = build_network(arch, plan, channels, n_classes, deep_supervision=False)
    assert net.state_dict().keys() == net_nods.state_dict().keys()
    net_nods.load_state_dict(net.state_dict(), strict=True)  # what nnU-Net's predictor does
    x = torch.randn(1, channels, *patch)
    with torch.no_grad():
        out = net.eval()(x)
    assert isinstance(out, list) and len(out) == len(strides) - 1
    assert [tuple(o.shape[2:]) for o in out] == expected_scales(patch, strides)
    assert all(o.shape[:2] == (1, n_classes) for o in out)
    if both_forward:
        with torch.no_grad():
            single = net_nods.eval()(x)
        assert torch.is_tensor(single) and tuple(single.shape) == (1, n_classes, *patch)
        assert torch.allclose(single, out[0], atol=1e-5)  # same weights: the DS flag only adds outputs
    return net


@pytest.mark.parametrize("name", REAL_PLANS)
def test_real_plan_structures_scaled_down(name):
    spec = REAL_PLANS[name]
    patch = scaled_patch(spec["patch"], spec["strides"])
    check_network(XDimArch(backbone="resnet18"), patch, spec["strides"], spec["kernels"], spec["channels"])


def test_thin_plan_at_real_size():
    spec = REAL_PLANS["ACDC-like thin z"]
    net = check_network(XDimArch(backbone="tf_efficientnet_lite0"), spec["patch"], spec["strides"],
                        spec["kernels"], spec["channels"], both_forward=False)
    # in-plane plan stages keep the pretrained 2D kernels as they are; stages whose kernels span z get depth
    assert net.encoder.depth_kernels == [1, 1, 3, 3, 3]
    assert net.encoder.backbone.conv_stem.weight.shape[2] == 1
    assert net.encoder.backbone.blocks[2][0].conv_dw.weight.shape[2] == 3


@st.composite
def plans_3d(draw):
    """nnU-Net-like 3D plans: in-plane-only stages ([1,3,3] kernels, [1,2,2] strides) while z is coarse, then
    stages that also pool z, then in-plane-only strides again once z is used up; sometimes one in-plane axis
    stops early (unequal in-plane strides)."""
    n = draw(st.integers(4, 7))
    in_plane_first = draw(st.integers(0, n - 1))
    z_pools = draw(st.integers(0, min(3, n - 1 - in_plane_first)))
    strides, kernels = [[1, 1, 1]], [[1, 3, 3] if in_plane_first else [3, 3, 3]]
    for s in range(1, n):
        z = 2 if in_plane_first < s <= in_plane_first + z_pools else 1
        strides.append([z, 2, 2])
        kernels.append([1, 3, 3] if s <= in_plane_first else [3, 3, 3])
    if draw(st.booleans()):
        strides[-1][draw(st.sampled_from([1, 2]))] = 1
    prod = np.prod(np.array(strides), axis=0)
    # thin z (10 to 20 slices) where z is never pooled; a bottleneck of 2 or 3 slices otherwise (instance norm
    # needs more than one voxel), one pixel in-plane to keep the forward pass cheap
    z_mult = draw(st.sampled_from([2, 3]) if prod[0] > 1 else st.integers(10, 20))
    patch = [int(prod[0]) * z_mult] + [int(p) for p in prod[1:]]
    return patch, strides, kernels


@settings(max_examples=5, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(plan=plans_3d(), channels=st.integers(1, 6), backbone=st.sampled_from(["resnet18", "tf_efficientnet_lite0"]),
       rule=st.sampled_from(sorted(RULES)), norm=st.sampled_from(NORMS))
def test_random_3d_plans(plan, channels, backbone, rule, norm):
    patch, strides, kernels = plan
    arch = XDimArch(backbone=backbone, mode_3d="inflated", encoder_norm_3d=norm, inflation=rule)
    check_network(arch, patch, strides, kernels, channels, both_forward=False)


@pytest.mark.parametrize("norm", NORMS)
def test_imagenet_weights_load_strictly_for_every_normalisation(norm):
    spec = REAL_PLANS["abdominal CT"]
    pm, cm = managers(spec["patch"], spec["strides"], kernels=spec["kernels"])
    net = build_network(XDimArch(backbone="tf_efficientnet_lite0", encoder_norm_3d=norm),
                        PlanArch.from_configuration(cm), 1, 3, True)
    loaded = load_pretrained_backbone("tf_efficientnet_lite0", net.build_2d_backbone)
    assert "PyPI package" in loaded.source
    net.load_pretrained(loaded.model)  # strict
    assert net.encoder.depth_kernels == [3, 3, 3, 3, 3]
    w2d, w3d = loaded.model.conv_stem.weight, net.encoder.backbone.conv_stem.weight
    assert torch.equal(w3d[:, :, 1], w2d) and w3d[:, :, [0, 2]].abs().sum() == 0  # centre rule, depth 3
    assert torch.equal(net.encoder.backbone.blocks[2][0].bn1.weight, loaded.model.blocks[2][0].bn1.weight)


LIGHT_TRAINERS = {"nnUNetTrainerXDimResNet18", "nnUNetTrainerXDimEfficientNetB0", "nnUNetTrainerXDimEfficientNetLite0"}


@pytest.mark.parametrize("trainer", [t if t.__name__ in LIGHT_TRAINERS else pytest.param(t, marks=pytest.mark.slow)
                                     for t in BACKBONE_TRAINERS] + SCRATCH_TRAINERS[:1], ids=lambda t: t.__name__)
def test_trainers_build_the_inflated_network_in_3d(trainer):
    assert trainer.mode_3d == "inflated"  # the 3D default of every backbone trainer
    spec = REAL_PLANS["ACDC-like cascade"]
    pm, cm = managers(spec["patch"], spec["strides"], kernels=spec["kernels"])
    net = trainer.build_network_architecture(pm, cm, spec["channels"], 4, True)
    assert isinstance(net.encoder, InflatedUNetEncoder)
    assert net.encoder.backbone_name == trainer.backbone and net.encoder.inflation == trainer.inflation


def test_plans_record_decides_rule_and_norm():
    spec = REAL_PLANS["abdominal CT"]
    pm, cm = managers(spec["patch"], spec["strides"], kernels=spec["kernels"])
    cm.configuration["xdim"] = XDimArch(backbone="resnet18", inflation="i3d", encoder_norm_3d="frozen").to_dict()
    net = nnUNetTrainerXDim.build_network_architecture(pm, cm, 1, 2, True)
    assert net.encoder.inflation == "i3d" and net.encoder.encoder_norm == "frozen"
    assert type(net.encoder.backbone.bn1).__name__ == "FrozenBatchNormNd"


def test_unknown_rule_and_unsupported_backbone_fail_at_build_time():
    spec = REAL_PLANS["abdominal CT"]
    pm, cm = managers(spec["patch"], spec["strides"], kernels=spec["kernels"])
    plan = PlanArch.from_configuration(cm)
    with pytest.raises(ValueError, match="unknown inflation rule"):
        build_network(XDimArch(backbone="resnet18", inflation="bogus"), plan, 1, 2, True)
    with pytest.raises(UnsupportedBackboneError, match="slicewise"):
        build_network(XDimArch(backbone="convnext_atto"), plan, 1, 2, True)
