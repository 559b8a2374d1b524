# The folder that nnUNet_extTrainer points to. nnU-Net imports every top-level .py here and forgets the
# modules afterwards, so this file only re-exports the trainers that live in the installed package.
from nnunetv2_xdim.trainers import *  # noqa: F401,F403
