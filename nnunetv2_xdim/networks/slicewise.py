"""Slice-wise 3D mode (2.5D): the pretrained 2D encoder runs on every z-slice, a 3D decoder segments.

    input (B, C, D, H, W)
      |-- plan stage 0: random 3D conv stage at full resolution ------------------------------> skip 0
      |   (ConvNeXt-like backbones, first level at reduction 4: random 3D bridge stage --------> skip 1)
      '-- slices folded into the batch (B*D, C, H, W) -> pretrained 2D backbone (in-plane strides of the plan)
            level l: (B*D, C_l, h_l, w_l) -> back to 3D (B, C_l, D, h_l, w_l)
                     -> average-pooled along z by the plan's depth reduction at that stage
                     -> slice fusion: x + conv(kz,1,1)(x), kz the plan's z kernel ---------------> skip s
      plan stages beyond the backbone's levels: random 3D conv stages ---------------------------> skips
    nnU-Net's UNetDecoder (3D, plan kernels and strides) -> deep-supervision outputs at the plan's scales

Normalisation: the 2D backbone keeps `arch.encoder_norm` (default 'batch': the pretrained BatchNorm, batch
statistics in training). Folding depth turns a training batch of 2 patches into 2*D images, and the chunks
below interleave slices over the whole depth of both samples, so the batch statistics are those of many slices
of every sample, closer to the data's than ImageNet's running statistics (see documentation/modes_3d.md). The
random 3D parts use the plan's normalisation (InstanceNorm), as nnU-Net does.

Memory (options in `arch.extras`):
- ``chunk_2d`` (default 32): the backbone sees at most this many slices at once. Chunks interleave the
  slices (every chunk spans the whole depth of every sample), so BatchNorm statistics stay representative.
- ``checkpoint_2d`` (default True): in training, the backbone's activations are recomputed chunk by chunk
  in backward instead of stored (BatchNorm running statistics are updated once). Folding depth multiplies the
  backbone's activation memory by D; recomputing brings a training step's peak memory to about that of
  nnU-Net's own 3D network for the same plan, for one more backbone forward per step.
"""
from typing import List

import torch
import torch.nn.functional as F
from dynamic_network_architectures.building_blocks.simple_conv_blocks import ConvDropoutNormReLU
from torch import nn

from ..transfer.rules import centre
from .depth import check_3d_plan, depth_factors, fold_depth, memory_options, run_chunked, unfold_depth
from .encoder2d import BackboneEncoder, plan_levels
from .plan import PlanArch, XDimArch

DEFAULT_CHUNK = 32
DEFAULT_CHECKPOINT = True


class SliceFusion(nn.Module):
    """Mixes neighbouring slices of the 2D features: x + conv(kz,1,1)(x), conv followed by norm and nonlin.

    The norm's scale starts at zero, so the fusion starts as the identity: training begins from exactly the
    pretrained 2D features of each slice and learns how much context to take from its neighbours.
    """

    def __init__(self, channels: int, kernel_z: int, plan: PlanArch):
        super().__init__()
        self.conv = ConvDropoutNormReLU(nn.Conv3d, channels, channels, (kernel_z, 1, 1), 1, plan.conv_bias,
                                        plan.norm_op, plan.norm_op_kwargs, None, None, plan.nonlin,
                                        plan.nonlin_kwargs)
        norm = getattr(self.conv, "norm", None)
        if norm is not None and getattr(norm, "weight", None) is not None:
            nn.init.zeros_(norm.weight)

    def forward(self, x):
        return x + self.conv(x)


class SliceWiseEncoder(BackboneEncoder):
    """Returns one 3D skip per plan stage (highest resolution first), as nnU-Net's UNetDecoder expects.

    The full-resolution stage stays random by default (`full_res_stem_start`; see documentation/recipe.md);
    `full_res_from_stem()` is there for a subclass that sets it: the 2D stem in the middle slice of the stage's
    depth kernel (the centre rule), so the stage starts by applying the stem to every slice, as the backbone
    reads them.
    """

    full_res_stem_start = False

    def __init__(self, backbone: str, input_channels: int, plan: PlanArch, encoder_norm: str = "batch",
                 chunk_2d: int = DEFAULT_CHUNK, checkpoint_2d: bool = DEFAULT_CHECKPOINT):
        super().__init__()
        check_3d_plan(plan)
        self.chunk_2d, self.checkpoint_2d = chunk_2d, checkpoint_2d
        self.lay_out(backbone, input_channels, plan, encoder_norm,
                     plan_levels(backbone, [s[1:] for s in plan.strides]))

    @classmethod
    def from_arch(cls, arch: XDimArch, plan: PlanArch, num_input_channels: int) -> "SliceWiseEncoder":
        chunk, use_checkpoint = memory_options(arch.extras, DEFAULT_CHUNK, DEFAULT_CHECKPOINT)
        return cls(arch.backbone, num_input_channels, plan, arch.encoder_norm, chunk, use_checkpoint)

    def add_level_stages(self, plan: PlanArch, level_stages: range, level_channels: List[int]) -> None:
        """Per level: the average pooling along z to the plan's depth at that stage, and the slice fusion."""
        z = depth_factors(plan)
        self.z_pool = [z[s] for s in level_stages]
        self.fusion = nn.ModuleList(
            SliceFusion(c, plan.kernel_sizes[s][0], plan) if plan.kernel_sizes[s][0] > 1 else nn.Identity()
            for c, s in zip(level_channels, level_stages))

    def random_init_modules(self) -> List[nn.Module]:
        return [m for m in (self.full_res, self.bridge, self.fusion, self.extra) if m is not None]

    def stem_kernel_for_full_res(self, weight: torch.Tensor, shape) -> torch.Tensor:
        return centre(weight, shape[2])

    def slice_features(self, x: torch.Tensor) -> List[torch.Tensor]:
        """Per backbone level, the 2D features of every slice stacked along depth: (B, C_l, D, h_l, w_l)."""
        feats = run_chunked(self.backbone, fold_depth(x), self.chunk_2d, self.checkpoint_2d, self.backbone)
        return [unfold_depth(f, x.shape[0]) for f in feats]

    def forward(self, x):
        skips = [self.full_res(x)]
        if self.bridge is not None:
            skips.append(self.bridge(skips[0]))
        for feat, pool, fuse in zip(self.slice_features(x), self.z_pool, self.fusion):
            if pool > 1:
                feat = F.avg_pool3d(feat, (pool, 1, 1), (pool, 1, 1), ceil_mode=True)
            skips.append(fuse(feat))
        for stage in self.extra:
            skips.append(stage(skips[-1]))
        return skips
