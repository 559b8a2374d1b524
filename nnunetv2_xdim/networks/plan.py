"""What our networks take from an nnU-Net plan, and the XDim architecture record stored in it.

nnU-Net's default plans (PlainConvUNet) and the residual-encoder presets (ResidualEncoderUNet) describe
their architecture differently (`n_conv_per_stage` against `n_blocks_per_stage`); we read only what both
have: stages, strides, kernel sizes, features, decoder depth and the conv/norm/nonlin ops.
"""
import pydoc
from dataclasses import asdict, dataclass, field, fields
from typing import List, Optional, Tuple, Type

from dynamic_network_architectures.building_blocks.simple_conv_blocks import StackedConvBlocks
from torch import nn

XDIM_KEY = "xdim"
# 2: input_norm (records of version 1 have none: their networks see the input as nnU-Net normalised it)
ARCH_VERSION = 2


@dataclass
class PlanArch:
    dim: int
    n_stages: int
    features_per_stage: List[int]
    kernel_sizes: List[Tuple[int, ...]]
    strides: List[Tuple[int, ...]]
    n_conv_per_stage: List[int]
    n_conv_per_stage_decoder: List[int]
    conv_bias: bool
    norm_op: Type[nn.Module]
    norm_op_kwargs: dict
    nonlin: Type[nn.Module]
    nonlin_kwargs: dict
    dropout_op: Optional[Type[nn.Module]] = None
    dropout_op_kwargs: Optional[dict] = None
    normalization_schemes: Tuple[str, ...] = ()  # nnU-Net's per-channel intensity normalisation (class names)

    @property
    def conv_op(self) -> Type[nn.Module]:
        return nn.Conv2d if self.dim == 2 else nn.Conv3d

    @classmethod
    def from_configuration(cls, configuration_manager) -> "PlanArch":
        kw = dict(configuration_manager.network_arch_init_kwargs)
        for k in configuration_manager.network_arch_init_kwargs_req_import:
            if kw.get(k) is not None and isinstance(kw[k], str):
                kw[k] = pydoc.locate(kw[k])
        n = kw["n_stages"]
        dim = len(configuration_manager.patch_size)
        as_list = lambda v: list(v) if isinstance(v, (list, tuple)) else [v] * n
        n_conv = kw.get("n_conv_per_stage", [2] * n)  # residual presets plan blocks, not convs
        dec = kw["n_conv_per_stage_decoder"]
        return cls(
            dim=dim, n_stages=n,
            features_per_stage=as_list(kw["features_per_stage"]),
            kernel_sizes=[tuple(int(i) for i in (k if isinstance(k, (list, tuple)) else [k] * dim))
                          for k in as_list(kw["kernel_sizes"])],
            strides=[tuple(int(i) for i in (s if isinstance(s, (list, tuple)) else [s] * dim))
                     for s in as_list(kw["strides"])],
            n_conv_per_stage=as_list(n_conv),
            n_conv_per_stage_decoder=list(dec) if isinstance(dec, (list, tuple)) else [dec] * (n - 1),
            conv_bias=bool(kw.get("conv_bias", True)),
            norm_op=kw.get("norm_op") or (nn.InstanceNorm2d if dim == 2 else nn.InstanceNorm3d),
            norm_op_kwargs=kw.get("norm_op_kwargs") or {"eps": 1e-5, "affine": True},
            nonlin=kw.get("nonlin") or nn.LeakyReLU,
            nonlin_kwargs=kw.get("nonlin_kwargs") or {"inplace": True},
            dropout_op=kw.get("dropout_op"),
            dropout_op_kwargs=kw.get("dropout_op_kwargs"),
            normalization_schemes=tuple(getattr(configuration_manager, "normalization_schemes", None) or ()),
        )


@dataclass
class XDimArch:
    """Everything (besides the nnU-Net plan) that defines an XDim network's structure.

    Written into the plans that nnU-Net saves with a trained model, so a model keeps building the same way
    after the trainers' defaults change. Bump ARCH_VERSION when the meaning of a field changes.
    """
    backbone: str = "resnet34"
    mode_3d: str = "inflated"          # inflated | slicewise | stacked (used in 3d_* configurations)
    encoder_norm: str = "batch"        # 2D encoder: batch | frozen | instance | group
    encoder_norm_3d: str = "instance"  # 3D encoders
    inflation: str = "centre"          # centre | i3d: how 2D kernels get depth (inflated mode)
    # none | backbone: 0..1 input channels scaled with the backbone's pretrained mean/std (see input_norm.py).
    # The default here is the meaning of a record without the field (made before it existed), not the
    # trainers' default
    input_norm: str = "none"
    extras: dict = field(default_factory=dict)
    version: int = ARCH_VERSION

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "XDimArch":
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"plans entry '{XDIM_KEY}' has unknown fields {sorted(unknown)}: this model was made "
                             f"by a newer nnunetv2-xdim; upgrade the plugin to use it")
        if int(d.get("version", ARCH_VERSION)) > ARCH_VERSION:
            raise ValueError(f"plans entry '{XDIM_KEY}' has version {d['version']}, this nnunetv2-xdim knows up to "
                             f"{ARCH_VERSION}: upgrade the plugin to use this model")
        return cls(**d)

    @classmethod
    def from_configuration(cls, configuration_manager) -> Optional["XDimArch"]:
        d = configuration_manager.configuration.get(XDIM_KEY)
        return None if d is None else cls.from_dict(d)


def plan_stage(plan: PlanArch, s: int, c_in: int, c_out: int, stride=None) -> StackedConvBlocks:
    """Plan stage `s` as nnU-Net builds it (conv-norm-nonlin blocks), stride from the plan unless given."""
    return StackedConvBlocks(plan.n_conv_per_stage[s], plan.conv_op, c_in, c_out, plan.kernel_sizes[s],
                             plan.strides[s] if stride is None else stride, plan.conv_bias, plan.norm_op,
                             plan.norm_op_kwargs, plan.dropout_op, plan.dropout_op_kwargs, plan.nonlin,
                             plan.nonlin_kwargs)


def check_full_resolution_first_stage(plan: PlanArch) -> None:
    """XDim encoders take their full-resolution skip from a random stage 0, the backbone's stem downsampling."""
    if any(s != 1 for s in plan.strides[0]):
        raise ValueError(f"the plan's first stage has stride {plan.strides[0]}; XDim networks need a "
                         f"full-resolution first stage (stride 1), as nnU-Net plans it")


def set_decoder_attributes(encoder: nn.Module, plan: PlanArch) -> None:
    """The attributes nnU-Net's UNetDecoder reads from an encoder, taken from the (3D) plan."""
    encoder.conv_op = plan.conv_op
    encoder.norm_op, encoder.norm_op_kwargs = plan.norm_op, plan.norm_op_kwargs
    encoder.nonlin, encoder.nonlin_kwargs = plan.nonlin, plan.nonlin_kwargs
    encoder.dropout_op, encoder.dropout_op_kwargs = plan.dropout_op, plan.dropout_op_kwargs
    encoder.conv_bias = plan.conv_bias
    encoder.kernel_sizes = plan.kernel_sizes
    encoder.strides = plan.strides
    encoder.return_skips = True
