"""Stacked mode (DS-Net): depth compression rule, any patch depth / batch size / channel count, options."""
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from nnunetv2_xdim.networks.build import build_network
from nnunetv2_xdim.networks.plan import XDimArch
from nnunetv2_xdim.networks.stacked import StackedEncoder, resolve_depth_compression
from tests.plans_util import plan_arch

ISO = [[1, 1, 1]] + [[2, 2, 2]] * 4
CT = [[1, 1, 1], [1, 2, 2], [2, 2, 2], [2, 2, 2], [1, 2, 2]]
THIN = [[1, 1, 1]] + [[1, 2, 2]] * 4
FEATURES = [8, 16, 32, 32, 32]


pytestmark = pytest.mark.usefixtures("one_thread")


def net(strides, channels=1, classes=2, ds=True, **extras):
    p = plan_arch([16, 32, 32], strides, features=FEATURES)
    return build_network(XDimArch("tf_efficientnet_lite0", "stacked", extras=extras), p, channels, classes, ds)


@pytest.mark.parametrize("strides, expected", [(ISO, 4), (CT, 2), (THIN, 1), (ISO[:3], 4), (ISO[:2], 2)])
def test_auto_depth_compression_follows_the_plan(strides, expected):
    """'auto': as far as the plan reduces depth by stage 2 (never beyond the plan's own reduction)."""
    assert resolve_depth_compression("auto", plan_arch([16, 32, 32], strides)) == expected


@pytest.mark.parametrize("value", [0, 3, 32, 2.0, "full", True])
def test_invalid_depth_compression_is_refused(value):
    with pytest.raises(ValueError, match="depth_compression"):
        resolve_depth_compression(value, plan_arch([16, 32, 32], ISO))


@given(depth_mult=st.integers(1, 3), batch=st.integers(1, 3), channels=st.integers(1, 5),
       r=st.sampled_from(["auto", 1, 2, 8]))
@settings(max_examples=6, deadline=None)
def test_any_depth_batch_and_channels(depth_mult, batch, channels, r):
    """Unlike the authors' DS-Net (depth 128, batch 1, 4 modalities): any patch depth the plan allows, any batch
    size and channel count; the 2D core sees batch * depth / r slabs of 3 channels."""
    strides = [[1, 1, 1], [2, 2, 2], [2, 2, 2], [1, 2, 2]]  # depth reduction 4 (8 with the extra z stage)
    strides = strides + [[2, 1, 1]] if r == 8 else strides
    p = plan_arch([16, 32, 32], strides, features=FEATURES[:len(strides)])
    m = build_network(XDimArch("tf_efficientnet_lite0", "stacked", extras={"depth_compression": r}),
                      p, channels, 3, True).eval()
    z_total = 8 if r == 8 else 4
    depth = z_total * depth_mult
    seen = []
    m.encoder.core_encoder.register_forward_hook(lambda mod, i, o: seen.append(i[0].shape))
    x = torch.randn(batch, channels, depth, 16, 16)
    with torch.no_grad():
        out = m(x)
    assert tuple(out[0].shape) == (batch, 3, depth, 16, 16)
    assert len(out) == len(strides) - 1
    rr = m.encoder.depth_compression
    assert sum(s[0] for s in seen) == batch * depth // rr  # in chunks of at most 16 slabs (the default)
    assert all(s[0] <= 16 and tuple(s[1:]) == (3, 16, 16) for s in seen)


def test_depth_not_divisible_by_the_compression_is_a_clear_error():
    m = net(ISO).eval()
    with pytest.raises(ValueError, match="not divisible by the depth compression 4"):
        m(torch.randn(1, 1, 18, 16, 16))


def test_stack_channels_set_the_2d_backbones_input():
    m = net(CT, channels=4, stack_channels=5)
    backbone2d = m.build_2d_backbone()
    first_conv = next(c for c in backbone2d.modules() if isinstance(c, torch.nn.Conv2d))
    assert first_conv.in_channels == 5
    m.load_pretrained(backbone2d)  # strict
    default = net(CT, channels=4)
    first_conv = next(c for c in default.build_2d_backbone().modules() if isinstance(c, torch.nn.Conv2d))
    assert first_conv.in_channels == 3  # pseudo-RGB: ImageNet's first convolution unchanged


@pytest.mark.parametrize("bad", [{"stack_channels": 0}, {"chunk_2d": -2}, {"checkpoint_2d": 1}])
def test_options_are_validated(bad):
    with pytest.raises(ValueError, match="extras"):
        net(CT, **bad)


def test_checkpointed_core_gives_the_same_gradients():
    torch.manual_seed(0)
    a = net(CT, checkpoint_2d=False).train()
    b = net(CT, checkpoint_2d=True, chunk_2d=3).train()
    c = net(CT, checkpoint_2d=False, chunk_2d=3).train()
    b.load_state_dict(a.state_dict())
    c.load_state_dict(a.state_dict())
    x = torch.randn(2, 1, 8, 16, 16)
    for m in (b, c):
        sum(o.square().mean() for o in m(x)).backward()
    for (n, p), q in zip(c.named_parameters(), b.parameters()):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-4, atol=1e-6, msg=n)
    for (n, buf), other in zip(c.named_buffers(), b.buffers()):
        torch.testing.assert_close(buf, other, msg=n)


def test_stem_skip_keeps_full_depth_detail():
    """Skip 0 is the stem (full depth) plus the core's full-resolution scale restored to full depth."""
    m = net(ISO).eval()
    enc: StackedEncoder = m.encoder
    x = torch.randn(1, 1, 16, 16, 16)
    with torch.no_grad():
        skips = enc(x)
        stem = enc.stem(x)
    assert skips[0].shape == stem.shape
    assert [tuple(s.shape[2:]) for s in skips] == [(16, 16, 16), (8, 8, 8), (4, 4, 4), (2, 2, 2), (1, 1, 1)]
