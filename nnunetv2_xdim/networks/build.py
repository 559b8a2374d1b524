"""The XDim network for one nnU-Net configuration: the encoder the plan and the architecture record ask for,
inside XDimUNet.

2D plans use TimmUNetEncoder; 3D plans the encoder of the record's `mode_3d`, from the table MODE_ENCODERS (each
class builds itself from the record with `from_arch(arch, plan, num_input_channels)`). A new 3D mode is one more
entry.
"""
from functools import lru_cache
from typing import Dict, Sequence, Type

from torch import nn

from .encoder2d import TimmUNetEncoder
from .inflated import InflatedUNetEncoder
from .input_norm import build_input_norm
from .plan import PlanArch, XDimArch
from .slicewise import SliceWiseEncoder
from .stacked import StackedEncoder
from .xdim_unet import XDimUNet

MODE_ENCODERS: Dict[str, Type[nn.Module]] = {
    "inflated": InflatedUNetEncoder,
    "slicewise": SliceWiseEncoder,
    "stacked": StackedEncoder,
}
MODES_3D = tuple(MODE_ENCODERS)


@lru_cache(maxsize=None)
def _with_mixins(mixins: tuple, base: type) -> type:
    # one class per combination, so that networks built twice have the same type
    name = "".join(m.__name__ for m in mixins) + base.__name__
    return type(name, mixins + (base,), {"__module__": __name__, "__doc__": base.__doc__})


def encoder_class(arch: XDimArch, plan: PlanArch, encoder_mixins: Sequence[type] = ()) -> type:
    """The encoder class for `plan` and `arch`, with `encoder_mixins` (if any) listed before it."""
    if plan.dim == 2:
        base = TimmUNetEncoder
    elif arch.mode_3d in MODE_ENCODERS:
        base = MODE_ENCODERS[arch.mode_3d]
    else:
        raise ValueError(f"unknown 3D mode '{arch.mode_3d}' (trainer attribute mode_3d); choose one of {MODES_3D}")
    return _with_mixins(tuple(encoder_mixins), base) if encoder_mixins else base


def build_network(arch: XDimArch, plan: PlanArch, num_input_channels: int, num_output_channels: int,
                  deep_supervision: bool, encoder_mixins: Sequence[type] = ()) -> nn.Module:
    """The XDim network for one nnU-Net configuration (random weights; ImageNet weights are loaded by the trainer).

    `encoder_mixins`: classes placed before the mode's encoder class (a subclass is made of them), to override
    the encoder's hooks (BackboneEncoder lists them) without changing the architecture: the state dict stays
    that of the network without them.
    """
    encoder = encoder_class(arch, plan, encoder_mixins).from_arch(arch, plan, num_input_channels)
    network = XDimUNet(encoder, plan, num_output_channels, deep_supervision)
    network.input_norm = build_input_norm(arch.input_norm, arch.backbone, plan.normalization_schemes,
                                          num_input_channels, plan.dim)
    return network
