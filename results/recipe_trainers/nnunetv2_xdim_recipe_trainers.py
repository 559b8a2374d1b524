"""Trainers of the recipe study (results/recipe_study.py): each changes ONE recipe factor of
nnUNetTrainerXDimEfficientNetLite0 (the only backbone whose ImageNet weights install offline).

The study adds this folder to nnUNet_extTrainer next to the package's own folder. Every class keeps the
architecture record of its parent, so its models predict with nnU-Net's commands like any XDim model.
"""
from nnunetv2_xdim.trainers.variants import (nnUNetTrainerXDimEfficientNetLite0,
                                             nnUNetTrainerXDimEfficientNetLite0_Scratch)


class nnUNetTrainerXDimLite0R_EncLR1(nnUNetTrainerXDimEfficientNetLite0):
    """encoder learns at the decoder's rate (nnU-Net's recipe unchanged)"""
    encoder_lr_factor = 1.0


class nnUNetTrainerXDimLite0R_EncLR03(nnUNetTrainerXDimEfficientNetLite0):
    """encoder at 0.3x"""
    encoder_lr_factor = 0.3


class nnUNetTrainerXDimLite0R_NoWarmup(nnUNetTrainerXDimEfficientNetLite0):
    """no warm-up"""
    warmup_fraction = 0.0


class nnUNetTrainerXDimLite0R_Freeze10(nnUNetTrainerXDimEfficientNetLite0):
    """encoder frozen for the first 10 % of epochs"""
    freeze_encoder_fraction = 0.1


class nnUNetTrainerXDimLite0R_FrozenEncoder(nnUNetTrainerXDimEfficientNetLite0):
    """ImageNet encoder frozen for the whole run (a probe: can the fixed features segment at all?)"""
    freeze_encoder_fraction = 1.0


class nnUNetTrainerXDimLite0R_AdamW(nnUNetTrainerXDimEfficientNetLite0):
    """AdamW, lr 1e-3, weight decay 1e-2 (instead of SGD momentum 0.99, lr 1e-2)"""
    optimizer_name = "adamw"


class nnUNetTrainerXDimLite0R_AdamW_Scratch(nnUNetTrainerXDimEfficientNetLite0_Scratch):
    """scratch twin of the AdamW arm"""
    optimizer_name = "adamw"


class nnUNetTrainerXDimLite0R_NormFrozen(nnUNetTrainerXDimEfficientNetLite0):
    """frozen ImageNet BatchNorm statistics (2D) / frozen (3D)"""
    encoder_norm = "frozen"
    encoder_norm_3d = "frozen"


class nnUNetTrainerXDimLite0R_NormInstance(nnUNetTrainerXDimEfficientNetLite0):
    """BatchNorm converted to InstanceNorm with the pretrained affine parameters (2D and 3D)"""
    encoder_norm = "instance"
    encoder_norm_3d = "instance"


class nnUNetTrainerXDimLite0R_NormBatch3D(nnUNetTrainerXDimEfficientNetLite0):
    """BatchNorm in 3D too (batch 2)"""
    encoder_norm_3d = "batch"


def grey_stem_backbone(encoder, **timm_kwargs):
    """The encoder's 2D backbone with its first convolution set the 'grey' way: every input channel gets the
    RGB-summed ImageNet filter / in_chans, so a stack of identical grey modalities gives the pretrained
    response to a grey image. timm's own adaptation (in_chans=2) gives channel c the filter of colour c mod 3
    times 3 / in_chans: FLAIR sees the red filter, T1 the green one."""
    from nnunetv2_xdim.backbones.timm_backbone import create_features_model
    rgb = create_features_model(encoder.backbone_name, 3, encoder.n_levels, **timm_kwargs).state_dict()
    model = encoder.build_2d_backbone()  # random weights, the encoder's input channels
    state = model.state_dict()
    stem = next(k for k, v in rgb.items() if v.ndim == 4 and v.shape[1] == 3)
    state.update({k: v for k, v in rgb.items() if k != stem})
    state[stem] = rgb[stem].sum(1, keepdim=True).repeat(1, encoder.in_chans, 1, 1) / encoder.in_chans
    model.load_state_dict(state, strict=True)
    return model


class nnUNetTrainerXDimLite0R_GreyStem(nnUNetTrainerXDimEfficientNetLite0):
    """first convolution: every modality read as a grey image (see grey_stem_backbone)"""

    def maybe_load_imagenet_weights(self) -> None:
        from nnunetv2_xdim.trainers.base import unwrap
        net = unwrap(self.network)
        # the base trainer builds the ImageNet source through net.build_2d_backbone: route it through ours
        net.build_2d_backbone = lambda **kw: grey_stem_backbone(net.encoder, **kw)
        try:
            super().maybe_load_imagenet_weights()
        finally:
            del net.build_2d_backbone


def imagenet_window(x):
    """nnU-Net's z-scored intensities windowed into the range the Lite weights were trained on: [-2, 3] (brain
    tissue to bright lesion) -> [-1, 1], clipped. A fixed map, so sliding-window patches of one case agree."""
    return ((x + 2.0) / 5.0).clamp(0.0, 1.0) * 2.0 - 1.0


class nnUNetTrainerXDimLite0R_ImageNetRange(nnUNetTrainerXDimEfficientNetLite0):
    """the encoder sees imagenet_window(x) instead of nnU-Net's z-scores (results/intensity_scale_check.md: a
    scale alone is invisible to BatchNorm, a shift is not). The window is a forward pre-hook, not part of the
    architecture record: the study's numbers come from nnU-Net's validation inside nnUNetv2_train, which runs
    this trainer's network; nnUNetv2_predict of such a model would not apply it."""

    @classmethod
    def build_network_architecture(cls, plans_manager, configuration_manager, num_input_channels,
                                   num_output_channels, enable_deep_supervision=True):
        # the explicit signature: nnU-Net inspects it and calls *args overrides the old (pre-2.6) way
        net = super().build_network_architecture(plans_manager, configuration_manager, num_input_channels,
                                                 num_output_channels, enable_deep_supervision)
        net.encoder.register_forward_pre_hook(lambda module, inputs: (imagenet_window(inputs[0]),) + inputs[1:])
        return net
