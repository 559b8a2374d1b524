"""Turn a pretrained 2D timm backbone into a 3D one that follows an nnU-Net plan (DX-Net, generalised)."""
import copy
from typing import Dict, List, Sequence

from torch import nn

from ..backbones.timm_backbone import feature_levels, module_levels, set_stride
from .convert import convert_module, unsupported
from .rules import get_rule


def _convert_tree(module: nn.Module, name: str, levels: Dict[str, int], depth_kernels, rule) -> nn.Module:
    new = convert_module(module, name, depth_kernels[levels[name]], rule)
    for child_name, child in list(new.named_children()):
        full = f"{name}.{child_name}" if name else child_name
        converted = _convert_tree(child, full, levels, depth_kernels, rule)
        if converted is not child:
            setattr(new, child_name, converted)
    return new


def inflate_backbone(backbone: nn.Module, depth_kernels: Sequence[int], strides: Sequence[Sequence[int]],
                     rule: str = "centre") -> nn.Module:
    """A 3D copy of a timm `features_only` 2D backbone, laid onto per-level depth kernels and strides.

    Args:
        backbone: the timm features model as timm creates it (e.g. `create_features_model(...)`, with or
            without pretrained weights; not stride-modified). It is left unchanged.
        depth_kernels: one per feature level, the kernel size along z the plan wants there. 1 keeps the level
            in-plane: every kernel gets depth 1 and is exactly the 2D pretrained kernel. A larger (odd) value
            gives every spatial kernel of the level that depth, at most its in-plane size; pointwise (1x1)
            convolutions stay pointwise.
        strides: one (z, y, x) stride per feature level, applied to the layers that downsample the level.
        rule: how 2D kernels get their depth: 'centre' or 'i3d' (see `rules`).

    Returns:
        A module with the backbone's forward (input (B, C, Z, Y, X), one feature map per level) and the same
        parameter names, so a state dict of another backbone inflated the same way loads strictly. With input
        size divisible by the strides' product, level i has size input / prod(strides[:i + 1]) on every axis.

    Raises:
        UnsupportedBackboneError: the backbone contains a module this module has no checked 3D version of.
    """
    n = len(backbone.feature_info.module_name())
    if len(depth_kernels) != n or len(strides) != n:
        raise ValueError(f"the backbone has {n} feature levels; got {len(depth_kernels)} depth kernels and "
                         f"{len(strides)} strides")
    if any(len(s) != 3 for s in strides):
        raise ValueError(f"strides must be (z, y, x) per level, got {list(strides)}")
    try:
        downsamplers: List[List[str]] = [[name for name, _ in lv.downsamplers] for lv in feature_levels(backbone)]
    except NotImplementedError as e:
        raise unsupported(f"{type(backbone).__name__}: {e}") from e
    levels = module_levels(backbone)
    model = _convert_tree(copy.deepcopy(backbone), "", levels, list(depth_kernels), get_rule(rule))
    for names, stride in zip(downsamplers, strides):
        for name in names:
            set_stride(model.get_submodule(name), stride)
    return model
