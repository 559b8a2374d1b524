"""Which trainers a protocol run trains: the baseline, EfficientNet-Lite stand-ins for the paper's backbones, and
an early check of the names."""
import re
from typing import Sequence

from .settings import ProtocolError

BASELINE = "nnUNetTrainerXDimBaseline"  # nnU-Net's default network and recipe
STAND_INS = {"lite0": "EfficientNetLite0", "lite1": "EfficientNetLite1", "lite2": "EfficientNetLite2"}


def stand_in_trainer(trainer: str, stand_in: str) -> str:
    """nnUNetTrainerXDimEfficientNetB0_Stacked -> nnUNetTrainerXDimEfficientNetLite0_Stacked; others unchanged."""
    m = re.fullmatch(r"nnUNetTrainerXDim([A-Za-z0-9]+)((?:_[A-Za-z0-9]+)*)", trainer)
    if m is None or trainer == BASELINE:
        return trainer
    return f"nnUNetTrainerXDim{STAND_INS[stand_in]}{m.group(2)}"


def check_trainer_names(trainers: Sequence[str]) -> None:
    """Catch typos in our trainer names now, not after hours of conversion and planning."""
    from nnunetv2_xdim import trainers as ours  # imports torch: only when we really run

    for t in trainers:
        if t.startswith("nnUNetTrainerXDim") and not hasattr(ours, t):
            raise ProtocolError(f"unknown trainer {t}: the XDim trainers are listed in the README's trainer table "
                                f"(e.g. nnUNetTrainerXDimEfficientNetB0, ..._Stacked, ..._SliceWise)")
        if "__" in t:
            raise ProtocolError(f"trainer name {t} contains '__', which nnU-Net's results folders cannot hold")
