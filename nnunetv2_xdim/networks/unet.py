"""XDim U-Net: any encoder that exposes nnU-Net's encoder attributes + nnU-Net's own UNetDecoder."""
from dynamic_network_architectures.building_blocks.unet_decoder import UNetDecoder
from dynamic_network_architectures.initialization.weight_init import InitWeights_He
from torch import nn

from .encoder2d import TimmUNetEncoder
from .plan import PlanArch, XDimArch


class XDimUNet(nn.Module):
    """`encoder(x)` gives one skip per plan stage; the decoder gives nnU-Net's deep-supervision outputs.

    The decoder's segmentation heads are `decoder.seg_layers.*`, the names nnU-Net's `-pretrained_weights`
    skips, so fine-tuning across label sets works; the heads exist whether deep supervision is on or off,
    so state-dict keys do not depend on it.
    """

    def __init__(self, encoder: nn.Module, plan: PlanArch, num_classes: int, deep_supervision: bool):
        super().__init__()
        self.encoder = encoder
        self.decoder = UNetDecoder(encoder, num_classes, plan.n_conv_per_stage_decoder, deep_supervision,
                                   nonlin_first=False)
        he = InitWeights_He(1e-2)
        for m in encoder.random_init_modules():
            m.apply(he)
        for m in (self.decoder.stages, self.decoder.transpconvs, self.decoder.seg_layers):
            m.apply(he)

    def forward(self, x):
        return self.decoder(self.encoder(x))


def build_network(arch: XDimArch, plan: PlanArch, num_input_channels: int, num_output_channels: int,
                  deep_supervision: bool) -> XDimUNet:
    """The XDim network for one nnU-Net configuration (random weights; ImageNet weights are loaded by the trainer)."""
    if plan.dim == 2:
        encoder = TimmUNetEncoder(arch.backbone, num_input_channels, plan, arch.encoder_norm)
    else:
        raise NotImplementedError(
            f"3D configurations (mode_3d='{arch.mode_3d}') are not available in this version of nnunetv2-xdim yet; "
            f"train the '2d' configuration, or nnU-Net's own trainer for 3D")
    return XDimUNet(encoder, plan, num_output_channels, deep_supervision)
