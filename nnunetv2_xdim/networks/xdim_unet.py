"""The XDim network: an encoder around a pretrained 2D backbone, nnU-Net's UNetDecoder, and the interface the
trainer relies on.

Every XDim network has `decoder.deep_supervision` (nnU-Net's switch) and four methods for ImageNet weights, each
handed to the encoder (where a study or a user changes them, by subclassing the encoder: see build.py):
`pretrained_parameters()` (what gets the encoder learning rate), `build_2d_backbone(**timm_kwargs)` (the
unmodified 2D timm backbone the network starts from), `load_pretrained(backbone2d)` (copy, inflate or otherwise
transfer its weights, strictly) and `full_res_from_stem()` (start the random full-resolution stage from the
pretrained stem, where the encoder does so).
"""
from dynamic_network_architectures.building_blocks.unet_decoder import UNetDecoder
from dynamic_network_architectures.initialization.weight_init import InitWeights_He
from torch import nn

from .plan import PlanArch


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
        """Start the full-resolution stage from the pretrained stem where the encoder's `full_res_stem_start` says
        so (2D and inflated encoders; the slice-wise and stacked ones keep the stage random unless a subclass
        sets it: see documentation/recipe.md). Returns what was done, for the training log."""
        if getattr(self.encoder, "full_res_stem_start", False):
            return self.encoder.full_res_from_stem()
        return f"full-resolution stage: random ({type(self.encoder).__name__} keeps it random)"
