"""XDim networks for every nnU-Net configuration, and the interface the trainer relies on.

Every XDim network has `decoder.deep_supervision` (nnU-Net's switch) and three methods for ImageNet weights:
`pretrained_parameters()` (what gets the encoder learning rate), `build_2d_backbone(**timm_kwargs)` (the
unmodified 2D timm backbone the network starts from) and `load_pretrained(backbone2d)` (copy, inflate or
otherwise transfer its weights, strictly).
"""
from dynamic_network_architectures.building_blocks.unet_decoder import UNetDecoder
from dynamic_network_architectures.initialization.weight_init import InitWeights_He
from torch import nn

from .encoder2d import TimmUNetEncoder
from .input_norm import build_input_norm
from .plan import PlanArch, XDimArch

MODES_3D = ("inflated", "slicewise", "stacked")


class XDimUNet(nn.Module):
    """`encoder(x)` gives one skip per plan stage; nnU-Net's UNetDecoder gives the deep-supervision outputs.

    The decoder's segmentation heads are `decoder.seg_layers.*`, the names nnU-Net's `-pretrained_weights`
    skips, so fine-tuning across label sets works; the heads exist whether deep supervision is on or off,
    so state-dict keys do not depend on it.
    """

    def __init__(self, encoder: nn.Module, plan: PlanArch, num_classes: int, deep_supervision: bool):
        super().__init__()
        self.input_norm = None  # set by build_network where the arch asks for it (see input_norm.py)
        self.encoder = encoder
        self.decoder = UNetDecoder(encoder, num_classes, plan.n_conv_per_stage_decoder, deep_supervision,
                                   nonlin_first=False)
        he = InitWeights_He(1e-2)
        for m in encoder.random_init_modules():
            m.apply(he)
        for m in (self.decoder.stages, self.decoder.transpconvs, self.decoder.seg_layers):
            m.apply(he)

    def forward(self, x):
        if self.input_norm is not None:
            x = self.input_norm(x)
        return self.decoder(self.encoder(x))

    def pretrained_parameters(self):
        return self.encoder.pretrained_parameters()

    def build_2d_backbone(self, **timm_kwargs) -> nn.Module:
        return self.encoder.build_2d_backbone(**timm_kwargs)

    def load_pretrained(self, backbone2d: nn.Module) -> None:
        self.encoder.load_pretrained(backbone2d)

    def full_res_from_stem(self) -> str:
        """See TimmUNetEncoder.full_res_from_stem (2D and inflated encoders); the other 3D modes keep their random
        full-resolution stage: the recipe study found this start a gain in inflated 3D, a tie in 2D, and no gain
        in the slice-wise and stacked modes (arms slicewise_adamw_fullres_stem, stacked_adamw_fullres_stem)."""
        if hasattr(self.encoder, "full_res_from_stem"):
            return self.encoder.full_res_from_stem()
        return f"full-resolution stage: random ({type(self.encoder).__name__} keeps it random)"


def build_network(arch: XDimArch, plan: PlanArch, num_input_channels: int, num_output_channels: int,
                  deep_supervision: bool) -> nn.Module:
    """The XDim network for one nnU-Net configuration (random weights; ImageNet weights are loaded by the trainer)."""
    network = _build_mode(arch, plan, num_input_channels, num_output_channels, deep_supervision)
    network.input_norm = build_input_norm(arch.input_norm, arch.backbone, plan.normalization_schemes,
                                          num_input_channels, plan.dim)
    return network


def _build_mode(arch: XDimArch, plan: PlanArch, num_input_channels: int, num_output_channels: int,
                deep_supervision: bool) -> nn.Module:
    if plan.dim == 2:
        encoder = TimmUNetEncoder(arch.backbone, num_input_channels, plan, arch.encoder_norm)
        return XDimUNet(encoder, plan, num_output_channels, deep_supervision)
    if arch.mode_3d not in MODES_3D:
        raise ValueError(f"unknown 3D mode '{arch.mode_3d}' (trainer attribute mode_3d); choose one of {MODES_3D}")
    if arch.mode_3d == "inflated":
        from .inflated import build_inflated_network
        return build_inflated_network(arch, plan, num_input_channels, num_output_channels, deep_supervision)
    if arch.mode_3d == "slicewise":
        from .slicewise import build_slicewise_network
        return build_slicewise_network(arch, plan, num_input_channels, num_output_channels, deep_supervision)
    from .stacked import build_stacked_network
    return build_stacked_network(arch, plan, num_input_channels, num_output_channels, deep_supervision)
