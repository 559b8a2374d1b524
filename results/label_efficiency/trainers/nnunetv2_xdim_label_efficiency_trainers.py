"""Study arms of the label-efficiency study that are not package trainers: class attributes only.

nnUNetTrainerXDimEfficientNetLite0_InputNorm{None,Backbone}[_Scratch]: Lite0 (and its random twin) with the input
seen as nnU-Net normalised it, or scaled the way the ImageNet weights expect (trainer attribute input_norm).
Put this folder into nnUNet_extTrainer next to the package's (the study scripts do).
"""
from nnunetv2_xdim.trainers import nnUNetTrainerXDimEfficientNetLite0, nnUNetTrainerXDimEfficientNetLite0_Scratch

_BASES = ((nnUNetTrainerXDimEfficientNetLite0, ""), (nnUNetTrainerXDimEfficientNetLite0_Scratch, "_Scratch"))
for _base, _suffix in _BASES:
    for _norm in ("none", "backbone"):
        _name = f"nnUNetTrainerXDimEfficientNetLite0_InputNorm{_norm.capitalize()}{_suffix}"
        globals()[_name] = type(_name, (_base,), {"input_norm": _norm, "__module__": __name__})
