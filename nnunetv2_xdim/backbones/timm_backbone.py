"""timm `features_only` backbones whose downsampling follows an nnU-Net plan.

A timm CNN halves both axes at each feature level. nnU-Net plans a stride per stage and per axis
((2, 2), (2, 1), (1, 2, 2), ...). We keep every pretrained kernel and only change the strides of the
modules that downsample each level; padding is adapted so that an input divisible by the plan's
stride product gives feature maps of exactly `input / cumprod(strides)`. No module is replaced and
no parameter is renamed, so state dicts of the unmodified timm model load as they are.
"""
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Dict, List, Sequence, Tuple

import timm
import torch
import torch.nn.functional as F
from torch import nn

_POOLS = (nn.MaxPool2d, nn.AvgPool2d, nn.MaxPool3d, nn.AvgPool3d)
_CONVS = (nn.Conv2d, nn.Conv3d)


@dataclass
class FeatureLevel:
    """One timm feature level: where it is computed and how it downsamples."""
    index: int
    channels: int
    factor: int  # downsampling of this level relative to the previous one (input for level 0)
    downsamplers: List[Tuple[str, nn.Module]] = field(default_factory=list)


def create_features_model(name: str, in_chans: int, n_levels: int, **kwargs) -> nn.Module:
    """The first `n_levels` feature levels of timm model `name` (random weights unless kwargs say otherwise)."""
    kwargs.setdefault("pretrained", False)
    available = len(available_levels(name)[1])
    if n_levels > available:
        raise ValueError(f"backbone {name} has {available} feature levels, {n_levels} were requested")
    model = timm.create_model(name, features_only=True, in_chans=in_chans,
                              out_indices=tuple(range(n_levels)), **kwargs)
    if hasattr(model, "_stage_out_idx") and isinstance(getattr(model, "blocks", None), nn.Sequential):
        # EfficientNet-style feature models run every block whatever out_indices says: drop the unused ones
        model.blocks = model.blocks[:max(model._stage_out_idx)]
    return model


# building a timm model just to read its feature levels costs a second; the answer only depends on the name
@lru_cache(maxsize=None)
def available_levels(name: str) -> Tuple[Tuple[int, ...], Tuple[int, ...]]:
    """Reductions and channels of every feature level of timm model `name` (cached per name).

    The probe model must not draw from the global RNG: networks are built right after, and a seeded build
    has to give the same weights whether or not this answer was cached.
    """
    with torch.random.fork_rng(devices=[]):
        m = timm.create_model(name, features_only=True, pretrained=False)
    return tuple(m.feature_info.reduction()), tuple(m.feature_info.channels())


def backbone_stem(model: nn.Module) -> Tuple[nn.Module, nn.Module]:
    """The backbone's first convolution and the norm layer right after it (timm: conv_stem / bn1, conv1 / bn1),
    found by registration order (= execution order in timm's feature models); the norm is None if the next
    module with parameters is not a norm of the stem's width."""
    modules = list(model.modules())
    i = next(i for i, m in enumerate(modules) if isinstance(m, _CONVS))
    conv = modules[i]
    # the next module holding tensors of its own (a frozen BatchNorm holds buffers only)
    following = next((m for m in modules[i + 1:]
                      if any(True for _ in m.parameters(recurse=False)) or any(True for _ in m.buffers(recurse=False))),
                     None)
    weight = getattr(following, "weight", None)
    is_norm = weight is not None and weight.dim() == 1 and weight.numel() == conv.out_channels
    return conv, following if is_norm else None


def _stride_of(module: nn.Module) -> Tuple[int, ...]:
    s = module.stride
    if isinstance(s, int):
        nd = 3 if isinstance(module, (nn.Conv3d, nn.MaxPool3d, nn.AvgPool3d)) else 2
        return (s,) * nd
    return tuple(s)


def _resolve_module_name(model: nn.Module, name: str) -> str:
    # FeatureListNet flattens the top-level Sequential ('stem.0' becomes 'stem_0')
    names = dict(model.named_modules())
    if name in names:
        return name
    flat = name.replace(".", "_", 1)
    if flat in names:
        return flat
    raise KeyError(f"feature module {name} not found in {type(model).__name__}")


def module_levels(model: nn.Module) -> Dict[str, int]:
    """The level map of a timm features model: the feature level (0 = the first, highest-resolution one) of each
    module, by name. A level ends with the last descendant of its feature module (`feature_info.module_name()`;
    registration order = execution order), so the stem counts to level 0; modules after the last level's end
    (none in timm's features models) count to the last level."""
    order = [n for n, _ in model.named_modules()]
    ends = []
    for feature in model.feature_info.module_name():
        feature = _resolve_module_name(model, feature)
        ends.append(max(i for i, n in enumerate(order) if n == feature or n.startswith(feature + ".")))
    return {n: next((li for li, e in enumerate(ends) if i <= e), len(ends) - 1) for i, n in enumerate(order)}


def tensor_levels(model: nn.Module) -> Dict[str, int]:
    """The feature level of every state-dict entry (parameter or buffer) of a timm features model, by key."""
    levels = module_levels(model)
    return {key: levels[key.rpartition(".")[0]] for key in model.state_dict()}


def feature_levels(model: nn.Module) -> List[FeatureLevel]:
    """Split a timm features_only model into its levels and find the modules that downsample each one."""
    info = model.feature_info
    reductions = list(info.reduction())
    channels = list(info.channels())
    levels = [FeatureLevel(i, channels[i], reductions[i] // (reductions[i - 1] if i else 1))
              for i in range(len(info.module_name()))]
    level_of = module_levels(model)
    for name, module in model.named_modules():
        if isinstance(module, _CONVS + _POOLS) and max(_stride_of(module)) > 1:
            levels[level_of[name]].downsamplers.append((name, module))
    for lv in levels:
        found = [(n, _stride_of(m)) for n, m in lv.downsamplers]
        if (lv.factor > 1 and not found) or any(set(s) != {lv.factor} for _, s in found):
            raise NotImplementedError(
                f"feature level {lv.index} of {type(model).__name__} downsamples by {lv.factor} through {found}; "
                f"only levels that downsample in one step with conv or pool layers are supported")
    return levels


def _pad_hook(pads):
    def hook(module, args):
        return (F.pad(args[0], pads),) + tuple(args[1:])
    return hook


def set_stride(module: nn.Module, stride: Sequence[int]) -> None:
    """Give a conv or pool layer a new per-axis stride; the output size becomes ceil(input / stride)."""
    stride = tuple(int(s) for s in stride)
    old = _stride_of(module)
    nd = len(stride)
    if len(old) != nd:
        raise ValueError(f"stride {stride} does not match a {len(old)}D layer {module}")
    kernel = module.kernel_size if not isinstance(module.kernel_size, int) else (module.kernel_size,) * nd
    kernel = tuple(kernel)
    dilation = getattr(module, "dilation", 1)
    dilation = (dilation,) * nd if isinstance(dilation, int) else tuple(dilation)
    padding = module.padding
    dynamic_same = type(module).__name__.endswith("Same")  # timm's TF-style layers pad from stride at run time
    if isinstance(module, _POOLS):
        new_kernel = tuple(s if k == o else k for k, o, s in zip(kernel, old, stride))  # k2s2 pools follow stride
        module.kernel_size = new_kernel
        module.stride = stride
        if not dynamic_same and isinstance(padding, (int, tuple)):
            pad = (padding,) * nd if isinstance(padding, int) else padding
            module.padding = tuple(p if k == nk else 0 for p, k, nk in zip(pad, kernel, new_kernel))
        return
    module.stride = stride
    if dynamic_same or isinstance(padding, str):
        return
    # odd kernels with symmetric padding (k // 2) keep ceil(n / s) for any stride; even kernels
    # (ConvNeXt's 4x4 stem, 2x2 downsampling) need 'same' padding made explicit when their stride changes
    extents = [d * (k - 1) + 1 for k, d in zip(kernel, dilation)]
    if all(e % 2 == 1 for e in extents):
        return
    totals = [max(e - s, 0) for e, s in zip(extents, stride)]
    module.padding = (0,) * nd
    pads = []
    for t in reversed(totals):  # F.pad wants the last axis first
        pads += [t // 2, t - t // 2]
    if getattr(module, "_xdim_pad_handle", None) is not None:
        module._xdim_pad_handle.remove()
    module._xdim_pad_handle = module.register_forward_pre_hook(_pad_hook(tuple(pads)))


def apply_level_strides(levels: List[FeatureLevel], strides: Sequence[Sequence[int]]) -> None:
    """Set the stride of each level's downsampling layers; `strides[i]` is the per-axis stride of level i."""
    for lv, s in zip(levels, strides):
        for _, m in lv.downsamplers:
            set_stride(m, s)
