"""Inflation keeps the 2D function: on a volume constant along z, the inflated backbone's features equal
the 2D backbone's (with the plan's in-plane strides) on that slice.

How z is chosen. The centre rule has no border effect (every output slice is the 2D output of one input
slice), so a few slices suffice and every slice is compared. With I3D the zero padding along z changes the
features within a receptive field of the z borders: z is the smallest power of two from 32 up at which the
middle slice of every level no longer depends on the first and last input slices (perturbing those slices
leaves it unchanged, checked by the test), and that middle slice is compared.
Families with squeeze-excitation average over the whole volume, border slices included, so under I3D their
middle slice approaches the 2D features as 1/z: the test checks that rate (doubling z halves the
difference) instead of equality.
"""
import copy
from functools import lru_cache

import pytest
import torch
from timm.models._efficientnet_blocks import SqueezeExcite

from nnunetv2_xdim.backbones.norms import convert_norms
from nnunetv2_xdim.backbones.timm_backbone import apply_level_strides, create_features_model, feature_levels
from nnunetv2_xdim.transfer import RULES, UnsupportedBackboneError, centre, i3d, inflate_backbone
from nnunetv2_xdim.transfer.layers import SqueezeExciteNd

# family -> (timm model, its kwargs, has squeeze-excitation); each is tested on one of PLANS, in turn
FAMILIES = {
    "ResNet basic": ("resnet18", {}, False),
    "ResNet bottleneck": ("resnet26", {}, False),
    "ResNeXt": ("resnet26", {"cardinality": 8, "base_width": 16}, False),  # resnext50_32x4d's blocks, smaller
    "SE-ResNet": ("seresnet18", {}, True),
    "EfficientNet-Lite": ("tf_efficientnet_lite0", {}, False),  # depthwise, TF 'same' padding
    "EfficientNet": ("tf_efficientnet_b0", {}, True),           # depthwise + squeeze-excitation
    "MobileNetV3": ("mobilenetv3_large_100", {}, True),          # hard-swish, SE with hard-sigmoid gate
    "RegNetY": ("regnety_002", {}, True),                        # grouped convs + SE
}
# (depth kernel, (z, y, x) stride) per feature level
PLANS = {
    "mixed": ([1, 3, 1, 3, 3], [(1, 2, 2), (1, 2, 2), (2, 2, 2), (1, 2, 2), (2, 2, 2)]),
    "unequal in-plane": ([3, 1, 3, 3, 1], [(2, 2, 2), (1, 2, 1), (2, 1, 2), (1, 2, 2), (1, 2, 2)]),
}
CASES = [(f, list(PLANS)[i % len(PLANS)]) for i, f in enumerate(FAMILIES)]
LOCAL = [(f, p) for f, p in CASES if not FAMILIES[f][2]]
GLOBAL = [f for f, p in CASES if FAMILIES[f][2]]
IN_PLANE = 16  # small is enough: the in-plane border is the same in 2D and 3D


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@lru_cache(maxsize=None)
def _randomised_2d(family):
    """A 2D backbone whose BatchNorms are not the identity (random weights, random running statistics)."""
    name, kwargs, _ = FAMILIES[family]
    with torch.random.fork_rng():  # cached: the test inputs must not depend on which test built it first
        torch.manual_seed(0)
        m = create_features_model(name, 2, 5, **kwargs)
        for mod in m.modules():
            if isinstance(mod, torch.nn.modules.batchnorm._BatchNorm):
                mod.running_mean.normal_(0, 0.1)
                mod.running_var.uniform_(0.5, 2.0)
                mod.weight.data.uniform_(0.5, 1.5)
                mod.bias.data.normal_(0, 0.1)
    return m.eval()


def _pair(family, plan, rule, norm="batch"):
    depth, strides = PLANS[plan]
    m2 = copy.deepcopy(_randomised_2d(family))
    m3 = convert_norms(inflate_backbone(m2, depth, strides, rule), norm).eval()
    apply_level_strides(feature_levels(m2), [s[1:] for s in strides])
    return convert_norms(m2, norm).eval(), m3


def _constant_z(x2, z):
    return x2[:, :, None].expand(-1, -1, z, -1, -1).contiguous()


@torch.no_grad()
def _rel_errors(f2, f3, all_slices):
    errs = []
    for a, b in zip(f2, f3):
        b = b if all_slices else b[:, :, b.shape[2] // 2:b.shape[2] // 2 + 1]
        errs.append(((b - a[:, :, None]).abs().max() / a.abs().max()).item())
    return errs


@torch.no_grad()
def _border_free(m3, x2):
    """Features of the smallest power-of-two z whose middle slices ignore the first and last input slices."""
    for z in (32, 64, 128, 256):
        x = _constant_z(x2, z)
        y = x.clone()
        y[:, :, [0, -1]] = torch.randn_like(y[:, :, [0, -1]])
        f3 = m3(x)
        if all(torch.equal(a[:, :, a.shape[2] // 2], b[:, :, b.shape[2] // 2]) for a, b in zip(f3, m3(y))):
            return z, f3
    raise AssertionError(f"the middle slices still depend on the z borders at z={z}")


@pytest.mark.parametrize("family,plan", CASES)
def test_centre_rule_reproduces_2d_on_every_slice(family, plan):
    m2, m3 = _pair(family, plan, "centre")
    x2 = torch.randn(1, 2, IN_PLANE, IN_PLANE)
    with torch.no_grad():
        errs = _rel_errors(m2(x2), m3(_constant_z(x2, 4)), all_slices=True)
    assert max(errs) < 2e-5, errs


@pytest.mark.parametrize("family", ["ResNet basic", "EfficientNet"])
def test_centre_rule_with_instance_norm_reproduces_2d(family):
    # per-sample statistics over (z, y, x) of a constant-z volume are those over (y, x); 64 pixels keep the
    # deepest level at 2x2, and double precision keeps the normalisation of so few values from magnifying
    # float rounding
    m2, m3 = _pair(family, "mixed", "centre", norm="instance")
    x2 = torch.randn(2, 2, 64, 64, dtype=torch.float64)
    with torch.no_grad():
        errs = _rel_errors(m2.double()(x2), m3.double()(_constant_z(x2, 4)), all_slices=True)
    assert max(errs) < 1e-10, errs


@pytest.mark.parametrize("family,plan", LOCAL)
def test_i3d_rule_reproduces_2d_away_from_the_borders(family, plan):
    m2, m3 = _pair(family, plan, "i3d")
    x2 = torch.randn(1, 2, IN_PLANE, IN_PLANE)
    z, f3 = _border_free(m3, x2)
    with torch.no_grad():
        errs = _rel_errors(m2(x2), f3, all_slices=False)
    assert max(errs) < 2e-5, (z, errs)


@pytest.mark.parametrize("family", GLOBAL)
def test_i3d_rule_with_squeeze_excitation_converges_as_one_over_z(family):
    m2, m3 = _pair(family, "mixed", "i3d")
    x2 = torch.randn(1, 2, IN_PLANE, IN_PLANE)
    with torch.no_grad():
        f2 = m2(x2)
        e_half, e_full = (max(_rel_errors(f2, m3(_constant_z(x2, z)), all_slices=False)) for z in (32, 64))
    assert e_full < 1e-2 and (e_full < 0.6 * e_half or e_full < 2e-5), (e_half, e_full)


def test_squeeze_excitation_pools_over_depth():
    m3 = inflate_backbone(create_features_model("tf_efficientnet_b0", 1, 2), [3, 3], [(2, 2, 2)] * 2).eval()
    se = m3.blocks[0][0].se
    assert type(se) is SqueezeExciteNd
    x = torch.randn(2, se.conv_reduce.in_channels, 4, 5, 7)
    x[:, :, 0] *= 5  # slices differ: pooling over (y, x) per slice, or over (z, y) only, would show
    with torch.no_grad():
        gate = se.gate(se.conv_expand(se.act1(se.conv_reduce(x.mean((2, 3, 4), keepdim=True)))))
        assert torch.allclose(se(x), x * gate, atol=1e-6)
        # timm's 2D module runs on 5D input but averages over (z, y) only: the silent bug the swap avoids
        naive = copy.deepcopy(se)
        naive.__class__ = SqueezeExcite
        assert not torch.allclose(naive(x), se(x), atol=1e-3)


@pytest.mark.parametrize("rule", RULES)
def test_rules_keep_the_response_to_constant_depth(rule):
    w = torch.randn(4, 3, 3, 3)
    for d in (1, 3, 5):
        w3 = RULES[rule](w, d)
        assert w3.shape == (4, 3, d, 3, 3)
        assert torch.allclose(w3.sum(2), w, atol=1e-6)  # a constant-z input sees the sum over depth
    assert torch.equal(centre(w, 3)[:, :, 1], w) and centre(w, 3)[:, :, [0, 2]].abs().sum() == 0
    assert torch.allclose(i3d(w, 3)[:, :, 0], w / 3)
    with pytest.raises(ValueError, match="odd"):
        RULES[rule](w, 2)


def test_depth_follows_the_plan_and_strides_follow_every_axis():
    m2 = create_features_model("resnet18", 1, 5)
    m3 = inflate_backbone(m2, [1, 3, 1, 3, 3], PLANS["mixed"][1])
    assert m3.conv1.weight.shape == (64, 1, 1, 7, 7) and m3.conv1.stride == (1, 2, 2)
    assert torch.equal(m3.conv1.weight[:, :, 0], m2.conv1.weight)  # depth 1: exactly the 2D kernel
    assert m3.layer1[0].conv1.weight.shape[2:] == (3, 3, 3) and m3.maxpool.kernel_size == (3, 3, 3)
    assert m3.layer2[0].conv1.stride == (2, 2, 2) and m3.layer2[0].downsample[0].stride == (2, 2, 2)
    assert m3.layer2[0].conv1.weight.shape[2] == 1 and m3.layer2[0].downsample[0].weight.shape[2] == 1
    assert m3.state_dict().keys() == m2.state_dict().keys()
    assert m2.conv1.weight.dim() == 4  # the 2D model is left as it was


@pytest.mark.parametrize("name", ["convnext_atto", "densenet121"])
def test_unsupported_family_points_to_slicewise(name):
    m2 = create_features_model(name, 1, 3)
    with pytest.raises(UnsupportedBackboneError, match="mode_3d='slicewise'"):
        inflate_backbone(m2, [3] * 3, [(2, 2, 2)] * 3)
