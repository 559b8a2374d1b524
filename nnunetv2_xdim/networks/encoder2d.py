"""The 2D encoder: a timm backbone laid onto an nnU-Net plan (Omnia-Net, generalised).

Plan stage 0 (full resolution) is a small randomly initialised conv stage: the pretrained stem downsamples
at once, and nnU-Net's decoder wants a full-resolution skip (the trainer may start it from the stem's filters:
`full_res_from_stem`). Plan stages 1.. are the backbone's feature levels, each downsampling with the plan's
stride for that stage (the backbone runs on the raw input). A backbone whose first level is at reduction 4
(ConvNeXt) takes two plan stages for it, with a random bridge stage providing the skip in between. Plan stages
beyond the backbone's levels are random conv stages; a plan with fewer stages uses only the first levels.
"""
import copy
from typing import List, Tuple

import torch
from torch import nn

from ..backbones.norms import convert_norms
from ..backbones.timm_backbone import (apply_level_strides, available_levels, backbone_stem, create_features_model,
                                      feature_levels)
from .plan import PlanArch, check_full_resolution_first_stage, plan_stage, set_decoder_attributes


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


def plan_levels(backbone: str, strides: List[Tuple[int, ...]]):
    """Lay `backbone`'s feature levels onto the plan's (in-plane) strides.

    Returns (level_strides, bridge, first_extra_stage, level_channels) as map_plan_to_levels, plus the
    channels of the used levels; raises if the plan has no stage left for the backbone.
    """
    reductions, channels = available_levels(backbone)
    factors = [reductions[0]] + [b // a for a, b in zip(reductions[:-1], reductions[1:])]
    level_strides, bridge, first_extra = map_plan_to_levels(factors, strides)
    if not level_strides:
        raise ValueError(f"the plan has {len(strides)} stages, too few to use backbone {backbone}")
    return level_strides, bridge, first_extra, list(channels[:len(level_strides)])


def add_plan_stages(encoder: nn.Module, plan: PlanArch, input_channels: int, bridge: bool, first_extra: int,
                    level_channels) -> None:
    """The random plan stages around a backbone: full resolution, bridge (if any), extra stages below it.

    Sets `full_res`, `bridge`, `extra` (registered in this order: optimizer states in checkpoints follow
    it) and `output_channels`, one entry per plan stage.
    """
    f = plan.features_per_stage
    encoder.full_res = plan_stage(plan, 0, input_channels, f[0])
    encoder.bridge = plan_stage(plan, 1, f[0], f[1]) if bridge else None
    out = [f[0]] + ([f[1]] if bridge else []) + list(level_channels)
    encoder.extra = nn.ModuleList()
    for s in range(first_extra, plan.n_stages):
        encoder.extra.append(plan_stage(plan, s, out[-1], f[s]))
        out.append(f[s])
    assert len(out) == plan.n_stages
    encoder.output_channels = out


class BackboneEncoder(nn.Module):
    """What every encoder around a 2D timm backbone (2D, inflated, slice-wise) shares: the backbone at the plan's
    in-plane strides, and the three methods XDimUNet's pretrained-weight contract calls. A subclass that changes
    the backbone's form (inflation) overrides `adapt_backbone` only: building and loading weights both use it."""

    def add_backbone(self, backbone: str, input_channels: int, level_strides, encoder_norm: str) -> None:
        self.backbone_name, self.in_chans, self.n_levels = backbone, input_channels, len(level_strides)
        self.level_strides, self.encoder_norm = level_strides, encoder_norm
        self.backbone = self.adapt_backbone(create_features_model(backbone, input_channels, self.n_levels))

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


class TimmUNetEncoder(BackboneEncoder):
    """Returns one skip per plan stage (highest resolution first), as nnU-Net's UNetDecoder expects."""

    def __init__(self, backbone: str, input_channels: int, plan: PlanArch, encoder_norm: str = "batch"):
        super().__init__()
        if plan.dim != 2:
            raise ValueError("TimmUNetEncoder is 2D; 3D modes build their own encoders")
        check_full_resolution_first_stage(plan)
        level_strides, bridge, first_extra, level_channels = plan_levels(backbone, plan.strides)

        self.add_backbone(backbone, input_channels, level_strides, encoder_norm)
        set_decoder_attributes(self, plan)
        add_plan_stages(self, plan, input_channels, bridge, first_extra, level_channels)

    def random_init_modules(self) -> List[nn.Module]:
        """The parts that never have pretrained weights (nnU-Net's He init is applied to these)."""
        return [m for m in (self.full_res, self.bridge, self.extra) if m is not None]

    def full_res_from_stem(self) -> str:
        """Start the random full-resolution stage from the backbone's (ImageNet) stem: its first convolution gets
        the stem filters, at the stage's stride 1, its norm the stem norm's affine parameters. Call after loading
        the weights. Where the shapes differ (ResNet's 64 7x7 filters against nnU-Net's 32 3x3) nothing changes.
        Returns what was done, for the training log."""
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
        return weight  # 2D: the stem's kernel as it is

    def forward(self, x):
        skips = [self.full_res(x)]
        if self.bridge is not None:
            skips.append(self.bridge(skips[0]))
        skips += self.backbone(x)
        for stage in self.extra:
            skips.append(stage(skips[-1]))
        return skips

