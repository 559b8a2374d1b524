"""The import path of the network builder that trainers and scripts use: the builder and its mode table are in
build.py, the network in xdim_unet.py."""
from .build import MODE_ENCODERS, MODES_3D, build_network
from .xdim_unet import XDimUNet

__all__ = ["MODE_ENCODERS", "MODES_3D", "XDimUNet", "build_network"]
