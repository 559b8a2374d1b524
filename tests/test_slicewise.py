"""Slice-wise mode: the encoder gives, slice by slice, the 2D encoder's features; chunking and checkpointing
change memory, not results."""
import copy

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from nnunetv2_xdim.networks.depth import fold_depth, in_plane_plan, run_chunked, unfold_depth
from nnunetv2_xdim.networks.build import build_network
from nnunetv2_xdim.networks.encoder2d import TimmUNetEncoder
from nnunetv2_xdim.networks.plan import XDimArch
from nnunetv2_xdim.networks.slicewise import SliceWiseEncoder
from tests.plans_util import plan_arch

# anisotropic: z halved from stage 2, one stage halving y only, z kernels 1 at full resolution
STRIDES = [[1, 1, 1], [1, 2, 2], [2, 2, 1], [2, 2, 2], [1, 2, 2]]
KERNELS = [[1, 3, 3], [1, 3, 3], [3, 3, 3], [3, 3, 3], [3, 3, 3]]
PATCH = [4, 32, 16]


pytestmark = pytest.mark.usefixtures("one_thread")


def plan():
    return plan_arch(PATCH, STRIDES, kernels=KERNELS, features=[8, 16, 32, 32, 32])


@given(b=st.integers(1, 3), d=st.integers(1, 5))
@settings(max_examples=10, deadline=None)
def test_fold_unfold_roundtrip(b, d):
    x = torch.randn(b, 2, d, 3, 4)
    folded = fold_depth(x)
    for bi in range(b):
        for di in range(d):
            assert torch.equal(folded[bi * d + di], x[bi, :, di])
    assert torch.equal(unfold_depth(folded, b), x)


@pytest.mark.parametrize("backbone", ["tf_efficientnet_lite0", "resnet18", "convnext_atto"])
def test_slice_features_are_the_2d_encoders_features_of_each_slice(backbone):
    """Before any z-fusion, level l of slice d is the 2D encoder's level l on slice d (chunked or not)."""
    p = plan()
    enc = SliceWiseEncoder(backbone, 2, p, "batch", chunk_2d=3, checkpoint_2d=True).eval()
    enc2d = TimmUNetEncoder(backbone, 2, in_plane_plan(p), "batch").eval()
    torch.manual_seed(0)
    weights = enc.build_2d_backbone()
    for m in weights.modules():  # non-trivial running statistics, so eval-mode BatchNorm is not the identity
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2)
    enc.load_pretrained(weights)
    enc2d.load_pretrained(weights)
    x = torch.randn(2, 2, 5, *PATCH[1:])
    with torch.no_grad():
        vol = enc.slice_features(x)
        assert len(vol) == enc.n_levels == enc2d.n_levels
        for d in range(x.shape[2]):
            per_slice = enc2d.backbone(x[:, :, d])
            for level, (v, s) in enumerate(zip(vol, per_slice)):
                assert v.shape[2] == x.shape[2]
                torch.testing.assert_close(v[:, :, d], s, rtol=1e-4, atol=1e-5, msg=f"level {level}, slice {d}")


def test_fusion_starts_as_identity():
    """At initialisation the skips are the pooled 2D features: training starts from the pretrained features."""
    enc = SliceWiseEncoder("resnet18", 1, plan(), "batch").eval()
    x = torch.randn(1, 1, *PATCH)
    with torch.no_grad():
        feats = enc.slice_features(x)
        skips = enc(x)[1:1 + enc.n_levels]
    for f, s, pool in zip(feats, skips, enc.z_pool):
        pooled = torch.nn.functional.avg_pool3d(f, (pool, 1, 1), (pool, 1, 1))
        torch.testing.assert_close(s, pooled)
    assert any(not isinstance(m, torch.nn.Identity) for m in enc.fusion)  # the plan has z kernels 3


def _step(net, x):
    net.zero_grad(set_to_none=True)
    out = net(x)
    sum((o.float() ** 2).mean() for o in out).backward()
    return out


@pytest.mark.parametrize("chunk", [0, 3])
def test_checkpointing_changes_nothing_but_memory(chunk):
    """Same outputs, gradients and BatchNorm running statistics with and without activation checkpointing
    (the recomputation in backward must not update the running statistics a second time)."""
    p = plan()
    torch.manual_seed(0)
    plain = build_network(XDimArch("tf_efficientnet_lite0", "slicewise",
                                   extras={"chunk_2d": chunk, "checkpoint_2d": False}), p, 2, 3, True)
    ckpt = build_network(XDimArch("tf_efficientnet_lite0", "slicewise",
                                  extras={"chunk_2d": chunk, "checkpoint_2d": True}), p, 2, 3, True)
    ckpt.load_state_dict(plain.state_dict())
    x = torch.randn(2, 2, *PATCH)
    out_plain, out_ckpt = _step(plain.train(), x), _step(ckpt.train(), x)
    for a, b in zip(out_plain, out_ckpt):
        torch.testing.assert_close(a, b)
    grads = {n: q.grad for n, q in ckpt.named_parameters()}
    for n, q in plain.named_parameters():
        torch.testing.assert_close(q.grad, grads[n], rtol=1e-4, atol=1e-6, msg=n)
    buffers = dict(ckpt.named_buffers())
    for n, buf in plain.named_buffers():
        torch.testing.assert_close(buf, buffers[n], msg=n)


def test_chunks_interleave_depth_and_samples():
    """Each chunk holds slices spread over the whole depth of every sample (representative BatchNorm batches)."""
    seen = []

    def record(part):
        seen.append(part[:, 0, 0, 0].tolist())
        return [part * 2]

    x = torch.arange(2 * 8, dtype=torch.float32).reshape(2, 1, 8, 1, 1)  # value = b * 8 + d
    folded = fold_depth(x)
    out = run_chunked(record, folded, chunk=4, use_checkpoint=False, owner=torch.nn.Module())
    assert torch.equal(out[0], folded * 2)  # results back in the original order
    assert seen == [[0, 4, 8, 12], [1, 5, 9, 13], [2, 6, 10, 14], [3, 7, 11, 15]]


def test_memory_options_are_validated():
    p = plan()
    for bad in ({"chunk_2d": -1}, {"chunk_2d": 2.5}, {"checkpoint_2d": "yes"}):
        with pytest.raises(ValueError, match="extras"):
            build_network(XDimArch("resnet18", "slicewise", extras=bad), p, 1, 2, True)


def test_plan_errors_are_clear():
    with pytest.raises(ValueError, match="full-resolution first stage"):
        SliceWiseEncoder("resnet18", 1, plan_arch([8, 32, 32], [[1, 2, 2], [2, 2, 2], [2, 2, 2]]))
    with pytest.raises(ValueError, match="3D plan"):
        SliceWiseEncoder("resnet18", 1, plan_arch([32, 32], [[1, 1], [2, 2], [2, 2]]))


def test_train_mode_batchnorm_sees_all_slices_of_a_chunk():
    """Folding depth into the batch: in training, BatchNorm statistics come from the slices of the chunk."""
    p = plan()
    enc = SliceWiseEncoder("resnet18", 1, p, "batch", chunk_2d=0, checkpoint_2d=False).train()
    bn = next(m for m in enc.backbone.modules() if isinstance(m, torch.nn.BatchNorm2d))
    seen = []
    bn.register_forward_hook(lambda m, i, o: seen.append(i[0].shape[0]))
    before = copy.deepcopy(bn.running_mean)
    enc(torch.randn(2, 1, *PATCH))
    assert seen == [2 * PATCH[0]] and not torch.equal(before, bn.running_mean)
