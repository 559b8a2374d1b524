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
