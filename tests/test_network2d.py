"""The 2D network on many nnU-Net plans: shapes, deep-supervision scales, DS-independent state dicts."""
import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings, strategies as st

from nnunetv2_xdim.networks.plan import PlanArch, XDimArch
from nnunetv2_xdim.networks.unet import build_network
from nnunetv2_xdim.trainers import nnUNetTrainerXDimResNet
from plans_util import managers

BACKBONES = ["resnet18", "tf_efficientnet_lite0", "convnext_atto", "resnet50"]


def expected_scales(patch, strides):
    red = np.cumprod(np.array(strides), axis=0)
    return [tuple(int(p // r) for p, r in zip(patch, rr)) for rr in red[:-1]]


def check_network(backbone, patch, strides, channels, n_classes=3, residual=False, batch=2):
    pm, cm = managers(patch, strides, residual=residual)
    plan = PlanArch.from_configuration(cm)
    arch = XDimArch(backbone=backbone)
    net = build_network(arch, plan, channels, n_classes, deep_supervision=True)
    x = torch.randn(batch, channels, *patch)
    with torch.no_grad():
        out = net.eval()(x)
    assert isinstance(out, list) and len(out) == len(strides) - 1
    assert [tuple(o.shape[2:]) for o in out] == expected_scales(patch, strides)
    assert all(o.shape[:2] == (batch, n_classes) for o in out)
    net_nods = build_network(arch, plan, channels, n_classes, deep_supervision=False)
    with torch.no_grad():
        single = net_nods.eval()(x)
    assert torch.is_tensor(single) and tuple(single.shape) == (batch, n_classes, *patch)
    assert net.state_dict().keys() == net_nods.state_dict().keys()
    # the predictor builds with DS off and loads the trained (DS on) weights strictly
    net_nods.load_state_dict(net.state_dict(), strict=True)
    assert any(".seg_layers." in k for k in net.state_dict())
    return net


axis_stride = st.sampled_from([(2, 2), (2, 2), (2, 1), (1, 2)])


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(n_stages=st.integers(4, 8), data=st.data(), channels=st.integers(1, 5),
       backbone=st.sampled_from(BACKBONES[:3]), residual=st.booleans())
def test_random_2d_plans(n_stages, data, channels, backbone, residual):
    strides = [(1, 1)] + [data.draw(axis_stride) for _ in range(n_stages - 1)]
    prod = np.prod(np.array(strides), axis=0)
    # patch sizes are multiples of the stride product, not of 32; like nnU-Net's planner, keep the
    # bottleneck at 4 pixels or more (instance norm needs more than one)
    mult = [data.draw(st.sampled_from([4, 5, 6, 7])) for _ in range(2)]
    patch = tuple(int(p * m) for p, m in zip(prod, mult))
    check_network(backbone, patch, strides, channels, residual=residual, batch=1)


@pytest.mark.parametrize("backbone", BACKBONES)
def test_seven_stage_plan_at_real_size(backbone):
    # nnU-Net plans 7 stages for 448x448 2D patches
    check_network(backbone, (448, 448), [(1, 1)] + [(2, 2)] * 6, 1, batch=1)


def test_fewer_stages_than_backbone_levels_use_only_first_levels():
    net = check_network("resnet18", (40, 24), [(1, 1), (2, 2), (2, 2)], 2)
    assert net.encoder.n_levels == 2
    assert not any(k.startswith("encoder.backbone.layer3") for k in net.state_dict())


def test_elongated_plan_with_unequal_strides():
    strides = [(1, 1), (2, 2), (2, 2), (2, 2), (2, 1), (2, 1)]
    check_network("tf_efficientnet_lite0", (320, 48), strides, 1)


def test_classmethod_builds_from_plans_and_falls_back_to_class_defaults():
    pm, cm = managers((64, 64), [(1, 1)] + [(2, 2)] * 4)
    net = nnUNetTrainerXDimResNet.build_network_architecture(pm, cm, 1, 2, True)
    assert net.encoder.backbone_name == "resnet34"
    cm.configuration["xdim"] = XDimArch(backbone="resnet18").to_dict()
    net = nnUNetTrainerXDimResNet.build_network_architecture(pm, cm, 1, 2, True)
    assert net.encoder.backbone_name == "resnet18"  # the plans saved with a model win over class defaults


def test_unknown_or_newer_architecture_record_is_a_clear_error():
    with pytest.raises(ValueError, match="newer nnunetv2-xdim"):
        XDimArch.from_dict(dict(XDimArch().to_dict(), future_field=1))
    with pytest.raises(ValueError, match="upgrade"):
        XDimArch.from_dict(dict(XDimArch().to_dict(), version=99))


def test_full_resolution_first_stage_is_required():
    pm, cm = managers((64, 64), [(2, 2)] + [(2, 2)] * 3)
    with pytest.raises(ValueError, match="full-resolution first stage"):
        build_network(XDimArch(backbone="resnet18"), PlanArch.from_configuration(cm), 1, 2, True)


@pytest.mark.parametrize("patch, strides, mode", [
    ((64, 64), [(1, 1), (2, 2)], "inflated"),
    ((8, 64, 64), [(1, 1, 1), (1, 2, 2)], "inflated"),
    ((8, 64, 64), [(1, 1, 1), (1, 2, 2)], "slicewise"),
])
def test_plan_without_room_for_the_first_backbone_level_is_a_clear_error(patch, strides, mode):
    # ConvNeXt's first level reduces by 4 and needs two plan stages below full resolution
    plan = PlanArch.from_configuration(managers(patch, strides)[1])
    with pytest.raises(ValueError, match="2 stages, too few to use backbone convnext_atto"):
        build_network(XDimArch(backbone="convnext_atto", mode_3d=mode), plan, 1, 2, True)


@pytest.mark.parametrize("norm", ["batch", "frozen", "instance", "group"])
def test_encoder_normalisations_keep_state_dict_names_of_pretrained_params(norm):
    pm, cm = managers((64, 64), [(1, 1)] + [(2, 2)] * 4)
    plan = PlanArch.from_configuration(cm)
    net = build_network(XDimArch(backbone="resnet18", encoder_norm=norm), plan, 1, 2, True)
    src = net.build_2d_backbone()
    net.load_pretrained(src)  # strict: raises if the conversion lost or renamed a pretrained parameter
    assert torch.equal(net.encoder.backbone.bn1.weight, src.bn1.weight)
    out = net.train()(torch.randn(2, 1, 64, 64))
    out[0].mean().backward()


@pytest.mark.parametrize("mode", ["2d", "inflated"])
def test_seeded_builds_are_identical_whether_or_not_the_backbone_levels_are_cached(mode):
    # reading a backbone's levels builds a probe model; it must not draw from the global RNG, or the first
    # build after start-up (uncached) gets other weights than every later one with the same seed
    from nnunetv2_xdim.backbones.timm_backbone import available_levels
    patch, strides = ((64, 64), [(1, 1)] + [(2, 2)] * 4) if mode == "2d" else \
        ((16, 64, 64), [(1, 1, 1)] + [(1, 2, 2)] + [(2, 2, 2)] * 3)
    plan = PlanArch.from_configuration(managers(patch, strides)[1])

    def build():
        torch.manual_seed(0)
        return build_network(XDimArch(backbone="regnety_002"), plan, 1, 2, True).state_dict()

    available_levels.cache_clear()
    first, second = build(), build()
    assert first.keys() == second.keys()
    assert all(torch.equal(first[k], second[k]) for k in first)
