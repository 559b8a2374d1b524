"""The inflated 3D encoder (mode_3d='inflated'): the 2D backbone's levels as 3D stages of an nnU-Net plan.

The stage layout is the 2D encoder's (a random full-resolution stage 0, the backbone's feature levels on
plan stages 1.., random extra stages beyond them; see encoder2d.py). The backbone is inflated level by
level: the plan's stride on every axis, and the plan's kernel size along z as depth of the level's spatial
kernels. Where nnU-Net plans in-plane kernels ([1, 3, 3]) the level stays exactly the pretrained 2D
network applied slice by slice; where its kernels span z, the 2D kernels get a depth by the inflation rule.
"""
from typing import List

import torch
from torch import nn

from ..backbones.norms import convert_norms
from ..transfer import get_rule, inflate_backbone
from .encoder2d import TimmUNetEncoder, plan_levels
from .plan import PlanArch, XDimArch, check_full_resolution_first_stage


def level_depth_kernels(plan: PlanArch, n_levels: int, bridge: bool) -> List[int]:
    """Depth kernel of each backbone level: the z kernel of the plan stage(s) the level stands for."""
    stages = [[1, 2]] if bridge else [[1]]
    while len(stages) < n_levels:
        stages.append([stages[-1][-1] + 1])
    return [max(plan.kernel_sizes[s][0] for s in group) for group in stages[:n_levels]]


class InflatedUNetEncoder(TimmUNetEncoder):
    """3D version of TimmUNetEncoder (same forward, same stage layout, same state-dict layout).

    `adapt_backbone` inflates: the random backbone at build time, the unmodified 2D backbone that
    `load_pretrained` gets (`build_2d_backbone(...)`) later, by the same rule, depth kernels and strides.
    """

    def __init__(self, backbone: str, input_channels: int, plan: PlanArch, encoder_norm: str = "instance",
                 inflation: str = "centre"):
        nn.Module.__init__(self)
        if plan.dim != 3:
            raise ValueError("InflatedUNetEncoder builds 3D encoders; 2D plans use TimmUNetEncoder")
        check_full_resolution_first_stage(plan)
        get_rule(inflation)  # fail at build time, not when the weights arrive
        levels = plan_levels(backbone, plan.strides)
        self.inflation = inflation
        self.depth_kernels = level_depth_kernels(plan, len(levels.level_strides), levels.bridge)
        self.lay_out(backbone, input_channels, plan, encoder_norm, levels)

    @classmethod
    def from_arch(cls, arch: XDimArch, plan: PlanArch, num_input_channels: int) -> "InflatedUNetEncoder":
        return cls(arch.backbone, num_input_channels, plan, arch.encoder_norm_3d, arch.inflation)

    def adapt_backbone(self, backbone2d: nn.Module, weights_only: bool = False) -> nn.Module:
        """Inflated by this encoder's rule, depth kernels and strides, for building and for loading weights alike
        (the depth kernels shape the weights)."""
        inflated = inflate_backbone(backbone2d, self.depth_kernels, self.level_strides, self.inflation)
        return convert_norms(inflated, self.encoder_norm)

    def stem_kernel_for_full_res(self, weight: torch.Tensor, shape) -> torch.Tensor:
        # the inflated stem's 2D kernel (its depth sum, for either rule), inflated by the same rule to the
        # full-resolution stage's own depth kernel, which the plan may set differently
        return get_rule(self.inflation)(weight.sum(2), shape[2])

