"""Inflation rules: how a pretrained 2D kernel (out, in, kh, kw) gets a depth d (out, in, d, kh, kw).

Both rules keep the 2D function on a volume that is constant along z:
- ``centre``: the 2D kernel in the middle slice, zeros elsewhere. Every output slice is exactly the 2D
  output of one input slice, at the borders too, so the inflated encoder starts as a slice-wise 2D encoder
  and learns to use depth from there.
- ``i3d`` (Carreira & Zisserman 2017): the 2D kernel repeated along depth and divided by d. A volume
  constant along z gives the 2D activations away from the z borders; the zero padding along z changes them
  within a receptive field of the border, and through global pooling (squeeze-excitation, instance norm)
  everywhere a little.
"""
from typing import Callable, Dict

import torch

InflationRule = Callable[[torch.Tensor, int], torch.Tensor]


def _check(weight: torch.Tensor, depth: int) -> None:
    if weight.dim() != 4:
        raise ValueError(f"expected a 2D conv weight (out, in, kh, kw), got shape {tuple(weight.shape)}")
    if depth < 1 or depth % 2 == 0:
        # an even depth has no centre slice and shifts the output by half a slice
        raise ValueError(f"inflated kernel depth must be odd and positive, got {depth}")


def centre(weight: torch.Tensor, depth: int) -> torch.Tensor:
    _check(weight, depth)
    out = weight.new_zeros(weight.shape[:2] + (depth,) + weight.shape[2:])
    out[:, :, depth // 2] = weight
    return out


def i3d(weight: torch.Tensor, depth: int) -> torch.Tensor:
    _check(weight, depth)
    return weight.unsqueeze(2).repeat(1, 1, depth, 1, 1) / depth


RULES: Dict[str, InflationRule] = {"centre": centre, "i3d": i3d}


def get_rule(name: str) -> InflationRule:
    try:
        return RULES[name]
    except KeyError:
        raise ValueError(f"unknown inflation rule '{name}', choose one of {sorted(RULES)}") from None
