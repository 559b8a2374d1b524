"""Stacked 3D mode (DS-Net, generalised): a random 3D stem compresses depth, a pretrained 2D U-Net core works on
the compressed slabs, nnU-Net's 3D decoder restores depth.

    input (B, C, D, H, W)
      -> stem: plan stage 0, random 3D convs at full resolution ---------------------------------------.
      -> depth compression: conv (r,1,1) stride (r,1,1) to K channels + norm: D/r slabs of K channels   |
      -> slabs folded into the batch (B*D/r, K, H, W)                                                    |
      -> 2D core (as the paper's 2D U-Net): the pretrained 2D encoder of the 2D mode (random full-res    |
         stage, backbone levels on the in-plane strides of the plan) and a random 2D decoder; it gives    |
         features at every in-plane scale of the plan                                                     |
      -> each scale back to 3D (B, C_s, D/r, h_s, w_s) and to the plan's depth at that stage:             |
         transposed conv (depth restored) or strided conv along z (kernel = stride)                     |
      -> skip 0 = stem + scale 0 restored to full depth  <------------------------------------------------'
    nnU-Net's UNetDecoder (3D, plan kernels and strides) -> deep-supervision outputs at the plan's scales

Depth compression r (``arch.extras['depth_compression']``, default "auto"): "auto" compresses depth as far as
the plan itself reduces it by stage 2 (4 for isotropic plans; 2 or 1 where the plan keeps z at full
resolution longer because slices are thick), so the 2D core never stacks slices the plan treats as too far
apart to mix. An explicit r must divide the plan's total depth reduction, so every patch nnU-Net plans
divides by it. The compressed slab has K = ``extras['stack_channels']`` channels (default 3): the pretrained
first convolution then sees a pseudo-RGB image and keeps its ImageNet kernels unchanged; the stem's
full-resolution skip carries what the compression drops.

Normalisation: the core's backbone uses `arch.encoder_norm` (default 'batch'; B*D/r slabs per batch, chunks
interleaved as in the slice-wise mode); random 3D and 2D parts use the plan's normalisation (InstanceNorm).

Memory: ``chunk_2d`` (default 16 slabs: the core holds more per image than a bare backbone, with its
full-resolution 2D stage and decoder) and ``checkpoint_2d`` (default True) work as in the slice-wise mode,
over the whole 2D core.
"""
from typing import List, Sequence

import torch
from dynamic_network_architectures.building_blocks.simple_conv_blocks import StackedConvBlocks
from torch import nn

from .depth import (check_3d_plan, depth_factors, fold_depth, in_plane_plan, memory_options,
                    run_chunked, unfold_depth)
from .encoder2d import TimmUNetEncoder
from .plan import PlanArch, XDimArch, plan_stage, set_decoder_attributes

DEFAULT_STACK_CHANNELS = 3
DEFAULT_CHUNK = 16  # slabs (see Memory above)
DEFAULT_CHECKPOINT = True


def resolve_depth_compression(value, plan: PlanArch) -> int:
    """The depth compression factor r for `plan` ("auto" or an explicit power of two)."""
    z = depth_factors(plan)
    if value == "auto":
        return z[min(2, plan.n_stages - 1)]
    if isinstance(value, bool) or not isinstance(value, int) or value < 1 or z[-1] % value:
        divisors = [d for d in range(1, z[-1] + 1) if z[-1] % d == 0]
        raise ValueError(f"extras['depth_compression'] must be 'auto' or divide the plan's total depth reduction "
                         f"{z[-1]} (one of {divisors}), got {value!r}")
    return value


def stacked_options(arch: XDimArch):
    """(depth_compression, stack_channels, chunk_2d, checkpoint_2d) from arch.extras, with defaults."""
    k = arch.extras.get("stack_channels", DEFAULT_STACK_CHANNELS)
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"extras['stack_channels'] must be a positive integer, got {k!r}")
    chunk, use_checkpoint = memory_options(arch.extras, DEFAULT_CHUNK, DEFAULT_CHECKPOINT)
    return arch.extras.get("depth_compression", "auto"), k, chunk, use_checkpoint


class CoreDecoder2D(nn.Module):
    """The 2D core's decoder: nnU-Net's decoder stages without segmentation heads; returns every scale."""

    def __init__(self, encoder: TimmUNetEncoder, plan2d: PlanArch):
        super().__init__()
        ch = encoder.output_channels
        # same order as nnU-Net's UNetDecoder: from the bottleneck up
        self.transpconvs = nn.ModuleList()
        self.stages = nn.ModuleList()
        for s in range(plan2d.n_stages - 2, -1, -1):
            stride = plan2d.strides[s + 1]
            self.transpconvs.append(nn.ConvTranspose2d(ch[s + 1], ch[s], stride, stride, bias=plan2d.conv_bias))
            self.stages.append(StackedConvBlocks(
                plan2d.n_conv_per_stage_decoder[plan2d.n_stages - 2 - s], nn.Conv2d, 2 * ch[s], ch[s], plan2d.kernel_sizes[s], 1,
                plan2d.conv_bias, plan2d.norm_op, plan2d.norm_op_kwargs, plan2d.dropout_op,
                plan2d.dropout_op_kwargs, plan2d.nonlin, plan2d.nonlin_kwargs))

    def forward(self, skips: Sequence[torch.Tensor]) -> List[torch.Tensor]:
        x, out = skips[-1], [skips[-1]]
        for i, (up, stage) in enumerate(zip(self.transpconvs, self.stages)):
            x = stage(torch.cat((up(x), skips[-(i + 2)]), 1))
            out.append(x)
        return out[::-1]


def depth_align(channels: int, core_factor: int, target_factor: int, conv_bias: bool) -> nn.Module:
    """Brings features from depth D/core_factor to D/target_factor along z (both powers of two)."""
    if target_factor < core_factor:
        f = core_factor // target_factor
        return nn.ConvTranspose3d(channels, channels, (f, 1, 1), (f, 1, 1), bias=conv_bias)
    if target_factor > core_factor:
        f = target_factor // core_factor
        return nn.Conv3d(channels, channels, (f, 1, 1), (f, 1, 1), bias=conv_bias)
    return nn.Identity()


class StackedEncoder(nn.Module):
    """Everything before nnU-Net's 3D decoder: stem, depth compression, 2D core, depth alignment.

    Returns one 3D skip per plan stage (highest resolution first), as nnU-Net's UNetDecoder expects. The
    pretrained-weight methods are the 2D core encoder's (`core_encoder`, a TimmUNetEncoder). Its full-resolution
    stage stays random by default (`full_res_stem_start`; see documentation/recipe.md); `full_res_from_stem()`
    is there for a subclass that sets it: the core's stage reads the compressed slab, which has the stem's input
    channels, so the 2D stem fits it as it is. The random 3D stem before the compression stays random.
    """

    full_res_stem_start = False

    def __init__(self, backbone: str, input_channels: int, plan: PlanArch, encoder_norm: str = "batch",
                 depth_compression="auto", stack_channels: int = DEFAULT_STACK_CHANNELS,
                 chunk_2d: int = DEFAULT_CHUNK, checkpoint_2d: bool = DEFAULT_CHECKPOINT):
        super().__init__()
        check_3d_plan(plan)
        self.depth_compression = r = resolve_depth_compression(depth_compression, plan)
        self.chunk_2d, self.checkpoint_2d = chunk_2d, checkpoint_2d
        f0 = plan.features_per_stage[0]
        self.stem = plan_stage(plan, 0, input_channels, f0)
        # no nonlinearity: the slab is an image for the pretrained first convolution (zero mean, unit variance)
        self.compress = nn.Sequential(
            nn.Conv3d(f0, stack_channels, (r, 1, 1), (r, 1, 1), bias=plan.conv_bias),
            plan.norm_op(stack_channels, **(plan.norm_op_kwargs or {})) if plan.norm_op is not None else nn.Identity())
        plan2d = in_plane_plan(plan)
        self.core_encoder = TimmUNetEncoder(backbone, stack_channels, plan2d, encoder_norm)
        self.core_decoder = CoreDecoder2D(self.core_encoder, plan2d)
        out = list(self.core_encoder.output_channels)
        self.align = nn.ModuleList(depth_align(c, r, z, plan.conv_bias) for c, z in zip(out, depth_factors(plan)))
        assert out[0] == f0  # the stem and the core's full-resolution scale add up

        set_decoder_attributes(self, plan)
        self.output_channels = out

    @classmethod
    def from_arch(cls, arch: XDimArch, plan: PlanArch, num_input_channels: int) -> "StackedEncoder":
        r, k, chunk, use_checkpoint = stacked_options(arch)
        return cls(arch.backbone, num_input_channels, plan, arch.encoder_norm, r, k, chunk, use_checkpoint)

    def build_2d_backbone(self, **timm_kwargs) -> nn.Module:
        return self.core_encoder.build_2d_backbone(**timm_kwargs)

    def load_pretrained(self, backbone2d: nn.Module) -> None:
        self.core_encoder.load_pretrained(backbone2d)

    def pretrained_parameters(self):
        return self.core_encoder.pretrained_parameters()

    def full_res_from_stem(self) -> str:
        return self.core_encoder.full_res_from_stem()

    def random_init_modules(self) -> List[nn.Module]:
        return [self.stem, self.compress, self.core_decoder, self.align] + self.core_encoder.random_init_modules()

    def core(self, slabs: torch.Tensor) -> List[torch.Tensor]:
        """The 2D U-Net core on (N, K, H, W) slabs: features at every in-plane scale of the plan."""
        return self.core_decoder(self.core_encoder(slabs))

    def forward(self, x):
        r = self.depth_compression
        if x.shape[2] % r:
            raise ValueError(f"patch depth {x.shape[2]} is not divisible by the depth compression {r}")
        stem = self.stem(x)
        slabs = fold_depth(self.compress(stem))
        feats = run_chunked(self.core, slabs, self.chunk_2d, self.checkpoint_2d, self.core_encoder)
        skips = [align(unfold_depth(f, x.shape[0])) for f, align in zip(feats, self.align)]
        skips[0] = skips[0] + stem
        return skips

