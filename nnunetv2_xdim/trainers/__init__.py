"""All XDim trainers. nnU-Net finds them through the folder nnunetv2_xdim/ext_trainers (see discovery.py)."""
from .base import nnUNetTrainerXDim
from .options import L2SP, FrozenEncoderStart  # study options (mixins); not trainers, so not in __all__
from .variants import *  # noqa: F401,F403  (every trainer class, by name)
from .variants import ALL_TRAINERS, BACKBONE_TRAINERS, SCRATCH_TRAINERS

__all__ = [c.__name__ for c in ALL_TRAINERS]
