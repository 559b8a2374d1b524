"""Study options of the XDim trainer: opt-in mixins, listed before the trainer they change.

    from nnunetv2_xdim.trainers.options import L2SP
    from nnunetv2_xdim.trainers.variants import nnUNetTrainerXDimEfficientNetLite0

    class nnUNetTrainerXDimLite0L2SP(L2SP, nnUNetTrainerXDimEfficientNetLite0):
        l2sp_strength = 100.0

They are regularisers of the pretrained encoder that the recipe study measured (documentation/recipe.md has the
evidence); no trainer of the package uses them. Both act on the pretrained encoder only: a `_Scratch` twin, whose
encoder starts random, has nothing to protect and ignores them. Each writes its settings into the optimizer's
encoder parameter group, so they travel with a checkpoint: a run continued with `--c` keeps them, whichever
XDim trainer continues it.
"""
import torch


class L2SP:
    """Decoupled L2-SP (Li et al., ICML 2018, "Explicit inductive bias for transfer learning"): the pretrained
    encoder's weight decay pulls toward its starting weights (ImageNet, or nnU-Net's -pretrained_weights) instead
    of toward zero. After each optimizer step every encoder weight moves the fraction
    `l2sp_strength` x (its current learning rate) of the way back to its anchor; with AdamW, whose encoder step is
    about its learning rate, that holds the drift near 1 / l2sp_strength."""

    l2sp_strength: float = 100.0  # 0: off

    def uses_l2sp(self) -> bool:
        return self.pretrained and self.l2sp_strength > 0

    def encoder_group_options(self) -> dict:
        options = super().encoder_group_options()
        if self.uses_l2sp():
            # the pull replaces the encoder's decay toward zero
            options.update(weight_decay=0.0, l2sp_strength=float(self.l2sp_strength))
        return options


class FrozenEncoderStart:
    """The pretrained encoder at learning rate 0 for the first `freeze_encoder_fraction` of the epochs, so that the
    decoder first learns to read its features. The scheduler sets the rate (PolyLRWithWarmup, `frozen_until`);
    `requires_grad` stays untouched, which would change DDP's and the optimizer's view of the model."""

    freeze_encoder_fraction: float = 0.1  # 1.0: frozen for the whole run

    def encoder_group_options(self) -> dict:
        options = super().encoder_group_options()
        if self.pretrained:
            options["frozen_until"] = int(round(self.freeze_encoder_fraction * self.num_epochs))
        return options


# each option and the attribute that sets it
STUDY_OPTIONS = {L2SP: "l2sp_strength", FrozenEncoderStart: "freeze_encoder_fraction"}


def pull_toward_anchors(optimizer, args, kwargs) -> None:
    """Optimizer step post-hook: the decoupled L2-SP step of every parameter group that holds anchors.

    Anchors and strength live in the group, so a checkpoint carries them (nnU-Net saves the optimizer's
    state_dict): every XDim trainer registers this hook, and a run continued with --c keeps pulling toward its
    start while a checkpoint trained without L2-SP continues without it."""
    for group in optimizer.param_groups:
        anchors = group.get("l2sp_anchors")
        rate = min(1.0, group["lr"] * group.get("l2sp_strength", 0.0))
        if anchors and rate > 0:
            with torch.no_grad():
                for p, anchor in zip(group["params"], anchors):
                    p.lerp_(anchor, rate)
