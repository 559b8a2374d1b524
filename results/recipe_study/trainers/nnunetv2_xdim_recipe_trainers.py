"""Trainers of the recipe study (../recipe_study.py; ../arms.py names the arm of each): each changes ONE recipe
factor of the arm it subclasses. The study's `pretrained` arm is nnUNetTrainerXDimEfficientNetLite0 (the backbone
whose ImageNet weights install offline) with nnU-Net's SGD; the `adamw` arm the same with AdamW.

The study adds this folder to nnUNet_extTrainer next to the package's own folder. Every class keeps the
architecture record of its parent, so its models predict with nnU-Net's commands like any XDim model. Arms that
change the network do so through encoder mixins (the trainer attribute `encoder_mixins`, the encoders' public
hooks), which keep the state dict of the parent's network; nnU-Net's predictor builds the network through the
trainer class, so predictions get the same mixins.
"""

from functools import lru_cache

from nnunetv2_xdim.backbones.timm_backbone import create_features_model, tensor_levels
from nnunetv2_xdim.trainers.base import unwrap
from nnunetv2_xdim.trainers.options import L2SP, FrozenEncoderStart
from nnunetv2_xdim.trainers.variants import (nnUNetTrainerXDimEfficientNetLite0,
                                             nnUNetTrainerXDimEfficientNetLite0_Scratch,
                                             nnUNetTrainerXDimEfficientNetLite0_SliceWise,
                                             nnUNetTrainerXDimEfficientNetLite0_SliceWise_Scratch,
                                             nnUNetTrainerXDimEfficientNetLite0_Stacked,
                                             nnUNetTrainerXDimEfficientNetLite0_Stacked_Scratch,
                                             nnUNetTrainerXDimEfficientNetLite1,
                                             nnUNetTrainerXDimEfficientNetLite1_Scratch,
                                             nnUNetTrainerXDimEfficientNetLite2,
                                             nnUNetTrainerXDimEfficientNetLite2_Scratch)


# An arm pins the optimiser and the full-resolution stage's start it was measured with, so that it stays the same
# recipe when the package's defaults change (the stem start is off in every arm that does not name it).

class PinnedSGD:
    """Mixin: nnU-Net's SGD (Nesterov, momentum 0.99, lr 1e-2), full-resolution stage from random weights."""
    optimizer_name = "sgd"
    full_res_from_stem = False


class PinnedAdamW:
    """Mixin: AdamW (lr 1e-3, weight decay 1e-2), full-resolution stage from random weights."""
    optimizer_name = "adamw"
    full_res_from_stem = False


class nnUNetTrainerXDimLite0R_SGD(PinnedSGD, nnUNetTrainerXDimEfficientNetLite0):
    """the `pretrained` arm: Lite0, SGD"""


class nnUNetTrainerXDimLite0R_SGD_Scratch(PinnedSGD, nnUNetTrainerXDimEfficientNetLite0_Scratch):
    """the `scratch` arm: its twin"""


class nnUNetTrainerXDimLite1R_SGD(PinnedSGD, nnUNetTrainerXDimEfficientNetLite1):
    """Lite1, SGD"""


class nnUNetTrainerXDimLite1R_SGD_Scratch(PinnedSGD, nnUNetTrainerXDimEfficientNetLite1_Scratch):
    """Lite1's scratch twin, SGD"""


class nnUNetTrainerXDimLite2R_SGD(PinnedSGD, nnUNetTrainerXDimEfficientNetLite2):
    """Lite2, SGD"""


class nnUNetTrainerXDimLite2R_SGD_Scratch(PinnedSGD, nnUNetTrainerXDimEfficientNetLite2_Scratch):
    """Lite2's scratch twin, SGD"""


class nnUNetTrainerXDimLite0R_EncLR1(nnUNetTrainerXDimLite0R_SGD):
    """encoder learns at the decoder's rate (nnU-Net's recipe unchanged)"""
    encoder_lr_factor = 1.0


class nnUNetTrainerXDimLite0R_EncLR03(nnUNetTrainerXDimLite0R_SGD):
    """encoder at 0.3x"""
    encoder_lr_factor = 0.3


class nnUNetTrainerXDimLite0R_NoWarmup(nnUNetTrainerXDimLite0R_SGD):
    """no warm-up"""
    warmup_fraction = 0.0


class nnUNetTrainerXDimLite0R_Freeze10(FrozenEncoderStart, nnUNetTrainerXDimLite0R_SGD):
    """encoder frozen for the first 10 % of epochs"""
    freeze_encoder_fraction = 0.1


class nnUNetTrainerXDimLite0R_FrozenEncoder(FrozenEncoderStart, nnUNetTrainerXDimLite0R_SGD):
    """ImageNet encoder frozen for the whole run (a probe: can the fixed features segment at all?)"""
    freeze_encoder_fraction = 1.0


class nnUNetTrainerXDimLite0R_FrozenRandomEncoder(nnUNetTrainerXDimLite0R_FrozenEncoder):
    """control of the frozen probe: the same frozen encoder left at its random initialisation. If ImageNet's fixed
    features segment no better than random fixed ones, they carry nothing this task can use at this budget"""

    def maybe_load_imagenet_weights(self) -> bool:
        self.print_to_log_file(f"Encoder: random initialisation kept, frozen ({self.__class__.__name__} is the "
                               "random control of the frozen-encoder probe; ImageNet weights not loaded)")
        return False


class nnUNetTrainerXDimLite0R_AdamW(PinnedAdamW, nnUNetTrainerXDimEfficientNetLite0):
    """AdamW, lr 1e-3, weight decay 1e-2 (instead of SGD momentum 0.99, lr 1e-2)"""


class nnUNetTrainerXDimLite0R_AdamW_Scratch(PinnedAdamW, nnUNetTrainerXDimEfficientNetLite0_Scratch):
    """scratch twin of the AdamW arm"""


class nnUNetTrainerXDimLite0R_NormFrozen(nnUNetTrainerXDimLite0R_SGD):
    """frozen ImageNet BatchNorm statistics (2D) / frozen (3D)"""
    encoder_norm = "frozen"
    encoder_norm_3d = "frozen"


class nnUNetTrainerXDimLite0R_NormInstance(nnUNetTrainerXDimLite0R_SGD):
    """BatchNorm converted to InstanceNorm with the pretrained affine parameters (2D and 3D)"""
    encoder_norm = "instance"
    encoder_norm_3d = "instance"


class nnUNetTrainerXDimLite0R_NormBatch3D(nnUNetTrainerXDimLite0R_SGD):
    """BatchNorm in 3D too (batch 2)"""
    encoder_norm_3d = "batch"


class GreyStem:
    """Encoder mixin: the 2D source of the weights has its first convolution set the 'grey' way: every input
    channel gets the RGB-summed ImageNet filter / in_chans, so a stack of identical grey modalities gives the
    pretrained response to a grey image. timm's own adaptation (in_chans=2) gives channel c the filter of colour
    c mod 3 times 3 / in_chans: FLAIR sees the red filter, T1 the green one."""

    def build_2d_backbone(self, **timm_kwargs):
        rgb = create_features_model(self.backbone_name, 3, self.n_levels, **timm_kwargs).state_dict()
        model = super().build_2d_backbone()  # random weights, the encoder's input channels
        state = model.state_dict()
        stem = next(k for k, v in rgb.items() if v.ndim == 4 and v.shape[1] == 3)
        state.update({k: v for k, v in rgb.items() if k != stem})
        state[stem] = rgb[stem].sum(1, keepdim=True).repeat(1, self.in_chans, 1, 1) / self.in_chans
        model.load_state_dict(state, strict=True)
        return model


class nnUNetTrainerXDimLite0R_GreyStem(nnUNetTrainerXDimLite0R_SGD):
    """first convolution: every modality read as a grey image (GreyStem)"""
    encoder_mixins = (GreyStem,)


def imagenet_window(x):
    """nnU-Net's z-scored intensities windowed into the range the Lite weights were trained on: [-2, 3] (brain
    tissue to bright lesion) -> [-1, 1], clipped. A fixed map, so sliding-window patches of one case agree."""
    return ((x + 2.0) / 5.0).clamp(0.0, 1.0) * 2.0 - 1.0


class ImageNetWindow:
    """Encoder mixin: the encoder reads imagenet_window(x)."""

    def forward(self, x):
        return super().forward(imagenet_window(x))


class nnUNetTrainerXDimLite0R_ImageNetRange(nnUNetTrainerXDimLite0R_SGD):
    """the encoder sees imagenet_window(x) instead of nnU-Net's z-scores (results/intensity_scale_check.md: a
    scale alone is invisible to BatchNorm, a shift is not). The window is an encoder mixin (ImageNetWindow), not
    part of the architecture record: nnU-Net's validation and predictor build this trainer's network, with the
    window, as long as the study's trainer folder is on nnUNet_extTrainer."""
    encoder_mixins = (ImageNetWindow,)


class nnUNetTrainerXDimLite0R_AdamWInstance(nnUNetTrainerXDimLite0R_AdamW):
    """the two best pretrained arms on their own axes combined: AdamW and BatchNorm converted to InstanceNorm"""
    encoder_norm = "instance"
    encoder_norm_3d = "instance"


class nnUNetTrainerXDimLite0R_AdamWInstance_Scratch(nnUNetTrainerXDimLite0R_AdamW_Scratch):
    """scratch twin of the AdamW + InstanceNorm arm"""
    encoder_norm = "instance"
    encoder_norm_3d = "instance"


class nnUNetTrainerXDimLite0R_AdamWBatch3D(nnUNetTrainerXDimLite0R_AdamW):
    """the adamw arm with the inflated encoder's pretrained BatchNorm kept in 3D (batch statistics of the 2
    patches in training; at inference the running statistics, which start from ImageNet's) instead of converted
    to InstanceNorm: the slice-wise mode, which keeps BatchNorm, led the inflated one in 3D; asks whether the
    normalisation is why. 3d_fullres only (in 2d it is the adamw arm)"""
    encoder_norm_3d = "batch"


class nnUNetTrainerXDimLite0R_AdamWBatch3D_Scratch(nnUNetTrainerXDimLite0R_AdamW_Scratch):
    """scratch twin of the AdamW + 3D BatchNorm arm"""
    encoder_norm_3d = "batch"


class Transfusion:
    """Encoder mixin (Raghu et al. 2019, 'Transfusion'): only the backbone's first `pretrained_levels` levels
    (tensor_levels; the stem counts to level 0) get the ImageNet weights and count as pretrained; the deeper
    levels keep their random initialisation (buffers included) and are left out of `pretrained_parameters`."""
    pretrained_levels: int

    def random_level_keys(self):
        """The backbone's state-dict keys that keep their random initialisation."""
        return [k for k, level in tensor_levels(self.backbone).items() if level >= self.pretrained_levels]

    def pretrained_parameters(self):
        random = set(self.random_level_keys())
        return (p for name, p in self.backbone.named_parameters() if name not in random)

    def load_pretrained(self, backbone2d) -> None:
        state = self.backbone.state_dict()
        random = {k: state[k].clone() for k in self.random_level_keys()}
        super().load_pretrained(backbone2d)
        state = self.backbone.state_dict()
        state.update(random)
        self.backbone.load_state_dict(state, strict=True)


@lru_cache(maxsize=None)
def transfusion(pretrained_levels: int) -> type:
    """The Transfusion mixin with the stem and levels 0 .. pretrained_levels - 1 pretrained (one class each)."""
    return type(f"Transfusion{pretrained_levels}", (Transfusion,),
                {"pretrained_levels": pretrained_levels, "__module__": __name__})


class nnUNetTrainerXDimLite0R_Transfuse2(nnUNetTrainerXDimLite0R_SGD):
    """only the low-level ImageNet features are transferred (Raghu et al. 2019, 'Transfusion'): stem and
    levels 0-1 (stride 2 and 4) pretrained, the deeper levels keep the scratch twin's random initialisation
    and, like the twin's, learn at the full rate (only the pretrained levels get encoder_lr_factor).
    Tests whether the high-level ImageNet features are what generalises worse from few cases."""
    encoder_mixins = (transfusion(2),)

    def maybe_load_imagenet_weights(self) -> bool:
        if not super().maybe_load_imagenet_weights():
            return False  # nothing loaded (checkpoint, or scratch)
        encoder = unwrap(self.network).encoder
        self.print_to_log_file(f"Transfusion: {len(encoder.random_level_keys())} tensors of levels >= "
                               f"{encoder.pretrained_levels} kept at their random initialisation")
        return True


class nnUNetTrainerXDimLite0R_FullResStem(nnUNetTrainerXDimLite0R_SGD):
    """the random full-resolution stage starts from ImageNet too: its first convolution gets the backbone's
    (in_chans-adapted) stem filters at stride 1 (in 3D inflated like the stem, to the stage's depth kernel) and
    its norm the stem BatchNorm's affine parameters. Lite0's stem has 32 filters, as many as nnU-Net plans for
    stage 0 here. The stage stays outside the encoder's parameter group: it learns at the decoder's rate, as it
    does in every other arm. The package's `full_res_from_stem` (TimmUNetEncoder.full_res_from_stem)."""
    full_res_from_stem = True


class nnUNetTrainerXDimLite0R_Transfuse1(nnUNetTrainerXDimLite0R_Transfuse2):
    """Transfusion with stem and level 0 (stride 2) pretrained only"""
    encoder_mixins = (transfusion(1),)


class nnUNetTrainerXDimLite0R_Transfuse3(nnUNetTrainerXDimLite0R_Transfuse2):
    """Transfusion with stem and levels 0-2 (stride 2-8) pretrained; only the deepest used level is random"""
    encoder_mixins = (transfusion(3),)


class nnUNetTrainerXDimLite0R_AdamWEncLR1(nnUNetTrainerXDimLite0R_AdamW):
    """AdamW with the encoder at the decoder's rate: against adamw_scratch only the initialisation differs"""
    encoder_lr_factor = 1.0


class nnUNetTrainerXDimLite0R_Warmup25(nnUNetTrainerXDimLite0R_SGD):
    """linear warm-up over the first 25 % of epochs (the default 2 % rounds to zero epochs at short budgets)"""
    warmup_fraction = 0.25


class nnUNetTrainerXDimLite0R_AdamWFreeze10(FrozenEncoderStart, nnUNetTrainerXDimLite0R_AdamW):
    """AdamW with the encoder frozen for the first 10 % of epochs (the decoder first learns to read the ImageNet
    features); its twin is adamw_scratch, for which a frozen phase is meaningless"""
    freeze_encoder_fraction = 0.1


class nnUNetTrainerXDimLite0R_AdamWImageNetRange(nnUNetTrainerXDimLite0R_ImageNetRange):
    """the adamw arm with the encoder's input windowed to the weights' range (imagenet_window); asks in 3D on T1
    what the input-range arm asked in 2D on FLAIR + T1. Its twin is adamw_scratch"""
    optimizer_name = "adamw"


class nnUNetTrainerXDimLite0R_AdamWFullResStem(nnUNetTrainerXDimLite0R_FullResStem):
    """the adamw arm with the full-resolution stage started from the ImageNet stem (FullResStem; in 3D the stem
    inflated to the stage's depth kernel); its twin is adamw_scratch"""
    optimizer_name = "adamw"


class nnUNetTrainerXDimLite0R_AdamWFullResStemImageNetRange(nnUNetTrainerXDimLite0R_AdamWImageNetRange):
    """the package's recipe (AdamW, full-resolution stage from the ImageNet stem) with the encoder's input windowed
    to the weights' range (imagenet_window): does the window add to the stem start? Its base is
    adamw_fullres_stem, its twin adamw_scratch"""
    full_res_from_stem = True


class nnUNetTrainerXDimLite0R_AdamWL2SP(L2SP, nnUNetTrainerXDimLite0R_AdamW):
    """AdamW whose encoder weight decay pulls toward the ImageNet weights instead of toward zero: decoupled L2-SP
    (the package's study option L2SP, trainers/options.py), the classic regulariser for fine-tuning on few
    samples. With AdamW a step moves a weight by about its learning rate (1e-4 for the encoder), so the pull holds
    the drift near 1 / l2sp_strength = 0.01 (conv weights are ~0.05-0.1): between the frozen encoder (drift 0) and
    free fine-tuning. Its twin is adamw_scratch (a pull toward random weights carries no prior)."""
    l2sp_strength = 100.0


class nnUNetTrainerXDimLite0R_AdamWL2SP1000(nnUNetTrainerXDimLite0R_AdamWL2SP):
    """L2-SP ten times stronger: drift held near 0.001, close to a frozen encoder (BatchNorm statistics still adapt)"""
    l2sp_strength = 1000.0


class nnUNetTrainerXDimLite0R_AdamWL2SP30(nnUNetTrainerXDimLite0R_AdamWL2SP):
    """L2-SP at strength 30: drift held near 0.03"""
    l2sp_strength = 30.0


class nnUNetTrainerXDimLite0R_AdamWL2SP300(nnUNetTrainerXDimLite0R_AdamWL2SP):
    """L2-SP at strength 300: drift held near 0.003"""
    l2sp_strength = 300.0


class nnUNetTrainerXDimLite0R_SliceWiseAdamW(PinnedAdamW, nnUNetTrainerXDimEfficientNetLite0_SliceWise):
    """3D by the slice-wise mode instead of inflation: the 2D ImageNet encoder, unchanged, reads every slice
    (no kernel is inflated, so the pretrained features are exactly ImageNet's); AdamW. 3d_fullres only (in 2d
    it is the adamw arm)"""


class nnUNetTrainerXDimLite0R_SliceWiseAdamW_Scratch(PinnedAdamW,
                                                     nnUNetTrainerXDimEfficientNetLite0_SliceWise_Scratch):
    """scratch twin of the slice-wise AdamW arm"""


class nnUNetTrainerXDimLite0R_SliceWiseAdamWEncLR1(nnUNetTrainerXDimLite0R_SliceWiseAdamW):
    """the slice-wise AdamW arm with the encoder at the decoder's rate: against its twin only the initialisation
    differs (asks whether the 0.1x encoder rate holds back the ImageNet encoder in 3D)"""
    encoder_lr_factor = 1.0


class StemStartsFullRes:
    """Encoder mixin: the full-resolution stage starts from the ImageNet stem (XDimUNet.full_res_from_stem) in
    the slice-wise and stacked modes too, which keep it random by default."""
    full_res_stem_start = True


class nnUNetTrainerXDimLite0R_SliceWiseAdamWFullResStem(nnUNetTrainerXDimLite0R_SliceWiseAdamW):
    """the slice-wise AdamW arm with its full-resolution stage started from the ImageNet stem, as the package starts
    it in 2D and inflated 3D (TimmUNetEncoder.full_res_from_stem): the 2D stem in the middle slice of the stage's
    depth kernel (the centre rule), so the stage starts by applying the stem to every slice, as the backbone reads
    them. The package keeps the slice-wise stage random (this arm did not win); its twin is
    slicewise_adamw_scratch"""
    full_res_from_stem = True
    encoder_mixins = (StemStartsFullRes,)


class nnUNetTrainerXDimLite0R_StackedAdamW(PinnedAdamW, nnUNetTrainerXDimEfficientNetLite0_Stacked):
    """3D by the stacked mode instead of inflation: a random 3D stem compresses depth into 3-channel slabs that
    the 2D ImageNet encoder reads unchanged (pseudo-RGB, no kernel inflated); AdamW. 3d_fullres only"""


class nnUNetTrainerXDimLite0R_StackedAdamW_Scratch(PinnedAdamW, nnUNetTrainerXDimEfficientNetLite0_Stacked_Scratch):
    """scratch twin of the stacked AdamW arm"""


class nnUNetTrainerXDimLite0R_StackedAdamWFullResStem(nnUNetTrainerXDimLite0R_StackedAdamW):
    """the stacked AdamW arm with its 2D core's full-resolution stage started from the ImageNet stem, as the package
    starts it in 2D and inflated 3D: that stage reads the 3-channel compressed slab, so the 2D stem (32x3x3x3 for
    Lite0) fits it as it is, at stride 1. The random 3D stem before the compression stays random. The package
    keeps the stacked mode's stage random; its twin is stacked_adamw_scratch"""
    full_res_from_stem = True
    encoder_mixins = (StemStartsFullRes,)


class nnUNetTrainerXDimLite2R_AdamW(PinnedAdamW, nnUNetTrainerXDimEfficientNetLite2):
    """the adamw arm with EfficientNet-Lite2's ImageNet weights instead of Lite0's (a wider, deeper encoder with
    better ImageNet features: asks whether stronger weights widen the lead in 3D)"""


class nnUNetTrainerXDimLite2R_AdamW_Scratch(PinnedAdamW, nnUNetTrainerXDimEfficientNetLite2_Scratch):
    """scratch twin of the Lite2 AdamW arm"""
