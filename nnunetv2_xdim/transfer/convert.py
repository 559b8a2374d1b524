"""Module-by-module 2D -> 3D conversion, for the timm families whose code we have read.

A naive swap of every Conv2d for a Conv3d runs for many families and is silently wrong for some
(squeeze-excitation averaging over (depth, height) only) or crashes for others (ConvNeXt's permutes).
So nothing is converted on trust: every module type in a backbone must be one of
- a layer with a 3D version here (convolutions, BatchNorm, pooling, squeeze-excitation), or
- a container or element-wise layer whose forward we checked to be independent of the number of
  spatial axes (it only chains its children, adds a shortcut, or applies a function per element).
Anything else raises `UnsupportedBackboneError`, which points to the slice-wise 3D mode.
"""
from typing import Callable, Dict, Tuple, Type

from timm.layers.activations import GELU, HardSigmoid, HardSwish, Mish, PReLU, Sigmoid, Swish, Tanh
from timm.layers.conv2d_same import Conv2dSame
from timm.layers.conv_bn_act import ConvNormAct
from timm.layers.drop import DropPath
from timm.layers.norm_act import BatchNormAct2d
from timm.layers.squeeze_excite import SEModule
from timm.models import regnet, resnet
from timm.models._efficientnet_blocks import ConvBnAct, DepthwiseSeparableConv, InvertedResidual, SqueezeExcite
from timm.models._features import FeatureListNet
from timm.models.efficientnet import EfficientNetFeatures
from timm.models.mobilenetv3 import MobileNetV3Features
from torch import nn
from torch.nn.utils import skip_init

from ..backbones.norms import FrozenBatchNormActNd, FrozenBatchNormNd, PerSampleNormAct
from .layers import BatchNormActNd, Conv3dSame, SEModuleNd, SqueezeExciteNd
from .rules import InflationRule

SUPPORTED_FAMILIES = ("ResNet / ResNeXt / SE-ResNet (basic and bottleneck blocks)",
                      "EfficientNet / EfficientNet-Lite", "MobileNetV2 / MobileNetV3", "RegNetX / RegNetY")

# forward checked: chains children, adds a shortcut or concatenates along channels
_CONTAINERS = (FeatureListNet, EfficientNetFeatures, MobileNetV3Features, nn.Sequential,
               resnet.BasicBlock, resnet.Bottleneck, DepthwiseSeparableConv, InvertedResidual, ConvBnAct,
               regnet.Bottleneck, regnet.RegStage, ConvNormAct)
# element-wise, or per-channel with any number of spatial axes
_ELEMENTWISE = (nn.Identity, nn.Dropout, DropPath, nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.SiLU, nn.GELU,
                nn.Mish, nn.Sigmoid, nn.Tanh, nn.Hardswish, nn.Hardsigmoid, nn.PReLU, Swish, Mish, Sigmoid, Tanh,
                HardSwish, HardSigmoid, GELU, PReLU, FrozenBatchNormNd, FrozenBatchNormActNd, PerSampleNormAct)
# squeeze-excitation: same parameters, forward pools over depth too
_CLASS_SWAPS: Dict[Type[nn.Module], Type[nn.Module]] = {
    nn.BatchNorm2d: nn.BatchNorm3d, BatchNormAct2d: BatchNormActNd,
    SqueezeExcite: SqueezeExciteNd, SEModule: SEModuleNd,
}


class UnsupportedBackboneError(NotImplementedError):
    pass


def unsupported(what: str) -> UnsupportedBackboneError:
    return UnsupportedBackboneError(
        f"{what}. Inflation to 3D is written per family and supports: {'; '.join(SUPPORTED_FAMILIES)}. "
        f"For any other timm CNN use the slice-wise 3D mode: mode_3d='slicewise' (the trainers ending in "
        f"_SliceWise), which runs the 2D backbone on every slice.")


def _depth(depth_kernel: int, in_plane: Tuple[int, ...]) -> int:
    """Depth of an inflated kernel: the stage's depth kernel, at most the (odd) in-plane size; 1 for pointwise."""
    k = max(in_plane)
    return max(1, min(depth_kernel, k if k % 2 else k - 1))


def _conv(m: nn.Conv2d, depth_kernel: int, rule: InflationRule) -> nn.Conv3d:
    d = _depth(depth_kernel, m.kernel_size)
    same = isinstance(m, Conv2dSame)
    padding = (d // 2,) + tuple(m.padding)
    # skip_init: the weights are set right below, a random initialisation would only cost time
    conv = skip_init(Conv3dSame if same else nn.Conv3d,
                     m.in_channels, m.out_channels, (d,) + tuple(m.kernel_size), stride=(m.stride[0],) + tuple(m.stride),
                     padding=0 if same else padding, dilation=(1,) + tuple(m.dilation), groups=m.groups,
                     bias=m.bias is not None, padding_mode=m.padding_mode)
    conv.weight = nn.Parameter(rule(m.weight.detach(), d), requires_grad=m.weight.requires_grad)
    if m.bias is not None:
        conv.bias = m.bias
    return conv


def _pool(m: nn.Module, depth_kernel: int) -> nn.Module:
    k = (m.kernel_size,) * 2 if isinstance(m.kernel_size, int) else tuple(m.kernel_size)
    s = (m.stride,) * 2 if isinstance(m.stride, int) else tuple(m.stride)
    p = (m.padding,) * 2 if isinstance(m.padding, int) else tuple(m.padding)
    # a pool whose kernel equals its stride (2x2/2) keeps doing so along z (set_stride follows the stride);
    # an overlapping pool (3x3/2) gets a depth like a convolution
    d = s[0] if k == s else _depth(depth_kernel, k)
    kernel, stride, padding = (d,) + k, (s[0],) + s, ((d // 2 if k != s else 0),) + p
    if isinstance(m, nn.MaxPool2d):
        dil = (m.dilation,) * 2 if isinstance(m.dilation, int) else tuple(m.dilation)
        return nn.MaxPool3d(kernel, stride, padding, (1,) + dil, m.return_indices, m.ceil_mode)
    return nn.AvgPool3d(kernel, stride, padding, m.ceil_mode, m.count_include_pad, m.divisor_override)


_LEAF_CONVERTERS: Dict[Type[nn.Module], Callable] = {
    nn.Conv2d: _conv, Conv2dSame: _conv,
    nn.MaxPool2d: lambda m, d, rule: _pool(m, d), nn.AvgPool2d: lambda m, d, rule: _pool(m, d),
}


def convert_module(module: nn.Module, name: str, depth_kernel: int, rule: InflationRule) -> nn.Module:
    """The 3D version of one module (its children are converted by the caller).

    Exact types are matched on purpose: a subclass (StdConv2d, CondConv2d, MaxPool2dSame, ...) may change the
    forward, so it is unsupported until someone reads it.
    """
    t = type(module)
    if isinstance(getattr(module, "padding", None), str):  # 'same'/'valid' are stride-dependent in torch
        raise unsupported(f"module '{name}' ({t.__name__}) uses padding='{module.padding}'")
    if t in _LEAF_CONVERTERS:
        return _LEAF_CONVERTERS[t](module, depth_kernel, rule)
    if t in _CLASS_SWAPS:
        module.__class__ = _CLASS_SWAPS[t]
        return module
    if t in _CONTAINERS or t in _ELEMENTWISE:
        return module
    raise unsupported(f"module '{name or '<root>'}' of type {t.__module__}.{t.__qualname__} has no 3D version")
