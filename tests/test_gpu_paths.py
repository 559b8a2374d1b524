"""What nnU-Net does to a network on a GPU by default, checked here on CPU for every network family.

On CUDA, nnU-Net 2.8 wraps the network in `torch.compile` unless nnUNet_compile says otherwise, and runs each
train step under fp16 autocast. Neither happens on CPU (nnU-Net switches both off there), so without these
tests a network that only breaks there would reach users first. `aot_eager` traces the same graph (dynamo,
including our gradient checkpointing) and the same autograd as inductor, without compiling kernels, which
keeps the tests at seconds (inductor, run by hand on CPU on 2026-12-07 for the 2D, inflated, slice-wise and
stacked networks and nnU-Net's own, also matched eager). CPU autocast uses
CPU's op lists, not CUDA's: it catches dtype mismatches in our own code, not every fp16 range problem a GPU
could show.
"""
import pytest
import torch
from nnunetv2.training.loss.compound_losses import DC_and_CE_loss
from nnunetv2.training.loss.deep_supervision import DeepSupervisionWrapper

import nnunetv2_xdim.trainers as trainers
from tests.plans_util import managers

pytestmark = pytest.mark.usefixtures("one_thread")

# (trainer, patch, strides): ImageNet weights where they install offline (Lite0), so that fp16 sees real
# activation ranges; ResNet-18 random (its weights come from a model hub) for the residual family
FAMILIES = {
    "2d": ("nnUNetTrainerXDimEfficientNetLite0", (64, 64), [[1, 1], [2, 2], [2, 2], [2, 2]]),
    "2d_resnet": ("nnUNetTrainerXDimResNet18_Scratch", (64, 64), [[1, 1], [2, 2], [2, 2], [2, 2]]),
    "3d_inflated": ("nnUNetTrainerXDimEfficientNetLite0", (8, 32, 32), [[1, 1, 1], [1, 2, 2], [2, 2, 2], [2, 2, 2]]),
    "3d_slicewise": ("nnUNetTrainerXDimEfficientNetLite0_SliceWise", (8, 32, 32),
                     [[1, 1, 1], [1, 2, 2], [2, 2, 2], [2, 2, 2]]),
    "3d_stacked": ("nnUNetTrainerXDimEfficientNetLite0_Stacked", (8, 32, 32),
                   [[1, 1, 1], [1, 2, 2], [2, 2, 2], [2, 2, 2]]),
}
CLASSES = 3


def build(family):
    name, patch, strides = FAMILIES[family]
    pm, cm = managers(patch, strides)
    torch.manual_seed(0)
    net = getattr(trainers, name).build_network_architecture(pm, cm, 2, CLASSES, True)
    x = torch.randn(2, 2, *patch)
    target = torch.randint(0, CLASSES, (2, 1, *patch)).float()
    return net, x, target


def ds_targets(outputs, target):
    """nnU-Net's deep-supervision targets: the label map at each output's resolution."""
    return [torch.nn.functional.interpolate(target, size=o.shape[2:], mode="nearest") for o in outputs]


def nnunet_loss(n_outputs):
    weights = [1 / 2 ** i for i in range(n_outputs)]
    loss = DC_and_CE_loss({"batch_dice": True, "smooth": 1e-5, "do_bg": False, "ddp": False}, {},
                          weight_ce=1, weight_dice=1, ignore_label=None)
    return DeepSupervisionWrapper(loss, [w / sum(weights) for w in weights])


def grads(net):
    return torch.cat([p.grad.flatten() for p in net.parameters() if p.grad is not None])


@pytest.mark.parametrize("family", list(FAMILIES))
def test_torch_compile_trains_and_predicts_like_eager(family):
    """A compiled train step gives the eager step's loss and gradients; the compiled network then predicts
    (eval mode, no grad: nnU-Net's validation, a recompile) what the eager one does."""
    net, x, target = build(family)
    net.train()
    outputs = net(x)
    loss_fn = nnunet_loss(len(outputs))
    eager_loss = loss_fn(outputs, ds_targets(outputs, target))
    eager_loss.backward()
    eager_grads = grads(net).clone()
    net.zero_grad(set_to_none=True)

    # one network per process, as in nnU-Net: compiled code cached for another family's modules would make dynamo
    # retrace this one with dynamic shapes (minutes instead of seconds)
    torch._dynamo.reset()
    compiled = torch.compile(net, backend="aot_eager")
    outputs = compiled(x)
    loss = loss_fn(outputs, ds_targets(outputs, target))
    loss.backward()
    torch.testing.assert_close(loss, eager_loss, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(grads(net), eager_grads, rtol=1e-3, atol=1e-5)

    net.eval()
    with torch.no_grad():
        torch.testing.assert_close(compiled(x)[0], net(x)[0], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("family", list(FAMILIES))
def test_fp16_autocast_train_step(family):
    """Under fp16 autocast the outputs stay close to fp32 and the backward pass gives finite gradients for every
    parameter that has one in fp32 (nnU-Net's GradScaler would skip a step with inf/NaN gradients: silently, a
    network that never trains)."""
    net, x, target = build(family)
    net.train()
    with torch.no_grad():
        reference = net(x)[0]
    with torch.autocast("cpu", dtype=torch.float16):
        outputs = net(x)
        assert outputs[0].dtype == torch.float16
        loss = nnunet_loss(len(outputs))(outputs, ds_targets(outputs, target))
    loss.backward()
    assert torch.isfinite(loss)
    missing = [n for n, p in net.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing, f"no gradient under autocast for {missing[:5]}"
    assert torch.isfinite(grads(net)).all()
    scale = reference.abs().max()
    assert (outputs[0].float() - reference).abs().max() <= 2e-2 * scale
