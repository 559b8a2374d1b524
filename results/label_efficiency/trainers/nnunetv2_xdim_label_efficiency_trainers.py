"""Study arms of the label-efficiency study that are not (yet) package trainers: class attributes only.

Put this folder into nnUNet_extTrainer next to the package's (the study scripts do).
"""
from nnunetv2_xdim.trainers import nnUNetTrainerXDimEfficientNetLite0, nnUNetTrainerXDimEfficientNetLite0_Scratch


class nnUNetTrainerXDimEfficientNetLite0_InputNormBackbone(nnUNetTrainerXDimEfficientNetLite0):
    input_norm = "backbone"


class nnUNetTrainerXDimEfficientNetLite0_InputNormBackbone_Scratch(nnUNetTrainerXDimEfficientNetLite0_Scratch):
    input_norm = "backbone"


class nnUNetTrainerXDimEfficientNetLite0_InputNormNone(nnUNetTrainerXDimEfficientNetLite0):
    input_norm = "none"


class nnUNetTrainerXDimEfficientNetLite0_InputNormNone_Scratch(nnUNetTrainerXDimEfficientNetLite0_Scratch):
    input_norm = "none"
