"""The 2D encoder: a timm backbone laid onto an nnU-Net plan (Omnia-Net, generalised).

Plan stage 0 (full resolution) is a small randomly initialised conv stage: the pretrained stem downsamples
at once, and nnU-Net's decoder wants a full-resolution skip (the trainer may start it from the stem's filters:
`full_res_from_stem`). Plan stages 1.. are the backbone's feature levels, each downsampling with the plan's
stride for that stage (the backbone runs on the raw input). A backbone whose first level is at reduction 4
(ConvNeXt) takes two plan stages for it, with a random bridge stage providing the skip in between. Plan stages
beyond the backbone's levels are random conv stages; a plan with fewer stages uses only the first levels.
"""
import copy
from typing import List, NamedTuple, Tuple

import torch
from torch import nn

from ..backbones.norms import convert_norms
from ..backbones.timm_backbone import (apply_level_strides, available_levels, backbone_stem, create_features_model,
                                      feature_levels)
from .plan import PlanArch, XDimArch, check_full_resolution_first_stage, plan_stage, set_decoder_attributes


def map_plan_to_levels(level_factors: List[int], strides: List[Tuple[int, ...]]):
    """Which plan stages the backbone levels cover.

    Returns (level_strides, bridge, first_extra_stage): the per-axis stride of each used level, whether plan
    stage 1 is a bridge stage (first level at reduction 4), and the first plan stage after the backbone.
    """
    n_stages = len(strides)
    stage, level_strides, bridge = 1, [], False
    for li, f in enumerate(level_factors):
        if stage >= n_stages:
            break
        if f == 2:
            level_strides.append(tuple(strides[stage]))
            stage += 1
        elif f == 4 and li == 0:
            if stage + 1 >= n_stages:
                break
            bridge = True
            level_strides.append(tuple(int(a * b) for a, b in zip(strides[stage], strides[stage + 1])))
            stage += 2
        else:
            raise NotImplementedError(f"backbone level {li} downsamples by {f}; only 2 (or 4 for the first level) "
                                      f"can be mapped onto nnU-Net stages")
    return level_strides, bridge, stage


class LevelLayout(NamedTuple):
    """How a backbone's feature levels lie on a plan's stages."""
    level_strides: List[Tuple[int, ...]]  # the per-axis stride of each used level
    bridge: bool  # plan stage 1 is a random bridge stage (first level at reduction 4)
    first_extra_stage: int  # the first plan stage after the backbone's levels
    level_channels: List[int]  # channels of the used levels


def plan_levels(backbone: str, strides: List[Tuple[int, ...]]) -> LevelLayout:
    """Lay `backbone`'s feature levels onto the plan's (in-plane) strides; raises if the plan has no stage left
    for the backbone."""
    reductions, channels = available_levels(backbone)
    factors = [reductions[0]] + [b // a for a, b in zip(reductions[:-1], reductions[1:])]
    level_strides, bridge, first_extra = map_plan_to_levels(factors, strides)
    if not level_strides:
        raise ValueError(f"the plan has {len(strides)} stages, too few to use backbone {backbone}")
    return LevelLayout(level_strides, bridge, first_extra, list(channels[:len(level_strides)]))


class BackboneEncoder(nn.Module):
    """What every encoder around a 2D timm backbone (2D, inflated, slice-wise) shares: the backbone at the plan's
    in-plane strides, the random plan stages around it, and the methods of XDimUNet's pretrained-weight contract.

    Hooks for subclasses (a study, or a user's own variant, overrides them; `build_network(encoder_mixins=...)`
    builds any mode's network with such a subclass; state-dict keys stay the same):
    - `adapt_backbone(backbone2d, weights_only)`: the backbone's form (inflation overrides it; building and loading
      weights both use it);
    - `build_2d_backbone(**timm_kwargs)`: the 2D source of the pretrained weights (e.g. another adaptation of the
      first convolution to the input channels);
    - `pretrained_parameters()`: which parameters count as pretrained (the trainer gives them the encoder learning
      rate);
    - `load_pretrained(backbone2d)`: how the weights arrive (e.g. only some levels kept);
    - `stem_kernel_for_full_res(weight, shape)` and `full_res_stem_start`: how and whether `full_res_from_stem`
      starts the full-resolution stage from the stem;
    - `add_level_stages(plan, level_stages, level_channels)`: modules between the backbone's levels and the skips
      (the slice-wise encoder's slice fusion);
    - `forward(x)`: e.g. a fixed map of the input before the encoder reads it (`super().forward(f(x))`).
    Attributes a hook may read: `backbone` (the adapted timm features model), `backbone_name`, `in_chans`,
    `n_levels`, `level_strides`, `encoder_norm`, `full_res` (plan stage 0).
    """

    # whether XDimUNet.full_res_from_stem (called when the trainer's `full_res_from_stem` is on) starts the
    # full-resolution stage from the stem
    full_res_stem_start: bool = True

    def lay_out(self, backbone: str, input_channels: int, plan: PlanArch, encoder_norm: str,
                levels: LevelLayout) -> None:
        """The backbone at the levels' strides, the attributes nnU-Net's decoder reads, and the plan stages."""
        self.add_backbone(backbone, input_channels, levels.level_strides, encoder_norm)
        set_decoder_attributes(self, plan)
        self.add_plan_stages(plan, input_channels, levels)

    def add_backbone(self, backbone: str, input_channels: int, level_strides, encoder_norm: str) -> None:
        self.backbone_name, self.in_chans, self.n_levels = backbone, input_channels, len(level_strides)
        self.level_strides, self.encoder_norm = level_strides, encoder_norm
        self.backbone = self.adapt_backbone(create_features_model(backbone, input_channels, self.n_levels))

    def add_plan_stages(self, plan: PlanArch, input_channels: int, levels: LevelLayout) -> None:
        """The random plan stages around the backbone: full resolution, bridge (if any), what `add_level_stages`
        adds, extra stages below the backbone.

        Sets `full_res`, `bridge`, `extra` (registered in this order, with the level stages between bridge and
        extra: optimizer states in checkpoints follow it) and `output_channels`, one entry per plan stage.
        """
        f = plan.features_per_stage
        self.full_res = plan_stage(plan, 0, input_channels, f[0])
        self.bridge = plan_stage(plan, 1, f[0], f[1]) if levels.bridge else None
        first_extra = levels.first_extra_stage
        level_channels = list(levels.level_channels)
        self.add_level_stages(plan, range(first_extra - len(level_channels), first_extra), level_channels)
        out = [f[0]] + ([f[1]] if levels.bridge else []) + level_channels
        self.extra = nn.ModuleList()
        for s in range(first_extra, plan.n_stages):
            self.extra.append(plan_stage(plan, s, out[-1], f[s]))
            out.append(f[s])
        assert len(out) == plan.n_stages
        self.output_channels = out

    def add_level_stages(self, plan: PlanArch, level_stages: range, level_channels: List[int]) -> None:
        """Hook: modules for the backbone's levels (level i stands for plan stage `level_stages[i]`); none here."""

    def random_init_modules(self) -> List[nn.Module]:
        """The parts that never have pretrained weights (nnU-Net's He init is applied to these)."""
        return [m for m in (self.full_res, self.bridge, self.extra) if m is not None]

    def adapt_backbone(self, backbone2d: nn.Module, weights_only: bool = False) -> nn.Module:
        """A 2D timm backbone as this encoder runs it: the plan's strides, this encoder's normalisation.
        `weights_only` (loading weights) skips the strides: they change the forward, not the weights, and any
        module then reaches the strict load, whose error names what does not fit."""
        if not weights_only:
            apply_level_strides(feature_levels(backbone2d), self.level_strides)
        return convert_norms(backbone2d, self.encoder_norm)

    def build_2d_backbone(self, **timm_kwargs) -> nn.Module:
        """The unmodified 2D timm backbone this encoder starts from; timm_kwargs choose its weights."""
        return create_features_model(self.backbone_name, self.in_chans, self.n_levels, **timm_kwargs)

    def load_pretrained(self, backbone2d: nn.Module) -> None:
        """Load the weights of `build_2d_backbone(...)`'s result, adapted (on a copy: the caller's backbone keeps its
        strides and norms); strict, so nothing stays random unnoticed."""
        adapted = self.adapt_backbone(copy.deepcopy(backbone2d), weights_only=True)
        self.backbone.load_state_dict(adapted.state_dict(), strict=True)

    def pretrained_parameters(self):
        return self.backbone.parameters()

    def full_res_from_stem(self) -> str:
        """Start the random full-resolution stage from the backbone's (ImageNet) stem: its first convolution gets
        the stem filters (through `stem_kernel_for_full_res`), at the stage's stride 1, its norm the stem norm's
        affine parameters. Call after loading the weights. Where the shapes differ (ResNet's 64 7x7 filters
        against nnU-Net's 32 3x3) nothing changes. Returns what was done, for the training log."""
        stem, stem_norm = backbone_stem(self.backbone)
        first = self.full_res.convs[0]
        weight = self.stem_kernel_for_full_res(stem.weight.detach(), first.conv.weight.shape)
        norm = getattr(first, "norm", None)  # none where the plan has no norm_op
        norm_weight = getattr(norm, "weight", None)
        if weight.shape != first.conv.weight.shape or stem_norm is None or norm_weight is None:
            return (f"full-resolution stage: random (the stem {tuple(stem.weight.shape)} with norm "
                    f"{type(stem_norm).__name__} does not fit its {tuple(first.conv.weight.shape)} convolution "
                    f"with norm {type(norm).__name__})")
        with torch.no_grad():
            first.conv.weight.copy_(weight)
            if first.conv.bias is not None:
                first.conv.bias.copy_(stem.bias if stem.bias is not None else torch.zeros_like(first.conv.bias))
            norm_weight.copy_(stem_norm.weight)
            norm.bias.copy_(stem_norm.bias)
        return "full-resolution stage: first convolution and norm from the ImageNet stem (stride 1)"

    def stem_kernel_for_full_res(self, weight: torch.Tensor, shape) -> torch.Tensor:
        """The stem's convolution weight made into one for the full-resolution stage's first convolution, whose
        weight has `shape`; a shape that still differs leaves the stage random."""
        return weight  # 2D: the stem's kernel as it is


class TimmUNetEncoder(BackboneEncoder):
    """Returns one skip per plan stage (highest resolution first), as nnU-Net's UNetDecoder expects."""

    def __init__(self, backbone: str, input_channels: int, plan: PlanArch, encoder_norm: str = "batch"):
        super().__init__()
        if plan.dim != 2:
            raise ValueError("TimmUNetEncoder is 2D; 3D modes build their own encoders")
        check_full_resolution_first_stage(plan)
        self.lay_out(backbone, input_channels, plan, encoder_norm, plan_levels(backbone, plan.strides))

    @classmethod
    def from_arch(cls, arch: XDimArch, plan: PlanArch, num_input_channels: int) -> "TimmUNetEncoder":
        """The encoder an architecture record describes for a 2D plan."""
        return cls(arch.backbone, num_input_channels, plan, arch.encoder_norm)

    def forward(self, x):
        skips = [self.full_res(x)]
        if self.bridge is not None:
            skips.append(self.bridge(skips[0]))
        skips += self.backbone(x)
        for stage in self.extra:
            skips.append(stage(skips[-1]))
        return skips
