"""The recipe study's arms that change the network do so through encoder mixins (the trainer attribute
`encoder_mixins`, built by the trainer's build_network_architecture, which nnU-Net's predictor calls too): the
network keeps its parent arm's state dict, and each arm does what its patch of the built network used to do (the
grey stem, the input window, the Transfusion levels, stage 0 from the stem in the slice-wise and stacked modes)."""
import importlib.util
import os

import pytest
import torch

from nnunetv2_xdim.backbones.timm_backbone import backbone_stem, create_features_model
from nnunetv2_xdim.backbones.weights import load_pretrained_backbone
from nnunetv2_xdim.transfer.rules import centre
from plans_util import managers
from test_full_res_stem import loaded_trainer

pytestmark = pytest.mark.usefixtures("one_thread")

HERE = os.path.dirname(os.path.abspath(__file__))
TRAINERS = os.path.join(HERE, "..", "results", "recipe_study", "trainers", "nnunetv2_xdim_recipe_trainers.py")
LITE0 = "tf_efficientnet_lite0"
# 5 stages below full resolution: Lite0's levels 0-4 all used
PLAN_2D = managers((64, 64), [[1, 1]] + [[2, 2]] * 5, features=[32, 32, 64, 96, 128, 160])[1]
PLAN_3D = managers((4, 16, 16), [[1, 1, 1], [1, 2, 2], [2, 2, 2]], kernels=[[1, 3, 3], [1, 3, 3], [3, 3, 3]],
                   features=[32, 16, 24])[1]


@pytest.fixture(scope="module")
def study():
    spec = importlib.util.spec_from_file_location("nnunetv2_xdim_recipe_trainers", TRAINERS)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def arm_trainer(study, arm):
    return getattr(study, "nnUNetTrainerXDimLite0R_" + arm)


def build(study, arm, configuration, seed=0):
    torch.manual_seed(seed)
    return arm_trainer(study, arm).build_network_architecture(None, configuration, 2, 2, False)


# arm, the arm it changes, plan
CHANGED = [("GreyStem", "SGD", PLAN_2D), ("ImageNetRange", "SGD", PLAN_2D), ("AdamWImageNetRange", "AdamW", PLAN_3D),
           ("AdamWFullResStemImageNetRange", "AdamWFullResStem", PLAN_2D), ("Transfuse1", "SGD", PLAN_2D),
           ("Transfuse2", "SGD", PLAN_3D), ("Transfuse3", "SGD", PLAN_2D),
           ("SliceWiseAdamWFullResStem", "SliceWiseAdamW", PLAN_3D),
           ("StackedAdamWFullResStem", "StackedAdamW", PLAN_3D)]
PARENT = {arm: parent for arm, parent, _ in CHANGED}


@pytest.mark.parametrize("arm, parent, configuration", CHANGED, ids=[c[0] for c in CHANGED])
def test_an_arm_keeps_its_parents_network(study, arm, parent, configuration):
    mixins = arm_trainer(study, arm).encoder_mixins
    assert mixins and not arm_trainer(study, parent).encoder_mixins
    net, base = build(study, arm, configuration), build(study, parent, configuration)
    assert all(isinstance(net.encoder, m) for m in mixins) and isinstance(net.encoder, type(base.encoder))
    assert list(net.state_dict()) == list(base.state_dict())
    assert all(torch.equal(a, b) for a, b in zip(net.state_dict().values(), base.state_dict().values()))


@pytest.mark.parametrize("arm", ["ImageNetRange", "AdamWImageNetRange", "AdamWFullResStemImageNetRange"])
@pytest.mark.parametrize("configuration", [PLAN_2D, PLAN_3D], ids=["2d", "3d"])
def test_the_window_is_applied_in_forward(study, arm, configuration):
    net, base = build(study, arm, configuration).eval(), build(study, PARENT[arm], configuration).eval()
    x = torch.randn((1, 2) + tuple(configuration.patch_size)) * 3
    with torch.no_grad():
        torch.testing.assert_close(net(x), base(study.imagenet_window(x)), rtol=0, atol=0)
        assert not torch.allclose(net(x), base(x))


def test_grey_stem(study, tmp_path, monkeypatch):
    """Every input channel gets the RGB-summed ImageNet stem filter / in_chans; the rest is ImageNet's."""
    _, net, _ = loaded_trainer(arm_trainer(study, "GreyStem"), "2d", tmp_path, monkeypatch)
    backbone = net.encoder.backbone
    rgb = load_pretrained_backbone(LITE0, lambda **kw: create_features_model(LITE0, 3, net.encoder.n_levels, **kw))
    rgb = rgb.model.state_dict()
    grey = rgb["conv_stem.weight"].sum(1, keepdim=True) / 2
    torch.testing.assert_close(backbone.conv_stem.weight, grey.repeat(1, 2, 1, 1), rtol=0, atol=0)
    assert all(torch.equal(v, rgb[k]) for k, v in backbone.state_dict().items() if k != "conv_stem.weight")


# Lite0's feature levels end with blocks 0, 1, 2, 4 and 6; the stem (conv_stem, bn1) comes before level 0
KEPT_BLOCKS = {1: ("blocks.0.",), 2: ("blocks.0.", "blocks.1."), 3: ("blocks.0.", "blocks.1.", "blocks.2.")}


@pytest.mark.parametrize("levels", sorted(KEPT_BLOCKS))
def test_transfusion_keeps_imagenet_weights_in_the_first_levels_only(study, levels, tmp_path, monkeypatch):
    trainer, net, before = loaded_trainer(arm_trainer(study, f"Transfuse{levels}"), "2d", tmp_path, monkeypatch)
    backbone = net.encoder.backbone
    kept = {k for k in backbone.state_dict() if k.startswith(("conv_stem.", "bn1.") + KEPT_BLOCKS[levels])}
    changed = {k for k, v in backbone.state_dict().items() if not torch.equal(v, before["encoder.backbone." + k])}
    # pretrained: weights from ImageNet (a BatchNorm's step counter is 0 in both); deeper: random, buffers too
    assert changed == {k for k in kept if not k.endswith("num_batches_tracked")}
    assert len(kept) < len(backbone.state_dict())
    # the encoder's optimizer group (encoder_lr_factor) holds the pretrained parameters only
    pretrained = {id(p) for name, p in backbone.named_parameters() if name in kept}
    optimizer, _ = trainer.configure_optimizers()
    assert {id(p) for p in optimizer.param_groups[0]["params"]} == pretrained


@pytest.mark.parametrize("arm", ["SliceWiseAdamWFullResStem", "StackedAdamWFullResStem"])
def test_stage_0_starts_from_the_stem(study, arm, tmp_path, monkeypatch):
    trainer = arm_trainer(study, arm)
    assert trainer.full_res_from_stem
    _, net, _ = loaded_trainer(trainer, "3d_fullres", tmp_path, monkeypatch)
    encoder = net.encoder if "SliceWise" in arm else net.encoder.core_encoder
    first = encoder.full_res.convs[0]
    stem, stem_norm = backbone_stem(encoder.backbone)
    # slice-wise: the 2D stem in the middle slice of the stage's depth kernel; stacked: the 2D core's stage reads
    # the compressed slab, so the stem as it is
    expected = centre(stem.weight, first.conv.weight.shape[2]) if "SliceWise" in arm else stem.weight
    torch.testing.assert_close(first.conv.weight, expected, rtol=0, atol=0)
    assert torch.equal(first.norm.weight, stem_norm.weight) and torch.equal(first.norm.bias, stem_norm.bias)
