"""Recipe knobs of the XDim trainer (optimiser, base learning rate, frozen-encoder phase, encoder learning rate):
what configure_optimizers and the scheduler really do over a schedule."""
import pytest
import torch

from plans_util import configuration_dict, plans_dict
from nnunetv2_xdim.trainers.base import unwrap
from nnunetv2_xdim.trainers.variants import nnUNetTrainerXDimEfficientNetLite0, nnUNetTrainerXDimEfficientNetLite0_Scratch

DATASET_JSON = {"channel_names": {"0": "MR"}, "labels": {"background": 0, "tumour": 1}, "numTraining": 4,
                "file_ending": ".nii.gz"}


def make_trainer(cls, tmp_path, monkeypatch, **attrs):
    monkeypatch.setenv("nnUNet_xdim_epochs", "20")
    for var in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        monkeypatch.setenv(var, str(tmp_path / var))
    cls = type(cls.__name__ + "Probe", (cls,), attrs)
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
    trainer = make_trainer(nnUNetTrainerXDimEfficientNetLite0, tmp_path, monkeypatch, freeze_encoder_fraction=0.25,
                           warmup_fraction=0.0)
    _, enc, rest = lr_per_epoch(trainer)
    assert enc[:5] == [0.0] * 5 and all(r > 0 for r in rest)
    assert enc[5:] == pytest.approx([0.1 * r for r in rest[5:]])


def test_frozen_phase_really_keeps_the_encoder(tmp_path, monkeypatch):
    trainer = make_trainer(nnUNetTrainerXDimEfficientNetLite0, tmp_path, monkeypatch, freeze_encoder_fraction=0.5)
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
    trainer = make_trainer(nnUNetTrainerXDimEfficientNetLite0_Scratch, tmp_path, monkeypatch,
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
