"""Both 2D-encoder 3D modes (slice-wise, stacked) over the 3D plan structures nnU-Net makes.

Plans: isotropic (BraTS-like, 4 channels), anisotropic thin z ([1,2,2] strides, ACDC-like 10 slices),
abdominal CT (z downsampled from stage 2 on), cascade input channels, 4 to 7 stages. Forward passes use
scaled-down patches (the smallest patch the plan allows, bottleneck at least 2 in-plane) and small feature
counts; builds use the real ones.
"""
import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nnunetv2_xdim.networks.plan import XDimArch
from nnunetv2_xdim.networks.unet import build_network
from tests.plans_util import plan_arch

MODES = ("slicewise", "stacked")
FAST_BACKBONES = ("tf_efficientnet_lite0", "resnet18", "mobilenetv3_small_050")

# (patch, strides, kernels, input channels) of real nnU-Net-like 3d_fullres plans
BRATS = ([128, 128, 128], [[1, 1, 1]] + [[2, 2, 2]] * 5, [[3, 3, 3]] * 6, 4)
ACDC = ([10, 256, 224], [[1, 1, 1]] + [[1, 2, 2]] * 5 + [[1, 2, 1]], [[1, 3, 3]] * 2 + [[3, 3, 3]] * 5, 1)
ABDOMEN_CT = ([56, 192, 160], [[1, 1, 1], [1, 2, 2], [2, 2, 2], [2, 2, 2], [2, 2, 2], [1, 2, 2]],
              [[1, 3, 3]] + [[3, 3, 3]] * 5, 1)
CASCADE_CT = ABDOMEN_CT[:3] + (1 + 2,)  # 3d_cascade_fullres: image + one-hot of 2 foreground classes
NAMED = {"brats": BRATS, "acdc": ACDC, "abdomen_ct": ABDOMEN_CT, "cascade_ct": CASCADE_CT}


pytestmark = pytest.mark.usefixtures("one_thread")


def small_patch(strides, min_inplane_bottleneck=2):
    """The smallest patch the plan accepts, with a bottleneck of at least 2 in-plane (InstanceNorm needs > 1)."""
    total = np.prod(np.array(strides), axis=0)
    return [int(total[0])] + [int(t) * min_inplane_bottleneck for t in total[1:]]


def small_features(n):
    return [min(8 * 2 ** i, 64) for i in range(n)]


@st.composite
def plans_3d(draw):
    """Stride/kernel structures as nnU-Net plans them: stage 0 at full resolution, every later stage halves at
    least one axis; z is halved from some stage on (never for thin z); z kernels 1 while z is too coarse."""
    n = draw(st.integers(4, 7))
    z_from = draw(st.sampled_from([1, 2, 3, n]))  # first stage that halves z (n: never, thin z)
    strides, kernels, totals = [[1, 1, 1]], [[1 if z_from > 1 else 3, 3, 3]], [1, 1, 1]
    for s in range(1, n):
        z = 2 if s >= z_from and totals[0] < 8 else 1
        y = draw(st.sampled_from([1, 2])) if totals[1] < 32 else 1
        x = draw(st.sampled_from([1, 2])) if totals[2] < 32 else 1
        if z == y == x == 1:
            y, x = (2, 2) if totals[1] < 32 else (1, 1)
            z = 2 if z == y == x == 1 else z
        strides.append([z, y, x])
        totals = [t * a for t, a in zip(totals, (z, y, x))]
        kernels.append([3 if s >= z_from - 1 else 1, 3, 3])
    channels = draw(st.integers(1, 4))
    return strides, kernels, channels


def build(mode, strides, kernels, channels, backbone="tf_efficientnet_lite0", ds=True, features=None, classes=3,
          patch=None, **extras):
    plan = plan_arch(patch or small_patch(strides), strides, kernels=kernels, features=features)
    arch = XDimArch(backbone=backbone, mode_3d=mode, extras=extras)
    return build_network(arch, plan, channels, classes, ds)


def expected_shapes(patch, strides, batch, classes):
    scales = np.cumprod(np.array(strides), axis=0)[:-1]
    return [(batch, classes, *[p // s for p, s in zip(patch, sc)]) for sc in scales]


def check_deep_supervision(net, strides, channels, batch=1, classes=3, patch=None):
    patch = patch or small_patch(strides)
    x = torch.randn(batch, channels, *patch)
    net.decoder.deep_supervision = True
    out = net(x)
    assert isinstance(out, (list, tuple))
    assert [tuple(o.shape) for o in out] == expected_shapes(patch, strides, batch, classes)
    net.decoder.deep_supervision = False
    single = net(x)
    assert torch.is_tensor(single) and tuple(single.shape) == (batch, classes, *patch)


def check_state_dict_contract(mode, strides, kernels, channels, backbone, features=None):
    with_ds = build(mode, strides, kernels, channels, backbone, ds=True, features=features)
    without = build(mode, strides, kernels, channels, backbone, ds=False, features=features)
    sd_ds, sd = with_ds.state_dict(), without.state_dict()
    assert list(sd_ds) == list(sd)
    assert all(sd_ds[k].shape == sd[k].shape for k in sd)
    without.load_state_dict(sd_ds, strict=True)  # what nnU-Net's predictor does with a trained checkpoint
    heads = [k for k in sd if ".seg_layers." in k]
    assert len(heads) == 2 * (len(strides) - 1)  # weight + bias of one head per decoder stage
    return with_ds


@pytest.mark.parametrize("mode", MODES)
@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(plan=plans_3d(), backbone=st.sampled_from(FAST_BACKBONES))
def test_any_plan_deep_supervision_at_plan_scales(mode, plan, backbone):
    strides, kernels, channels = plan
    net = build(mode, strides, kernels, channels, backbone, features=small_features(len(strides)))
    check_deep_supervision(net, strides, channels)


@pytest.mark.parametrize("mode", MODES)
@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(plan=plans_3d(), backbone=st.sampled_from(FAST_BACKBONES))
def test_any_plan_state_dict_keys_independent_of_deep_supervision(mode, plan, backbone):
    strides, kernels, channels = plan
    check_state_dict_contract(mode, strides, kernels, channels, backbone)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", list(NAMED))
def test_named_plans(mode, name):
    """The real plan structures: builds with real features, DS outputs at the plan's scales (scaled-down patch)."""
    patch, strides, kernels, channels = NAMED[name]
    check_state_dict_contract(mode, strides, kernels, channels, "tf_efficientnet_lite0")
    net = build(mode, strides, kernels, channels, features=small_features(len(strides)))
    check_deep_supervision(net, strides, channels)


@pytest.mark.parametrize("mode", MODES)
def test_reduction_4_backbone(mode):
    """ConvNeXt (first level at reduction 4, through a random bridge stage) on an anisotropic plan."""
    patch, strides, kernels, channels = ABDOMEN_CT
    net = check_state_dict_contract(mode, strides, kernels, channels, "convnext_atto",
                                    features=small_features(len(strides)))
    check_deep_supervision(net, strides, channels)


@pytest.mark.parametrize("mode", MODES)
def test_pretrained_interface(mode):
    """build_2d_backbone gives the unmodified 2D timm model; load_pretrained copies it strictly; only the
    backbone's parameters are 'pretrained'."""
    _, strides, kernels, channels = ACDC
    net = build(mode, strides, kernels, channels, features=small_features(len(strides)))
    torch.manual_seed(1)
    backbone2d = net.build_2d_backbone()
    net.load_pretrained(backbone2d)
    pretrained = {id(p) for p in net.pretrained_parameters()}
    src = dict(backbone2d.named_parameters())
    copied = [p for p in net.parameters() if id(p) in pretrained]
    assert len(copied) == len(src) and pretrained < {id(p) for p in net.parameters()}
    name, p = next(iter(src.items()))
    assert any(torch.equal(p, q) for q in copied), f"{name} was not copied"
    with pytest.raises(RuntimeError):
        net.load_pretrained(torch.nn.Linear(1, 1))  # strict: a model of another structure does not load
